"""Fixtures for every UI test: notifications recorded through Textual's public ``App.notify``."""

from __future__ import annotations

import pytest
from app_helpers import record_notifications


@pytest.fixture(autouse=True)
def _recorded_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each app's notifications, for `app_helpers.notifications`."""
    record_notifications(monkeypatch)
