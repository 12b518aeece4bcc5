"""The commands an `EngineClient` call becomes, as data: queued on a thread or sent down a pipe.

`mergechat.core.client_base` turns each call into one; the engine thread, the engine process and
the remote client run them. A new engine call is a new command here. Slotted: they are made for
every call and pickled down the engine process's pipe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mergechat.core.api import ChatMessage, EngineClient, LoadRequest
from mergechat.core.dtypes import DType
from mergechat.core.settings.generation import GenerationSettings


@dataclass(frozen=True, slots=True)
class LoadCommand:
    """`EngineClient.load`."""

    request: LoadRequest


@dataclass(frozen=True, slots=True)
class PromptCommand:
    """What every call that runs the model over a conversation carries."""

    #: Allocated by the client, so the call returns at once; events carry it back.
    request_id: int
    messages: tuple[ChatMessage, ...]
    settings: GenerationSettings


@dataclass(frozen=True, slots=True)
class GenerateCommand(PromptCommand):
    """`EngineClient.generate`, with the request id the client handed back."""

    continue_last: bool
    #: When the reply was asked for (``time.perf_counter``): where its time to first token starts.
    requested_at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class CancelCommand:
    """`EngineClient.cancel` (only the process engine sends it: the others act at once)."""


@dataclass(frozen=True, slots=True)
class SwitchCommand:
    """`EngineClient.switch_dtype`."""

    dtype: DType


@dataclass(frozen=True, slots=True)
class DetectCommand:
    """`EngineClient.detect`."""

    model_path: Path | None
    device: str


@dataclass(frozen=True, slots=True)
class ScoreCommand(PromptCommand):
    """`EngineClient.score_agreement`: top-1 agreement with ``reference`` as the answer."""

    reference: str
    #: The reference's token ids when it came from the same tokenizer (exact, no re-encoding).
    reference_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class StopCommand:
    """`EngineClient.shutdown`: ends the queue once the commands before it have run."""

    timeout: float = 5.0


Command = (
    LoadCommand
    | GenerateCommand
    | CancelCommand
    | SwitchCommand
    | DetectCommand
    | ScoreCommand
    | StopCommand
)


def ask_reply(client: EngineClient, command: GenerateCommand) -> int:
    """Ask ``client`` for the reply ``command`` describes; returns ``client``'s request id."""
    settings, last = command.settings, command.continue_last
    return client.generate(command.messages, settings, continue_last=last)


def apply(client: EngineClient, command: Command) -> int | None:
    """Make the `EngineClient` call ``command`` stands for; a reply's request id is returned."""
    if isinstance(command, GenerateCommand):
        return ask_reply(client, command)
    if isinstance(command, ScoreCommand):
        ids = command.reference_ids
        return client.score_agreement(
            command.messages, command.settings, command.reference, reference_ids=ids
        )
    if isinstance(command, LoadCommand):
        client.load(command.request)
    elif isinstance(command, SwitchCommand):
        client.switch_dtype(command.dtype)
    elif isinstance(command, DetectCommand):
        client.detect(command.model_path, command.device)
    elif isinstance(command, CancelCommand):
        client.cancel()
    else:
        client.shutdown(command.timeout)
    return None
