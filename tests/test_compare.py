"""``knn-gpu compare`` in-process and as a subprocess, on a tiny workload."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rich")

from knn_gpu.cli import compare
from knn_gpu.cli.main import build_parser, main

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_FAISS = importlib.util.find_spec("faiss") is not None  # the benchmark extra, not installed by CI
TINY = ["compare", "--n-train", "300", "--n-query", "40", "--dim", "5", "-k", "4", "--repeats", "1"]
HEADERS = ("backend", "device", "median s", "vs numpy", "agreement", "status")


def _exit_status(arguments: list[str]) -> int:
    """``main``'s status, including argparse's own exit for a bad choice."""
    try:
        return main(arguments)
    except SystemExit as exc:
        return exc.code


def _flat(text: str) -> str:
    """Text with every run of whitespace made one space (rich wraps long lines at word boundaries)."""
    return " ".join(text.split())


def _failing(monkeypatch, backend: str, message: str, when=lambda train, queries: True) -> None:
    real = compare._search_on_backend

    def broken(name, train, queries, k):
        if name == backend and when(train, queries):
            raise RuntimeError(message)
        return real(name, train, queries, k)

    monkeypatch.setattr(compare, "_search_on_backend", broken)


def test_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    json_path, png_path = tmp_path / "out.json", tmp_path / "out.png"
    backends = "numpy,array_api_strict" + (",torch" if HAS_TORCH else "") + ",sklearn"
    status = main(
        [*TINY, "--backends", backends, "--json", str(json_path), "--plot", str(png_path), "--sweep", "n_train"]
    )
    output = capsys.readouterr().out
    assert status == 0, output
    assert "median s" in output and "array_api_strict" in output
    assert "median seconds against n_train" in output
    for size in ("75", "150", "300", "600", "1,200"):  # 1/4 to 4 times --n-train, in the sweep table
        assert f" {size} " in output, size
    records = json.loads(json_path.read_text())
    names = [record["backend"] for record in records]
    assert names == backends.split(",")
    for record in records:
        for field in ("backend", "device", "seconds", "speedup_vs_numpy", "agreement", "workload", "machine"):
            assert field in record
        assert record["workload"]["n_train"] == 300 and record["machine"]["cores"] >= 1
    by_name = {record["backend"]: record for record in records}
    assert by_name["numpy"]["agreement"] == by_name["array_api_strict"]["agreement"] == 1.0
    if HAS_TORCH:
        assert by_name["torch"]["status"] == "ok" and by_name["torch"]["agreement"] == 1.0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forced_disagreement_exits_non_zero(monkeypatch, capsys):
    real = compare._search_on_backend

    def corrupted(name, train, queries, k):
        runner, anchor = real(name, train, queries, k)
        if name != "array_api_strict":
            return runner, anchor

        def wrong():
            distances, indices = runner()
            return distances, np.flip(compare.to_host(indices), axis=1)

        return wrong, anchor

    monkeypatch.setattr(compare, "_search_on_backend", corrupted)
    assert main([*TINY, "--backends", "numpy,array_api_strict"]) == 1
    assert "disagreement array_api_strict: index agreement" in capsys.readouterr().out


def test_failing_backend_exits_1_with_its_full_reason_and_others_run(monkeypatch, capsys, tmp_path):
    reason = "simulated driver failure: " + " ".join(f"detail{i}" for i in range(40))  # far wider than 80 columns
    _failing(monkeypatch, "array_api_strict", reason)
    json_path = tmp_path / "r.json"
    assert main([*TINY, "--backends", "numpy,array_api_strict", "--json", str(json_path)]) == 1
    records = {r["backend"]: r for r in json.loads(json_path.read_text())}
    assert records["array_api_strict"]["status"] == "failed"
    assert records["array_api_strict"]["reason"] == f"RuntimeError: {reason}"
    assert records["numpy"]["status"] == "ok"
    output = capsys.readouterr().out
    table_end = output.index("└")
    assert f"failed array_api_strict: RuntimeError: {reason}" in _flat(output[table_end:])


def test_numpy_baseline_failure_exits_1(monkeypatch, capsys):
    _failing(monkeypatch, "numpy", "baseline broke")
    assert main([*TINY, "--backends", "numpy,array_api_strict"]) == 1
    output = _flat(capsys.readouterr().out)
    assert "failed numpy: RuntimeError: baseline broke" in output
    assert "failed the NumPy baseline: no row could be checked against it" in output


def test_failure_in_the_sweep_exits_1_and_names_the_size(monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    _failing(monkeypatch, "array_api_strict", "out of memory", when=lambda train, queries: train.shape[0] > 300)
    arguments = [*TINY, "--backends", "numpy,array_api_strict", "--sweep", "n_train", "--plot", str(tmp_path / "p.png")]
    assert main(arguments) == 1
    output = _flat(capsys.readouterr().out)
    assert "failed array_api_strict: RuntimeError: out of memory (at n_train=600)" in output
    assert "failed array_api_strict: RuntimeError: out of memory (at n_train=1200)" in output
    assert "(at n_train=300)" not in output


def test_output_fits_80_columns_without_truncation(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    _failing(monkeypatch, "faiss", "a reason long enough to be cut in a table cell, " * 3)
    backends = "numpy,array_api_strict,sklearn,faiss" + (",torch,torch-topk" if HAS_TORCH else "")
    assert main([*TINY, "--backends", backends]) == 1
    output = capsys.readouterr().out
    assert "…" not in output
    assert max(len(line) for line in output.splitlines()) <= 80
    header = next(line for line in output.splitlines() if "backend" in line and "status" in line)
    assert [cell.strip() for cell in header.strip("┃").split("┃")] == list(HEADERS)
    for name in backends.split(","):
        assert re.search(rf"│ {re.escape(name)} +│", output), name


def test_table_renders_at_80_columns_with_the_longest_names():
    from rich.console import Console

    row = {"status": "ok", "dtype": "float64", "seconds": 12.3456, "speedup_vs_numpy": 0.01, "agreement": 0.99}
    records = [
        dict(row, backend="array_api_strict", device="CPU_DEVICE"),
        dict(row, backend="torch:cuda", device="cuda:0"),
        dict(row, backend="torch-topk", device="cuda:1", dtype="float32"),
        {"backend": "cupy", "device": None, "status": "failed", "dtype": "float64", "seconds": None},
    ]
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(compare._results_table(records, k=10, dtype="float64"))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "kneighbors, k=10, float64" in text
    for cells in (("array_api_strict", "CPU_DEVICE", "12.3456", "0.01x", "0.9900", "ok"), ("ok (f32)",)):
        assert all(cell in text for cell in cells)
    assert re.search(r"│ cupy +│ - +│ +- │ +- │ +- │ failed +│", text)


def test_time_runs_synchronises_before_each_clock_read(monkeypatch):
    events = []
    ticks = iter(range(100))
    monkeypatch.setattr(compare, "synchronize", lambda anchor: events.append(f"sync {anchor}"))
    monkeypatch.setattr(compare, "time", SimpleNamespace(perf_counter=lambda: events.append("clock") or next(ticks)))
    result, seconds = compare.time_runs(lambda: events.append("run") or "result", "gpu0", repeats=2)
    assert result == "result" and seconds == [1, 1]
    warm_up = ["sync gpu0", "run", "sync gpu0"]
    timed = ["sync gpu0", "clock", "run", "sync gpu0", "clock"]
    assert events == warm_up + timed + timed


def test_every_runner_is_timed_with_its_device_synchronised(monkeypatch):
    anchors = []
    real = compare.synchronize
    monkeypatch.setattr(compare, "synchronize", lambda anchor: anchors.append(anchor) or real(anchor))
    backends = ["numpy", "array_api_strict", "sklearn"] + (["faiss"] if HAS_FAISS else [])
    backends += ["torch", "torch-topk"] if HAS_TORCH else []
    train = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    records = compare.compare_backends(backends, train, train[:10], k=3, repeats=2)
    assert [r["status"] for r in records] == ["ok"] * len(backends)
    assert len(anchors) == len(backends) * (2 + 2 * 2)  # warm-up and each of 2 repeats: before and after
    kinds = [type(anchor).__name__ for anchor in anchors[:: 2 + 2 * 2]]
    expected = (
        ["ndarray", "Array", "NoneType"] + (["NoneType"] if HAS_FAISS else []) + (["Tensor", "Tensor"] * HAS_TORCH)
    )
    assert kinds == expected


def test_synchronize_is_chosen_by_the_array(monkeypatch):
    torch = pytest.importorskip("torch")
    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(("torch", str(device))))
    for host in (None, np.ones(2), torch.ones(2)):  # the host: nothing to wait for
        compare.synchronize(host)
    assert synchronised == []
    fake_cupy = SimpleNamespace(device=SimpleNamespace(synchronize=lambda: synchronised.append(("cupy", "0"))))
    fake_cuda_tensor = SimpleNamespace(device=torch.device("cuda:1"))
    monkeypatch.setattr(compare.array_api_compat, "is_cupy_array", lambda x: x is fake_cupy)
    monkeypatch.setattr(compare.array_api_compat, "is_torch_array", lambda x: x is fake_cuda_tensor)
    compare.synchronize(fake_cupy)
    compare.synchronize(fake_cuda_tensor)
    assert synchronised == [("cupy", "0"), ("torch", "cuda:1")]


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_topk_peer_agrees_with_numpy(tmp_path, dtype):
    import torch

    json_path = tmp_path / "r.json"
    assert main([*TINY, "--dtype", dtype, "--backends", "torch-topk", "--json", str(json_path)]) == 0
    records = {r["backend"]: r for r in json.loads(json_path.read_text())}
    assert list(records) == ["numpy", "torch-topk"]
    peer = records["torch-topk"]
    assert peer["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert peer["status"] == "ok" and peer["dtype"] == dtype
    assert peer["agreement"] == 1.0 and peer["max_distance_difference"] < 1e-4


def test_torch_topk_runs_by_hand_what_gpu_users_write():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    train, queries = rng.standard_normal((50, 4)), rng.standard_normal((7, 4))
    search, anchor = compare._prepare_torch_topk(train, queries, 3)
    distances, indices = search()
    assert isinstance(anchor, torch.Tensor) and distances.shape == indices.shape == (7, 3)
    exact = np.linalg.norm(queries[:, None, :] - train[None, :, :], axis=2)
    np.testing.assert_array_equal(indices.cpu().numpy(), np.argsort(exact, axis=1)[:, :3])
    np.testing.assert_allclose(distances.cpu().numpy(), np.sort(exact, axis=1)[:, :3], rtol=1e-10)


@pytest.mark.parametrize("torch_has_gpu", [True, False])
def test_torch_topk_is_a_default_peer_only_with_a_gpu(monkeypatch, torch_has_gpu):
    monkeypatch.setattr(compare, "_torch_has_gpu", lambda: torch_has_gpu)
    names = compare._check_arguments(build_parser().parse_args(["compare"]))
    assert ("torch-topk" in names) is torch_has_gpu
    assert names[0] == "numpy"
    explicit = compare._check_arguments(build_parser().parse_args(["compare", "--backends", "torch-topk"]))
    assert explicit == ["numpy", "torch-topk"]


def test_any_backend_name_the_backends_module_understands_is_timed(monkeypatch, tmp_path):
    """A name such as "torch:cuda" added to available_backends() needs no change in compare."""
    real_to_backend = compare.to_backend
    monkeypatch.setattr(compare, "available_backends", lambda: ["numpy", "strict:alias"])
    monkeypatch.setattr(
        compare,
        "to_backend",
        lambda x, name: real_to_backend(x, "array_api_strict" if name == "strict:alias" else name),
    )
    json_path = tmp_path / "r.json"
    assert main([*TINY, "--json", str(json_path), "--backends", "strict:alias"]) == 0
    record = json.loads(json_path.read_text())[1]
    assert (record["backend"], record["device"], record["agreement"]) == ("strict:alias", "CPU_DEVICE", 1.0)
    assert compare._check_arguments(build_parser().parse_args(["compare"]))[:2] == ["numpy", "strict:alias"]


def test_fastest_line_counts_only_rows_that_ran():
    ran = {"status": "ok"}
    records = [
        dict(ran, backend="numpy", seconds=0.2),
        {"backend": "cupy", "status": "failed", "seconds": None},
        dict(ran, backend="faiss", seconds=0.1),
        dict(ran, backend="sklearn", seconds=0.3),
    ]
    assert compare.fastest_line(records) == "fastest: faiss, 2.00x faster than numpy (the next)"
    assert compare.fastest_line(records[:2]) == "fastest: numpy (the only one that ran)"
    assert compare.fastest_line(records[1:2]) == "fastest: none (nothing ran)"


def test_closing_line_names_the_fastest(capsys):
    assert main([*TINY, "--backends", "numpy,array_api_strict"]) == 0
    last_line = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert re.fullmatch(
        r"fastest: (numpy|array_api_strict), \d+\.\d\dx faster than (numpy|array_api_strict) \(the next\)", last_line
    )


def _sweep_args(**overrides) -> argparse.Namespace:
    values = {"sweep": "n_train", "k": 4, "seed": 0, "data": None}
    return argparse.Namespace(**(values | overrides))


def test_sweep_spans_below_and_above_the_given_training_size():
    rng = np.random.default_rng(0)
    train, queries = rng.standard_normal((300, 5)).astype(np.float32), rng.standard_normal((40, 5)).astype(np.float32)
    workloads = compare.sweep_workloads(_sweep_args(), train, queries)
    assert [size for size, _, _ in workloads] == [75, 150, 300, 600, 1200]
    largest = workloads[-1][1]
    assert largest.dtype == np.float32 and largest.shape == (1200, 5)
    for size, sweep_train, sweep_queries in workloads:
        assert sweep_queries is queries
        np.testing.assert_array_equal(sweep_train, largest[:size])  # every size extends the smaller ones
    np.testing.assert_array_equal(largest[:300], train)  # the given rows, then new synthetic ones
    assert not np.isin(largest[300:], train).any()
    again = compare.sweep_workloads(_sweep_args(), train, queries)[-1][1]
    np.testing.assert_array_equal(again, largest)  # the same seed, the same rows


def test_sweep_spans_below_and_above_the_given_query_count():
    rng = np.random.default_rng(0)
    train, queries = rng.standard_normal((300, 5)), rng.standard_normal((40, 5))
    workloads = compare.sweep_workloads(_sweep_args(sweep="n_query"), train, queries)
    assert [size for size, _, _ in workloads] == [10, 20, 40, 80, 160]
    for size, sweep_train, sweep_queries in workloads:
        assert sweep_train is train and sweep_queries.shape == (size, 5)
    np.testing.assert_array_equal(workloads[2][2], queries)


def test_sweep_on_data_resamples_its_rows(tmp_path):
    data = np.arange(60.0).reshape(20, 3)
    workloads = compare.sweep_workloads(_sweep_args(data=tmp_path / "d.npy"), data, data[:5])
    assert [size for size, _, _ in workloads] == [5, 10, 20, 40, 80]
    largest = workloads[-1][1]
    np.testing.assert_array_equal(largest[:20], data)
    assert {tuple(row) for row in largest[20:]} <= {tuple(row) for row in data}  # drawn again from the file


def test_data_file(tmp_path, capsys):
    path = tmp_path / "train.npz"
    np.savez(path, X=np.random.default_rng(0).standard_normal((200, 3)))
    assert (
        main(["compare", "--data", str(path), "--n-query", "20", "-k", "3", "--repeats", "1", "--backends", "numpy"])
        == 0
    )
    assert "train.npz" in capsys.readouterr().out


@pytest.mark.parametrize("header", ["x,y,z\n", ""], ids=["header", "no-header"])
def test_data_csv(tmp_path, header):
    values = np.random.default_rng(0).standard_normal((30, 3))
    path = tmp_path / "train.csv"
    path.write_text(header + "\n".join(",".join(repr(float(v)) for v in row) for row in values) + "\n")
    np.testing.assert_array_equal(compare.read_data(path), values)
    json_path = tmp_path / "r.json"
    arguments = ["compare", "--data", str(path), "--n-query", "5", "-k", "3", "--repeats", "1"]
    assert main([*arguments, "--backends", "numpy", "--json", str(json_path)]) == 0
    workload = json.loads(json_path.read_text())[0]["workload"]
    assert (workload["n_train"], workload["dim"]) == (30, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--n-train", "0"], "--n-train must be a positive integer"),
        (["-k", "0"], "error: -k must be a positive integer"),  # the option as typed, not "--k"
        (["--backends", "numpy,tpu"], "unknown"),
        (["-k", "500", "--n-train", "100"], "larger than --n-train"),
        (["--data", "/no/such/file.npy"], "no such file"),
        (["--sweep", "n_train"], "give --plot"),
        (["--dtype", "float16"], "invalid choice"),
        (["--plot", "/no/such/folder/chart.png"], "--plot /no/such/folder/chart.png: the folder /no/such/folder does"),
    ],
)
def test_bad_arguments_exit_2(arguments, message, capsys):
    assert _exit_status(["compare", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_plot_into_a_missing_folder_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "charts"
    assert _exit_status([*TINY, "--plot", str(missing / "c.png")]) == 2
    assert f"the folder {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.txt", "1,2\n3,4\n", "cannot read '.txt' files; give a .npy or .npz NumPy file or a .csv file"),
        ("train", "1,2\n", "cannot read 'a file without a suffix' files"),
        ("train.csv", "a,b\n1,2\n3,oops\n", "not a numeric comma-separated table"),
        ("train.csv", "\n", "the first line is empty"),
        ("train.npy", "1,2\n3,4\n", "cannot read it as a NumPy .npy file"),
    ],
    ids=["txt", "no-suffix", "csv-text-cell", "csv-empty", "npy-that-is-text"],
)
def test_unreadable_data_says_what_is_accepted(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    assert _exit_status(["compare", "--data", str(path), "-k", "1", "--backends", "numpy"]) == 2
    assert message in capsys.readouterr().err


def test_subprocess_prints_table():
    result = subprocess.run(
        [sys.executable, "-m", "knn_gpu", *TINY, "--backends", "numpy,array_api_strict"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert all(header in result.stdout for header in HEADERS) and "numpy" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("fastest: ")


def test_distance_tolerance_follows_the_dtype_a_row_computed_in():
    row = {"agreement": 1.0, "max_distance_difference": 1e-6}
    records = [dict(row, backend="faiss", dtype="float32"), dict(row, backend="torch", dtype="float64")]
    assert compare.disagreements(records, 0.999, "float64") == ["torch: distances differ by 1e-06"]
