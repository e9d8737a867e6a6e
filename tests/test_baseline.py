"""`audit --baseline REF` and `--fail-on-regression RATIO`: the change against an earlier report, in the
summary, the report and the card, and the exit code 3 that stops a release."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from maxact_card.card import render_readme
from maxact_card.comparison import fmt_ratio
from maxact_card.report import Report
from models import save_tiny

SMALL = ["--samples", "8", "--max-seq-len", "32", "--calib-samples", "4", "--no-progress"]
BOS, CH = 1, 5  # every sample starts with BOS (id 1): the planted row shows in every sample


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """A tiny llama, the same model with a massive activation planted in BOS's embedding, and an
    audit of the first (its output folder)."""
    root = tmp_path_factory.mktemp("baseline")
    base = save_tiny(root / "base")
    planted = root / "planted"
    shutil.copytree(base, planted)
    from safetensors.torch import load_file, save_file

    weights = load_file(planted / "model.safetensors")
    name = next(k for k in weights if k.endswith("embed_tokens.weight"))
    weights[name][BOS, CH] = 3000.0
    save_file(weights, planted / "model.safetensors", metadata={"format": "pt"})
    out = root / "base-audit"
    result = invoke(["audit", str(base), *SMALL, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return {"base": base, "planted": planted, "audit": out}


def audit(model: Path | str, out: Path, *extra: str, env: dict | None = None):
    result = invoke(["audit", str(model), *SMALL, "-o", str(out), *extra], env=env)
    path = out / "maxact_report.json"
    return result, (Report.load(path) if path.is_file() else None)


def test_a_planted_model_against_its_unplanted_baseline_is_a_regression(ckpts, tmp_path: Path):
    base = Report.load(ckpts["audit"] / "maxact_report.json")
    result, report = audit(ckpts["planted"], tmp_path / "p", "--baseline", str(ckpts["audit"]),
                           "--fail-on-regression", "1.5")
    assert result.exit_code == 3, result.output
    assert report is not None  # written before the exit
    change = report.baseline
    assert report.peak.abs >= 3000.0 and report.model.weights != base.model.weights
    assert change.ratio == report.peak.abs / base.peak.abs and change.m == base.peak.abs
    assert change.comparable and change.source == "base-audit/maxact_report.json" and change.model == "base"
    error = assert_one_line_error(result, "regression against base-audit/maxact_report.json",
                                  "the baseline's (more than 1.5x)")
    assert f"M is {fmt_ratio(change.ratio)}" in error
    assert f"baseline: against base ({change.source}): M {fmt_ratio(change.ratio)} the baseline's" in result.stdout
    # The card shows the change, and its metadata carries the ratio.
    card = render_readme(report, None)
    assert "- **Against the baseline:** against base" in card and f"M {fmt_ratio(change.ratio)} the baseline's" in card
    assert "<summary>Change against the baseline</summary>" in card  # with the verdicts that changed
    assert f"m_ratio: {change.ratio!r}" in card


def test_the_unplanted_model_against_itself_is_not_a_regression(ckpts, tmp_path: Path):
    result, report = audit(ckpts["base"], tmp_path / "again", "--baseline", str(ckpts["audit"] / "maxact_report.json"),
                           "--fail-on-regression", "1.0")
    assert result.exit_code == 0, result.output
    assert report.baseline.ratio == 1.0 and report.baseline.verdicts == () and report.baseline.fp16_new_sites == ()
    assert "no verdict changed" in result.stdout


def test_a_verdict_that_got_worse_is_a_regression(ckpts, tmp_path: Path):
    """The planted activation makes static INT8 scales unusable: verdicts get worse, and that alone
    fails the check however large the RATIO."""
    result, report = audit(ckpts["planted"], tmp_path / "p", "--baseline", str(ckpts["audit"]), "--fail-on-regression",
                           "1e9")
    worse = [v for v in report.baseline.verdicts if v.worse]
    assert worse and all(v.before == "ok" for v in worse), report.baseline.verdicts
    error = assert_one_line_error(result, *(f"{v.format} {v.before} -> {v.after}" for v in worse))
    assert "M is" not in error and result.exit_code == 3


def test_a_baseline_measured_otherwise_is_refused_before_the_audit_when_it_gates(ckpts, tmp_path: Path):
    result, report = audit(ckpts["base"], tmp_path / "x", "--baseline", str(ckpts["audit"]), "--fail-on-regression",
                           "1.2", "--seed", "3")
    assert_one_line_error(result, "--seed 3 (the baseline's: 0)", "pass the baseline's values")
    assert report is None and "loading" not in result.stderr
    # Without the gate the audit runs and the change says why it does not compare.
    result, report = audit(ckpts["base"], tmp_path / "y", "--baseline", str(ckpts["audit"]), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert report.baseline.differences and not report.baseline.comparable
    assert "seed 3 vs 0" in report.baseline.differences
    assert "not comparable: " in result.stdout


@pytest.mark.parametrize("args, needles", [
    (["--fail-on-regression", "1.2"], ["add --baseline previous"]),
    (["--baseline", "x.json", "--fail-on-regression", "0.5"], [">= 1", "got 0.5"]),
    (["--baseline", "no/such-file.json"], ["no report at no/such-file.json"]),
])
def test_bad_baseline_options_get_one_line(ckpts, tmp_path: Path, args, needles):
    result, report = audit(ckpts["base"], tmp_path / "o", *args)
    assert_one_line_error(result, *needles)
    assert report is None


def test_previous_reads_the_card_of_a_local_checkpoint(ckpts, tmp_path: Path):
    model = tmp_path / "m"
    shutil.copytree(ckpts["base"], model)
    # A first audit: the card has no report yet; nothing to compare with, and no regression.
    result, first = audit(model, tmp_path / "first", "--write-card", "--baseline", "previous",
                          "--fail-on-regression", "1.0")
    assert result.exit_code == 0, result.output
    assert first.baseline is None and "carries no activation range yet, so there is nothing to compare" in result.stderr
    result, second = audit(model, tmp_path / "second", "--baseline", "previous", "--fail-on-regression", "1.0")
    assert result.exit_code == 0, result.output
    assert second.baseline.source == "previous card, m" and second.baseline.ratio == 1.0
    assert second.model.weights == first.model.weights is not None
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert_one_line_error(audit(gguf, tmp_path / "g", "--baseline", "previous")[0], "single file with no card")


def test_previous_and_base_model_read_cards_on_the_hub(hub, ckpts, tmp_path: Path):
    from hubserver import read_dir

    base_report = Report.load(ckpts["audit"] / "maxact_report.json")
    # The base model's repo: its card carries the report (as after a merged maxact-card pull request).
    hub.create_repo("acme/base", {**read_dir(ckpts["base"]), "README.md": render_readme(base_report, None).encode(),
                                  "maxact_report.json": base_report.to_json().encode()})
    # A fine-tune whose card names it.
    hub.create_repo("acme/ft", {**read_dir(ckpts["planted"]),
                                "README.md": b"---\nlicense: mit\nbase_model: acme/base\n---\n# ft\n"})
    result, report = audit("acme/ft", tmp_path / "ft", "--baseline", "base-model")
    assert result.exit_code == 0, result.output
    assert report.baseline.model == "base" and report.baseline.ratio > 100
    assert report.baseline.source == f"acme/base@{hub.head('acme/base')[:12]}"
    # `previous` on the Hub: the card on main records the revision its report measured.
    first = hub.head("acme/ft")
    _, measured = audit("acme/ft", tmp_path / "ft3")
    hub.add_commit("acme/ft", {"README.md": render_readme(measured, None).encode(),
                               "maxact_report.json": measured.to_json().encode()}, message="card")
    result, report = audit("acme/ft", tmp_path / "ft4", "--baseline", "previous", "--fail-on-regression", "1.0")
    assert result.exit_code == 0, result.output
    assert report.baseline.revision == first and report.baseline.ratio == 1.0
    assert report.baseline.source == f"previous card, acme/ft@{hub.head('acme/ft')[:12]}"
    # A card whose metadata records a report that is not beside it: one line, before the audit.
    hub.add_commit("acme/ft", {"maxact_report.json": base_report.to_json().encode()}, message="wrong report")
    result, _ = audit("acme/ft", tmp_path / "ft5", "--baseline", "previous")
    assert_one_line_error(result, "records revision", "pass a report file")
    assert "loading" not in result.stderr
    # A card that names no base model, or two: one line before the audit.
    hub.create_repo("acme/plain", {**read_dir(ckpts["base"]), "README.md": b"# plain\n"})
    assert_one_line_error(audit("acme/plain", tmp_path / "p", "--baseline", "base-model")[0], "names no base_model")
    hub.create_repo("acme/merge", {**read_dir(ckpts["base"]),
                                   "README.md": b"---\nbase_model:\n- acme/base\n- acme/ft\n---\n"})
    assert_one_line_error(audit("acme/merge", tmp_path / "m", "--baseline", "base-model")[0], "names 2 base models",
                          "acme/base, acme/ft")
