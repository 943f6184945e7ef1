"""The networks alone: shapes, output ranges, losses, gradients, configs and size checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import MODELS, VAE, DCGANDiscriminator, DCGANGenerator, FCDiscriminator, FCGenerator
from models.gan import Dropout
from trainers.objectives import vae_negative_elbo


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_fc_generator_gives_flat_images_in_tanh_range(layers: int) -> None:
    g = FCGenerator(latent_variable_size=8, generator_hidden_size=32, generator_hidden_layers=layers)
    out = g(torch.randn(5, 8) * 10)  # large latents push tanh to its limits
    assert out.shape == (5, 784)
    assert out.min() >= -1 and out.max() <= 1
    assert g.latent_dim == 8 and g.image_shape == (1, 28, 28)
    hidden_linears = [m for m in g.net if isinstance(m, torch.nn.Linear)]
    assert len(hidden_linears) == layers + 1


def test_fc_generator_other_square_size() -> None:
    g = FCGenerator(latent_variable_size=4, generator_hidden_size=16, image_size=16 * 16)
    assert g(torch.randn(3, 4)).shape == (3, 256)
    assert g.image_shape == (1, 16, 16)


def test_fc_discriminator_one_logit_per_image_flat_or_not() -> None:
    d = FCDiscriminator(discriminator_hidden_size=32).eval()
    images = torch.rand(6, 1, 28, 28) * 2 - 1
    logits = d(images)
    assert logits.shape == (6,)
    assert torch.equal(logits, d(images.flatten(1)))  # (N, 1, 28, 28) and (N, 784) are the same input
    p = d.probability(images)
    assert torch.allclose(p, torch.sigmoid(logits)) and ((p > 0) & (p < 1)).all()


def test_fc_discriminator_dropout_only_in_training() -> None:
    d = FCDiscriminator(discriminator_hidden_size=32, discriminator_dropout=0.5)
    x = torch.rand(4, 784)
    d.eval()
    assert torch.equal(d(x), d(x))
    d.train()
    assert not torch.equal(d(x), d(x))


def test_cpu_dropout_keeps_one_minus_p_of_the_units_and_rescales_them() -> None:
    dropout = Dropout(0.3)
    x = torch.full((400, 500), 2.0, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200,000 draws: the std of the mean is 0.001
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.allclose(x.grad[kept], torch.tensor(1 / 0.7))
    dropout.eval()
    assert dropout(x) is x


@pytest.mark.parametrize(("size", "channels"), [(8, 3), (16, 1), (32, 3), (64, 3), (64, 1)])
def test_dcgan_shapes_and_ranges(size: int, channels: int) -> None:
    g = DCGANGenerator(latent_dim=8, feature_maps=4, image_channels=channels, image_size=size)
    d = DCGANDiscriminator(feature_maps=4, image_channels=channels, image_size=size)
    fake = g(torch.randn(3, 8))
    assert fake.shape == (3, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert g.latent_dim == 8 and g.image_shape == (channels, size, size) == d.image_shape
    logits = d(fake)
    assert logits.shape == (3,)
    assert torch.allclose(d.probability(fake), torch.sigmoid(logits))


def test_dcgan_generator_takes_4d_latents_too() -> None:
    g = DCGANGenerator(latent_dim=8, feature_maps=4).eval()
    z = torch.randn(2, 8)
    assert torch.equal(g(z), g(z.view(2, 8, 1, 1)))


def test_dcgan_init_follows_the_paper() -> None:
    g = DCGANGenerator(latent_dim=16, feature_maps=32)
    convs = [m.weight for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    norms = [m.weight for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    conv_std = torch.cat([w.flatten() for w in convs]).std().item()
    assert 0.015 < conv_std < 0.025
    assert abs(torch.cat(norms).mean().item() - 1.0) < 0.01


def test_vae_encode_decode_sample_shapes_and_ranges() -> None:
    vae = VAE(hidden_size=32, latent_dim=6)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 6)
    decoded = vae.decode(torch.randn(5, 6) * 10)
    assert decoded.shape == (5, 784) and decoded.min() >= 0 and decoded.max() <= 1
    assert vae.reconstruct(x).shape == (5, 784)
    samples = vae.sample(7)
    assert samples.shape == (7, 784) and samples.min() >= 0 and samples.max() <= 1
    same = [vae.sample(3, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*same)
    assert vae.latent_dim == 6 and vae.image_shape == (1, 28, 28)


def test_vae_forward_samples_z_in_training_and_evaluation_alike() -> None:
    """forward is the ELBO's stochastic pass in both modes (a test ELBO must sample z as training does);
    the mean latent's decoding is `reconstruct`."""
    vae = VAE(hidden_size=32, latent_dim=6)
    x = torch.rand(4, 784)
    for mode in (vae.train, vae.eval):
        mode()
        out = vae(x)
        assert set(out) == {"logits", "mu", "logvar"} and out["logits"].shape == (4, 784)
        assert not torch.equal(out["logits"], vae(x)["logits"])
        torch.manual_seed(3)
        first = vae(x)["logits"]
        torch.manual_seed(3)
        assert torch.equal(first, vae(x)["logits"])
        assert not torch.allclose(torch.sigmoid(first), vae.reconstruct(x))
    mu = vae.encode(x)[0]
    assert torch.allclose(vae.reconstruct(x), torch.sigmoid(vae.decode_logits(mu)))


def _scalar_loss(model: torch.nn.Module) -> torch.Tensor:
    if isinstance(model, VAE):
        x = torch.rand(4, 1, 28, 28)
        return vae_negative_elbo(x, **model(x))["loss"].mean()
    if isinstance(model, (FCGenerator, DCGANGenerator)):
        out = model(torch.randn(4, model.latent_dim))
        return ((out - torch.rand_like(out)) ** 2).mean()
    return F.binary_cross_entropy_with_logits(
        model(torch.rand(4, *model.image_shape)), torch.tensor([1.0, 0.0, 1.0, 0.0])
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: FCGenerator(8, 16),
        lambda: FCDiscriminator(discriminator_hidden_size=16, discriminator_dropout=0.0),
        lambda: DCGANGenerator(latent_dim=8, feature_maps=4),
        lambda: DCGANDiscriminator(feature_maps=4),
        lambda: VAE(hidden_size=16, latent_dim=4, num_hidden_layers=2),
    ],
    ids=["fc_gen", "fc_disc", "dcgan_gen", "dcgan_disc", "vae"],
)
def test_gradients_reach_every_parameter(make) -> None:
    model = make().train()
    _scalar_loss(model).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_registry_and_config_rebuild_every_model() -> None:
    gan_and_vae = {"FCGenerator", "FCDiscriminator", "DCGANGenerator", "DCGANDiscriminator", "VAE"}
    assert set(MODELS) == gan_and_vae | {"SmallCNN"}  # SmallCNN: the quality metrics' classifier
    instances = [
        FCGenerator(8, 16, generator_hidden_layers=1),
        FCDiscriminator(discriminator_hidden_size=16, discriminator_hidden_layers=3),
        DCGANGenerator(latent_dim=8, feature_maps=4, image_channels=1, image_size=16),
        DCGANDiscriminator(feature_maps=4, image_channels=1, image_size=16),
        VAE(hidden_size=16, latent_dim=4, num_hidden_layers=2),
    ]
    for model in instances:
        rebuilt = MODELS[type(model).__name__](**model.config)
        own, other = model.state_dict(), rebuilt.state_dict()
        assert own.keys() == other.keys()
        assert all(own[k].shape == other[k].shape for k in own)
    generative = [m for m in instances if not type(m).__name__.endswith("Discriminator")]
    assert all(isinstance(m.latent_dim, int) and m.latent_dim > 0 for m in generative)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FCGenerator(image_size=780),
        lambda: FCDiscriminator(image_size=783),
        lambda: VAE(image_size=785),
        lambda: DCGANGenerator(image_size=48),
        lambda: DCGANDiscriminator(image_size=48),
        lambda: DCGANGenerator(image_size=4),
        lambda: DCGANDiscriminator(image_size=33),
    ],
    ids=["fc_gen_780", "fc_disc_783", "vae_785", "dcgan_gen_48", "dcgan_disc_48", "dcgan_gen_4", "dcgan_disc_33"],
)
def test_invalid_image_sizes_raise_value_error(make) -> None:
    with pytest.raises(ValueError, match="image_size"):
        make()


def test_vae_without_hidden_layers_is_refused_or_works() -> None:
    """num_hidden_layers=0 must either be refused at construction (ValueError) or give a working model."""
    try:
        vae = VAE(hidden_size=16, latent_dim=4, num_hidden_layers=0)
    except ValueError:
        return
    x = torch.rand(3, 784)
    terms = vae.loss(x, vae(x))  # a model that builds must also run
    assert torch.isfinite(terms["loss"])
    assert vae.decode(torch.randn(3, 4)).shape == (3, 784)
