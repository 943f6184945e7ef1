"""Image-folder throughput: the in-memory path against the streamed one, in images/s.

    python benchmarks/data.py --root ../shared/data/cifar10/train --workers 2
    python benchmarks/data.py --root ~/data/img_align_celeba --image-size 64 --max-samples 20000

Rows: reading the folder once (the in-memory path decodes every file into one tensor; the streamed
path checks every file, JPEGs at 1/8 scale), one epoch of batches from each path (the streamed one
decodes every image again, in `--workers` processes), and torchvision's ImageFolder in a DataLoader
with the same workers (the tutorial way) for reference. Run it with the cores free.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision import transforms  # noqa: E402

from datasets import make_loader  # noqa: E402


def timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def epoch_images(loader) -> int:
    return sum(len(batch) for batch in loader.batches(0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "cifar10" / "train"))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = (args.channels, args.image_size, args.image_size)
    common = {"dataset_type": "image_folder", "root": args.root, "batch_size": args.batch_size}
    common |= {"max_samples": args.max_samples, "num_workers": args.workers}
    rows = []

    seconds, held = timed(lambda: make_loader(shape, "cpu", 0, True, **common, in_memory=True))
    count = len(held.labels)
    rows.append(("in memory: decode the folder once", seconds, count))
    seconds, n = timed(lambda: epoch_images(held))
    rows.append(("in memory: an epoch of batches", seconds, n))

    seconds, streamed = timed(lambda: make_loader(shape, "cpu", 0, True, **common, in_memory=False))
    rows.append(("streamed: check every file once", seconds, len(streamed.labels)))
    seconds, n = timed(lambda: epoch_images(streamed))
    rows.append((f"streamed: an epoch, {args.workers} workers", seconds, n))

    steps = [transforms.Resize(args.image_size), transforms.CenterCrop(args.image_size), transforms.PILToTensor()]
    folder = torchvision.datasets.ImageFolder(args.root, transforms.Compose(steps))
    if args.max_samples:
        folder = torch.utils.data.Subset(folder, range(0, len(folder), max(1, len(folder) // args.max_samples)))
    tutorial = torch.utils.data.DataLoader(folder, args.batch_size, shuffle=True, num_workers=args.workers)
    seconds, n = timed(lambda: sum(len(x) for x, _ in tutorial))
    rows.append((f"torchvision ImageFolder + DataLoader, {args.workers} workers", seconds, n))

    print(f"\n{count} images of {args.root} at {shape}, batch {args.batch_size}\n")
    print("| path | seconds | images | images/s |\n| --- | ---: | ---: | ---: |")
    for name, seconds, n in rows:
        print(f"| {name} | {seconds:.1f} | {n} | {n / seconds:,.0f} |")


if __name__ == "__main__":
    main()
