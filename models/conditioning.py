"""Class conditioning, shared by the models: labels as one-hot inputs, and the projection
discriminator's label term (Miyato & Koyama, 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASS_CONDITIONINGS = ("projection", "concat")  # how a discriminator sees the label


def check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and (type(num_classes) is not int or num_classes < 2):
        raise ValueError(f"num_classes must be None (unconditional) or a number of classes >= 2, got {num_classes!r}")


def check_class_conditioning(class_conditioning: str) -> None:
    if class_conditioning not in CLASS_CONDITIONINGS:
        raise ValueError(
            f"class_conditioning must be one of {', '.join(CLASS_CONDITIONINGS)}, got {class_conditioning!r}"
        )


def with_labels(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int | None) -> torch.Tensor:
    """x (N, D) for an unconditional model; [x, one_hot(labels)] (N, D + classes) for a conditional one,
    where labels are class indices (N,), or (N, classes) float weights that are joined as they are."""
    if num_classes is None:
        if labels is not None:
            raise ValueError("this model is unconditional (num_classes None): it takes no labels")
        return x
    if labels is None:
        raise ValueError(f"this model is conditional ({num_classes} classes): pass the labels too")
    if labels.is_floating_point():  # (N, classes) weights: a mix of classes, e.g. to walk from one to another
        return torch.cat([x, labels.to(x.dtype)], 1)
    return torch.cat([x, F.one_hot(labels.long(), num_classes).to(x.dtype)], 1)


class Projection(nn.Module):
    """The label's term of a projection discriminator's logit: <embed(y), phi(x)>, phi(x) the features
    its last layer reads. The discriminator's logit is then psi(phi(x)) + <embed(y), phi(x)>."""

    def __init__(self, num_classes: int, features: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"this model is conditional ({self.embed.num_embeddings} classes): pass the labels too")
        return (self.embed(labels.long()) * features.flatten(1)).sum(1)
