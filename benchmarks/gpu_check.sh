#!/usr/bin/env bash
# The GPU check of knn_gpu: one command that proves a GPU end to end.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            # on a CUDA machine, from the checkout's root
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR] # anywhere: print every step, import the Python parts
#
# Steps, each under its own `timeout` so that its log exists even if it hangs:
#   0. environment: nvidia-smi -L, versions, knn_gpu.available_backends()
#   1. selftest:    python -m knn_gpu selftest (every backend and GPU against a float64 oracle)
#   2. GPU tests:   pytest -k "cupy or cuda", torch-cuda k-searches under
#                   torch.cuda.set_sync_debug_mode("error") (KNN_GPU_SYNC_DEBUG=error),
#                   then tests per backend from the JUnit XML
#   3. benchmark:   benchmarks/bench_gpu.py: knn_gpu vs the torch peer (addmm + topk) and the GEMM floor
# Everything lands in OUT_DIR: one log per step, selftest.{json,md}, gpu-tests.{xml,md},
# bench_gpu.{json,md}, and gpu_check.json (each step's exit status and seconds, the GPU's name).
# Budget: at most 8 minutes on an H100/H200 (the timeouts below add up to 475 s; GPU_CHECK_SCALE=2
# doubles every one of them on a slower GPU).
#
# Needs: Python 3 with numpy, torch (CUDA build) and/or CuPy, pytest (and optionally scikit-learn,
# hypothesis). array-api-compat, -extra and -strict are installed offline from the checkout's .whl/
# (fill it with ../shared/gpu/prepare-wheels, or `pip download` them) into a temporary folder;
# without .whl/ they must be importable already.
set -uo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
out=${1:-${OUT:-/tmp/knn-gpu-check}}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
python=${PYTHON:-python3}
scale=${GPU_CHECK_SCALE:-1}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary="$out/gpu_check.tsv"
: >"$summary"
failed=0

# --- the three array-api packages, offline -----------------------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)/site
  install=("$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl)
  if ((dry_run)); then
    echo "(dry run) ${install[*]}"
  elif ! "${install[@]}"; then
    echo "gpu_check: installing .whl/*.whl failed" >&2
    exit 2
  fi
  export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu_check: no .whl/ here; array-api-compat, -extra and -strict must be importable already"
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

# step NAME SECONDS COMMAND...: run COMMAND under `timeout`, its output in NAME.log (and the last lines
# on the screen); record the exit status and seconds. In a dry run, print the command.
step() {
  local name=$1 seconds=$(($2 * scale))
  shift 2
  if ((dry_run)); then
    printf '(dry run) step %s, timeout %ss:' "$name" "$seconds"
    printf ' %q' "$@"
    printf '\n'
    return 0
  fi
  printf '=== %s (timeout %ss):' "$name" "$seconds"
  printf ' %q' "$@"
  printf '\n'

  local start=$SECONDS rc
  timeout -k 10 "$seconds" "$@" >"$out/$name.log" 2>&1
  rc=$?
  tail -n 40 "$out/$name.log"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$summary"
  echo "=== $name: exit $rc after $((SECONDS - start)) s$([[ $rc == 124 || $rc == 137 ]] && echo ' (TIMED OUT)')"
  ((rc == 0)) || failed=1
}

# --- 0. the machine ----------------------------------------------------------------------------
if ((dry_run)); then
  echo "(dry run) nvidia-smi -L"
elif command -v nvidia-smi >/dev/null; then
  nvidia-smi -L | tee "$out/nvidia-smi.txt"
else
  echo "gpu_check: no nvidia-smi on this machine" | tee "$out/nvidia-smi.txt"
fi
step environment 45 "$python" -c "import sys, numpy, knn_gpu; print(sys.version); print('numpy', numpy.__version__, 'knn_gpu', knn_gpu.__version__, knn_gpu.__file__); print('usable backends:', knn_gpu.available_backends()); knn_gpu.show_config()"

# --- 1. selftest -------------------------------------------------------------------------------
step selftest 75 "$python" -m knn_gpu selftest --json "$out/selftest.json" --markdown "$out/selftest.md"

# --- 2. the GPU tests, searches guarded against host synchronisation ---------------------------
# -v: one line per test as it ends, so that the counts per backend survive a timeout (no JUnit file then).
step gpu-tests 150 env KNN_GPU_SYNC_DEBUG=error "$python" -m pytest -v -p no:cacheprovider -k "cupy or cuda" \
  --maxfail=100 -rfE --durations=10 --junitxml "$out/gpu-tests.xml"
step gpu-tests-summary 15 "$python" benchmarks/gpu_tests_summary.py "$out/gpu-tests.xml" --log "$out/gpu-tests.log" \
  --out "$out/gpu-tests.md"

# --- 3. the benchmark: no new shape after --deadline, so that its files are written in time -----
# GPU_CHECK_BENCH_ARGS adds options, e.g. "--shapes 0,4" or, to try this script on a CPU, "--quick".
read -ra bench_extra <<<"${GPU_CHECK_BENCH_ARGS:-}"
step benchmark 190 "$python" benchmarks/bench_gpu.py --out "$out" --deadline $((130 * scale)) ${bench_extra[@]+"${bench_extra[@]}"}

# --- the record --------------------------------------------------------------------------------
if ((dry_run)); then
  # The Python parts import (and the benchmark prints its plan) without a GPU.
  "$python" -c "import knn_gpu.cli.selftest, knn_gpu.cli.main; print('imported knn_gpu.cli.selftest')" || exit 1
  "$python" benchmarks/bench_gpu.py --dry-run || exit 1
  "$python" -c "import importlib.util as u; s = u.spec_from_file_location('s', 'benchmarks/gpu_tests_summary.py'); s.loader.exec_module(u.module_from_spec(s)); print('imported gpu_tests_summary')" || exit 1
  echo "(dry run) every step printed; nothing ran on a GPU"
  exit 0
fi
"$python" - "$out" <<'PYTHON'
import json, subprocess, sys
from pathlib import Path

out = Path(sys.argv[1])
steps = [dict(zip(("step", "exit", "seconds"), line.split("\t"))) for line in (out / "gpu_check.tsv").read_text().splitlines()]
try:
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
except Exception as exc:
    gpus = [f"unknown ({exc})"]
record = {"gpus": gpus, "steps": [dict(s, exit=int(s["exit"]), seconds=int(s["seconds"])) for s in steps]}
(out / "gpu_check.json").write_text(json.dumps(record, indent=1))
print("gpu_check:", "; ".join(gpus))
for s in record["steps"]:
    print(f"  {s['step']:<18} exit {s['exit']:>3}  {s['seconds']:>4} s")
PYTHON
exit $failed
