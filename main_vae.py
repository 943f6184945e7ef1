"""Train a VAE on MNIST: fully-connected (the SPEC's) or convolutional (also colour images and folders).

Edit the dicts below, or override any key from the command line with dashes for underscores:
    python main_vae.py --num-epochs 10 --root ../shared/data --output-dir runs/vae
    python main_vae.py --architecture conv --dataset-type image_folder --root photos/train --output-dir runs/parts
"""

from models import VAE_ARCHITECTURES
from trainers import VAETrainer, train_vae
from utils import parse_overrides, run_cli

mnist_model_kwargs = {
    "architecture": "fc",  # fc: fully-connected on flat pixels (the SPEC's); conv: convolutional, any image size
    "hidden_size": 512,  # fc (change, if required) SPEC: 1024; 512 reaches the same test loss, faster (README, Results)
    "latent_dim": 32,  # (change, if required) SPEC: 512; 32 reaches a lower test loss (README, Results)
    "image_size": 784,  # fc: 28x28 --> flatten
    "num_hidden_layers": 2,  # fc: hidden layers in the encoder and in the decoder (1 with the SPEC's settings)
    "num_classes": None,  # 10: a conditional VAE (decode a chosen digit); None: unconditional
    "likelihood": None,  # p(x|z): bernoulli (BCE), continuous_bernoulli, logistic; None: fc bernoulli, conv logistic
    "image_channels": None,  # conv: None = the data's (1 for MNIST, 3 for CIFAR-10, a folder's first image)
    "image_side": None,  # conv: pixels; None = the data's (28 MNIST, 32 CIFAR-10, a folder's first image, at most 64)
    "base_channels": 32,  # conv: channels of the first convolution, doubled at each halving of the image
}

dataset_kwargs = {
    "dataset_type": "mnist",
    "batch_size": 128,  # (change, if required) SPEC: 16; 128 learns better per epoch and runs faster
    "shuffle": True,  # (change, if required)
    "normalize": False,  # pixels in [0, 1]: the targets of the BCE reconstruction loss
    "root": "data",  # where the data set is, or is downloaded to
    "max_samples": None,  # use only the first N training images (quick runs)
    "num_workers": 0,  # processes decoding an image_folder
    "in_memory": "auto",  # hold the decoded images on the device (True), read them per batch (False), or by size
    "classes": None,  # keep only these labels, e.g. [1, 7]
    "on_bad_image": "skip",  # image_folder: a file that does not decode is named and skipped; "error" stops
}

trainer_kwargs = {
    "num_epochs": 50,  # (change, if required)
    "lr": 1e-3,  # (change, if required)
    "output_dir": "mnist_VAE",  # (change, if required)
    # Every other trainer key has its default, type and meaning declared once (trainers/base.py, speed.py, vae.py):
    # add it here, or give it on the command line; python main_vae.py --help lists them all.
}


def main(argv: list[str] | None = None) -> None:
    parse_overrides(
        __doc__,
        {"mnist_model_kwargs": mnist_model_kwargs, "dataset_kwargs": dataset_kwargs, "trainer_kwargs": trainer_kwargs},
        argv,
        __file__,
        declared={"trainer_kwargs": VAETrainer.Settings},
    )
    train_vae(VAE_ARCHITECTURES, mnist_model_kwargs, dataset_kwargs, trainer_kwargs, "mnist_model_kwargs")


if __name__ == "__main__":
    run_cli(main)
