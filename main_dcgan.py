"""Train a DCGAN on CIFAR-10 (or any folder of images with dataset_type image_folder).

Edit the dicts below, or override any key from the command line with dashes for underscores:
    python main_dcgan.py --dataset-type image_folder --root ../shared/data/cifar10/train
"""

from models import DCGANDiscriminator, DCGANGenerator
from trainers import train_gan
from utils import parse_overrides, run_cli

model_kwargs = {
    "latent_dim": 100,
    "feature_maps": 64,
    "image_channels": 3,
    "image_size": 32,  # a power of two; images are resized to it
    "num_classes": None,  # 10: class-conditional (ask for a class); None: unconditional
    "class_conditioning": "projection",  # how a conditional discriminator sees the label: projection or concat
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
    "loss": "bce",  # bce (the SPEC's), hinge, least_squares or wgan_gp (objectives in trainers/objectives.py)
    "d_steps": 1,  # discriminator steps per generator step (wgan_gp: usually 5)
    "output_dir": "cifar10_GAN",
    "seed": 0,
    "device": "auto",  # cuda, then mps, then cpu
    "sample_every": 10,  # epochs between sample grids (the first and last are always drawn)
    "resume": "auto",  # continue from output_dir/checkpoint.pt if there is one; False starts over
    "label_smoothing": 0.0,  # loss bce: the discriminator's target for real images is 1 - label_smoothing
    "ema_decay": 0.999,  # grids and generator.pt use an exponential moving average of the weights; 0: off
    "eval_every": None,  # epochs between quality metrics (metrics.csv, metrics.json); None: after the last only
    "metrics_features": "auto",  # auto (Inception if its FID weights are in torch hub's cache), inception, classifier
    "inception_weights": "",  # the FID Inception weights file (empty: look in torch hub's cache); never downloaded
    "tensorboard": False,  # also log losses, metrics and grids to output_dir/tensorboard (pip install tensorboard)
    "num_threads": "auto",  # CPU threads: "auto" (the cores not busy with other work) or a number
    "cuda_graphs": True,  # on a CUDA GPU, replay each training step as one CUDA graph (same results, faster)
    "amp": False,  # bfloat16 autocast where the device has native bf16 (CUDA, recent CPUs): faster, not bitwise
    "channels_last": False,  # NHWC memory format for the convolutions (for CUDA; no gain on CPU)
    "compile": False,  # torch.compile the models: slower than eager on a 2-core CPU and than cuda_graphs on a GPU
    "sync_batchnorm": False,  # under torchrun on CUDA: BatchNorm statistics over all processes' batches
}


def main(argv: list[str] | None = None) -> None:
    parse_overrides(
        __doc__,
        {"model_kwargs": model_kwargs, "dataset_kwargs": dataset_kwargs, "trainer_kwargs": trainer_kwargs},
        argv,
        __file__,
    )
    train_gan(DCGANGenerator, DCGANDiscriminator, model_kwargs, dataset_kwargs, trainer_kwargs, "model_kwargs")


if __name__ == "__main__":
    run_cli(main)
