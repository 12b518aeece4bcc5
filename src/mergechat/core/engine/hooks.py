"""What rides along inside ``model.generate``: the token-id streamer, the cancel check, and the
prefill guard that lets a cancel stop a long prompt's forward pass at the next layer."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from mergechat.core.streaming import ReplyStream


class IdStreamer(BaseStreamer):  # type: ignore[misc]
    """Pushes each new token id into a `ReplyStream`; no decoding, one list append per token.

    ``on_first_token`` is called once, when the first new token arrives (the prefill is over).
    """

    def __init__(
        self,
        stream: ReplyStream,
        eos_ids: set[int],
        on_first_token: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.eos_ids = eos_ids
        self.on_first_token = on_first_token
        self.ids: list[int] = []
        self.generated = 0
        self.saw_eos = False
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        """Receive the prompt (skipped) and then each new token from ``generate``."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
            if self.on_first_token is not None:
                self.on_first_token()
        self.last_at = now
        new = value.tolist()
        self.generated += len(new)
        kept = [i for i in new if i not in self.eos_ids]
        if len(kept) != len(new):
            self.saw_eos = True
        if kept:
            self.ids.extend(kept)
            self.stream.push(kept)

    def end(self) -> None:
        """Called by ``generate`` when it returns; the engine closes the stream itself."""

    def restart(self) -> None:
        """Expect the prompt again: ``generate`` is retried before any token came."""
        self._prompt_seen = False


class CancelCriteria(StoppingCriteria):  # type: ignore[misc]
    """Stops ``generate`` once ``event`` is set (checked once per token)."""

    def __init__(self, event: threading.Event, device: Any) -> None:
        self.event = event
        self._stop = torch.ones(1, dtype=torch.bool, device=device)
        self._go = torch.zeros(1, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return self._stop if self.event.is_set() else self._go


class PrefillCancelled(Exception):
    """The reply was cancelled while the prompt went through the model (before any token)."""


#: Per model, its layers (every child of a ``ModuleList``), where `PrefillGuard` stops. The
#: value must not refer to the model itself, or the entry would keep a released model alive.
_LAYERS: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


class PrefillGuard:
    """Lets a cancel stop the prompt's forward pass (the prefill) at the next layer.

    ``generate`` checks stopping criteria only after each new token, so without this a cancel
    during the prefill of a long prompt waits for the whole pass (seconds on a CPU). A forward
    pre-hook on the model and on each layer (every child of a ``ModuleList``) raises
    `PrefillCancelled` once ``cancel`` is set; hooks run before the layer touches anything, so
    nothing is left half done (the KV cache is per call and dropped). `remove` takes the hooks
    off when the first token arrives: decoding runs without them, at full speed (the hooks cost
    little, once per reply). Chunked prefill (``prefill_chunk_size``) would also give stop
    points, but it made the prefill itself several times slower on a CPU (BENCHMARKS.md).
    """

    def __init__(self, model: Any, cancel: threading.Event) -> None:
        self._cancel = cancel
        layers = _LAYERS.get(model)
        if layers is None:
            # Walking the model's modules is cheap but not free: once per model, not per reply.
            lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
            layers = [layer for layer_list in lists for layer in layer_list]
            _LAYERS[model] = layers
        self._handles = [m.register_forward_pre_hook(self._check) for m in [model, *layers]]

    def _check(self, module: Any, args: Any) -> None:
        if self._cancel.is_set():
            raise PrefillCancelled

    def remove(self) -> None:
        """Take the hooks off (idempotent)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
