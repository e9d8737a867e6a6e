"""A model that computes NaN or Inf is never called safe: M is non-finite with its first location,
fp16 is not safe, every verdict is unsafe, --fail-above trips; the audit finishes, never crashes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from cli_helpers import assert_one_line_error, invoke
from maxact_card.card import render_section
from maxact_card.report import Report
from models import save_tiny

SMALL = ["--samples", "6", "--calib-samples", "3", "--max-seq-len", "16", "--no-progress"]


def broken(tmp: Path, where: str) -> Path:
    """A tiny llama checkpoint with one row of +inf in a down_proj weight, or NaN in the embeddings."""
    from safetensors.torch import load_file, save_file

    path = save_tiny(tmp / where, "llama")
    w = load_file(path / "model.safetensors")
    if where == "inf-down-proj":
        w["model.layers.1.mlp.down_proj.weight"][5] = math.inf
    else:
        w["model.embed_tokens.weight"][3:100, 2] = math.nan  # every ordinary token of the tiny vocabulary
    save_file(w, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("where", ["inf-down-proj", "nan-embeddings"])
def test_non_finite_activations_are_never_safe(where: str, tmp_path: Path):
    model = broken(tmp_path, where)
    out = tmp_path / "out"
    result = invoke(["audit", str(model), *SMALL, "-o", str(out), "--fail-above", "1e30"])
    error = assert_one_line_error(result, "M is not finite", "--fail-above 1e+30")
    assert result.exit_code == 3
    report = Report.load(out / "maxact_report.json")  # written, then the gate trips
    p = report.peak
    assert p.abs == math.inf and p.nonfinite > 0 and p.finite_abs is not None and math.isfinite(p.finite_abs)
    first = next(s for s in report.sites if s.nonfinite and s.kind in ("embed", "attn", "mlp", "residual",
                                                                          "final_norm"))
    assert (p.site, p.sample, p.position, p.channel) == (first.name, first.nonfinite_location.sample,
                                                       first.nonfinite_location.position,
                                                       first.nonfinite_location.channel)
    if where == "inf-down-proj":
        assert p.site == "layers.1.mlp" and p.channel == 5
    else:
        assert p.site == "embed" and p.channel == 2
    assert report.fp16_safe is False
    assert {h.format: h.ratio for h in report.headroom}["fp16"] == math.inf
    assert report.quant is not None and {v.verdict for v in report.quant.verdicts} == {"unsafe"}
    assert "NON-FINITE" in result.stdout and "fp16: unsafe (the model computes NaN/Inf activations)" in result.stdout
    section = render_section(report)
    assert "**M = max |a| is not finite**" in section and "fp16:** not safe" in section
    assert "fp16:** safe" not in section
    from maxact_card.card import metadata_yaml

    meta = yaml.safe_load(metadata_yaml(report))["activation_range"]
    assert meta["fp16_safe"] is False and meta["max_abs_activation"] == math.inf
    assert meta["nonfinite_activations"] == p.nonfinite
    assert set(meta["verdicts"].values()) == {"unsafe"}
    assert error.startswith("Error: M is not finite")


def test_fail_above_nan_is_refused_before_the_audit(tmp_path: Path):
    result = invoke(["audit", str(tmp_path), "--fail-above", "nan"])
    assert_one_line_error(result, "--fail-above must be a number, got nan")
