"""Training loops, logging and checkpoints. `train_gan` / `train_vae` are what the main scripts call."""

from trainers.base import Trainer
from trainers.gan import GANTrainer, train_gan
from trainers.vae import VAETrainer, train_vae

__all__ = ["Trainer", "GANTrainer", "VAETrainer", "train_gan", "train_vae"]
