"""Bad input: every mistake a user can make gives one clear line (a UserError), never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import main_dcgan
import main_gan
import main_vae
from helpers import Tiny, cli_args, run_main_in_process, run_script
from models import VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from trainers import train_gan, train_vae
from utils import UserError, load_model, run_cli, save_model

Case = Callable[[Tiny, Path, pytest.MonkeyPatch], Callable[[], object]]


def gan(dataset: dict | None = None, model: dict | None = None, **trainer) -> Case:
    def build(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
        kwargs = tiny.gan(tmp / "out", {"max_samples": 16, **(dataset or {})}, model, **{"num_epochs": 1, **trainer})
        return lambda: train_gan(FCGenerator, FCDiscriminator, *kwargs)

    return build


def dcgan(dataset: dict | None = None, model: dict | None = None, **trainer) -> Case:
    def build(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
        kwargs = tiny.dcgan(tmp / "out", dataset, model, **{"num_epochs": 1, **trainer})
        return lambda: train_gan(DCGANGenerator, DCGANDiscriminator, *kwargs)

    return build


def vae(dataset: dict | None = None, model: dict | None = None, **trainer) -> Case:
    def build(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
        kwargs = tiny.vae(tmp / "out", {"max_samples": 16, **(dataset or {})}, model, **{"num_epochs": 1, **trainer})
        return lambda: train_vae(VAE, *kwargs, "mnist_model_kwargs")

    return build


def output_dir_is_a_file(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    (tmp / "taken").write_text("not a folder")
    return gan(output_dir=str(tmp / "taken"))(tiny, tmp, monkeypatch)


def output_dir_below_a_file(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    (tmp / "taken").write_text("not a folder")
    return gan(output_dir=str(tmp / "taken" / "run"))(tiny, tmp, monkeypatch)


def data_missing(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    (tmp / "no_data").mkdir()
    return vae(dataset={"root": str(tmp / "no_data")})(tiny, tmp, monkeypatch)


def cuda_missing(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return gan(device="cuda")(tiny, tmp, monkeypatch)


def resumed_with(change: Callable[[tuple], None]) -> Case:
    """Train one epoch, then try to continue it in the same output_dir with one key changed."""

    def build(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
        kwargs = tiny.gan(tmp / "out", {"max_samples": 16}, num_epochs=1)
        train_gan(FCGenerator, FCDiscriminator, *kwargs)
        kwargs[2]["num_epochs"] = 2
        change(kwargs)
        return lambda: train_gan(FCGenerator, FCDiscriminator, *kwargs)

    return build


def resume_from_garbage(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    (tmp / "out").mkdir()
    (tmp / "out" / "checkpoint.pt").write_bytes(b"\x00garbage" * 50)
    return gan()(tiny, tmp, monkeypatch)


def resume_from_weights_file(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
    save_model(FCGenerator(8, 32), tmp / "generator.pt")
    return gan(resume=str(tmp / "generator.pt"))(tiny, tmp, monkeypatch)


def _load(path_of: Callable[[Path], Path], kinds: tuple[str, ...] | None = None) -> Case:
    def build(tiny: Tiny, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], object]:
        path = path_of(tmp)
        return lambda: load_model(path, kinds=kinds)

    return build


def _weights_file(tmp: Path) -> Path:
    save_model(FCDiscriminator(discriminator_hidden_size=16), tmp / "discriminator.pt")
    return tmp / "discriminator.pt"


def _corrupt_file(tmp: Path) -> Path:
    path = _weights_file(tmp)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a torn download or copy
    return path


def _foreign_dict(tmp: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, tmp / "other.pt")
    return tmp / "other.pt"


def _foreign_tensor(tmp: Path) -> Path:
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    return tmp / "tensor.pt"


def _text_file(tmp: Path) -> Path:
    (tmp / "notes.pt").write_text("these are not weights\n")
    return tmp / "notes.pt"


def _bad_kwargs(tmp: Path) -> Path:
    g = FCGenerator(8, 16)
    torch.save({"kind": "FCGenerator", "kwargs": {"bogus": 1}, "state_dict": g.state_dict()}, tmp / "g.pt")
    return tmp / "g.pt"


def _other_shapes(tmp: Path) -> Path:
    g = FCGenerator(8, 16)
    torch.save(
        {"kind": "FCGenerator", "kwargs": {**g.config, "generator_hidden_size": 32}, "state_dict": g.state_dict()},
        tmp / "g.pt",
    )
    return tmp / "g.pt"


CASES = [
    # unknown keys, with a did-you-mean
    pytest.param(
        gan(num_epoch=1),
        r"unknown key 'num_epoch' in trainer_kwargs: did you mean 'num_epochs'\?",
        id="unknown_trainer_key",
    ),
    pytest.param(
        gan(model={"generator_hidden": 8}),
        r"'generator_hidden' in model_kwargs: did you mean 'generator_hidden_size'",
        id="unknown_model_key",
    ),
    pytest.param(
        vae(model={"latent_dims": 4}),
        r"'latent_dims' in mnist_model_kwargs: did you mean 'latent_dim'",
        id="unknown_vae_key",
    ),
    pytest.param(
        gan(dataset={"batchsize": 8}),
        r"'batchsize' in dataset_kwargs: did you mean 'batch_size'",
        id="unknown_dataset_key",
    ),
    pytest.param(
        gan(zzzz=1), r"unknown key 'zzzz' in trainer_kwargs: known keys: num_epochs, ", id="unknown_key_no_match"
    ),
    # wrong types
    pytest.param(
        gan(dataset={"batch_size": "16"}), r"dataset_kwargs\['batch_size'\] must be int, got '16'", id="str_for_int"
    ),
    pytest.param(gan(num_epochs=2.5), r"trainer_kwargs\['num_epochs'\] must be int, got 2.5", id="float_for_int"),
    pytest.param(
        gan(model={"generator_hidden_size": True}),
        r"\['generator_hidden_size'\] must be int, got True",
        id="bool_for_int",
    ),
    pytest.param(gan(dataset={"shuffle": "yes"}), r"\['shuffle'\] must be bool, got 'yes'", id="str_for_bool"),
    pytest.param(vae(lr="fast"), r"\['lr'\] must be float, got 'fast'", id="str_for_float"),
    # non-positive numbers
    pytest.param(gan(dataset={"batch_size": 0}), r"batch_size must be positive, got 0", id="zero_batch_size"),
    pytest.param(vae(dataset={"batch_size": -4}), r"batch_size must be positive, got -4", id="negative_batch_size"),
    pytest.param(gan(num_epochs=0), r"\['num_epochs'\] must be positive, got 0", id="zero_epochs"),
    pytest.param(gan(generator_lr=-1e-4), r"\['generator_lr'\] must be positive", id="negative_generator_lr"),
    pytest.param(gan(discriminator_lr=0.0), r"\['discriminator_lr'\] must be positive", id="zero_discriminator_lr"),
    pytest.param(vae(lr=0.0), r"\['lr'\] must be positive", id="zero_vae_lr"),
    pytest.param(vae(lr=float("nan")), r"\['lr'\] must be positive, got nan", id="nan_lr"),
    pytest.param(vae(sample_every=0), r"\['sample_every'\] must be positive", id="zero_sample_every"),
    pytest.param(
        gan(model={"generator_hidden_size": 0}),
        r"model_kwargs\['generator_hidden_size'\] must be positive",
        id="zero_hidden_size",
    ),
    pytest.param(
        vae(model={"latent_dim": -3}), r"mnist_model_kwargs\['latent_dim'\] must be positive", id="negative_latent"
    ),
    pytest.param(dcgan(model={"feature_maps": 0}), r"\['feature_maps'\] must be positive", id="zero_feature_maps"),
    pytest.param(gan(dataset={"max_samples": 0}), r"max_samples must be positive", id="zero_max_samples"),
    pytest.param(gan(dataset={"num_workers": -1}), r"num_workers must be 0 or more", id="negative_num_workers"),
    # values out of range
    pytest.param(gan(model={"discriminator_dropout": 1.5}), r"model_kwargs: .*dropout.*1\.5", id="dropout_above_one"),
    pytest.param(gan(beta1=1.5), r"beta1", id="beta1_above_one"),
    pytest.param(gan(label_smoothing=1.5), r"label_smoothing", id="label_smoothing_above_one"),
    pytest.param(gan(ema_decay=1.0), r"ema_decay.*\[0, 1\)", id="ema_decay_one"),
    pytest.param(dcgan(model={"image_channels": 2}), r"image_channels", id="image_channels_2"),
    pytest.param(vae(dataset={"normalize": True}), r"normalize", id="vae_with_normalized_targets"),
    # sizes the models cannot take
    pytest.param(
        gan(model={"image_size": 780}),
        r"model_kwargs: image_size must be a square number.*780",
        id="fc_non_square_image",
    ),
    pytest.param(
        vae(model={"image_size": 785}), r"mnist_model_kwargs: image_size must be a square", id="vae_non_square_image"
    ),
    pytest.param(
        dcgan(model={"image_size": 48}), r"image_size must be a power of two.*48", id="dcgan_not_power_of_two"
    ),
    # data, devices, folders
    pytest.param(
        gan(dataset={"dataset_type": "imagenet"}),
        r"unknown dataset_type 'imagenet': use one of mnist",
        id="bad_dataset_type",
    ),
    pytest.param(gan(dataset={"classes": [42]}), r"unknown class 42", id="unknown_class"),
    pytest.param(
        data_missing, r"mnist not found in '.*no_data/MNIST/raw' and the download failed", id="data_missing_offline"
    ),
    pytest.param(
        dcgan(dataset={"root": "/nonexistent/imgs"}),
        r"image folder '/nonexistent/imgs' not found",
        id="image_folder_missing",
    ),
    pytest.param(gan(device="banana"), r"unknown device 'banana'", id="bad_device"),
    pytest.param(cuda_missing, r"device 'cuda' asked for, but CUDA is not available", id="cuda_missing"),
    pytest.param(gan(device="xpu"), r"'xpu'", id="device_not_built_in"),
    pytest.param(output_dir_is_a_file, r"output_dir '.*taken' is a file", id="output_dir_is_a_file"),
    pytest.param(output_dir_below_a_file, r"cannot write to output_dir '.*taken/run'", id="output_dir_below_a_file"),
    pytest.param(gan(output_dir=""), r"output_dir is empty", id="empty_output_dir"),
    # resuming
    pytest.param(
        gan(resume="/nonexistent/checkpoint.pt"),
        r"resume checkpoint '/nonexistent/checkpoint.pt' not found",
        id="resume_path_missing",
    ),
    pytest.param(
        resume_from_garbage,
        r"cannot read checkpoint '.*checkpoint.pt' \(truncated, corrupt or not a PyTorch file\)",
        id="resume_garbage",
    ),
    pytest.param(
        resume_from_weights_file, r"is not a training checkpoint of this repository", id="resume_from_weights_file"
    ),
    pytest.param(
        resumed_with(lambda k: k[0].update(generator_hidden_size=48)),
        r"trained with generator_hidden_size=32, now generator_hidden_size=48",
        id="resume_changed_architecture",
    ),
    pytest.param(
        resumed_with(lambda k: k[1].update(batch_size=8)),
        r"trained with batch_size=16, now batch_size=8",
        id="resume_changed_batch_size",
    ),
    pytest.param(
        resumed_with(lambda k: k[2].update(generator_lr=1e-3)),
        r"trained with generator_lr=0.0002, now generator_lr=0.001",
        id="resume_changed_lr",
    ),
    # weights files
    pytest.param(
        _load(lambda tmp: tmp / "nope.pt"), r"weights file '.*nope.pt' not found: train first", id="weights_missing"
    ),
    pytest.param(_load(lambda tmp: Path("")), r"no weights file given", id="weights_path_empty"),
    pytest.param(_load(lambda tmp: tmp), r"is a folder: point at a .pt file", id="weights_is_a_folder"),
    pytest.param(
        _load(_corrupt_file),
        r"cannot read weights file '.*discriminator.pt' \(truncated, corrupt",
        id="weights_truncated",
    ),
    pytest.param(_load(_text_file), r"cannot read weights file '.*notes.pt'", id="weights_text_file"),
    pytest.param(_load(_foreign_dict), r"is not model weights written by this repository", id="weights_foreign_dict"),
    pytest.param(
        _load(_foreign_tensor), r"is not a checkpoint written by this repository", id="weights_foreign_tensor"
    ),
    pytest.param(
        _load(_weights_file, kinds=("FCGenerator", "DCGANGenerator")),
        r"holds a FCDiscriminator, but this needs a FCGenerator or DCGANGenerator",
        id="weights_wrong_kind",
    ),
    pytest.param(
        _load(_bad_kwargs), r"has constructor kwargs that FCGenerator does not accept", id="weights_bad_kwargs"
    ),
    pytest.param(_load(_other_shapes), r"does not fit FCGenerator: keys of another shape", id="weights_other_shapes"),
]


@pytest.mark.parametrize(("build", "pattern"), CASES)
def test_bad_input_is_one_clear_line(
    build: Case, pattern: str, tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = build(tiny, tmp_path, monkeypatch)
    with pytest.raises(UserError, match=pattern) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and len(message) < 400


def test_resume_error_leaves_the_checkpoint_alone(tiny: Tiny, tmp_path: Path) -> None:
    kwargs = tiny.gan(tmp_path, {"max_samples": 16}, num_epochs=1)
    train_gan(FCGenerator, FCDiscriminator, *kwargs)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    kwargs[0]["generator_hidden_size"] = 48
    kwargs[2]["num_epochs"] = 2
    with pytest.raises(UserError):
        train_gan(FCGenerator, FCDiscriminator, *kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------------------- as the scripts report them


@pytest.mark.parametrize(
    ("module", "extra", "fragment"),
    [
        (main_gan, ["--batch-size", "0"], "batch_size must be positive"),
        (main_gan, ["--dataset-type", "svhn"], "unknown dataset_type 'svhn'"),
        (main_vae, ["--device", "gpu"], "unknown device 'gpu'"),
        (main_dcgan, ["--image-size", "40"], "power of two"),
        (main_dcgan, ["--classes", "[7]"], "unknown class 7"),
    ],
)
def test_run_cli_prints_one_error_line_and_exits_2(
    module, extra: list[str], fragment: str, tiny: Tiny, tmp_path: Path, capsys, monkeypatch
) -> None:
    maker = {main_gan: tiny.gan, main_vae: tiny.vae, main_dcgan: tiny.dcgan}[module]
    argv = [*cli_args(*maker(tmp_path / "out", num_epochs=1)), *extra]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: run_main_in_process(module, argv, monkeypatch))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err


@pytest.mark.parametrize("case", ["data_missing", "garbled_checkpoint"])
def test_script_subprocess_error_is_one_line_without_traceback(case: str, tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if case == "data_missing":
        # Really tries to download (through a dead proxy: no network is ever reached) and fails.
        (tmp_path / "empty").mkdir()
        model, dataset, trainer = tiny.vae(out, {"root": str(tmp_path / "empty")})
        script, fragment = "main_vae.py", f"not found in '{tmp_path / 'empty' / 'MNIST' / 'raw'}'"
    else:
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn" * 10)
        model, dataset, trainer = tiny.dcgan(out)
        script, fragment = "main_dcgan.py", "cannot read checkpoint"
    result = run_script(script, *cli_args(model, dataset, trainer), timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    if case == "garbled_checkpoint":
        assert (out / "checkpoint.pt").read_bytes() == b"PK\x03\x04 torn" * 10
