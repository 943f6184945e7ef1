"""Distributed training (torchrun, DDP): per-rank data shards, and 2-process CPU runs on gloo of each main script."""

from __future__ import annotations

import pytest
import torch

from datasets import DatasetLoader, InMemoryLoader
from utils import UserError


def _loader(count: int, batch_size: int, shuffle: bool = True) -> InMemoryLoader:
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1)
    return InMemoryLoader(images, torch.arange(count), batch_size, shuffle, False, seed=3)


def _shards(count: int, batch_size: int, world_size: int, epoch: int) -> list[list[list[int]]]:
    """Each rank's batches of one epoch, as lists of image indices."""
    shards = []
    for rank in range(world_size):
        loader = _loader(count, batch_size)
        loader.shard(rank, world_size)
        shards.append([indices.tolist() for indices in loader.index_batches(epoch)])
    return shards


@pytest.mark.parametrize(
    ("count", "batch_size", "world_size"), [(64, 16, 2), (65, 16, 2), (9, 4, 2), (10, 4, 3), (5, 8, 4), (4, 1, 4)]
)
def test_shards_cover_the_data_exactly_once_per_epoch_in_equal_steps(
    count: int, batch_size: int, world_size: int
) -> None:
    orders = []
    for epoch in (1, 2):
        shards = _shards(count, batch_size, world_size, epoch)
        assert len({len(batches) for batches in shards}) == 1  # DDP hangs if one rank takes more steps
        assert all(len(batch) <= batch_size + 1 for batches in shards for batch in batches)
        taken = [i for batches in shards for batch in batches for i in batch]
        assert sorted(taken) == list(range(count))
        orders.append(shards)
    assert orders[0] != orders[1]  # a new seeded order every epoch


def test_one_process_keeps_the_unsharded_batches() -> None:
    loader = _loader(70, 16)
    reference = torch.randperm(70, generator=torch.Generator().manual_seed(3 * 100_003 + 5))
    assert torch.equal(torch.cat(loader.index_batches(5)), reference)
    assert torch.equal(torch.cat([b.flatten() for b in loader.batches(5)]).mul(255).round().long(), reference)
    assert [len(b) for b in loader.index_batches(5)] == [16, 16, 16, 16, 6]
    loader.shard(0, 1)
    assert len(loader) == 5


def test_more_processes_than_images_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot be shared by 4 processes"):
        _loader(3, 2).shard(0, 4)


def test_sharded_dataset_loader_serves_the_in_memory_batches() -> None:
    images = torch.randint(0, 255, (23, 1, 2, 2), dtype=torch.uint8)
    labels = torch.arange(23)
    for rank in range(3):
        memory = InMemoryLoader(images, labels, 4, True, True, seed=1)
        dataset = DatasetLoader(torch.utils.data.TensorDataset(images, labels), labels, 4, True, True, seed=1)
        for loader in (memory, dataset):
            loader.shard(rank, 3)
        assert len(memory) == len(dataset) == 2
        pairs = list(zip(memory.batches(2, start=0), dataset.batches(2, start=0), strict=True))
        assert all(torch.equal(a, b) for a, b in pairs)
