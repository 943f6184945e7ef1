"""Train a fully-connected GAN on MNIST.

Edit the dicts below, or override any key from the command line with dashes for underscores:
    python main_gan.py --num-epochs 3 --batch-size 64 --root ../shared/data --output-dir runs/a
"""

from models import FCDiscriminator, FCGenerator
from trainers import GANTrainer, train_gan
from utils import parse_overrides, run_cli

mnist_model_kwargs = {
    "latent_variable_size": 64,  # (change, if required)
    "discriminator_hidden_size": 256,  # (change, if required)
    "generator_hidden_size": 256,  # (change, if required)
    "image_size": 784,  # 28x28 --> flatten (Fixed)
    "generator_hidden_layers": 2,
    "generator_batchnorm": True,  # BatchNorm after each hidden layer of the generator: smooth strokes sooner
    "discriminator_hidden_layers": 2,
    "discriminator_dropout": 0.3,
    "num_classes": None,  # 10: class-conditional (ask for a digit); None: unconditional
    "class_conditioning": "projection",  # how a conditional discriminator sees the label: projection or concat
    "spectral_norm": False,  # the discriminator's layers divided by their largest singular value (Miyato et al., 2018)
}

dataset_kwargs = {
    "dataset_type": "mnist",  # mnist, fashion_mnist, cifar10 or image_folder
    "batch_size": 16,  # (change, if required)
    "shuffle": True,  # (change, if required)
    "root": "data",  # where the data set is, or is downloaded to
    "max_samples": None,  # use only the first N training images (quick runs)
    "num_workers": 0,  # processes decoding an image_folder
    "in_memory": "auto",  # hold the decoded images on the device (True), read them per batch (False), or by size
    "classes": None,  # keep only these labels, e.g. [1, 7]
    "on_bad_image": "skip",  # image_folder: a file that does not decode is named and skipped; "error" stops
}

trainer_kwargs = {
    "num_epochs": 200,  # (change, if required)
    "generator_lr": 0.0002,
    "discriminator_lr": 0.0002,
    "output_dir": "mnist_GAN",  # (change, if required)
    # Every other trainer key has its default, type and meaning declared once (trainers/base.py, speed.py,
    # gan.py, gan_step.py): add it here, or give it on the command line; python main_gan.py --help lists them all.
}


def main(argv: list[str] | None = None) -> None:
    parse_overrides(
        __doc__,
        {"mnist_model_kwargs": mnist_model_kwargs, "dataset_kwargs": dataset_kwargs, "trainer_kwargs": trainer_kwargs},
        argv,
        __file__,
        declared={"trainer_kwargs": GANTrainer.Settings},
    )
    train_gan(FCGenerator, FCDiscriminator, mnist_model_kwargs, dataset_kwargs, trainer_kwargs, "mnist_model_kwargs")


if __name__ == "__main__":
    run_cli(main)
