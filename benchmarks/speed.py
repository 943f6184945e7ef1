"""Training speed of the three models: this project's trainers against a plain tutorial-style loop.

    python benchmarks/speed.py --root ../shared/data                 # a few minutes on 2 CPU cores
    python benchmarks/speed.py --root ../shared/data --repeats 9 --seconds 3 --models gan,vae

"Ours" is the project's own loop (Trainer._train_epoch with the trainers' train_step, data from
datasets.make_loader) at the SPEC's configurations (batch 16; the main scripts' kwargs dicts, except
that main_vae.py ships other values, measured as vae_shipped). The tutorial loop
is written below the way tutorials write it: a torchvision Dataset with ToTensor/Normalize, a
DataLoader, default Adam, full backward passes, a .item() per step; same models, same batch. Both
run with the same number of CPU threads and are measured alternately in one process (ours,
tutorial, tutorial, ours, ...); the tables give medians over the repetitions. On a machine shared
with other work the numbers move from run to run: compare the ratio, which both loops share.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchvision import transforms  # noqa: E402

import main_dcgan  # noqa: E402
import main_gan  # noqa: E402
import main_vae  # noqa: E402
from datasets import InMemoryLoader, make_loader  # noqa: E402
from models import VAE, VAE_ARCHITECTURES, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator  # noqa: E402
from trainers import GANTrainer, VAETrainer  # noqa: E402
from trainers.setup import build_models  # noqa: E402
from trainers.speed import amp_dtype  # noqa: E402
from trainers.vae import pick_architecture  # noqa: E402
from utils import pick_device, require, run_cli  # noqa: E402


@dataclass(frozen=True)
class Config:
    """A model as a main script trains it: the script's kwargs dicts, with `model` and `batch_size`
    overriding its own values; `epochs` and `images` make a full run."""

    script: ModuleType
    model_dict: str
    classes: tuple[type, ...]
    epochs: int
    images: int
    model: dict = field(default_factory=dict)
    batch_size: int | None = None

    def batch(self) -> int:
        return self.batch_size or self.script.dataset_kwargs["batch_size"]


# The SPEC's configurations. main_vae.py ships other values ("change, if required"): vae_shipped.
SPEC = {
    "gan": Config(main_gan, "mnist_model_kwargs", (FCGenerator, FCDiscriminator), 200, 60_000),
    "vae": Config(
        main_vae,
        "mnist_model_kwargs",
        (VAE,),
        50,
        60_000,
        model={"hidden_size": 1024, "latent_dim": 512, "num_hidden_layers": 1},
        batch_size=16,
    ),
    "vae_shipped": Config(main_vae, "mnist_model_kwargs", (VAE,), 50, 60_000),
    "dcgan": Config(main_dcgan, "model_kwargs", (DCGANGenerator, DCGANDiscriminator), 200, 50_000),
}


def build_models_of(kind: str) -> dict[str, torch.nn.Module]:
    config = SPEC[kind]
    torch.manual_seed(0)
    names = ("generator", "discriminator") if len(config.classes) == 2 else ("vae",)
    model_kwargs = {**getattr(config.script, config.model_dict), **config.model}
    classes = config.classes
    if "architecture" in model_kwargs:  # main_vae.py: the architecture it names, with that one's keys
        dataset = config.script.dataset_kwargs
        vae_class, model_kwargs = pick_architecture(VAE_ARCHITECTURES, model_kwargs, dataset, config.model_dict)
        classes = (vae_class,)
    return build_models(dict(zip(names, classes, strict=True)), model_kwargs, config.model_dict)


# ---------------------------------------------------------------------------- ours


class StepLimit:
    """A loader that ends each epoch after `steps` batches, so that _train_epoch runs a fixed number of steps."""

    def __init__(self, loader: InMemoryLoader, steps: int) -> None:
        self.loader, self.steps, self.batch_size = loader, steps, loader.batch_size

    def __len__(self) -> int:
        return self.steps

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        # A data set smaller than `steps` batches (a test's) goes round again, with the next epoch's order.
        rounds = (self.loader.batches(epoch * 1000 + i, start if i == 0 else 0) for i in itertools.count())
        return itertools.islice(itertools.chain.from_iterable(rounds), self.steps - start)


def build_ours(kind: str, loader: InMemoryLoader, device: torch.device, threads: int, workdir: str, **options):
    """A trainer as the main script builds it (its kwargs dicts, updated by `options`), on `loader`, not resuming."""
    script = SPEC[kind].script
    models = build_models_of(kind)
    trainer_kwargs = {**script.trainer_kwargs, "output_dir": workdir, "resume": False}
    trainer_kwargs.update(device=str(device), num_threads=threads, **options)
    if "vae" in models:
        return VAETrainer(models["vae"], loader, loader, {}, **trainer_kwargs)
    return GANTrainer(models["generator"], models["discriminator"], loader, {}, **trainer_kwargs)


def ours_runner(trainer, loader: InMemoryLoader) -> Callable[[int], None]:
    epochs = itertools.count(1)

    def run(steps: int) -> None:
        trainer.loader = StepLimit(loader, steps)
        trainer.step, trainer.partial_sums, trainer.curve = 0, {}, []
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            trainer._train_epoch(next(epochs))

    return run


# ---------------------------------------------------------------------------- the tutorial loop


def tutorial_data(kind: str, root: str, cifar_root: str, batch_size: int, workers: int) -> DataLoader:
    if kind == "dcgan":
        to_tensor = [transforms.Resize(32), transforms.CenterCrop(32), transforms.ToTensor()]
        dataset = torchvision.datasets.ImageFolder(
            cifar_root, transforms.Compose([*to_tensor, transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
        )
    else:
        steps = [transforms.ToTensor()] + ([transforms.Normalize((0.5,), (0.5,))] if kind == "gan" else [])
        dataset = torchvision.datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(steps))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def tutorial_runner(kind: str, data: DataLoader, device: torch.device) -> Callable[[int], None]:
    script = SPEC[kind].script
    models = build_models_of(kind)
    for model in models.values():
        model.to(device).train()
    batches = (batch for _ in itertools.count() for batch in data)  # epoch after epoch
    stats = {"running_loss": 0.0}

    if "vae" in models:
        vae = models["vae"]
        optimizer = torch.optim.Adam(vae.parameters(), lr=script.trainer_kwargs["lr"])

        def step(x: torch.Tensor) -> None:
            x = x.to(device)
            out = vae(x)
            recon = F.binary_cross_entropy_with_logits(out["logits"].flatten(1), x.view(len(x), -1), reduction="sum")
            kl = -0.5 * torch.sum(1 + out["logvar"] - out["mu"].pow(2) - out["logvar"].exp())
            loss = (recon + kl) / len(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stats["running_loss"] += loss.item()

    else:
        g, d = models["generator"], models["discriminator"]
        settings = GANTrainer.Settings.build(script.trainer_kwargs)  # the script's values and the defaults
        lr, real_label = settings.generator_lr, 1.0 - settings.label_smoothing
        opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
        criterion = torch.nn.BCEWithLogitsLoss()

        def step(real: torch.Tensor) -> None:
            real = real.to(device)
            n = real.size(0)
            noise = torch.randn(n, g.latent_dim, device=device)
            fake = g(noise)
            opt_d.zero_grad()
            loss_d = criterion(d(real), torch.full((n,), real_label, device=device)) + criterion(
                d(fake.detach()), torch.zeros(n, device=device)
            )
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = criterion(d(fake), torch.ones(n, device=device))
            loss_g.backward()
            opt_g.step()
            stats["running_loss"] += loss_d.item() + loss_g.item()

    def run(steps: int) -> None:
        for _ in range(steps):
            images, _labels = next(batches)
            step(images)

    return run


# ---------------------------------------------------------------------------- measuring


def timed(run: Callable[[int], None], steps: int, device: torch.device) -> float:
    began = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began


def calibrate(run: Callable[[int], None], device: torch.device, seconds: float) -> int:
    """Warm up, then the number of steps that takes about `seconds`."""
    run(2)
    per_step = timed(run, 3, device) / 3
    return max(2, round(seconds / per_step))


def measure_alternately(
    runners: dict[str, Callable[[int], None]], batch_size: int, device: torch.device, repeats: int, seconds: float
) -> dict[str, dict]:
    """Images/s of each runner, measured in turn (the order flips every repetition), median over repetitions."""
    steps = {name: calibrate(run, device, seconds) for name, run in runners.items()}
    rates: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for _ in range(repeats):
        for name in order:
            rates[name].append(steps[name] * batch_size / timed(runners[name], steps[name], device))
        order.reverse()
    return {
        name: {"images_s": statistics.median(r), "low": min(r), "high": max(r), "steps": steps[name]}
        for name, r in rates.items()
    }


class KernelCount(TorchDispatchMode):
    """Counts the operators a step dispatches that compute something (not views or allocations):
    on a GPU each is at least one kernel launch."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and not name.startswith("empty") and name not in ("detach", "_to_copy", "lift_fresh"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def work_per_step(trainer, loader: InMemoryLoader) -> tuple[float, int]:
    """(FLOPs, operators) of one training step of ours."""
    batch = next(loader.batches(0))
    with FlopCounterMode(display=False) as flops:
        trainer.train_step(batch)
    with KernelCount() as kernels:
        trainer.train_step(batch)
    return flops.get_total_flops(), kernels.count


# ---------------------------------------------------------------------------- report


def hours(epochs: int, images: int, images_s: float) -> float:
    return epochs * images / images_s / 3600


def machine(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores ({cpu}); {threads} torch thread(s); torch {torch.__version__}"


def machine_now(device: torch.device, seconds: float = 0.5) -> tuple[float, float]:
    """(GFLOP/s of a 512x512 float32 matmul, GB/s of copying 64 MB): how fast the machine is right
    now. A virtual machine's neighbours can take its cores, or its memory bandwidth, without any
    other sign inside it; the VAE at batch 16, whose Adam streams 3.2M parameters, feels the second."""
    a = torch.randn(512, 512, device=device)
    big, copy = torch.ones(2**24, device=device), torch.empty(2**24, device=device)
    rates = []
    for work, amount in ((lambda: a @ a, 2 * 512**3 / 1e9), (lambda: copy.copy_(big), 2 * big.nbytes / 1e9)):
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds / 2:
            work()
            count += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        rates.append(count * amount / (time.perf_counter() - began))
    return rates[0], rates[1]


# ---------------------------------------------------------------------------- whole processes


def wall_seconds(command: list[str], cwd: Path) -> float:
    """One process from start to exit, its output discarded; a failure stops the benchmark with its error."""
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    require(done.returncode == 0, f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def import_seconds(module: str) -> tuple[float, float]:
    """(importing `module`, of which torch) in seconds, from python -X importtime's cumulative column."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    cumulative = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            cumulative.setdefault(parts[2].strip(), int(parts[1]) / 1e6)  # the first: the top-level import
    return cumulative.get(module, float("nan")), cumulative.get("torch", 0.0)


def short_run_table(root: str, cifar_root: str, repeats: int) -> None:
    """A 1-step run of each main script, metrics included, beside `import torch, torchvision` (what no
    PyTorch program avoids), --help, and each script's import time."""
    work = Path(tempfile.mkdtemp(prefix="short_"))
    python = sys.executable
    folder = ["--dataset-type", "image_folder", "--root", cifar_root]
    commands = {
        'python -c "import torch, torchvision"': [python, "-c", "import torch, torchvision"],
        "python main_gan.py --help": [python, "main_gan.py", "--help"],
    }
    runs = {
        "main_gan.py": ["main_gan.py", "--root", root],
        "main_vae.py": ["main_vae.py", "--root", root],
        "main_dcgan.py": ["main_dcgan.py", *folder],
    }
    for script, argv in runs.items():
        short = ["--num-epochs", "1", "--max-samples", "16", "--resume", "false"]
        commands[f"python {script} --num-epochs 1 --max-samples 16"] = [python, *argv, *short]
    times: dict[str, list[float]] = {name: [] for name in commands}
    inside: dict[str, list[tuple[float, float]]] = {}
    for _ in range(repeats):  # alternately: the machine's drift touches every row alike
        for name, command in commands.items():
            out = work / str(abs(hash(name)))
            trains = "--max-samples" in name
            times[name].append(wall_seconds([*command, "--output-dir", str(out)] if trains else command, REPO))
            if "--max-samples" in name:
                loop = sum(float(row["seconds"]) for row in csv.DictReader(open(out / "losses.csv")))
                measured = out / "metrics.csv"  # none where the data set has no metrics (a folder without labels)
                metrics = (
                    [float(row["seconds"]) for row in csv.DictReader(open(measured))] if measured.is_file() else []
                )
                inside.setdefault(name, []).append((loop, metrics[-1] if metrics else 0.0))
    base = statistics.median(times['python -c "import torch, torchvision"'])
    print(f"\n## A short run from start to end\n\nmedian of {repeats} alternating runs (lowest-highest), in seconds; "
          "the last column divides by `import torch, torchvision`\n")  # fmt: skip
    print("| command | whole process | training loop | end-of-run metrics | x import torch, torchvision |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in times.items():
        loop = metrics = ""
        if name in inside:
            loop = f"{statistics.median(v[0] for v in inside[name]):.2f}"
            metrics = f"{statistics.median(v[1] for v in inside[name]):.2f}"
        median, spread = statistics.median(values), f"{min(values):.2f}-{max(values):.2f}"
        print(f"| `{name}` | {median:.2f} ({spread}) | {loop} | {metrics} | {median / base:.2f} |")
    print("\n| import | seconds | of which torch |\n| --- | --- | --- |")
    for module in ("main_gan", "main_dcgan", "main_vae", "generate", "detect_vae_anamolies", "latent_space_vae",
                   "latent_space_interpolation"):  # fmt: skip
        total, torch_part = import_seconds(module)
        print(f"| `{module}` | {total:.2f} | {torch_part:.2f} |")


def full_epoch_processes(root: str, repeats: int) -> None:
    """One full MNIST epoch of the FC GAN as a whole process, ours (main_gan.py, its end-of-run metrics
    included) and the tutorial loop's (benchmarks/tutorial_gan.py), alternately."""
    work = Path(tempfile.mkdtemp(prefix="epoch_"))
    ours_cmd = [sys.executable, "main_gan.py", "--root", root, "--num-epochs", "1", "--resume", "false"]
    tutorial_cmd = [sys.executable, "benchmarks/tutorial_gan.py", "--root", root, "--epochs", "1"]
    rows: dict[str, list[tuple[float, float]]] = {"ours": [], "tutorial": []}
    for i in range(repeats):
        out = work / f"ours_{i}"
        whole = wall_seconds([*ours_cmd, "--output-dir", str(out)], REPO)
        rows["ours"].append((whole, sum(float(r["seconds"]) for r in csv.DictReader(open(out / "losses.csv")))))
        began = time.perf_counter()
        done = subprocess.run(tutorial_cmd, cwd=REPO, capture_output=True, text=True)
        require(done.returncode == 0, f"the tutorial loop failed: {done.stderr.strip().splitlines()[-1:]}")
        loop = float(done.stdout.strip().splitlines()[-1].split()[-2])
        rows["tutorial"].append((time.perf_counter() - began, loop))
    print(f"\n## One full MNIST epoch of the FC GAN, whole process\n\n{repeats} alternating runs each, seconds "
          "(median, lowest-highest)\n")  # fmt: skip
    print("| | whole process | training loop | outside the loop |\n| --- | --- | --- | --- |")
    medians = {}
    for name, values in rows.items():
        whole, loop = (statistics.median(v[k] for v in values) for k in (0, 1))
        medians[name] = (whole, loop)
        spread = f"{min(v[0] for v in values):.1f}-{max(v[0] for v in values):.1f}"
        print(f"| {name} | {whole:.1f} ({spread}) | {loop:.1f} | {whole - loop:.1f} |")
    (ow, ol), (tw, tl) = medians["ours"], medians["tutorial"]
    print(f"\nours is {tw / ow:.2f}x faster as a whole process, {tl / ol:.2f}x in the training loop")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data"), help="folder holding MNIST/raw")
    parser.add_argument("--cifar-root", default=None, help="CIFAR-10 image folder (default: ROOT/cifar10/train)")
    parser.add_argument("--models", default="gan,vae,vae_shipped,dcgan", help=f"some of {','.join(SPEC)}")
    parser.add_argument("--repeats", type=int, default=5, help="alternating repetitions per measurement")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long one repetition runs")
    parser.add_argument("--batch-sizes", default="16,64,256", help="for the batch-size table; empty: skip it")
    parser.add_argument("--threads", default="auto", help="CPU threads for both loops: 'auto' (ours) or a number")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto, ...")
    parser.add_argument("--tutorial-workers", type=int, default=0, help="DataLoader workers of the tutorial loop")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure ours with amp=True (bf16), where the device has native bf16")  # fmt: skip
    parser.add_argument("--full-epoch", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one whole MNIST epoch of the FC GAN at batch 16 (ours)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=3,
                        help="runs of each whole-process timing (a 1-step run, --help); 0: skip")  # fmt: skip
    parser.add_argument("--epoch-processes", type=int, default=2,
                        help="whole-process runs of a full FC GAN epoch, ours and the tutorial's; 0: skip")  # fmt: skip
    parser.add_argument("--gpu-tflops", type=float, default=20.0,
                        help="for the GPU estimate of a CPU run: throughput reached on these small layers")  # fmt: skip
    parser.add_argument("--gpu-us-per-kernel", type=float, default=5.0,
                        help="for the GPU estimate of a CPU run: GPU time per operator of a step replayed as a "
                        "CUDA graph (5.4 us for the FC GAN on an H100)")  # fmt: skip
    args = parser.parse_args(argv)
    kinds = [k for k in args.models.split(",") if k]
    device = pick_device(args.device)
    cifar_root = args.cifar_root or str(Path(args.root) / "cifar10" / "train")
    threads = args.threads if args.threads == "auto" else int(args.threads)
    workdir = tempfile.mkdtemp(prefix="speed_")
    reference = [machine_now(device)]

    rows, batch_rows, work = [], [], {}
    for kind in kinds:
        config = SPEC[kind]
        dataset = dict(config.script.dataset_kwargs, root=args.root, batch_size=config.batch())
        if kind == "dcgan":
            dataset.update(dataset_type="image_folder", root=cifar_root)
        shape = (3, 32, 32) if kind == "dcgan" else (1, 28, 28)
        print(f"{kind}: loading data ...", file=sys.stderr)
        loader = make_loader(shape, device, 0, True, **{**dataset, "in_memory": True})
        ours = build_ours(kind, loader, device, threads, workdir)
        used = torch.get_num_threads()  # what ours chose: the tutorial gets the same
        tutorial = tutorial_runner(
            kind, tutorial_data(kind, args.root, cifar_root, loader.batch_size, args.tutorial_workers), device
        )
        print(f"{kind}: measuring ours against the tutorial loop ({used} thread(s)) ...", file=sys.stderr)
        runners = {"ours": ours_runner(ours, loader), "tutorial": tutorial}
        if args.amp and amp_dtype(device) is not None:
            runners["ours + amp"] = ours_runner(build_ours(kind, loader, device, used, workdir, amp=True), loader)
        if device.type == "cuda":  # what the CUDA graphs (on by default) are worth
            plain = build_ours(kind, loader, device, used, workdir, cuda_graphs=False)
            runners["ours without cuda_graphs"] = ours_runner(plain, loader)
        result = measure_alternately(runners, loader.batch_size, device, args.repeats, args.seconds)
        rows.append((kind, loader.batch_size, used, result))
        work[kind] = work_per_step(ours, loader)

        for batch_size in [int(b) for b in args.batch_sizes.split(",") if b]:
            sized = InMemoryLoader(loader.images, loader.labels, batch_size, True, loader.normalize, 0, device)
            trainer = build_ours(kind, sized, device, threads, workdir)
            print(f"{kind}: batch {batch_size} ({torch.get_num_threads()} thread(s)) ...", file=sys.stderr)
            one = measure_alternately(
                {"ours": ours_runner(trainer, sized)}, batch_size, device, max(1, args.repeats - 2), args.seconds
            )
            batch_rows.append((kind, batch_size, torch.get_num_threads(), one["ours"]))
        torch.set_num_threads(used)

    epoch_seconds = None
    if args.full_epoch and "gan" in kinds:
        print("gan: one full epoch at batch 16 ...", file=sys.stderr)
        loader = make_loader((1, 28, 28), device, 0, True, **{**main_gan.dataset_kwargs, "root": args.root})
        trainer = build_ours("gan", loader, device, threads, workdir)
        before = machine_now(device)[0]
        with contextlib.redirect_stderr(io.StringIO()):
            trainer._train_epoch(1)
        images = len(loader) * loader.batch_size
        epoch_seconds = (trainer.seconds, images, torch.get_num_threads(), before, machine_now(device)[0])

    reference.append(machine_now(device))
    print(f"\n## Training speed: ours against a tutorial loop\n\n{machine(device, torch.get_num_threads())}; ")
    (flops0, bytes0), (flops1, bytes1) = reference
    print(f"machine before / after the measurements: 512x512 matmul {flops0:.0f} / {flops1:.0f} GFLOP/s, ", end="")
    print(f"64 MB copy {bytes0:.1f} / {bytes1:.1f} GB/s; ")
    print(f"median of {args.repeats} alternating repetitions of about {args.seconds:g} s (lowest-highest)\n")
    variants = list(dict.fromkeys(name for *_, r in rows for name in r if name not in ("ours", "tutorial")))
    print(
        "| model | batch | threads | ours images/s | ours ms/step | tutorial images/s | tutorial ms/step | ratio |"
        + "".join(f" {name} images/s | ratio |" for name in variants)
    )
    print("| --- " * (8 + 2 * len(variants)) + "|")
    for kind, batch, used, r in rows:
        o, t = r["ours"], r["tutorial"]
        line = (
            f"| {kind} | {batch} | {used} | {o['images_s']:.0f} ({o['low']:.0f}-{o['high']:.0f}) "
            f"| {1000 * batch / o['images_s']:.2f} | {t['images_s']:.0f} ({t['low']:.0f}-{t['high']:.0f}) "
            f"| {1000 * batch / t['images_s']:.2f} | {o['images_s'] / t['images_s']:.2f}x |"
        )
        for v in (r.get(name) for name in variants):
            line += (
                f" {v['images_s']:.0f} ({v['low']:.0f}-{v['high']:.0f}) | {v['images_s'] / t['images_s']:.2f}x |"
                if v
                else " | |"
            )
        print(line)
    if "ours + amp" in variants:
        print("\namp (bf16 autocast) is an option, off by default: its results are close to, not the same as, float32.")
    if "ours without cuda_graphs" in variants:
        print("\ncuda_graphs is on by default: ours replays each step as one CUDA graph; the columns ", end="")
        print("'ours without cuda_graphs' launch its kernels one by one.")
    if epoch_seconds:
        seconds, images, used, before, after = epoch_seconds
        print(f"\nOne full MNIST epoch of the FC GAN at batch 16 (ours, {images} images, {used} thread(s)): ", end="")
        print(f"{seconds:.1f} s (the matmul ran at {before:.0f} GFLOP/s before it, {after:.0f} after)")

    if batch_rows:
        print("\n## What the batch size costs (ours)\n")
        print("| model | batch | threads | images/s | ms/step | one epoch (s) | full run (h) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for kind, batch, used, r in batch_rows:
            epochs, images = SPEC[kind].epochs, SPEC[kind].images
            print(
                f"| {kind} | {batch} | {used} | {r['images_s']:.0f} | {1000 * batch / r['images_s']:.2f} "
                f"| {images / r['images_s']:.1f} | {hours(epochs, images, r['images_s']):.1f} |"
            )

    print("\n## A full run (the SPEC's epochs), projected from the first table\n")
    estimate = device.type == "cpu"  # on a GPU the first table measured it
    print(
        "| model | epochs x images | ours (h) | tutorial loop (h) | GFLOP/step | operators/step |"
        + (" GPU estimate ms/step | GPU estimate (h) |" if estimate else "")
    )
    print("| --- " * (8 if estimate else 6) + "|")
    for kind, batch, _, r in rows:
        epochs, images = SPEC[kind].epochs, SPEC[kind].images
        flops, kernels = work[kind]
        line = (
            f"| {kind} | {epochs} x {images} | {hours(epochs, images, r['ours']['images_s']):.1f} "
            f"| {hours(epochs, images, r['tutorial']['images_s']):.1f} | {flops / 1e9:.3g} | {kernels} |"
        )
        if estimate:  # the larger of the kernels' fixed costs and the arithmetic
            gpu_seconds = max(kernels * args.gpu_us_per_kernel * 1e-6, flops / (args.gpu_tflops * 1e12))
            line += f" {1000 * gpu_seconds:.2f} | {hours(epochs, images, batch / gpu_seconds):.2f} |"
        print(line)
    if estimate:
        print(
            f"\nGPU estimate, not measured here: a step replayed as a CUDA graph costs the larger of operators x "
            f"{args.gpu_us_per_kernel:g} us and GFLOP / {args.gpu_tflops:g} TFLOP/s. Evaluation and checkpoints "
            "excluded; `--device cuda` measures it."
        )
    if args.processes:
        short_run_table(args.root, cifar_root, args.processes)
    if args.epoch_processes:
        full_epoch_processes(args.root, args.epoch_processes)


if __name__ == "__main__":
    run_cli(main)
