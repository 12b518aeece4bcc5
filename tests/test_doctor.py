"""`mergechat doctor`: the text and JSON reports, from synthetic data and on the real tiny merge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mergechat.cli import main as cli
from mergechat.cli.doctor_report import DoctorReport, report_to_json
from mergechat.cli.doctor_text import format_text, human_bytes, human_count
from mergechat.core.detect.capabilities import (
    Assessment,
    Capabilities,
    ChoiceVerdict,
    DeviceInfo,
    FitResult,
    ProbeResult,
    Recommendation,
)
from mergechat.core.model.info import ModelInfo
from mergechat.core.model.recipe import MergeInfo

GIB = 1024**3
HALF_ERROR = "\"addmm_impl_cpu_\" not implemented for 'Half' " + "and a long tail " * 10


def _caps() -> Capabilities:
    cpu = DeviceInfo("cpu", "cpu", "Test CPU", 16 * GIB, 9 * GIB, ("avx2", "avx512_bf16"), 8)
    gpu = DeviceInfo("cuda:0", "cuda", "Fake GPU", 24 * GIB, 20 * GIB, (), None, (8, 6), True)
    probes = (
        ProbeResult("cpu", "float32", "ok", 3.1, 1.0, decode_s=0.01, prefill_s=0.001),
        ProbeResult("cpu", "bfloat16", "slow", 40.0, 12.9, decode_s=0.05, prefill_s=0.03),
        ProbeResult("cpu", "float16", "unsupported", None, error=HALF_ERROR),
        ProbeResult("cuda:0", "float32", "ok", 0.00012, 2.0),
        ProbeResult("cuda:0", "bfloat16", "ok", 0.00006, 1.0),
        ProbeResult("cuda:0", "float16", "ok", 0.00006, 1.01),
    )
    return Capabilities((cpu, gpu), probes, "2.13.0+cpu", 0.81, from_cache=True)


def _model() -> ModelInfo:
    merge = MergeInfo(
        "dare_ties", "/models/base", ("/models/a", "/models/b"), "bfloat16", None, "base"
    )
    return ModelInfo(
        path=Path("/models/merged"),
        name="merged",
        model_type="llama",
        architectures=("LlamaForCausalLM",),
        declared_dtype="bfloat16",
        stored_dtypes=("bfloat16",),
        parameter_count=1_235_814_400,
        weights_format="safetensors",
        weight_files=(Path("/models/merged/model.safetensors"),),
        weights_bytes_on_disk=2_471_628_800,
        has_tokenizer=True,
        has_chat_template=False,
        has_generation_config=True,
        context_length=8192,
        merge=merge,
        warnings=("config.json declares bfloat16 but tensors are float32",),
    )


def _assessment() -> Assessment:
    fit = FitResult("cuda:0", "bfloat16", 3 * GIB, 20 * GIB, True)
    verdicts = (
        ChoiceVerdict("cpu", "float32", "ok", "ok"),
        ChoiceVerdict("cpu", "float16", "unsupported", "unsupported: " + HALF_ERROR),
        ChoiceVerdict("cuda:0", "bfloat16", "ok", "ok", fit=fit),
    )
    rec = Recommendation("cuda:0", "bfloat16", None, "the merge's dtype runs natively here")
    return Assessment(verdicts, rec, warnings=("float16 may overflow in DARE merges",))


def _report() -> DoctorReport:
    return DoctorReport("0.1.0", "3.11.9", "Linux", "5.24.0", _caps(), _model(), _assessment())


def test_text_report_sections_and_alignment() -> None:
    text = format_text(_report())
    assert "\t" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "  CPU                Test CPU (8 cores)" in text
    assert "  RAM                9.0 GiB free of 16.0 GiB" in text
    assert "  Probe time         0.81 s (cached)" in text
    assert "cuda:0: Fake GPU · compute capability 8.6 · native bfloat16" in text
    assert "  Parameters         1.24 B (1,235,814,400)" in text
    assert "  Merge              dare_ties (dtype bfloat16, out_dtype -)" in text
    assert "  Sources            /models/a\n                     /models/b" in text
    assert "none: a ChatML fallback will be used" in text
    assert "  Context length     8,192 tokens" in text
    assert "  * cuda:0  bfloat16  ok" in text
    assert "3.0 GiB needed, 20.0 GiB free" in text
    assert "Recommendation\n  Device             cuda:0\n  Precision          bfloat16\n" in text
    assert "  Reason             the merge's dtype runs natively here" in text
    assert "  Warning            float16 may overflow in DARE merges" in text
    # Probe rows: the verdict column starts at the same offset on every row.
    rows = [line for line in text.splitlines() if line.startswith(("    float", "    bfloat"))]
    assert len(rows) == 6
    assert {line.index(line.split()[1]) for line in rows} == {14}
    assert "float16   unsupported: \"addmm_impl_cpu_\" not implemented for 'Half'" in text
    assert "Devices and precisions (predicted per chat turn)" in text
    assert "    bfloat16  slow 12.9x per turn       20.0        33.3    40.0 s  12.90x" in text
    assert "…" in text  # the long error is cut in text


def test_json_report_is_plain_and_complete() -> None:
    data = json.loads(json.dumps(report_to_json(_report())))
    assert data["capabilities"]["from_cache"] is True
    assert data["capabilities"]["probes"][2]["error"] == HALF_ERROR  # whole, not cut
    assert data["model"]["path"] == "/models/merged"
    assert data["model"]["merge"]["merge_method"] == "dare_ties"
    assert data["model"]["native_dtype"] == "bfloat16"
    assert data["assessment"]["recommendation"]["device"] == "cuda:0"
    assert data["capabilities"]["devices"][1]["compute_capability"] == [8, 6]


def test_human_units() -> None:
    assert human_bytes(None) == "unknown"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 * GIB) == "3.0 GiB"
    assert human_bytes(4096 * GIB) == "4096.0 GiB"
    assert human_count(612_352) == "612 K (612,352)"
    assert human_count(135_000_000) == "135 M (135,000,000)"
    assert human_count(999) == "999"


def test_doctor_unavailable_device_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--device", "cuda:3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mergechat: error: device cuda:3 is not available")
    assert "Traceback" not in err


def test_doctor_machine_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mergechat 0.1.0 doctor\n")
    for dtype in ("float32", "bfloat16", "float16"):
        assert f"    {dtype}" in out
    assert "Recommendation" not in out


@pytest.mark.slow
def test_doctor_text_on_tiny_merge(
    tiny_merge_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["doctor", str(tiny_merge_dir)]) == 0
    out = capsys.readouterr().out
    assert f"Model {tiny_merge_dir}" in out
    assert "dare_ties (dtype bfloat16" in out
    assert "  Declared dtype     bfloat16" in out
    assert "  Stored dtypes      bfloat16" in out
    assert "  Chat template      yes" in out
    # Which dtype wins depends on this machine's probes; the section and its reason must be there.
    pattern = r"\nRecommendation\n  Device +cpu\n  Precision +b?float(16|32)\n  Reason +\S"
    assert re.search(pattern, out)
    assert "* cpu" in out


@pytest.mark.slow
def test_doctor_json_on_tiny_merge(
    tiny_merge_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["doctor", str(tiny_merge_dir), "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["merge"]["merge_method"] == "dare_ties"
    assert data["model"]["declared_dtype"] == "bfloat16"
    assert data["model"]["path"] == str(tiny_merge_dir.resolve())
    rec = data["assessment"]["recommendation"]
    assert rec["device"] == "cpu" and rec["dtype"] in ("float32", "bfloat16", "float16")
    assert rec["reason"]
    probes = data["capabilities"]["probes"]
    assert {p["dtype"] for p in probes if p["device"] == "cpu"} == {
        "float32",
        "bfloat16",
        "float16",
    }


def test_doctor_warns_about_files_other_users_can_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mergechat.core.settings import locations

    config = locations.config_file()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.parent.chmod(0o700)
    config.write_text("[ui]\n")
    config.chmod(0o600)
    assert cli.main(["doctor"]) == 0
    assert "can be read by other users" not in capsys.readouterr().out

    config.chmod(0o644)  # written by hand with a common umask
    assert cli.main(["doctor"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # long rows wrap
    assert f"Warning {config} can be read by other users (mode 644); chmod 600 it" in out
    assert config.stat().st_mode & 0o777 == 0o644  # reported, never changed behind the user's back


def test_doctor_lists_every_config_problem_with_keymap_clashes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mergechat.core.settings import locations

    config = locations.config_file()
    config.parent.mkdir(parents=True, exist_ok=True)
    bad = "\n".join(f"k{i} = {i}" for i in range(6))  # more than the app's notices show
    config.write_text(bad + '\n[keymap]\nsend = "ctrl+r"\n')
    assert cli.main(["doctor"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # long rows wrap
    assert f"Settings Config file {config} Config problems {config}:1: unknown key 'k0'" in out
    assert all(f"unknown key 'k{i}'; ignored" in out for i in range(6))
    assert "keymap: ctrl+r is given to both 'send' (Send) and 'regenerate' (Regenerate)" in out
    assert cli.main(["doctor", "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["config_problems"]
    assert len(problems) == 7 and problems[-1].startswith("keymap: ctrl+r is given to both")


def test_doctor_says_when_the_config_has_no_problems(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    assert "  Config problems    none" in capsys.readouterr().out
