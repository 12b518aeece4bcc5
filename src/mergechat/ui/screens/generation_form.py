"""`GenerationForm`: the generation inputs, each checked by the config file's own rules."""

from __future__ import annotations

import contextlib
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Input, Label, Static, TextArea

from mergechat.core.settings.config import parse_generation_field
from mergechat.core.settings.generation import GenerationSettings

#: (field name, label, hint) of the number inputs, in tab order.
GENERATION_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("temperature", "Temperature", "0 = greedy; empty = model default"),
    ("top_p", "Top p", "0 < p <= 1; empty = model default"),
    ("top_k", "Top k", "0 = off; empty = model default"),
    ("max_new_tokens", "Max new tokens", "per reply"),
    ("repetition_penalty", "Repetition penalty", "1 = off; empty = model default"),
    ("seed", "Seed", "empty = random"),
)
_HINTS = {name: hint for name, _, hint in GENERATION_FIELDS}


def _text(value: object) -> str:
    return "" if value is None else str(value)


class GenerationForm(Vertical):
    """Inputs ``#gen-<field>`` with a note ``#gen-<field>-error`` beside each, and the prompt."""

    DEFAULT_CSS = "GenerationForm { height: auto; }"

    def __init__(self, settings: GenerationSettings, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._settings = settings

    def compose(self) -> ComposeResult:
        yield Static("Generation", classes="section-title")
        for name, label, hint in GENERATION_FIELDS:
            with Horizontal(classes="form-row"):
                yield Label(label, classes="form-label")
                yield Input(
                    _text(getattr(self._settings, name)),
                    placeholder="model default",
                    id=f"gen-{name}",
                    classes="gen-field",
                    compact=True,
                )
                yield Static(hint, id=f"gen-{name}-error", classes="field-hint")
        yield Label("System prompt", classes="form-label")
        yield TextArea(
            self._settings.system_prompt,
            id="system-prompt",
            soft_wrap=True,
            tab_behavior="focus",
            compact=True,
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("gen-"):
            event.stop()
            with contextlib.suppress(ValueError):  # the reason is shown beside the field
                self.check(event.input.id.removeprefix("gen-"))

    def check(self, name: str) -> object:
        """Parse one field and show why it is bad (or its hint) beside it; ValueError if bad."""
        note = self.query_one(f"#gen-{name}-error", Static)
        try:
            value = parse_generation_field(name, self.query_one(f"#gen-{name}", Input).value)
        except ValueError as exc:
            note.update(Content.styled(str(exc), "$text-error"))
            note.add_class("-invalid")
            raise
        note.update(_HINTS[name])
        note.remove_class("-invalid")
        return value

    def read(self) -> tuple[GenerationSettings | None, list[Input]]:
        """The settings typed, or None and the invalid inputs (each with its reason shown)."""
        values: dict[str, Any] = {}
        invalid: list[Input] = []
        for name, _, _ in GENERATION_FIELDS:
            try:
                values[name] = self.check(name)
            except ValueError:
                invalid.append(self.query_one(f"#gen-{name}", Input))
        if invalid:
            return None, invalid
        prompt = self.query_one("#system-prompt", TextArea).text
        return GenerationSettings(**values, system_prompt=prompt), []
