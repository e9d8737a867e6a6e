"""`maxact-card compare` and the comparison rules it shares with --baseline and --models."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error, invoke
from factories import REVISION, make_report
from maxact_card.comparison import (
    DELTA_NLL_THRESHOLDS,
    baseline_change,
    differences,
    fmt_m,
    fmt_ratio,
    m_ratio,
    regressions,
    verdict_rank,
)
from maxact_card.corpus import Document, tokenize
from maxact_card.plot import render_compare_png, residual_series
from maxact_card.report import Report, Verdict
from models import tiny_tokenizer


def other_corpus(report: Report, **changes) -> Report:
    return dataclasses.replace(report, corpus=dataclasses.replace(report.corpus, **changes))


def save(report: Report, folder: Path) -> Path:
    return report.save(folder / "maxact_report.json")


@pytest.fixture
def two_reports(tmp_path: Path):
    a = make_report()
    b = other_corpus(make_report(scale=40.0), samples=64, fingerprint="sha256:0a1b2c3d4e5f")
    return save(a, tmp_path / "a"), save(b, tmp_path / "b")


MARKDOWN = """\
| model | revision | M | site | layer | fp16 headroom | int8_absmax | fp8_e4m3 | tokens | corpus | comparable |
|---|---|---:|---|---:|---:|---|---|---:|---|---|
| `acme/tiny-moe-4l` | 3f1c0a9d8e7b | 712,401 | layers.3.residual | 3 | over 10.9x (unsafe) | unsafe | degraded | 98,304 | builtin 9b2e61c0 | reference |
| `acme/tiny-moe-4l` | 3f1c0a9d8e7b | 28,496,050 | layers.3.residual | 3 | over 435x (unsafe) | unsafe | degraded | 98,304 | builtin 0a1b2c3d | no: samples 64 vs 256 |
"""


def test_markdown_table_is_exact_and_marks_the_differing_corpus(two_reports):
    """M of the factory report is 712,401.25 (M x 40 = 28,496,050); 712,401.25 / 65,504 = 10.9."""
    result = invoke(["compare", str(two_reports[0]), str(two_reports[1].parent), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout == MARKDOWN
    assert "1 of 1 rows were measured otherwise than the reference (acme/tiny-moe-4l" in result.stderr


def test_csv_table_has_raw_values(two_reports, tmp_path: Path):
    out = tmp_path / "t.csv"
    result = invoke(["compare", *map(str, two_reports), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ("model,revision,source,m,nonfinite,site,layer,fp16_headroom,fp16,int8_absmax,fp8_e4m3,tokens,"
                        "corpus,corpus_fingerprint,reference,comparable,differences")
    assert lines[1] == (f"acme/tiny-moe-4l,{REVISION},a/maxact_report.json,712401.25,0,layers.3.residual,3,"
                        f"{65504 / 712401.25!r},unsafe,unsafe,degraded,98304,builtin,sha256:9b2e61c04d7f,true,true,")
    assert lines[2] == (f"acme/tiny-moe-4l,{REVISION},b/maxact_report.json,28496050.0,0,layers.3.residual,3,"
                        f"{65504 / 28496050.0!r},unsafe,unsafe,degraded,98304,builtin,sha256:0a1b2c3d4e5f,false,false,"
                        "samples 64 vs 256")


def test_json_and_text_tables(two_reports):
    import json

    result = invoke(["compare", *map(str, two_reports), "--format", "json"])
    rows = json.loads(result.stdout)["rows"]
    assert [r["m"] for r in rows] == [712401.25, 28496050.0]
    assert rows[1]["differences"] == ["samples 64 vs 256"] and rows[0]["reference"] is True
    text = invoke(["compare", *map(str, two_reports)]).stdout.splitlines()
    assert text[0].split() == ["model", "revision", "M", "site", "layer", "fp16", "headroom", "int8_absmax", "fp8_e4m3",
                               "tokens", "corpus", "comparable"]
    assert "712,401" in text[2] and text[3].endswith("no: samples 64 vs 256")


def test_each_difference_is_named_with_both_values():
    a = make_report()
    assert differences(a, a) == ()
    b = other_corpus(a, name="my.jsonl", seed=3, max_seq_len=128)
    b = dataclasses.replace(b, model=dataclasses.replace(b.model, dtype="float32"))
    assert differences(b, a) == ("corpus my.jsonl vs builtin", "max_seq_len 128 vs 512", "seed 3 vs 0",
                                 "dtype float32 vs bfloat16")
    same_name_other_text = other_corpus(a, fingerprint="sha256:feedfacecafe")
    assert differences(same_name_other_text, a) == ("corpus text feedface vs 9b2e61c0",)
    # Reports with a documents fingerprint compare by it: two tokenizers, one corpus, comparable.
    c = other_corpus(a, documents="sha256:aa11", fingerprint="sha256:bb22")
    d = other_corpus(a, documents="sha256:aa11", fingerprint="sha256:cc33")
    assert differences(c, d) == ()


def test_documents_fingerprint_is_the_same_for_every_tokenizer():
    docs = [Document(text="w5 w6 w7", input_ids=None, domain="prose"),
            Document(text="w9 w10", input_ids=None, domain="code")]

    class Shifted:  # another tokenizer: same text, other ids
        bos_token_id = None

        def __call__(self, texts, **kw):
            return {"input_ids": [[len(w) for w in t.split()] for t in texts]}

    one = tokenize(docs, tiny_tokenizer(), 16, name="c", seed=0)
    two = tokenize(docs, Shifted(), 16, name="c", seed=0)
    assert one.fingerprint != two.fingerprint
    assert one.record().documents == two.record().documents is not None
    assert tokenize(docs[:1], tiny_tokenizer(), 16, name="c", seed=0).record().documents != one.record().documents


def test_thresholds_match_the_quant_packages():
    from maxact_card.quant.verdicts import DEFAULT_THRESHOLDS

    assert DELTA_NLL_THRESHOLDS == (DEFAULT_THRESHOLDS.delta_nll_ok, DEFAULT_THRESHOLDS.delta_nll_degraded)


def test_verdict_rank_places_uncertain_between_the_levels_it_straddles():
    assert [verdict_rank(Verdict("x", v, "")) for v in ("ok", "degraded", "unsafe")] == [0, 1, 2]
    assert verdict_rank(Verdict("x", "uncertain", "", (0.004, 0.02))) == 0.5
    assert verdict_rank(Verdict("x", "uncertain", "", (0.05, 0.2))) == 1.5
    assert verdict_rank(Verdict("x", "uncertain", "", (0.004, 0.2))) == 1.0


def test_baseline_change_and_regressions():
    base = make_report()
    grown = make_report(scale=1.5)
    change = baseline_change(grown, base, "previous")
    assert change.ratio == pytest.approx(1.5) and change.m == 712401.25
    assert change.verdicts == () and change.differences == () and change.comparable
    assert regressions(change, 1.6) == []
    assert regressions(change, 1.2) == ["M is 1.5x the baseline's (more than 1.2x)"]
    # A verdict that got worse is a regression whatever M did.
    worse_quant = dataclasses.replace(base.quant, verdicts=tuple(
        dataclasses.replace(v, verdict="unsafe") if v.format == "fp8_e4m3" else v for v in base.quant.verdicts))
    change = baseline_change(dataclasses.replace(base, quant=worse_quant), base, "x")
    assert [(v.format, v.before, v.after, v.worse) for v in change.verdicts] == [("fp8_e4m3", "degraded", "unsafe", True)]
    assert regressions(change, 10.0) == ["fp8_e4m3 degraded -> unsafe"]
    better = baseline_change(base, dataclasses.replace(base, quant=worse_quant), "x")
    assert better.verdicts[0].worse is False and regressions(better, 1.0) == []


def test_sites_newly_over_fp16():
    small = make_report(scale=0.05)  # M = 35,620: no site over 65,504
    big = make_report()
    change = baseline_change(big, small, "x")
    over = next(h.overflow_sites for h in big.headroom if h.format == "fp16")
    assert change.fp16_new_sites == over and over
    assert baseline_change(big, big, "x").fp16_new_sites == ()


def test_ratio_and_number_formats():
    assert m_ratio(2.0, 1.0) == 2.0 and m_ratio(math.inf, math.inf) == 1.0 and m_ratio(1.0, 0.0) == math.inf
    assert m_ratio(None, 1.0) is None
    assert [fmt_ratio(r) for r in (1.234, 0.04567, 1234.5, 25611.8, None)] == ["1.23x", "0.0457x", "1,230x",
                                                                               "25,600x", "n/a"]
    assert [fmt_m(v) for v in (27347.4, 712401.25, 2.5573, math.inf)] == ["27,347", "712,401", "2.56", "inf"]


def test_compare_reads_a_report_from_a_hub_repo_pinned_to_its_commit(hub, tmp_path: Path):
    report = make_report()
    sha = hub.create_repo("acme/tiny-moe-4l", {"README.md": b"# card\n",
                                               "maxact_report.json": report.to_json().encode()})
    hub.create_repo("acme/no-report", {"README.md": b"# card\n"})
    result = invoke(["compare", "acme/tiny-moe-4l", f"acme/tiny-moe-4l@{sha}", "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.stdout)["rows"]
    assert [r["source"] for r in rows] == [f"acme/tiny-moe-4l@{sha[:12]}"] * 2
    assert rows[0]["m"] == report.peak.abs and rows[1]["comparable"]
    error = invoke(["compare", "acme/no-report"])
    assert_one_line_error(error, "acme/no-report@", "carries no maxact-card report", "maxact-card audit acme/no-report")


def test_bad_sources_get_one_line(tmp_path: Path):
    assert_one_line_error(invoke(["compare", str(tmp_path / "missing.json")]), "no report at", "Hub repo id")
    assert_one_line_error(invoke(["compare", str(tmp_path)]), "holds no maxact_report.json")
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    assert_one_line_error(invoke(["compare", str(tmp_path / "bad.json")]), "bad.json", "not a maxact-card report")
    result = invoke(["compare"])
    assert result.exit_code == 2 and "Missing argument" in result.output


def test_plot_is_written_with_the_table_and_is_deterministic(two_reports, tmp_path: Path):
    a, b = Report.load(two_reports[0]), Report.load(two_reports[1])
    png = render_compare_png([a, b], ["a", "b"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == render_compare_png([a, b], ["a", "b"])
    assert residual_series(a) == sorted((s.layer, s.absmax) for s in a.sites if s.kind == "residual")
    out, fig = tmp_path / "t.md", tmp_path / "c.png"
    result = invoke(["compare", *map(str, two_reports), "--format", "markdown", "-o", str(out), "--plot", str(fig)])
    assert result.exit_code == 0, result.output
    assert fig.read_bytes().startswith(b"\x89PNG")
    assert out.read_text(encoding="utf-8") == MARKDOWN
    # An unwritable target: one line, and neither file is written.
    out.unlink()
    fig.unlink()
    blocked = tmp_path / "file"
    blocked.write_text("x", encoding="utf-8")
    result = invoke(["compare", *map(str, two_reports), "-o", str(out), "--plot", str(blocked / "c.png")])
    assert_one_line_error(result, "--plot")
    assert not out.exists()


def test_compare_imports_neither_torch_nor_transformers(two_reports):
    """A table of saved reports is instant: nothing of the measurement is imported."""
    import subprocess
    import sys

    probe = ("import sys\nfrom click.testing import CliRunner\nfrom maxact_card.cli import cli\n"
             f"assert CliRunner().invoke(cli, ['compare', {str(two_reports[0])!r}, {str(two_reports[1])!r}]).exit_code == 0\n"
             "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_missing_folder_that_reads_like_a_repo_id_says_both(hub, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["compare", "runs/model-a"])
    assert_one_line_error(result, "no report at runs/model-a: no such file or folder here, and no model repo "
                                  "'runs/model-a'")
