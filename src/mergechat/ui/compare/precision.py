"""The precision menu of one column: the chat's `PrecisionScreen`, titled with the model it
switches (several models are on screen) and with the detector's verdicts for that model, or why
that model cannot switch."""

from __future__ import annotations

from collections.abc import Mapping

from mergechat.core.api import CapabilitiesReady, ModelState
from mergechat.core.dtypes import DType
from mergechat.core.model.target import precision_help
from mergechat.core.visible import escape_control
from mergechat.ui.compare.column_view import CompareColumn
from mergechat.ui.screens.precision import PrecisionScreen
from mergechat.ui.verdicts import ShownVerdict, precision_verdicts


class ColumnPrecisionScreen(PrecisionScreen):
    """`PrecisionScreen` for the model of one column."""

    def __init__(
        self,
        label: str,
        current: DType | None,
        verdicts: Mapping[DType, ShownVerdict],
        *,
        after_reply: bool,
    ) -> None:
        super().__init__(current, verdicts, after_reply=after_reply)
        self._label = label

    def _title(self) -> str:
        return f"{escape_control(self._label)}: {super()._title()}"


def precision_menu(
    column: CompareColumn,
    *,
    busy: bool,
    detection: tuple[CapabilitiesReady | None, ModelState | None] = (None, None),
) -> ColumnPrecisionScreen | str:
    """The menu for ``column``'s model, or the notice saying why it has none (``busy``: the
    models are answering, so a choice waits for them; ``detection``: the runner's
    `CompareRunner.detection` for the model, None parts showing "not measured yet")."""
    model = column.model
    if model.remote:
        return precision_help(model.path)
    if column.info.phase == "failed" and not column.info.dtype:
        return f"{model.label} is out of the comparison: {column.error}"
    ready, state = detection
    # The loaded model's device, else the one the detector recommends (it loads there).
    device = state.device_id if state is not None else None
    if device is None and ready is not None and ready.assessment is not None:
        device = ready.assessment.recommendation.device
    verdicts = precision_verdicts(ready, device, state)
    return ColumnPrecisionScreen(model.label, column.info.dtype, verdicts, after_reply=busy)
