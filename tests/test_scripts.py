"""The main scripts as a user runs them: subprocesses with CLI overrides, --help, and flag parsing."""

from __future__ import annotations

import copy
import gc
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import detect_vae_anamolies
import main_dcgan
import main_gan
import main_vae
from helpers import (
    GAN_COLUMNS,
    REPO,
    VAE_COLUMNS,
    Tiny,
    cli_args,
    read_csv,
    run_main_in_process,
    run_script,
    script_env,
)
from trainers import GANTrainer, VAETrainer
from utils import UserError, check_kwargs, key_comments, load_model, parse_overrides, run_cli

SCRIPTS = {"main_gan.py": main_gan, "main_dcgan.py": main_dcgan, "main_vae.py": main_vae}


def _tiny_cli(tiny: Tiny, script: str, out: Path) -> list[str]:
    maker = {"main_gan.py": tiny.gan, "main_dcgan.py": tiny.dcgan, "main_vae.py": tiny.vae}[script]
    return cli_args(*maker(out, num_epochs=2))


@pytest.mark.parametrize(
    ("script", "files", "columns", "model_file", "kind"),
    [
        ("main_gan.py", ["generator.pt", "discriminator.pt"], GAN_COLUMNS, "generator.pt", "FCGenerator"),
        ("main_dcgan.py", ["generator.pt", "discriminator.pt"], GAN_COLUMNS, "generator.pt", "DCGANGenerator"),
        ("main_vae.py", ["vae.pt", "reconstruction_epoch_2.png"], VAE_COLUMNS, "vae.pt", "VAE"),
    ],
)
def test_script_trains_and_writes_outputs(
    tiny: Tiny, tmp_path: Path, script: str, files: list[str], columns: list[str], model_file: str, kind: str
) -> None:
    out = tmp_path / "out"
    result = run_script(script, *_tiny_cli(tiny, script, out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "epoch 2/2" in result.stdout
    for name in ["generated_image_epoch_1.png", "generated_image_epoch_2.png", "train_loss_curve_2.png", *files]:
        assert (out / name).is_file(), name
    names, rows = read_csv(out / "losses.csv")
    assert set(columns) <= set(names) and len(rows) == 2
    model = load_model(out / model_file)
    assert type(model).__name__ == kind
    # The CLI overrides reached the model: the tiny sizes, not the script's defaults.
    assert model.latent_dim == 8
    assert sum(p.numel() for p in model.parameters()) < 200_000


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_every_key_with_its_comment_and_default(
    script: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model and dataset keys: the script's own comment and value. Trainer keys: every key the trainer
    declares (trainers/keys.py), with its declared help, and the script's value where it sets one."""
    module = SCRIPTS[script]
    dicts = {name: value for name, value in vars(module).items() if name.endswith("_kwargs")}
    assert len(dicts) == 3
    comments = key_comments(module.__file__)
    assert {"root", "classes"} <= set(comments)  # the comments are read from the script itself
    with pytest.raises(SystemExit) as info:
        run_main_in_process(module, ["--help"], monkeypatch)
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    settings = (VAETrainer if module is main_vae else GANTrainer).Settings.declared()
    for dict_name, kwargs in dicts.items():
        assert dict_name in text
        options = {**{k: d.default for k, d in settings.items()}, **kwargs} if dict_name == "trainer_kwargs" else kwargs
        for key, default in options.items():
            assert f"--{key.replace('_', '-')}" in text
            meaning = settings[key].help if dict_name == "trainer_kwargs" else comments.get(key, "")
            assert f"{meaning} (default: {default!r})".strip() in text, key


def test_analysis_help_explains_the_paths_and_keys(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        detect_vae_anamolies.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    comments = key_comments(detect_vae_anamolies.__file__)
    assert f"--weights-path STR {comments['weights_path']}" in text
    for key, default in detect_vae_anamolies.anomaly_kwargs.items():
        assert f"{comments[key]} (default: {default!r})" in text, key


# The SPEC's key names (its kwargs dicts); the values are the user's to edit, so only the names are checked.
SPEC_KEYS = {
    main_gan: {
        "mnist_model_kwargs": {
            "latent_variable_size",
            "discriminator_hidden_size",
            "generator_hidden_size",
            "image_size",
        },
        "dataset_kwargs": {"dataset_type", "batch_size", "shuffle"},
        "trainer_kwargs": {"num_epochs", "generator_lr", "discriminator_lr", "output_dir"},
    },
    main_dcgan: {
        "model_kwargs": {"latent_dim", "feature_maps", "image_channels"},
        "dataset_kwargs": {"dataset_type", "batch_size", "shuffle"},
        "trainer_kwargs": {"num_epochs", "generator_lr", "discriminator_lr", "output_dir"},
    },
    main_vae: {
        "mnist_model_kwargs": {"hidden_size", "latent_dim", "image_size"},
        "dataset_kwargs": {"dataset_type", "batch_size", "shuffle", "normalize"},
        "trainer_kwargs": {"num_epochs", "lr", "output_dir"},
    },
}


@pytest.mark.parametrize("module", list(SPEC_KEYS), ids=lambda m: m.__name__)
def test_scripts_keep_the_spec_key_names_and_every_key_is_accepted(module) -> None:
    for dict_name, keys in SPEC_KEYS[module].items():
        assert keys <= set(getattr(module, dict_name)), dict_name
    # Every key of the dataset and trainer dicts is one their consumers take (the model dicts: the test above).
    from datasets import make_loader

    check_kwargs(dict(module.dataset_kwargs), make_loader, "dataset_kwargs")
    (VAETrainer if module is main_vae else GANTrainer).Settings.build(dict(module.trainer_kwargs))


# ---------------------------------------------------------------------------- parsing overrides


def _parse(argv: list[str]) -> dict:
    dicts = copy.deepcopy(
        {
            "model": main_gan.mnist_model_kwargs,
            "dataset": main_gan.dataset_kwargs,
            "trainer": {**main_gan.trainer_kwargs, "label_smoothing": 0.0},
        }
    )
    parse_overrides("test", dicts, argv)
    return dicts


def test_overrides_are_parsed_by_the_default_type() -> None:
    dicts = _parse(
        [
            "--generator-lr",
            "1",
            "--batch-size",
            "64",
            "--shuffle",
            "off",
            "--max-samples",
            "500",
            "--classes",
            "1,7",
            "--root",
            "123",
            "--output-dir",
            "runs/x y",
            "--label-smoothing",
            "0.1",
        ]
    )
    trainer, dataset = dicts["trainer"], dicts["dataset"]
    assert trainer["generator_lr"] == 1.0 and isinstance(trainer["generator_lr"], float)
    assert dataset["batch_size"] == 64 and dataset["shuffle"] is False
    assert dataset["max_samples"] == 500 and dataset["classes"] == [1, 7]
    assert dataset["root"] == "123" and trainer["output_dir"] == "runs/x y"
    assert trainer["label_smoothing"] == 0.1
    untouched = _parse([])
    assert untouched["dataset"] == main_gan.dataset_kwargs  # nothing given, nothing changed


def test_a_script_process_collects_neither_the_imports_objects_nor_at_exit() -> None:
    """A script's run_cli freezes the objects that exist when its main starts, and again before the interpreter's
    final collection (atexit runs the last registered first, so the check registered before run_cli sees what
    that collection would)."""
    check = "import atexit, gc; atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0))"
    main = "lambda: print('at start', gc.get_freeze_count() > 0)"
    code = f"{check}; from utils import run_cli; run_cli({main})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=script_env(), capture_output=True, text=True)
    assert result.stdout.split() == ["at", "start", "True", "at", "exit", "True"], result.stderr


def test_run_cli_called_in_another_program_freezes_nothing() -> None:
    """Frozen objects are never collected: a test or notebook calling run_cli keeps its garbage collectable."""
    before = gc.get_freeze_count()
    run_cli(lambda: None)
    assert gc.get_freeze_count() == before


@pytest.mark.parametrize("argv", [["--shuffle", "maybe"], ["--bogus-key", "1"], ["--batch-size"]])
def test_malformed_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(_parse, argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["False", "false"])
def test_resume_false_from_the_command_line_starts_over(
    value: str, tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scripts document `resume: False starts over`; from the CLI that must work too."""
    out = tmp_path / "run"
    args = cli_args(*tiny.gan(out, {"max_samples": 16}, num_epochs=1))
    run_main_in_process(main_gan, args, monkeypatch)
    # Another architecture in the same folder is refused with resume=auto ...
    with pytest.raises(UserError, match="generator_hidden_size"):
        run_main_in_process(main_gan, [*args, "--generator-hidden-size", "24"], monkeypatch)
    # ... and accepted, from scratch, with resume set to false.
    run_main_in_process(main_gan, [*args, "--generator-hidden-size", "24", "--resume", value], monkeypatch)
    assert load_model(out / "generator.pt").config["generator_hidden_size"] == 24


def test_class_names_from_the_command_line(tiny: Tiny, tmp_path: Path) -> None:
    """The scripts document classes as e.g. ["cat", "dog"]: `--classes cat,dog` must select those folders."""
    from datasets import make_loader

    dicts = {"dataset": dict(main_dcgan.dataset_kwargs, dataset_type="image_folder", root=str(tiny.folder_root))}
    parse_overrides("test", dicts, ["--classes", "blue_disc,red_square"])
    dataset = check_kwargs(dicts["dataset"], make_loader, "dataset_kwargs")
    loader = make_loader((3, 8, 8), "cpu", 0, True, **dataset)
    assert sorted(set(loader.labels.tolist())) == [0, 2]
    assert torch.all((loader.labels == 0) | (loader.labels == 2))
