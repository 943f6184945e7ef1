"""Train a fully-connected GAN on MNIST.

Edit the dicts below, or override any key from the command line with dashes for underscores:
    python main_gan.py --num-epochs 3 --batch-size 64 --root ../shared/data --output-dir runs/a
"""

from models import FCDiscriminator, FCGenerator
from trainers import train_gan
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
    "loss": "bce",  # bce (the SPEC's), hinge, least_squares or wgan_gp (objectives in trainers/objectives.py)
    "d_steps": 1,  # discriminator steps per generator step (wgan_gp: usually 5)
    "output_dir": "mnist_GAN",  # (change, if required)
    "seed": 0,
    "device": "auto",  # cuda, then mps, then cpu
    "sample_every": 10,  # epochs between sample grids (the first and last are always drawn)
    "resume": "auto",  # continue from output_dir/checkpoint.pt if there is one; False starts over
    "label_smoothing": 0.1,  # loss bce: the discriminator's target for real images is 1 - label_smoothing
    "ema_decay": 0.999,  # grids and generator.pt use an exponential moving average of the weights; 0: off
    "eval_every": None,  # epochs between quality metrics (metrics.csv, metrics.json); None: after the last only
    "metrics_features": "auto",  # auto (Inception if its FID weights are in torch hub's cache), inception, classifier
    "inception_weights": "",  # the FID Inception weights file (empty: look in torch hub's cache); never downloaded
    "tensorboard": False,  # also log losses, metrics and grids to output_dir/tensorboard (pip install tensorboard)
    "num_threads": "auto",  # CPU threads: "auto" (the cores not busy with other work) or a number
    "cuda_graphs": True,  # on a CUDA GPU, replay each training step as one CUDA graph (same results, faster)
    "amp": False,  # bfloat16 autocast where the device has native bf16 (CUDA, recent CPUs): faster, not bitwise
    "compile": False,  # torch.compile the models: slower than eager on a 2-core CPU and than cuda_graphs on a GPU
    "sync_batchnorm": False,  # under torchrun on CUDA: BatchNorm statistics over all processes' batches
}


def main(argv: list[str] | None = None) -> None:
    parse_overrides(
        __doc__,
        {"mnist_model_kwargs": mnist_model_kwargs, "dataset_kwargs": dataset_kwargs, "trainer_kwargs": trainer_kwargs},
        argv,
        __file__,
    )
    train_gan(FCGenerator, FCDiscriminator, mnist_model_kwargs, dataset_kwargs, trainer_kwargs, "mnist_model_kwargs")


if __name__ == "__main__":
    run_cli(main)
