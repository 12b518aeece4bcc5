"""`mergechat doctor`: what this machine runs and how fast, and for a model, what fits and why.

The findings are gathered in `doctor_report` and written as text by `doctor_text`.

Doctor runs the probes on the main thread: it never generates, so there is no engine thread
whose speed it could spoil.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from mergechat.cli.doctor_report import DoctorRequest as DoctorRequest
from mergechat.cli.doctor_report import gather, report_to_json
from mergechat.cli.doctor_text import format_text


def run_doctor(request: DoctorRequest, *, out: TextIO | None = None) -> int:
    """Print the report (text or one JSON object); return the exit code.

    When the model has a problem that stops it from chatting, the report is printed first and
    then `ModelFolderError` is raised (one error line, exit code 2).
    """
    from mergechat.core.model.inspection import require_usable

    stream = out or sys.stdout
    report = gather(request)
    if request.json_output:
        stream.write(json.dumps(report_to_json(report), indent=2, ensure_ascii=False) + "\n")
    else:
        stream.write(format_text(report))
    stream.flush()
    if report.model is not None:
        require_usable(report.model)
    return 0
