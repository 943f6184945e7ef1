"""Trainer keys, each declared once: default, type, allowed values, a one-line help, and whether a
resumed run may change it.

A trainer's settings are a dataclass of `key(...)` fields (the engine's, the speed settings' and its
own, by inheritance). From that one declaration come the script's command line and `--help`
(`utils.parse_overrides`), the checks before any work (`Settings.build`), config.json and the
checkpoint (`as_config`), and the resume rules (`resumable`). A new key is one line:

    r1_gamma: float = key(0.0, "R1 penalty weight on real images; 0: off", at_least(0))
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from utils import UserError, check_type, unknown_key


@dataclass(frozen=True)
class Rule:
    """The values a key allows, and how an error message says so."""

    allows: Callable[[Any], bool]
    text: str


POSITIVE = Rule(lambda v: v > 0, "positive")


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f"{low} or more")


def fraction(include_one: bool = False) -> Rule:
    """[0, 1), or [0, 1] with include_one."""
    return Rule(lambda v: 0 <= v <= 1 and (include_one or v < 1), "in [0, 1]" if include_one else "in [0, 1)")


def one_of(*choices: Any) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(str(c) for c in choices))


def key(default: Any, help: str, rule: Rule | None = None, *, resumable: bool = False) -> Any:
    """A settings field. `rule` checks every value but None; `resumable`: a resumed run may change it
    (output paths, speed settings), where any other change makes it a different run and is refused."""
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule, "resumable": resumable})


def default(value: Any) -> Any:
    """A key declared in a base class, with another default in this one (e.g. the VAE's num_epochs)."""
    return dataclasses.field(default=value, metadata={"inherit": True})


class Declared(NamedTuple):
    default: Any
    type: Any
    help: str
    rule: Rule | None
    resumable: bool


@dataclass
class Settings:
    """The base of every trainer's settings: build them from a kwargs dict, or read their declarations."""

    @classmethod
    def declared(cls) -> dict[str, Declared]:
        hints = typing.get_type_hints(cls)
        result = {}
        for field in dataclasses.fields(cls):
            meta = field.metadata
            if meta.get("inherit"):  # the help, rule and resumability of the base class's declaration
                meta = next(
                    base.__dataclass_fields__[field.name].metadata
                    for base in cls.__mro__[1:]
                    if field.name in getattr(base, "__dataclass_fields__", {})
                    and not base.__dataclass_fields__[field.name].metadata.get("inherit")
                )
            result[field.name] = Declared(
                field.default, hints[field.name], meta["help"], meta["rule"], meta["resumable"]
            )
        return result

    @classmethod
    def build(cls, kwargs: dict, dict_name: str = "trainer_kwargs") -> Settings:
        """The settings for `kwargs` (defaults for the keys it leaves out), or a one-line UserError naming
        the first unknown key (with a did-you-mean), wrongly typed value or value out of range."""
        declared = cls.declared()
        for name, value in kwargs.items():
            if name not in declared:
                raise unknown_key(name, list(declared), dict_name)
            check_type(value, declared[name].type, f"{dict_name}['{name}']")
            rule = declared[name].rule
            if rule is not None and value is not None and not rule.allows(value):
                raise UserError(f"{dict_name}['{name}'] must be {rule.text}, got {value!r}")
        return cls(**kwargs)

    @classmethod
    def resumable(cls) -> set[str]:
        return {name for name, d in cls.declared().items() if d.resumable}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: d.default for name, d in cls.declared().items()}

    def as_config(self) -> dict[str, Any]:
        """Every setting, for config.json and the checkpoint."""
        return dataclasses.asdict(self)

    def pick(self, settings_class: type[Settings]) -> dict[str, Any]:
        """The values of the keys `settings_class` declares (e.g. the speed settings), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(settings_class)}
