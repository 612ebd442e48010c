"""``knn-gpu compare`` in-process and as a subprocess, on a tiny workload."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rich")

from knn_gpu import compare
from knn_gpu.cli import main

TINY = ["compare", "--n-train", "300", "--n-query", "40", "--dim", "5", "-k", "4", "--repeats", "1"]


def test_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    json_path, png_path = tmp_path / "out.json", tmp_path / "out.png"
    backends = "numpy,array_api_strict,torch,sklearn"
    status = main(
        [*TINY, "--backends", backends, "--json", str(json_path), "--plot", str(png_path), "--sweep", "n_train"]
    )
    output = capsys.readouterr().out
    assert status == 0, output
    assert "queries/s" in output and "array_api_strict" in output
    records = json.loads(json_path.read_text())
    names = [record["backend"] for record in records]
    assert names == backends.split(",")
    for record in records:
        for field in ("backend", "device", "seconds", "speedup_vs_numpy", "agreement", "workload", "machine"):
            assert field in record
        assert record["workload"]["n_train"] == 300 and record["machine"]["cores"] >= 1
    by_name = {record["backend"]: record for record in records}
    torch_ok = by_name["torch"]["status"] == "ok"
    assert by_name["numpy"]["agreement"] == by_name["array_api_strict"]["agreement"] == 1.0
    if torch_ok:
        assert by_name["torch"]["agreement"] == 1.0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forced_disagreement_exits_non_zero(monkeypatch, capsys):
    real = compare._search_on_backend

    def corrupted(name, train, queries, k):
        runner, device = real(name, train, queries, k)
        if name != "array_api_strict":
            return runner, device

        def wrong():
            distances, indices = runner()
            return distances, np.flip(compare.to_host(indices), axis=1)

        return wrong, device

    monkeypatch.setattr(compare, "_search_on_backend", corrupted)
    assert main([*TINY, "--backends", "numpy,array_api_strict"]) == 1
    assert "disagreement" in capsys.readouterr().out


def test_failing_backend_is_reported_and_others_run(monkeypatch, capsys, tmp_path):
    real = compare._search_on_backend

    def broken(name, train, queries, k):
        if name == "array_api_strict":
            raise RuntimeError("simulated driver failure")
        return real(name, train, queries, k)

    monkeypatch.setattr(compare, "_search_on_backend", broken)
    json_path = tmp_path / "r.json"
    assert main([*TINY, "--backends", "numpy,array_api_strict", "--json", str(json_path)]) == 0
    records = {r["backend"]: r for r in json.loads(json_path.read_text())}
    assert records["array_api_strict"]["status"] == "failed"
    assert "simulated driver failure" in records["array_api_strict"]["reason"]
    assert records["numpy"]["status"] == "ok"


def test_data_file(tmp_path, capsys):
    path = tmp_path / "train.npz"
    np.savez(path, X=np.random.default_rng(0).standard_normal((200, 3)))
    assert (
        main(["compare", "--data", str(path), "--n-query", "20", "-k", "3", "--repeats", "1", "--backends", "numpy"])
        == 0
    )
    assert "train.npz" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--n-train", "0"], "--n-train must be a positive integer"),
        (["--backends", "numpy,tpu"], "unknown"),
        (["-k", "500", "--n-train", "100"], "larger than --n-train"),
        (["--data", "/no/such/file.npy"], "no such file"),
        (["--sweep", "n_train"], "give --plot"),
        (["--dtype", "float16"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(arguments, message):
    result = subprocess.run([sys.executable, "-m", "knn_gpu", "compare", *arguments], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr


def test_subprocess_prints_table():
    result = subprocess.run(
        [sys.executable, "-m", "knn_gpu", *TINY, "--backends", "numpy,array_api_strict"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "queries/s" in result.stdout and "numpy" in result.stdout
