"""Speed settings of the trainers: CPU threads, fused Adam, CUDA graphs, and the optional bf16
autocast, channels_last and torch.compile.

With `amp`, `channels_last` and `compile` off a run computes exactly what it computed without them.
`cuda_graphs` replays the same kernels. `num_threads` says how many CPU threads torch uses: another count
sums in another order, so the weights differ in the last bits (and a run drifts from that): a resumed
run with 'auto' keeps the count its checkpoint was made with.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainers.keys import Rule, Settings, key
from trainers.needs import Needs

# torch's default thread count (the physical cores), before any run changes it.
DEFAULT_THREADS = torch.get_num_threads()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc/stat's jiffies a second
FRESH_PROCESS_SECONDS = 30.0  # a run this soon after the import measures busy cores since then, without a wait


def usable_cores() -> set[int]:
    """The CPUs this process may run on (a cluster job's or container's cpuset), else all of them."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def busy_cores(cores: set[int], seconds: float = 0.1, since: tuple | None = None) -> float:
    """How many of `cores` other work keeps busy: their CPU time less this process's, from /proc/stat
    (Linux), over a window of at least `seconds` that begins at `since` (a `cpu_snapshot`) or now; else
    the 1-minute load average (which lags: it still counts a job that just ended)."""
    try:
        start = since or cpu_snapshot(cores)
        time.sleep(max(0.0, seconds - (time.monotonic() - start[3])))
        end = cpu_snapshot(cores)
        total, idle = end[0] - start[0], end[1] - start[1]
        own = (end[2] - start[2]) * CLOCK_TICKS
        if total > 0:
            return len(cores) * max(0.0, total - idle - own) / total
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system
        return 0.0


def cpu_snapshot(cores: set[int]) -> tuple[int, int, float, float]:
    """(all, idle) jiffies of `cores`, this process's CPU seconds and the time: where a busy_cores window starts."""
    return (*_cpu_times(cores), time.process_time(), time.monotonic())


def _cpu_times(cores: set[int], stat: str = "/proc/stat") -> tuple[int, int]:
    """(all, idle) jiffies of `cores` so far, from their cpuN lines in /proc/stat."""
    total = idle = 0
    with open(stat) as f:
        for line in f:
            name, *values = line.split()
            if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cores:
                fields = [int(v) for v in values[:7]]  # user nice system idle iowait irq softirq
                total, idle = total + sum(fields), idle + fields[3] + fields[4]
    return total, idle


try:  # a script's run starts within seconds: the window since this import shortens busy_cores' wait
    _IMPORTED: tuple | None = cpu_snapshot(usable_cores())
except (OSError, ValueError, IndexError):
    _IMPORTED = None


def choose_num_threads(num_threads: int | str, device: torch.device) -> int:
    """The CPU threads a run uses. 'auto': torch's own choice on a GPU or where OMP_NUM_THREADS is
    set (torchrun sets 1); else the cores this process may use less those busy with other work, at
    most torch's default (the physical cores). A thread that waits for a busy core makes every step
    wait for it (docs/results.md measures how much)."""
    if num_threads != "auto":
        if num_threads > len(usable_cores()):
            print(
                f"note: num_threads {num_threads} is more than the {len(usable_cores())} cores this process may use: "
                "the threads wait for each other and the run is slower; 'auto' picks the free cores"
            )
        return num_threads
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = usable_cores()
    since = _IMPORTED if _IMPORTED and time.monotonic() - _IMPORTED[3] < FRESH_PROCESS_SECONDS else None
    return max(1, min(DEFAULT_THREADS, len(cores) - round(busy_cores(cores, since=since))))


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where the device computes it natively (CUDA from Ampere on, CPUs with AVX512-BF16
    or AMX), else None. bf16 keeps float32's range, so no loss scaling is needed."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        try:
            native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None
    return None


def optimizer_options(device: torch.device, capturable: bool = False) -> dict:
    """Fused Adam where this torch supports it for the device (one kernel for all parameters);
    `capturable` keeps its step count on the device, which a CUDA graph needs."""
    probe = torch.zeros(1, device=device, requires_grad=True)
    try:
        torch.optim.Adam([probe], fused=True)
        options = {"fused": True}
    except (RuntimeError, TypeError):
        options = {}
    return {**options, "capturable": True} if capturable else options


def has_convolutions(models: list[nn.Module]) -> bool:
    return any(p.dim() == 4 for model in models for p in model.parameters())


@dataclass
class SpeedSettings(Settings):
    """The speed keys of every trainer: with amp off, none changes what a run computes."""

    num_threads: int | str = key(
        "auto",
        "CPU threads: 'auto' (the cores not busy with other work) or a number",
        Rule(
            lambda v: v == "auto" or (type(v) is int and v > 0) or (isinstance(v, str) and v.isdigit() and int(v) > 0),
            "'auto' or a positive int",
        ),
        resumable=True,
    )
    cuda_graphs: bool = key(
        True, "on a CUDA GPU, replay each training step as one CUDA graph (same results, faster)", resumable=True
    )
    amp: bool = key(
        False, "bfloat16 autocast where the device has native bf16 (CUDA, recent CPUs): faster, not bitwise"
    )
    channels_last: bool = key(
        False, "NHWC memory format for the convolutions (for CUDA; no gain on CPU)", resumable=True
    )
    compile: bool = key(
        False,
        "torch.compile the models: slower than eager on a 2-core CPU and than cuda_graphs on a GPU",
        resumable=True,
    )

    def __post_init__(self) -> None:
        if isinstance(self.num_threads, str) and self.num_threads.isdigit():  # --num-threads 2
            self.num_threads = int(self.num_threads)


def graphs_allowed(needs: dict[str, Needs], cuda_graphs: bool, device: torch.device) -> bool:
    """Whether a step whose pieces ask `needs` (by name) may be replayed as a CUDA graph; a note where
    cuda_graphs is on, on CUDA, and a piece rules it out."""
    blocked = {name: n.graph_blockers() for name, n in needs.items() if n.graph_blockers()}
    if blocked and cuda_graphs and device.type == "cuda":
        reasons = "; ".join(f"{name} ({', '.join(why)})" for name, why in blocked.items())
        print(f"note: cuda_graphs off: the step runs as written for {reasons}")
    return cuda_graphs and not blocked


class Speed:
    """A trainer's speed settings, applied to its models when built; then `adam_options()` for its
    optimizers, `autocast()` around the forward passes, `compiled(module)` for the modules a step
    calls, `batch(x)` for its input and `step(train_step, optimizers)` for what the epoch loop calls.

    num_threads: see `choose_num_threads`.
    cuda_graphs: on a CUDA GPU, record the training step once and replay it as one CUDA graph
        (`CapturedStep`): at batch 16 a step is ~100 tiny kernels, and launching them one by one
        from Python costs more than running them. Same kernels, same results. Ignored on other
        devices, under torchrun (DDP's gradient averaging) and with `compile`.
    amp: bf16 autocast of the forward passes (losses stay float32) where `amp_dtype` finds native
        bf16; elsewhere a note says it is ignored. On a 2-core AVX512-BF16 CPU it made the VAE
        about 1.2x and the DCGAN about 1.5x faster, the FC GAN at batch 16 no faster.
    channels_last: NHWC memory format for models with convolutions and their batches (what
        CUDA's tensor cores want; no gain measured on CPU); ignored, with a note, for
        fully-connected models.
    compile: run the modules' forward through torch.compile (the first steps are slow while it
        compiles). It did not pay: on a 2-core CPU the compiled FC GAN and VAE were slower than
        eager, and on an H100 all three models ran 7-10x slower than with cuda_graphs.
    """

    def __init__(
        self,
        models: list[nn.Module],
        device: torch.device,
        *,
        num_threads: int | str = "auto",
        amp: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        self.num_threads = choose_num_threads(num_threads, device)
        self.auto_threads = num_threads == "auto"
        torch.set_num_threads(self.num_threads)
        self.device = device
        self.dtype = amp_dtype(device) if amp else None
        if amp and self.dtype is None:
            print(f"note: amp ignored: {device.type} here has no native bfloat16; training in float32")
        self.channels_last = channels_last and has_convolutions(models)
        if channels_last and not self.channels_last:
            print("note: channels_last ignored: the models have no convolutions")
        if self.channels_last:
            for model in models:
                model.to(memory_format=torch.channels_last)
        self.compile = compile
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.cuda_graphs = cuda_graphs and device.type == "cuda" and not compile and not distributed
        if cuda_graphs and device.type == "cuda" and not self.cuda_graphs:
            print("note: cuda_graphs ignored " + ("with compile" if compile else "under torchrun"))

    def resume_threads(self, trained_with: int) -> None:
        """A resumed run on the CPU: 'auto' keeps the thread count the run was trained with, where this
        process may use that many cores, as another count would sum in another order (and the run would
        no longer be bit for bit an uninterrupted one); else a note says the results will differ so."""
        if self.device.type != "cpu" or trained_with == self.num_threads:
            return
        if self.auto_threads and trained_with <= len(usable_cores()):
            print(
                f"note: num_threads 'auto' keeps the {trained_with} CPU threads this run was trained with (it would "
                f"pick {self.num_threads} now): another count would change the weights' last bits"
            )
            self.num_threads = trained_with
            torch.set_num_threads(trained_with)
        else:
            print(
                f"note: this run was trained with {trained_with} CPU threads and goes on with {self.num_threads}: "
                "its weights will differ in the last bits from an uninterrupted run's"
            )

    def adam_options(self) -> dict:
        return optimizer_options(self.device, capturable=self.cuda_graphs)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        # A graph may not keep autocast's cache of cast weights: it would hold stale copies.
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=not self.cuda_graphs)

    def compiled(self, module: nn.Module) -> Callable:
        """What a step calls instead of `module`: the module itself, or its compiled form (which shares
        its parameters; checkpoints keep saving the module)."""
        return torch.compile(module) if self.compile else module

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def step(
        self, train_step: Callable[..., dict], optimizers: Iterable[torch.optim.Optimizer], watch: Iterable[object] = ()
    ) -> Callable[..., dict]:
        """What the epoch loop calls for a batch (images, and labels for a conditional model): `train_step`,
        or its CUDA graph, which checks the Python-side state of the objects in `watch` (`CapturedStep`)."""
        return CapturedStep(train_step, optimizers, watch=watch) if self.cuda_graphs else train_step


class CapturedStep:
    """A training step replayed as a CUDA graph (torch.cuda.graph): the whole step (forward,
    backward, Adam, EMA) is one launch.

    The first `warmup` batches run the step as it is, on a side stream, as capturing needs
    (Adam creates its state, cuBLAS its workspaces); the next one records the step into the graph
    and replays it, and so does every later batch of the same shape, copied into the graph's
    input tensors (the images, and the labels of a conditional model). A batch of another shape
    (an epoch's smaller last one) runs the step as it is. Random draws from torch on the GPU are
    fresh at each replay. What a replay returns is overwritten by the next one: use it before then.

    A replay runs no Python, so Python-side values the step reads are frozen at capture. Pieces
    that read such state declare it (trainers/needs.py) and get no graph; what is not declared is
    caught here, and the graph ends with a one-line note, the step running as written from then on:
    - an optimizer's lr, betas, eps or weight decay changed after capture (a schedule);
    - a plain attribute (number, string, bool) of an object in `watch` (the trainer and the pieces of
      its step) that the captured step read, changed since, or changed by the step itself (a counter);
    - random numbers the step drew on the host (Python's, NumPy's, or torch's CPU generator on a GPU
      run), which every replay would repeat.
    """

    def __init__(
        self,
        train_step: Callable[..., dict],
        optimizers: Iterable[torch.optim.Optimizer],
        warmup: int = 3,
        watch: Iterable[object] = (),
    ) -> None:
        self.train_step, self.optimizers, self.warmup = train_step, list(optimizers), warmup
        self.watch = list(watch)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.side_stream: torch.cuda.Stream | None = None
        self.calls = 0
        self.ended = False
        self.reads: list[tuple[object, str, object]] = []  # (object, attribute, value) the captured step read

    def __call__(self, *batch: torch.Tensor) -> dict:
        if self.ended:  # the plain step from now on
            return self.train_step(*batch)
        if self.graph is None:
            self.calls += 1
            return self._warm_up(batch) if self.calls <= self.warmup else self._capture(batch)
        if batch[0].shape != self.inputs[0].shape:
            return self.train_step(*batch)
        frozen = self._frozen()
        if frozen:
            self._end(frozen)
            return self.train_step(*batch)
        for static, tensor in zip(self.inputs, batch, strict=True):
            static.copy_(tensor)
        self.graph.replay()
        return self.output

    def _warm_up(self, batch: tuple[torch.Tensor, ...]) -> dict:
        device = batch[0].device
        self.side_stream = self.side_stream or torch.cuda.Stream(device)
        self.side_stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(self.side_stream):
            output = self.train_step(*batch)
        torch.cuda.current_stream(device).wait_stream(self.side_stream)
        return output

    def _capture(self, batch: tuple[torch.Tensor, ...]) -> dict:
        self.inputs = [tensor.clone() for tensor in batch]
        self.captured_with = self._hyperparameters()
        for optimizer in self.optimizers:  # the graph's backward then writes fresh gradients, not sums
            optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        host_rng = _host_rng_state(batch[0].device)
        with _logged_reads(self.watch) as reads, torch.cuda.graph(graph):
            self.output = self.train_step(*self.inputs)
        self.reads = list(reads.values())
        self.graph = graph
        graph.replay()  # recording ran nothing: now train on this batch
        if _host_rng_state(batch[0].device) != host_rng:
            self._end("the step drew random numbers on the host (Python, NumPy or torch's CPU generator)")
        elif frozen := self._frozen():  # the step changed Python-side state itself
            self._end(frozen)
        return self.output

    def _frozen(self) -> str:
        """What a replay would get wrong now: a changed hyperparameter or attribute read ('' if nothing)."""
        if self._hyperparameters() != self.captured_with:
            return "an optimizer's lr, betas or weight decay changed after capture"
        for owner, name, value in self.reads:
            now = getattr(owner, name, None)
            if now != value and now == now:  # (NaN never equals itself)
                return f"the step reads {type(owner).__name__}.{name}, which changed from {value!r} to {now!r}"
        return ""

    def _end(self, reason: str) -> None:
        print(
            f"note: cuda_graphs off from here: {reason}; a piece that reads Python-side state declares "
            "Needs(reads_state=True) (trainers/needs.py)"
        )
        self.graph, self.ended = None, True

    def _hyperparameters(self) -> list:
        """What a schedule changes in the optimizers (the graph holds their values at capture)."""
        keys = ("lr", "betas", "weight_decay", "eps")
        return [[group.get(k) for k in keys] for opt in self.optimizers for group in opt.param_groups]


_PLAIN = (bool, int, float, str, type(None), tuple)


@contextlib.contextmanager
def _logged_reads(objects: list[object]) -> Iterator[dict]:
    """While the block runs, record each plain value (number, string, bool, None, tuple) read from an
    attribute of `objects`: their classes are swapped for subclasses that log `__getattribute__`."""
    reads: dict[tuple[int, str], tuple[object, str, object]] = {}
    swapped = []
    for obj in objects:
        cls = type(obj)

        def spy(self, name: str, _cls: type = cls):
            value = _cls.__getattribute__(self, name)
            if isinstance(value, _PLAIN) and not name.startswith("__"):
                reads.setdefault((id(self), name), (self, name, value))
            return value

        try:
            obj.__class__ = type(cls.__name__, (cls,), {"__getattribute__": spy, "__module__": cls.__module__})
        except (TypeError, AttributeError):  # instances that cannot change class (slots, builtins, frozen)
            continue
        swapped.append((obj, cls))
    try:
        yield reads
    finally:
        for obj, cls in swapped:
            obj.__class__ = cls


def _host_rng_state(device: torch.device) -> tuple:
    """The host's random generators, whose draws a CUDA graph would replay unchanged."""
    torch_cpu = torch.get_rng_state() if device.type != "cpu" else None
    return random.getstate(), np.random.get_state()[1].tobytes(), torch_cpu


def python_state(root: object, networks: Iterable[nn.Module], depth: int = 3) -> list[object]:
    """`root` and the objects its attributes reach (to `depth`) whose plain attributes a step may read:
    everything but tensors, optimizers, the trainable `networks` and objects of torch's own classes."""
    skip = {id(m) for network in networks for m in network.modules()}
    found, frontier, seen = [], [root], {id(root)}
    for _ in range(depth + 1):
        next_frontier = []
        for obj in frontier:
            found.append(obj)
            values = vars(obj).values() if hasattr(obj, "__dict__") else ()
            for value in values:
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if id(item) in seen or id(item) in skip or not hasattr(item, "__dict__"):
                        continue
                    seen.add(id(item))
                    module = type(item).__module__ or ""
                    if (
                        isinstance(item, (torch.Tensor, torch.optim.Optimizer, type))
                        or module.split(".")[0] in ("torch", "numpy", "builtins", "functools")
                        or callable(item)
                        and not isinstance(item, nn.Module)
                    ):
                        continue
                    next_frontier.append(item)
        frontier = next_frontier
    return found
