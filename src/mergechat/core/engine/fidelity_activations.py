"""Record the largest magnitude each module of a model produces during one forward pass."""

from __future__ import annotations

import math
from typing import Any


class ActivationRecorder:
    """Forward hooks on every module: largest |output| (and |input| of leaf modules) by name.

    Also notes the first module, in execution order, whose output held inf or NaN: where a
    float16 run overflowed.
    """

    def __init__(self, model: Any) -> None:
        self.maxima: dict[str, float] = {}
        self.first_nonfinite: str | None = None
        self._handles = []
        for name, module in model.named_modules():
            if not name:
                continue  # the whole model: its output is the logits, recorded by lm_head
            leaf = next(iter(module.children()), None) is None
            self._handles.append(module.register_forward_hook(self._hook(name, leaf)))

    def _hook(self, name: str, leaf: bool) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], output: Any) -> None:
            if leaf and args:
                self._note(f"{name} (input)", args[0])
            if isinstance(output, (tuple, list)):
                output = output[0] if output else None
            self._note(name, output)

        return hook

    def _note(self, name: str, value: Any) -> None:
        import torch

        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return
        if value.numel() == 0:
            return
        data = value.detach()
        if bool(torch.isfinite(data).all()):
            magnitude = float(data.abs().max().float())
        else:
            magnitude = math.inf
            if self.first_nonfinite is None:
                self.first_nonfinite = name
        self.maxima[name] = max(self.maxima.get(name, 0.0), magnitude)

    def largest(self) -> tuple[float, str | None]:
        """The largest magnitude recorded and where (the first overflow when one happened)."""
        if self.first_nonfinite is not None:
            return math.inf, self.first_nonfinite
        if not self.maxima:
            return 0.0, None
        name = max(self.maxima, key=lambda key: self.maxima[key])
        return self.maxima[name], name

    def detach(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
