"""`StatusBar`: one always-visible line with the model, device, real precision and live state."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from textual.content import Content
from textual.widgets import Static

from mergechat.core.api import ModelState
from mergechat.ui.session import Phase


@dataclass(frozen=True)
class StatusInfo:
    """Everything the status bar shows; each engine event replaces some fields."""

    phase: Phase = "starting"
    model: str = ""
    device: str = ""
    #: The precision read from the loaded model (`ModelState.dtype`), never the request.
    dtype: str = ""
    merge_method: str | None = None
    #: 0..1 while loading.
    progress: float = 0.0
    tokens_per_s: float | None = None
    context_used: int | None = None
    context_max: int | None = None
    #: The model has no chat template: prompts use mergechat's ChatML fallback (marked always).
    fallback_template: bool = False
    #: The precision a switch asked for during the streaming reply will bring ("": none queued).
    queued_dtype: str = ""

    def with_model(self, state: ModelState) -> StatusInfo:
        """These values with the model fields taken from ``state``."""
        return replace(
            self,
            model=state.name,
            device=state.device,
            dtype=state.dtype,
            merge_method=state.merge_method,
            context_max=state.context_max,
            fallback_template=state.fallback_template,
        )

    def phase_text(self) -> str:
        """The state as shown: ``loading 42%``, ``ready``, ``generating`` ..."""
        if self.phase == "loading":
            return f"loading {self.progress * 100:.0f}%"
        return self.phase


class StatusBar(Static):
    """The status line; call `update_info` with the fields that changed."""

    DEFAULT_CSS = """
    StatusBar { height: 1; }
    """

    def __init__(self, info: StatusInfo | None = None, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.info = info or StatusInfo()

    def on_mount(self) -> None:
        self._render_info()

    def update_info(self, **changes: Any) -> None:
        """Replace some `StatusInfo` fields and repaint."""
        self.info = replace(self.info, **changes)
        self._render_info()

    def set_info(self, info: StatusInfo) -> None:
        """Replace all fields and repaint."""
        self.info = info
        self._render_info()

    def _render_info(self) -> None:
        for name in ("ready", "generating", "switching", "loading", "error"):
            self.set_class(self.info.phase == name, f"-{name}")
        # One line, always: no layout pass needed (this runs on every streamed batch).
        width = self.size.width or None  # 0 before the first layout: the full line
        self.update(self.render_content(self.info, width), layout=False)

    def on_resize(self) -> None:
        self._render_info()

    @staticmethod
    def render_content(info: StatusInfo, width: int | None = None) -> Content:
        """The line for ``info``: parts joined by a separator, empty parts left out.

        Wider than ``width``: short forms first, then the merge method, tok/s and device go and
        the model name is cut; the precision, the phase and the context figure always stay.
        """
        parts: dict[str, Content] = {}
        if info.model:
            parts["model"] = Content.from_markup("[b]$model[/b]", model=info.model)
        if info.device:
            parts["device"] = Content(info.device)
        if info.dtype:
            parts["dtype"] = Content.from_markup("[b]$dtype[/b]", dtype=info.dtype)
        parts["phase"] = Content.from_markup("[reverse] $phase [/reverse]", phase=info.phase_text())
        if info.queued_dtype:
            parts["queued"] = Content.styled(
                f"switch to {info.queued_dtype} after this reply", "$text-accent"
            )
        if info.tokens_per_s is not None:
            parts["tok/s"] = Content(f"{info.tokens_per_s:.1f} tok/s")
        if info.context_max:
            used = info.context_used if info.context_used is not None else 0
            parts["ctx"] = Content(f"ctx {used}/{info.context_max}")
        if info.merge_method:
            parts["merge"] = Content.from_markup("merge: $method", method=info.merge_method)
        if info.fallback_template:
            parts["fallback"] = Content.styled("no chat template: ChatML fallback", "$text-warning")
        short = {
            "fallback": Content.styled("ChatML fallback", "$text-warning"),
            "queued": Content.styled(f"next: {info.queued_dtype}", "$text-accent"),
        }
        return _fit(parts, short, width)


#: How the line gets shorter, step by step: the part's short form ("short"), the part dropped
#: (None), or the model name cut to at most this many cells.
_SHORTER: tuple[tuple[str, str | int | None], ...] = (
    ("fallback", "short"),
    ("merge", None),
    ("tok/s", None),
    ("queued", "short"),
    ("model", 16),
    ("device", None),
    ("model", 2),
    ("queued", None),
)


def _line(parts: dict[str, Content]) -> Content:
    return Content(" ") + Content(" │ ").join(parts.values())


def _fit(parts: dict[str, Content], short: dict[str, Content], width: int | None) -> Content:
    """The parts on one line, shortened until the line fits in ``width`` cells (None: any)."""
    line = _line(parts)
    for name, shorter in _SHORTER:
        if width is None or line.cell_length <= width:
            break
        if name not in parts:
            continue
        if shorter is None:
            del parts[name]
        elif isinstance(shorter, str):
            parts[name] = short[name]
        else:
            part = parts[name]
            keep = max(shorter, part.cell_length - (line.cell_length - width))
            if keep < part.cell_length:
                parts[name] = part[: keep - 1] + "…"
        line = _line(parts)
    return line
