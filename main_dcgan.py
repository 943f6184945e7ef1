"""Train a DCGAN on CIFAR-10 (or any folder of images with dataset_type image_folder).

Edit the dicts below, or override any key from the command line with dashes for underscores:
    python main_dcgan.py --dataset-type image_folder --root ../shared/data/cifar10/train
"""

from models import DCGANDiscriminator, DCGANGenerator
from trainers import GANTrainer, train_gan
from utils import parse_overrides, run_cli

model_kwargs = {
    "latent_dim": 100,
    "feature_maps": 64,
    "image_channels": 3,
    "image_size": 32,  # a power of two; images are resized to it
    "num_classes": None,  # 10: class-conditional (ask for a class); None: unconditional
    "class_conditioning": "projection",  # how a conditional discriminator sees the label: projection or concat
    "spectral_norm": False,  # the discriminator's layers divided by their largest singular value (Miyato et al., 2018)
}

dataset_kwargs = {
    "dataset_type": "cifar10",  # cifar10, mnist, fashion_mnist or image_folder
    "batch_size": 16,
    "shuffle": True,
    "root": "data",  # where the data set is, or is downloaded to; the folder itself for image_folder
    "max_samples": None,  # use only N training images (quick runs)
    "num_workers": 0,  # processes decoding an image_folder
    "in_memory": "auto",  # hold the decoded images on the device (True), read them per batch (False), or by size
    "classes": None,  # keep only these labels, e.g. [3, 5] or ["cat", "dog"]
    "on_bad_image": "skip",  # image_folder: a file that does not decode is named and skipped; "error" stops
}

trainer_kwargs = {
    "num_epochs": 200,
    "generator_lr": 0.0002,
    "discriminator_lr": 0.0002,
    "output_dir": "cifar10_GAN",
    "label_smoothing": 0.0,  # the DCGAN paper's targets (the FC GAN's default is 0.1)
    # Every other trainer key has its default, type and meaning declared once (trainers/base.py, speed.py,
    # gan.py, gan_step.py): add it here, or give it on the command line; python main_dcgan.py --help lists them all.
}


def main(argv: list[str] | None = None) -> None:
    parse_overrides(
        __doc__,
        {"model_kwargs": model_kwargs, "dataset_kwargs": dataset_kwargs, "trainer_kwargs": trainer_kwargs},
        argv,
        __file__,
        declared={"trainer_kwargs": GANTrainer.Settings},
    )
    train_gan(DCGANGenerator, DCGANDiscriminator, model_kwargs, dataset_kwargs, trainer_kwargs, "model_kwargs")


if __name__ == "__main__":
    run_cli(main)
