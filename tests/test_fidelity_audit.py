"""`mergechat doctor PATH --fidelity`: measured float16 safety, its cache, and its failures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from mergechat.cli import main as cli
from mergechat.core.detect.devices import detect_devices
from mergechat.core.detect.fidelity_cache import cache_file, float16_safety
from mergechat.core.engine import fidelity_audit
from mergechat.core.model.inspection import inspect_model


def _copy_with(source: Path, dest: Path, scale: dict[str, Any]) -> Path:
    """Copy a tiny model and change its bfloat16 weights: ``name -> function(tensor)``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, dest)
    file = dest / "model.safetensors"
    tensors = load_file(file)
    for name, change in scale.items():
        change(tensors[name])
    save_file(tensors, file, metadata={"format": "pt"})
    return dest


def _big_weight(tensor: Any) -> None:
    tensor[0, 0] = 70000.0  # past float16's 65504: inf once cast


def _times(factor: float) -> Any:
    def change(tensor: Any) -> None:
        tensor.mul_(factor)

    return change


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A comfortable copy, one with a 70000 weight, one whose MLP activations overflow."""
    root = tmp_path_factory.mktemp("fidelity")
    hot_weight = {"model.layers.0.mlp.down_proj.weight": _big_weight}
    # Weights stay small (about 100) but gate * up inside the first MLP passes 65504.
    hot_act = {
        "model.layers.0.mlp.gate_proj.weight": _times(2000.0),
        "model.layers.0.mlp.up_proj.weight": _times(2000.0),
    }
    return {
        "cool": _copy_with(tiny_model_dir, root / "cool", {}),
        "hot_weight": _copy_with(tiny_model_dir, root / "hot-weight", hot_weight),
        "hot_activation": _copy_with(tiny_model_dir, root / "hot-activation", hot_act),
    }


def _doctor_json(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    assert cli.main(["doctor", str(path), "--device", "cpu", "--json", *flags]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def _row(data: dict[str, Any], dtype: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        r for r in data["fidelity"] if r["device"] == "cpu" and r["dtype"] == dtype
    ]
    assert len(rows) == 1
    return rows[0]


def test_overflowing_weight_is_named_and_float16_marked_unsafe(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = _doctor_json(models["hot_weight"], capsys, "--fidelity")
    assert data["assessment"]["recommendation"]["device"] == "cpu"  # public keys kept
    assert data["assessment"]["recommendation"]["dtype"]
    half = _row(data, "float16")
    assert half["finite"] is False
    assert half["near_float16_limit"] is True
    assert half["max_logit_diff"] is None  # inf is not JSON: null, and finite says why
    assert half["largest_weight_name"] == "model.layers.0.mlp.down_proj.weight"
    assert half["largest_weight"] > 65504
    assert half["first_nonfinite_layer"].startswith("model.layers.0.mlp.down_proj")
    full = _row(data, "float32")
    assert full["finite"] is True and full["top1_agreement"] == 1.0
    assert _row(data, "bfloat16")["finite"] is True
    assert data["fidelity_verdict"]["safe"] is False
    safety = float16_safety(inspect_model(models["hot_weight"]))
    assert safety is not None and not safety.safe
    assert safety.worst_name == "model.layers.0.mlp.down_proj.weight"
    assert "model.layers.0.mlp.down_proj.weight" in safety.reason and "65504" in safety.reason


def test_overflowing_activation_names_the_layer(models: dict[str, Path]) -> None:
    info = inspect_model(models["hot_activation"])
    audit = fidelity_audit.audit_model(info, [d for d in detect_devices() if d.kind == "cpu"])
    half = next(r for r in audit.rows if r.dtype == "float16")
    full = next(r for r in audit.rows if r.dtype == "float32")
    assert half.finite is False and half.near_float16_limit is True
    assert half.largest_weight is not None and half.largest_weight < 65504  # not the weights
    assert half.first_nonfinite_layer is not None
    assert half.first_nonfinite_layer.startswith("model.layers.0.mlp")
    assert full.finite is True and full.largest_activation is not None
    assert full.largest_activation > 65504  # float32 holds what float16 cannot
    assert audit.safety is not None and not audit.safety.safe
    assert audit.safety.worst_name == half.first_nonfinite_layer
    assert "float16 is unsafe" in audit.safety.reason


def test_comfortable_model_keeps_float16(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = _doctor_json(models["cool"], capsys, "--fidelity")
    for dtype in ("float32", "bfloat16", "float16"):
        row = _row(data, dtype)
        assert row["finite"] is True and row["error"] is None
        assert row["near_float16_limit"] is False
        assert row["top1_agreement"] >= 0.9
        assert row["max_logit_diff"] < 1.0
        assert row["largest_activation_layer"]
    assert data["fidelity_verdict"]["safe"] is True
    safety = float16_safety(inspect_model(models["cool"]))
    assert safety is not None and safety.safe
    assert "float16 holds this bfloat16 model comfortably" in safety.reason
    mode = cache_file().stat().st_mode & 0o777
    assert mode == 0o600

    assert cli.main(["doctor", str(models["cool"]), "--device", "cpu", "--fidelity"]) == 0
    text = capsys.readouterr().out
    assert "Fidelity (measured on this model" in text
    assert "float16 holds this bfloat16 model comfortably" in text


def test_cache_follows_the_weight_files(models: dict[str, Path], tmp_path: Path) -> None:
    path = shutil.copytree(models["cool"], tmp_path / "model")
    info = inspect_model(path)
    assert float16_safety(info) is None  # never audited
    fidelity_audit.audit_model(info, [d for d in detect_devices() if d.kind == "cpu"])
    assert float16_safety(info) is not None
    weights = path / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert float16_safety(inspect_model(path)) is None  # a changed file is a new model


def test_malformed_cache_counts_as_absent(models: dict[str, Path]) -> None:
    info = inspect_model(models["cool"])
    fidelity_audit.audit_model(info, [d for d in detect_devices() if d.kind == "cpu"])
    assert float16_safety(info) is not None
    entries = json.loads(cache_file().read_text())
    for entry in entries["entries"].values():
        entry["safety"]["safe"] = "yes"
    cache_file().write_text(json.dumps(entries))
    assert float16_safety(info) is None
    cache_file().write_text("{not json")
    assert float16_safety(info) is None


def test_a_dtype_that_fails_is_a_row_with_its_error(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mergechat.core.engine.fidelity_models import prepare_model as real

    def failing(info: Any, master: Any, device: str, dtype: str, trust: bool) -> Any:
        if dtype == "float16":
            raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")
        return real(info, master, device, dtype, trust)  # type: ignore[arg-type]

    monkeypatch.setattr(fidelity_audit, "prepare_model", failing)
    data = _doctor_json(models["cool"], capsys, "--fidelity")
    half = _row(data, "float16")
    assert "addmm_impl_cpu_" in half["error"] and half["finite"] is None
    assert _row(data, "float32")["finite"] is True
    assert "float16 itself was not run here" in data["fidelity_verdict"]["reason"]


def test_without_the_flag_fidelity_is_null(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _doctor_json(tiny_model_dir, capsys)
    assert data["fidelity"] is None and data["fidelity_verdict"] is None


def test_fidelity_needs_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor", "--fidelity"]) == 2
    assert "--fidelity needs a model" in capsys.readouterr().err
