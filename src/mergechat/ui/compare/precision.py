"""The precision menu of one column: the chat's `PrecisionScreen`, titled with the model it
switches (several models are on screen), or why that model cannot switch."""

from __future__ import annotations

from mergechat.core.dtypes import DTYPES, DType
from mergechat.core.model.target import precision_help
from mergechat.core.visible import escape_control
from mergechat.ui.compare.column_view import CompareColumn
from mergechat.ui.screens.precision import PrecisionScreen
from mergechat.ui.verdicts import precision_verdicts


class ColumnPrecisionScreen(PrecisionScreen):
    """`PrecisionScreen` for the model of one column."""

    def __init__(self, label: str, current: DType | None, *, after_reply: bool) -> None:
        # The detector's verdicts stay in the runner's columns: each precision is "not
        # measured yet" here; the engine still refuses one the device cannot run.
        super().__init__(current, precision_verdicts(None, None), after_reply=after_reply)
        self._label = label

    def _title(self) -> str:
        return f"{escape_control(self._label)}: {super()._title()}"


def precision_menu(column: CompareColumn, *, busy: bool) -> ColumnPrecisionScreen | str:
    """The menu for ``column``'s model, or the notice saying why it has none (``busy``: the
    models are answering, so a choice waits for them)."""
    model = column.model
    if model.remote:
        return precision_help(model.path)
    if column.info.phase == "failed" and not column.info.dtype:
        return f"{model.label} is out of the comparison: {column.error}"
    dtype = next((d for d in DTYPES if d == column.info.dtype), None)
    return ColumnPrecisionScreen(model.label, dtype, after_reply=busy)
