"""The one rule every saved network follows: its `config` is its constructor's arguments."""

from __future__ import annotations

import functools
import inspect

from torch import nn


class ConfiguredModule(nn.Module):
    """An nn.Module whose `config` is the arguments its constructor was called with, defaults filled in.

    Recorded when __init__ returns (by __init_subclass__, for every subclass), so a new model or a
    new constructor argument needs no hand-written copy: `utils.save_model` writes `config` and
    `utils.load_model` rebuilds the same network from it. A subclass's own __init__ records last, so
    `config` holds the arguments of the class that was built.
    """

    config: dict

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kwargs) -> None:
            init(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(list(bound.arguments.items())[1:])  # without self
            for name, parameter in signature.parameters.items():
                if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                    arguments |= arguments.pop(name)
            self.config = {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items()}

        cls.__init__ = recording_init


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation of every convolution and linear layer in `module`, in place (Miyato et al., 2018):
    each weight is divided by its largest singular value, estimated by one power iteration per training
    forward pass (its vectors are buffers, so they are in the checkpoint), which keeps the network about
    1-Lipschitz."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)
