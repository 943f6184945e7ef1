"""The networks alone: shapes, output ranges, losses, gradients, configs and size checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import (
    MODELS,
    VAE,
    VAE_ARCHITECTURES,
    ConvVAE,
    DCGANDiscriminator,
    DCGANGenerator,
    FCDiscriminator,
    FCGenerator,
    names_of_kind,
)
from models.gan import Dropout
from models.likelihoods import LIKELIHOODS
from trainers.objectives import vae_negative_elbo
from utils import UserError


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


VAES = [  # (architecture, constructor kwargs): every image shape the conv VAE is for, and the SPEC's
    ("fc", {"hidden_size": 32, "latent_dim": 6}),
    ("conv", {"latent_dim": 6, "image_channels": 1, "image_side": 28, "base_channels": 4}),
    ("conv", {"latent_dim": 6, "image_channels": 3, "image_side": 32, "base_channels": 4}),
    ("conv", {"latent_dim": 6, "image_channels": 3, "image_side": 64, "base_channels": 2}),
    ("conv", {"latent_dim": 6, "image_channels": 1, "image_side": 128, "base_channels": 2}),
]


@pytest.mark.parametrize("likelihood", list(LIKELIHOODS))
@pytest.mark.parametrize(("architecture", "kwargs"), VAES, ids=[f"{a}_{k.get('image_side', 28)}" for a, k in VAES])
def test_every_vae_follows_the_interface(architecture: str, kwargs: dict, likelihood: str) -> None:
    vae = VAE_ARCHITECTURES[architecture](**kwargs, likelihood=likelihood)
    shape = vae.image_shape
    params = LIKELIHOODS[likelihood].num_params
    x = torch.rand(5, *shape)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 6) and vae.latent_dim == 6
    assert torch.equal(vae.encode(x.flatten(1))[0], mu)  # flat pixels are the same images
    assert vae.decode_logits(torch.randn(2, 5, 6)).shape == (2, 5, params * shape[0], *shape[1:])  # K samples at once
    decoded = vae.decode(torch.randn(5, 6) * 10)
    assert decoded.shape == (5, *shape) and decoded.min() >= 0 and decoded.max() <= 1
    assert vae.reconstruct(x).shape == (5, *shape)
    out = vae(x)
    assert set(out) == {"logits", "mu", "logvar"} and out["logits"].shape == (5, params * shape[0], *shape[1:])
    samples = vae.sample(7)
    assert samples.shape == (7, *shape) and samples.min() >= 0 and samples.max() <= 1
    same = [vae.sample(3, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*same)
    terms = vae_negative_elbo(x, **out, likelihood=likelihood)
    assert terms["loss"].shape == (5,) and torch.isfinite(terms["loss"]).all()
    terms["loss"].mean().backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_discretized_logistic_is_a_probability_of_each_8_bit_value() -> None:
    """Its 256 bins sum to 1 for any location and scale, and a narrow one centred on a value gives it
    almost all the mass (the end bins take the tails)."""
    levels = torch.arange(256.0) / 255
    logistic = LIKELIHOODS["logistic"]
    for loc, log_scale in [(0.0, -3.0), (2.0, -6.0), (-5.0, 0.5), (0.3, -9.5)]:
        params = torch.tensor([loc, log_scale]).view(1, 2, 1, 1).expand(256, 2, 1, 1)
        probs = logistic.log_prob(levels.view(256, 1, 1, 1), params).exp()
        assert abs(probs.sum().item() - 1) < 1e-4, (loc, log_scale)
    value = levels[100]
    centred = torch.stack([torch.logit(value), torch.tensor(-7.0)]).view(1, 2, 1, 1)
    assert logistic.log_prob(value.view(1, 1, 1, 1), centred).exp().item() > 0.99


def test_the_continuous_bernoulli_is_a_density_and_the_bernoulli_its_unnormalised_part() -> None:
    x = torch.linspace(0, 1, 20001).view(-1, 1, 1, 1)
    logits = torch.full_like(x, 1.7)
    density = LIKELIHOODS["continuous_bernoulli"].log_prob(x, logits).exp()
    assert abs(torch.trapezoid(density.flatten(), x.flatten()).item() - 1) < 1e-3
    bernoulli = LIKELIHOODS["bernoulli"].log_prob(x, logits)
    assert torch.allclose(bernoulli, -F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def test_vae_forward_samples_z_in_training_and_evaluation_alike() -> None:
    """forward is the ELBO's stochastic pass in both modes (a test ELBO must sample z as training does);
    the mean latent's decoding is `reconstruct`."""
    vae = VAE(hidden_size=32, latent_dim=6)
    x = torch.rand(4, 784)
    for mode in (vae.train, vae.eval):
        mode()
        out = vae(x)
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
    assert set(VAE_ARCHITECTURES.values()) <= set(MODELS.values())
    assert all(MODELS[name].kind == "vae" for name in names_of_kind("vae"))
    assert set(names_of_kind("generator", "vae")) == set(names_of_kind("generator")) | set(names_of_kind("vae"))
    instances = [
        FCGenerator(8, 16, generator_hidden_layers=1),
        FCDiscriminator(discriminator_hidden_size=16, discriminator_hidden_layers=3),
        DCGANGenerator(latent_dim=8, feature_maps=4, image_channels=1, image_size=16),
        DCGANDiscriminator(feature_maps=4, image_channels=1, image_size=16),
        VAE(hidden_size=16, latent_dim=4, num_hidden_layers=2),
        ConvVAE(latent_dim=4, image_channels=3, image_side=32, base_channels=4, likelihood="logistic"),
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
    terms = vae_negative_elbo(x, **vae(x))  # a model that builds must also run
    assert torch.isfinite(terms["loss"]).all()
    assert vae.decode(torch.randn(3, 4)).shape == (3, 1, 28, 28)


def test_an_architecture_takes_its_own_keys_and_defaults(tmp_path) -> None:
    """main_vae.py's one dict serves every architecture: the others' keys are set aside, a key left None
    is the architecture's default, and the conv VAE's image shape left None is the data's."""
    from trainers.vae import pick_architecture

    shared = {"architecture": "fc", "hidden_size": 16, "latent_dim": 4, "likelihood": None, "image_side": None}
    mnist = {"dataset_type": "mnist", "root": str(tmp_path)}
    cls, kwargs = pick_architecture(VAE_ARCHITECTURES, shared, mnist, "model_kwargs")
    assert cls is VAE and "image_side" not in kwargs and kwargs["likelihood"] == "bernoulli"
    cls, kwargs = pick_architecture(VAE_ARCHITECTURES, {**shared, "architecture": "conv"}, mnist, "model_kwargs")
    assert cls is ConvVAE and "hidden_size" not in kwargs and kwargs["likelihood"] == ConvVAE().likelihood
    assert (kwargs["image_channels"], kwargs["image_side"]) == (1, 28)
    cifar = {"dataset_type": "cifar10", "root": str(tmp_path)}
    _, kwargs = pick_architecture(VAE_ARCHITECTURES, {**shared, "architecture": "conv"}, cifar, "model_kwargs")
    assert (kwargs["image_channels"], kwargs["image_side"]) == (3, 32)
    with pytest.raises(UserError, match="architecture"):
        pick_architecture(VAE_ARCHITECTURES, {**shared, "architecture": "transformer"}, mnist, "model_kwargs")
