"""`GenerationSettings` and the bounds of each field, declared once on the class.

The command-line flags, ``config.toml``, a model's own defaults and the settings form all check
values (and word their errors) from these `Bound` records, so they accept the same values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Kind = Literal["number", "integer", "text"]


@dataclass(frozen=True)
class Bound:
    """What one generation field accepts: its kind and an interval (``None``: unbounded)."""

    kind: Kind
    low: int | None = None
    #: True when ``low`` itself is excluded (``> 0`` rather than ``>= 0``).
    low_open: bool = False
    high: int | None = None
    #: None (absent: the model's default) is allowed.
    optional: bool = True

    def accepts(self, value: float) -> bool:
        """True when the number ``value`` (already of this kind) is finite and in the interval."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def _interval(self, *, flag: bool) -> str:
        below = f"{'>' if self.low_open else '>='} {self.low}"
        if self.kind == "integer":
            if self.high is not None:
                return f"an integer from {self.low} to {self.high}"
            return f"an integer {below}"
        if self.high is not None:
            if flag:
                return f"a number in {'(' if self.low_open else '['}{self.low}, {self.high}]"
            return f"a number {below} and <= {self.high}"
        return f"a {'finite ' if flag else ''}number {below}"

    @property
    def reason(self) -> str:
        """Why a value was refused, as the config file and the form say it (``must be ...``)."""
        if self.kind == "text":
            return "must be a string"
        return f"must be {self._interval(flag=False)}"

    @property
    def flag_rule(self) -> str:
        """What a command-line flag expects (``a finite number >= 0``)."""
        return self._interval(flag=True)


def _field(default: object, bound: Bound) -> Any:
    """A dataclass field whose metadata holds its `Bound`."""
    return field(default=default, metadata={"bound": bound})


@dataclass(frozen=True)
class GenerationSettings:
    """Generation overrides; None means "use the model's generation_config.json default"."""

    #: 0 means greedy decoding.
    temperature: float | None = _field(None, Bound("number", 0))
    top_p: float | None = _field(None, Bound("number", 0, True, 1))
    top_k: int | None = _field(None, Bound("integer", 0))
    max_new_tokens: int = _field(512, Bound("integer", 1, optional=False))
    repetition_penalty: float | None = _field(None, Bound("number", 0, True))
    #: numpy's seed, which transformers' set_seed also sets, takes 0 .. 2**32 - 1.
    seed: int | None = _field(None, Bound("integer", 0, high=2**32 - 1))
    #: Prepended as a system message when not empty.
    system_prompt: str = _field("", Bound("text", optional=False))


#: Each field's bound, in field order (also the order of the config file's keys).
BOUNDS: dict[str, Bound] = {f.name: f.metadata["bound"] for f in fields(GenerationSettings)}
