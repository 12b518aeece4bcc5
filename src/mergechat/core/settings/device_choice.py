"""`DeviceChoice`: the one parser of device names, shared by the flags, the config and detection.

Here (below detection) because the config file must read ``[model] device`` without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

DeviceKind = Literal["auto", "cpu", "cuda", "mps", "xpu"]
#: The accepted forms, as messages list them.
DEVICE_FORMS = "auto, cpu, cuda, cuda:N, mps, xpu or xpu:N"
#: Kinds that may name one of several devices (``cuda:1``); the others are one device only.
INDEXED_KINDS: tuple[DeviceKind, ...] = ("cuda", "xpu")
_SPEC = re.compile(r"(auto|cpu|mps|cuda|xpu)(?::(\d{1,3}))?")


@dataclass(frozen=True)
class DeviceChoice:
    """A device as the user names it: a kind and, for CUDA and XPU, an optional index."""

    kind: DeviceKind
    #: None for ``cuda`` without a number (the first one) and for single devices.
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceChoice:
        """Read ``text`` (case and spaces ignored); ValueError(``unknown device 'x'``) if bad."""
        match = _SPEC.fullmatch(text.strip().lower())
        if match is None or (match[2] is not None and match[1] not in INDEXED_KINDS):
            raise ValueError(f"unknown device {text!r}")
        index = int(match[2]) if match[2] is not None else None
        return cls(cast(DeviceKind, match[1]), index)

    def __str__(self) -> str:
        """The canonical text: ``auto``, ``cpu``, ``cuda``, ``cuda:1``."""
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def device_id(self) -> str | None:
        """The detected device this names (``cuda`` -> ``cuda:0``); None for ``auto``."""
        if self.kind == "auto":
            return None
        if self.kind in INDEXED_KINDS:
            return f"{self.kind}:{self.index or 0}"
        return self.kind

    @property
    def accelerator(self) -> bool:
        """True for a named accelerator (not ``auto``, not the CPU)."""
        return self.kind not in ("auto", "cpu")
