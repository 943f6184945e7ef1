"""Speed settings of the trainers: CPU threads, and the optional bf16 autocast, channels_last and torch.compile.

With every option off (`amp`, `channels_last`, `compile` False) a run computes exactly what it
computed without them. `num_threads` only says how many CPU threads torch uses.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from utils import require

# torch's default thread count (the physical cores), before any run changes it.
DEFAULT_THREADS = torch.get_num_threads()


def check_num_threads(value: int | str) -> None:
    require(
        value == "auto" or (type(value) is int and value > 0),
        f"trainer_kwargs['num_threads'] must be 'auto' or a positive int, got {value!r}",
    )


def usable_cores() -> set[int]:
    """The CPUs this process may run on (a cluster job's or container's cpuset), else all of them."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        return set(range(os.cpu_count() or 1))


def busy_cores(cores: set[int], seconds: float = 0.2) -> float:
    """How many of `cores` other work keeps busy now: their CPU time over `seconds` from /proc/stat
    (Linux), else the 1-minute load average (which lags: it still counts a job that just ended)."""
    try:
        before = _cpu_times(cores)
        time.sleep(seconds)
        after = _cpu_times(cores)
        total, idle = after[0] - before[0], after[1] - before[1]
        if total > 0:
            return len(cores) * (1 - idle / total)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system
        return 0.0


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


def choose_num_threads(num_threads: int | str, device: torch.device) -> int:
    """The CPU threads a run uses. 'auto': torch's own choice on a GPU or where OMP_NUM_THREADS is
    set (torchrun sets 1); else the cores this process may use less those busy with other work, at
    most torch's default (the physical cores). A thread that waits for a busy core makes every step
    wait: on this 2-core machine, with one core busy, two threads made an FC GAN step 5x slower than
    one (19.8 vs 3.8 ms); with both cores free, two were faster (2.8 vs 3.3 ms)."""
    check_num_threads(num_threads)
    if num_threads != "auto":
        return num_threads
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = usable_cores()
    return max(1, min(DEFAULT_THREADS, len(cores) - round(busy_cores(cores))))


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


def has_convolutions(models: list[nn.Module]) -> bool:
    return any(p.dim() == 4 for model in models for p in model.parameters())


class Speed:
    """A trainer's speed settings, applied to its models when built; then `autocast()` around the
    forward passes, `compiled(module)` for the modules a step calls, and `batch(x)` for its input.

    num_threads: see `choose_num_threads`.
    amp: bf16 autocast of the forward passes (losses stay float32) where `amp_dtype` finds native
        bf16; elsewhere a note says it is ignored. On a 2-core AVX512-BF16 CPU it made the VAE
        about 1.2x and the DCGAN about 1.5x faster, the FC GAN at batch 16 no faster.
    channels_last: NHWC memory format for models with convolutions and their batches (what
        CUDA's tensor cores want; no gain measured on CPU); ignored, with a note, for
        fully-connected models.
    compile: run the modules' forward through torch.compile (the first steps are slow while it
        compiles). On a 2-core CPU the compiled FC GAN and VAE were slower than eager; for GPUs.
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
    ) -> None:
        torch.set_num_threads(choose_num_threads(num_threads, device))
        self.dtype = amp_dtype(device) if amp else None
        if amp and self.dtype is None:
            print(f"note: amp ignored: {device.type} here has no native bfloat16; training in float32")
        self.device_type = device.type
        self.channels_last = channels_last and has_convolutions(models)
        if channels_last and not self.channels_last:
            print("note: channels_last ignored: the models have no convolutions")
        if self.channels_last:
            for model in models:
                model.to(memory_format=torch.channels_last)
        self.compile = compile

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def compiled(self, module: nn.Module) -> Callable:
        """What a step calls instead of `module`: the module itself, or its compiled form (which shares
        its parameters; checkpoints keep saving the module)."""
        return torch.compile(module) if self.compile else module

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
