"""benchmarks/speed.py on tiny data with the shortest settings: it runs and prints its tables."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

from helpers import REPO


def _load(name: str, monkeypatch=None) -> types.ModuleType:
    """benchmarks/<name>.py as a module (its folder is not a package the tests import from)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if monkeypatch is not None:  # as `import` would: dataclasses look the module up
        monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_speed_benchmark_prints_its_tables(
    mnist: types.SimpleNamespace, image_folder: Path, capsys, monkeypatch
) -> None:
    benchmark = _load("speed", monkeypatch)
    benchmark.main(
        ["--root", str(mnist.root), "--cifar-root", str(image_folder), "--models", "gan,vae,dcgan", "--repeats", "1"]
        + ["--seconds", "0.001", "--batch-sizes", "16", "--no-amp", "--threads", "1"]
        + ["--processes", "1", "--epoch-processes", "1"]
    )
    out = capsys.readouterr().out
    for heading in ("ours against a tutorial loop", "What the batch size costs", "A full run", "start to end"):
        assert heading in out
    # The whole processes: each script's 1-step run with its loop and metrics, and the full epoch's ratio.
    short = [line for line in out.splitlines() if "--max-samples 16" in line]
    assert len(short) == 3 and all(line.count("|") == 6 for line in short)
    assert "| `main_gan` |" in out and re.search(r"ours is [\d.]+x faster as a whole process", out)
    rows = [line for line in out.splitlines() if line.startswith(("| gan |", "| vae |", "| dcgan |"))]
    assert len(rows) == 9  # each model: comparison, batch size, full run
    assert rows[0].endswith("x |")  # the ratio column
    assert "| vae | 16 |" in out  # the SPEC's VAE batch, not the one main_vae.py ships
    assert "One full MNIST epoch of the FC GAN" in out


def test_oneclass_benchmark_trains_each_class_and_prints_its_auroc_table(
    mnist: types.SimpleNamespace, tmp_path: Path, capsys
) -> None:
    benchmark = _load("oneclass")
    argv = ["--root", str(mnist.root), "--datasets", "mnist", "--classes", "0,3", "--epochs", "1"]
    results = benchmark.main(
        [*argv, "--variants", "fc,conv:logistic", "--output-dir", str(tmp_path), "--device", "cpu"]
    )
    assert set(results) == {"mnist fc", "mnist conv:logistic"}
    for rows in results.values():
        assert set(rows) == {"0", "3"}
        for row in rows.values():
            assert all(0 <= row[score] <= 100 for score in benchmark.COLUMNS)
    assert all("test_nll_iw_bpd" in row for row in results["mnist conv:logistic"].values())  # a discrete likelihood
    out = capsys.readouterr().out
    assert "| **mean** |" in out and "`nll`" in out and "no entropy correction" in out and "bits/dim" in out
    assert (tmp_path / "oneclass.md").read_text().count("\n| 3 |") == 2
    # Each class is the user's flow: a VAE trained on that digit only, then the detection script's files.
    assert (tmp_path / "mnist" / "conv_logistic" / "3" / "vae.pt").is_file()
    assert (tmp_path / "mnist" / "fc" / "3" / "nll" / "anomaly_summary.json").is_file()


def test_small_data_benchmark_trains_each_augment_at_each_seed_and_prints_its_tables(
    mnist: types.SimpleNamespace, tmp_path: Path, capsys
) -> None:
    benchmark = _load("small_data")
    argv = ["--root", str(mnist.root), "--runs", "gan_1000", "--epochs", "2", "--eval-every", "1", "--threads", "1"]
    augments = "none,ada,diffaugment:translation+flip@lecam_weight=0.1"
    benchmark.main([*argv, "--augments", augments, "--seeds", "0,1", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| gan_1000 (")]
    assert len(rows) == 12  # each run as it ends, then the table
    assert "| diffaugment:translation+flip@lecam_weight=0.1 | 1 |" in out
    assert sum(line.startswith("| gan_1000 | none | 0,1 |") for line in out.splitlines()) == 1  # mean over seeds
    assert out.count("| none | 0 |") == 2 and out.count("| none | 1 |") == 2  # every none is 1.00 of its own seed
    assert all("| 1.00 |" in line for line in rows if "| none |" in line)
    config = json.loads(
        (tmp_path / "gan_1000_diffaugment_translation_flip_lecam_weight_0.1_seed1" / "config.json").read_text()
    )
    trainer = config["trainer"]
    assert trainer["augment_policy"] == "translation,flip" and trainer["lecam_weight"] == 0.1 and trainer["seed"] == 1
    assert (tmp_path / "gan_1000_fd.png").is_file() and (tmp_path / "small_data.md").read_text().count(
        "| gan_1000 ("
    ) == 6
