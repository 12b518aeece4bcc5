"""The error types mergechat raises for users: one clear message, an exit code, an optional hint."""

from __future__ import annotations


class MergechatError(Exception):
    """A failure while running (exit code 1). ``hint`` says what to do instead, if anything."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInputError(MergechatError):
    """The user asked for something that cannot be (a path, flag, device or model): exit code 2."""

    exit_code = 2


class ModelFolderError(BadInputError):
    """The model path is missing, not a model, or broken in a way found before loading."""


class DeviceUnavailableError(BadInputError):
    """The requested device does not exist on this machine."""


def first_line(exc: BaseException, *, typed: bool = True, limit: int = 300) -> str:
    """The first line of ``exc``'s message for a one-line report; its type name when it has none.

    ``typed`` puts the type in front (``KeyError: name``); a KeyError's quotes are dropped.
    """
    text = str(exc).strip()
    if isinstance(exc, KeyError) and text.startswith("'"):
        text = text.strip("'")
    first = text.splitlines()[0].strip() if text else ""
    if not first:
        return type(exc).__name__
    line = f"{type(exc).__name__}: {first}" if typed else first
    return line if len(line) <= limit else line[: limit - 1] + "…"
