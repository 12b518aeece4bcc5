"""Settings problems as notices: a few, then one pointing to F1 (toasts must not hide the chat)."""

from __future__ import annotations

from mergechat.ui.protocols import Notifier

#: Settings problems shown as notices at start-up; past this, one notice points to F1.
NOTICES = 4


def show_settings_problems(app: Notifier, problems: list[str]) -> None:
    """Notify the first few ``problems``; past `NOTICES`, one notice says how many more F1 lists."""
    shown = problems if len(problems) <= NOTICES else problems[: NOTICES - 1]
    for text in shown:
        app.notify(text, title="Settings", severity="warning", timeout=10, markup=False)
    if len(shown) < len(problems):
        app.notify(
            f"{len(problems) - len(shown)} more settings problems: F1 lists them all",
            title="Settings",
            severity="warning",
            timeout=15,
        )
