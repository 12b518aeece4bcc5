"""Save a comparison as one conversation: the prompt, then each model's reply in column order.

Each reply row names its own model, device and precision, so the history list, the Markdown
export (one heading per model) and the JSON export keep who said what.
"""

from __future__ import annotations

from collections.abc import Sequence

from mergechat.core.compare.events import ModelResult
from mergechat.core.settings.generation import GenerationSettings
from mergechat.core.store.records import MessageState
from mergechat.core.store.store import HistoryStore

_STATES: dict[str, MessageState] = {"complete": "complete", "length": "complete"}


def save_comparison(
    store: HistoryStore,
    prompt: str,
    settings: GenerationSettings,
    results: Sequence[ModelResult],
) -> int:
    """Write the comparison and return its conversation id (filed under the first model)."""
    conv_id = store.new_conversation(results[0].model.path)
    store.add_message(conv_id, "user", prompt)
    for result in results:
        state: MessageState = (
            "failed" if result.error else _STATES.get(result.finish or "", "stopped")
        )
        message = store.add_message(conv_id, "assistant", "", "streaming")
        store.update_reply(
            message,
            result.reply,
            state,
            stats=result.stats,
            settings=settings,
            model_path=result.state.path if result.state is not None else result.model.path,
            finish_reason=result.finish,
            error=result.error,
        )
    return conv_id


def record_comparison(
    prompt: str,
    settings: GenerationSettings,
    results: Sequence[ModelResult],
    *,
    enabled: bool | None = None,
) -> int | None:
    """Save the comparison in the history database unless history is off: ``enabled`` False
    (``--no-history``), or None and the config's ``history.enabled`` false. Returns the
    conversation id (None: not saved); raises `HistoryUnavailable` when the store cannot be used.
    """
    if enabled is None:
        from mergechat.core.settings.config import load_config

        enabled = load_config()[0].history.enabled
    if not enabled or not results:
        return None
    with HistoryStore.open() as store:
        return save_comparison(store, prompt, settings, results)
