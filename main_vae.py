"""Train a fully-connected VAE on MNIST.

Edit the dicts below, or override any key from the command line with dashes for underscores:
    python main_vae.py --num-epochs 10 --root ../shared/data --output-dir runs/vae
"""

from models import VAE
from trainers import train_vae
from utils import parse_overrides, run_cli

mnist_model_kwargs = {
    "hidden_size": 512,  # (change, if required) SPEC: 1024; 512 reaches the same test loss in half the time
    "latent_dim": 32,  # (change, if required) SPEC: 512; 32 reaches a lower test loss (README, Results)
    "image_size": 784,  # 28x28 --> flatten
    "num_hidden_layers": 2,  # hidden layers in the encoder and in the decoder (1 with the SPEC's settings)
    "num_classes": None,  # 10: a conditional VAE (decode a chosen digit); None: unconditional
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
    "beta": 1.0,  # weight of the KL term in training (1: the ELBO); test_loss is always the true -ELBO
    "output_dir": "mnist_VAE",  # (change, if required)
    "seed": 0,
    "device": "auto",  # cuda, then mps, then cpu
    "sample_every": 10,  # epochs between sample grids (the first and last are always drawn)
    "resume": "auto",  # continue from output_dir/checkpoint.pt if there is one; False starts over
    "eval_every": None,  # epochs between quality metrics (metrics.csv, metrics.json); None: after the last only
    "metrics_features": "auto",  # auto (Inception if its FID weights are in torch hub's cache), inception, classifier
    "inception_weights": "",  # the FID Inception weights file (empty: look in torch hub's cache); never downloaded
    "tensorboard": False,  # also log losses, metrics and grids to output_dir/tensorboard (pip install tensorboard)
    "iw_samples": 200,  # importance samples per test image for test_nll_iw (-log p(x)) at evaluations
    "num_threads": "auto",  # CPU threads: "auto" (the cores not busy with other work) or a number
    "cuda_graphs": True,  # on a CUDA GPU, replay each training step as one CUDA graph (same results, faster)
    "amp": False,  # bfloat16 autocast where the device has native bf16 (CUDA, recent CPUs): faster, not bitwise
    "compile": False,  # torch.compile the models: slower than eager on a 2-core CPU and than cuda_graphs on a GPU
}


def main(argv: list[str] | None = None) -> None:
    parse_overrides(
        __doc__,
        {"mnist_model_kwargs": mnist_model_kwargs, "dataset_kwargs": dataset_kwargs, "trainer_kwargs": trainer_kwargs},
        argv,
        __file__,
    )
    train_vae(VAE, mnist_model_kwargs, dataset_kwargs, trainer_kwargs, "mnist_model_kwargs")


if __name__ == "__main__":
    run_cli(main)
