"""A plain tutorial GAN loop on MNIST, as its own process: what a short run costs without this repository.

    python benchmarks/tutorial_gan.py --root ../shared/data --epochs 1

The way pytorch/examples and most tutorials write it: torchvision's MNIST with ToTensor/Normalize, a
DataLoader, Adam(0.5, 0.999), BCE with main_gan.py's label smoothing, a .item() per step; main_gan.py's
networks at batch 16. benchmarks/speed.py times this process beside main_gan.py's. Prints the training
loop's seconds.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.gan import FCDiscriminator, FCGenerator  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--root", default="data")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--max-samples", type=int, default=None)
args = parser.parse_args()

transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
dataset = torchvision.datasets.MNIST(args.root, train=True, download=False, transform=transform)
if args.max_samples:
    dataset = torch.utils.data.Subset(dataset, range(args.max_samples))
data = DataLoader(dataset, batch_size=16, shuffle=True)
# main_gan.py's networks (its dict written out: importing the script would import this repository's engine)
g = FCGenerator(latent_variable_size=64, generator_hidden_size=256, generator_hidden_layers=2, generator_batchnorm=True)
d = FCDiscriminator(discriminator_hidden_size=256, discriminator_hidden_layers=2, discriminator_dropout=0.3)
opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
criterion = torch.nn.BCEWithLogitsLoss()

began = time.perf_counter()
for epoch in range(args.epochs):
    running = 0.0
    for real, _ in data:
        n = real.size(0)
        fake = g(torch.randn(n, 64))
        opt_d.zero_grad()
        loss_d = criterion(d(real), torch.full((n,), 0.9)) + criterion(d(fake.detach()), torch.zeros(n))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = criterion(d(fake), torch.ones(n))
        loss_g.backward()
        opt_g.step()
        running += loss_d.item() + loss_g.item()
    print(f"epoch {epoch + 1}: mean loss {running / len(data):.3f}")
print(f"training loop: {time.perf_counter() - began:.2f} s")
