"""Network definitions only: no training, no I/O.

Every model keeps its constructor arguments in `self.config`, so a checkpoint can rebuild it
(see `utils.save_model` / `utils.load_model`), and generative models expose `latent_dim`
and `image_shape`. `SmallCNN` is the classifier whose features the quality metrics compare.
"""

from models.classifier import SmallCNN
from models.dcgan import DCGANDiscriminator, DCGANGenerator
from models.gan import FCDiscriminator, FCGenerator
from models.vae import VAE

MODELS = {
    cls.__name__: cls for cls in (FCGenerator, FCDiscriminator, DCGANGenerator, DCGANDiscriminator, VAE, SmallCNN)
}

__all__ = ["MODELS", "FCGenerator", "FCDiscriminator", "DCGANGenerator", "DCGANDiscriminator", "VAE", "SmallCNN"]
