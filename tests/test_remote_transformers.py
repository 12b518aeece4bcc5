"""The remote backend against a real ``transformers serve`` of a tiny model on 127.0.0.1:
one-shot mode in a subprocess, its JSON, and no torch import in mergechat's own process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fixtures.cli_process import run_mergechat
from fixtures.transformers_server import ServedModel

pytestmark = pytest.mark.slow

TIMEOUT_S = 180.0


def _mergechat(*argv: str) -> subprocess.CompletedProcess[str]:
    return run_mergechat(*argv, timeout=TIMEOUT_S)


def test_oneshot_json_against_transformers_serve(served_tiny_model: ServedModel) -> None:
    served = served_tiny_model
    done = _mergechat(
        served.url, "--prompt", "hi", "--json", "--max-new-tokens", "4", "--temperature", "0"
    )
    assert done.returncode == 0, done.stderr + served.log.read_text()[-2000:]
    result = json.loads(done.stdout)
    assert isinstance(result["reply"], str)
    # transformers serve does not say which precision or device it runs: nothing is claimed.
    assert (result["device"], result["dtype"]) == (None, None)
    assert result["new_tokens"] >= 1 and result["total_s"] > 0


def test_model_flag_and_no_torch_in_mergechats_process(served_tiny_model: ServedModel) -> None:
    served = served_tiny_model
    code = (
        "import sys; from mergechat.cli import main as cli; "
        f"rc = cli.main([{served.url!r}, '--model', {served.model!r}, '--prompt', 'hi', "
        "'--max-new-tokens', '3', '--no-history']); "
        "print('torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr); "
        "sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "False False"
    wrong = _mergechat(served.url, "--model", "not-this-one", "--prompt", "hi")
    assert wrong.returncode == 2 and "is not served" in wrong.stderr
