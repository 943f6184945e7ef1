"""Network definitions only: no training, no I/O.

Every model keeps its constructor arguments in `self.config` (models/base.py), so a checkpoint can
rebuild it (`utils.save_model` / `utils.load_model`), and declares its `kind`: the scripts ask for
models by kind, never by name. Generators and VAEs expose `latent_dim` and `image_shape`; every VAE
follows VAEBase's interface. `SmallCNN` is the classifier whose features the quality metrics compare.

A new model is one file and one line in MODELS (a VAE also one line in VAE_ARCHITECTURES, which
main_vae.py's `architecture` key picks from).
"""

from models.classifier import SmallCNN
from models.conv_vae import ConvVAE
from models.dcgan import DCGANDiscriminator, DCGANGenerator
from models.gan import FCDiscriminator, FCGenerator
from models.vae import VAE

MODELS = {
    cls.__name__: cls
    for cls in (FCGenerator, FCDiscriminator, DCGANGenerator, DCGANDiscriminator, VAE, ConvVAE, SmallCNN)
}
VAE_ARCHITECTURES = {"fc": VAE, "conv": ConvVAE}


def names_of_kind(*kinds: str) -> tuple[str, ...]:
    """The names of the models of these kinds, e.g. names_of_kind("generator", "vae") for what can be sampled."""
    return tuple(name for name, cls in MODELS.items() if cls.kind in kinds)


__all__ = [
    "MODELS",
    "VAE_ARCHITECTURES",
    "names_of_kind",
    "FCGenerator",
    "FCDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "VAE",
    "ConvVAE",
    "SmallCNN",
]
