"""benchmarks/speed.py on tiny data with the shortest settings: it runs and prints its tables."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from helpers import REPO


def test_speed_benchmark_prints_its_tables(
    mnist: types.SimpleNamespace, image_folder: Path, capsys, monkeypatch
) -> None:
    spec = importlib.util.spec_from_file_location("speed_benchmark", REPO / "benchmarks" / "speed.py")
    benchmark = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, benchmark)  # as `import` would: dataclasses look it up
    spec.loader.exec_module(benchmark)
    benchmark.main(
        ["--root", str(mnist.root), "--cifar-root", str(image_folder), "--models", "gan,vae,dcgan", "--repeats", "1"]
        + ["--seconds", "0.001", "--batch-sizes", "16", "--no-amp", "--threads", "1"]
    )
    out = capsys.readouterr().out
    for heading in ("ours against a tutorial loop", "What the batch size costs", "A full run"):
        assert heading in out
    rows = [line for line in out.splitlines() if line.startswith(("| gan |", "| vae |", "| dcgan |"))]
    assert len(rows) == 9  # each model: comparison, batch size, full run
    assert rows[0].endswith("x |")  # the ratio column
    assert "| vae | 16 |" in out  # the SPEC's VAE batch, not the one main_vae.py ships
    assert "One full MNIST epoch of the FC GAN" in out


def test_oneclass_benchmark_trains_each_class_and_prints_its_auroc_table(
    mnist: types.SimpleNamespace, tmp_path: Path, capsys
) -> None:
    spec = importlib.util.spec_from_file_location("oneclass_benchmark", REPO / "benchmarks" / "oneclass.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    argv = ["--root", str(mnist.root), "--datasets", "mnist", "--classes", "0,3", "--epochs", "1"]
    results = benchmark.main([*argv, "--output-dir", str(tmp_path), "--device", "cpu"])
    assert set(results["mnist"]) == {"0", "3"}
    for row in results["mnist"].values():
        assert set(row) == {"reconstruction", "elbo", "nll", "spec", "seconds"}
        assert all(0 <= row[score] <= 100 for score in ("reconstruction", "elbo", "nll", "spec"))
    out = capsys.readouterr().out
    assert "| **mean** |" in out and "`nll`" in out and "SPEC's BCE" in out
    assert (tmp_path / "oneclass.md").read_text().count("\n| 3 |") == 1
    # Each class is the user's flow: a VAE trained on that digit only, then the detection script's files.
    assert (tmp_path / "mnist" / "3" / "vae.pt").is_file()
    assert (tmp_path / "mnist" / "3" / "nll" / "anomaly_summary.json").is_file()
