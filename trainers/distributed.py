"""Distributed data-parallel training under torchrun: one process per GPU (or CPU process on gloo).

`torchrun --nproc_per_node=N main_dcgan.py ...` starts N copies of a main script with RANK,
LOCAL_RANK and WORLD_SIZE in their environment. `start` sees them, joins the process group
(nccl on CUDA, gloo on CPU) and gives each process its device; `wrap` puts a model in
DistributedDataParallel for the training passes, which averages its gradients over the processes.
The trainers keep the plain models for everything else (weights, checkpoints, samples), so files
from a distributed run and from one process are interchangeable. Only rank 0 writes files and
prints; the other ranks' stdout goes to /dev/null. Without torchrun every function here is a no-op.
"""

from __future__ import annotations

import datetime
import gc
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainers.needs import Needs
from utils import UserError, require

# How long a rank waits in a collective (e.g. for rank 0 computing metrics) before giving up.
TIMEOUT = datetime.timedelta(minutes=30)


def launched() -> bool:
    """True in a process that torchrun started with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def start(device: torch.device) -> torch.device:
    """Join torchrun's process group if this process was launched by it; return the device it trains on
    (cuda:LOCAL_RANK on CUDA). Rank > 0 then prints nothing to stdout."""
    if not launched() or active():
        return device
    require(dist.is_available(), "this torch was built without torch.distributed: run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        require(
            local_rank < torch.cuda.device_count(),
            f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here: "
            "set --nproc_per_node to at most the number of GPUs",
        )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"distributed training runs on cuda (nccl) or cpu (gloo), not {device.type}: set --device")
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    require(available, f"this torch has no {backend} backend for distributed training on {device.type}")
    dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if backend == "nccl" else None)
    if rank() > 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open for the life of the process)
    return device


def stop(owner: object | None = None) -> None:
    """Leave the process group (at the end of a run, also after an error). The DDP wrappers that `owner`
    (the trainer) holds are swapped for their modules and collected first: a wrapper left to the
    interpreter's exit keeps the gloo backend alive into finalization, where about one run in 20
    aborted ("terminate called without an active exception") after finishing its work."""
    if not active():
        return
    for name, value in list(vars(owner).items()) if owner is not None else []:
        if isinstance(value, DistributedDataParallel):
            setattr(owner, name, value.module)
    gc.collect()  # the trainer's reference cycles would otherwise keep the wrappers until exit
    dist.destroy_process_group()


def check_needs(needs: dict[str, Needs]) -> None:
    """One line under torchrun for the pieces of a step (by name) that DistributedDataParallel cannot run."""
    double = [name for name, n in needs.items() if n.double_backward]
    require(
        not double or world_size() == 1,
        f"{' and '.join(double)} does not run under torchrun (DistributedDataParallel cannot take its double "
        "backward): use one process, or turn it off",
    )


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(module: nn.Module, broadcast_buffers: bool = True) -> nn.Module:
    """`module` in DistributedDataParallel (its gradients are averaged over the ranks), or itself in one process.

    broadcast_buffers: copy rank 0's buffers (BatchNorm's running statistics) to the other ranks before
    every forward pass. A module called twice before one backward pass (the GAN discriminator, on
    real then fake images) must not: the second copy overwrites, in place, a tensor the first pass
    saved for its backward (an autograd error on rank 1 under torch 2.11)."""
    if not active():
        return module
    device = next(module.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=broadcast_buffers)


def use_sync_batchnorm(models: list[nn.Module], device: torch.device) -> None:
    """Replace BatchNorm layers by SyncBatchNorm (statistics over all ranks' batches), in place."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for model in models for m in model.modules()):
        print("note: sync_batchnorm ignored: the models have no BatchNorm")
        return
    if not active():
        print("note: sync_batchnorm ignored: not a distributed run (start it with torchrun)")
        return
    require(
        device.type == "cuda",
        f"sync_batchnorm needs CUDA: torch's SyncBatchNorm does not run on {device.type}; set sync_batchnorm False",
    )
    for model in models:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert converted is model  # our models are containers: their BatchNorm layers are replaced in place


def mean_over_ranks(values: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor]:
    """The mean of each value over the ranks, in one collective (every rank passes the same keys)."""
    if not active() or not values:
        return dict(values)
    device = _collective_device()
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device) for v in values.values()])
    dist.all_reduce(stacked)
    stacked /= world_size()
    return dict(zip(values, stacked.unbind(), strict=True))


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over the ranks (a new tensor); `values` itself in one process."""
    if not active():
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is true on any."""
    if not active():
        return flag
    value = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
