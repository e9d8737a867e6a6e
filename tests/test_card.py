"""The card section, the README merge, the figure and the publish flows (against the test Hub)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from huggingface_hub.repocard import REGEX_YAML_BLOCK, metadata_load

from factories import REVISION, make_report, visible_lines
from maxact_card import card, plot, publish, readme_merge
from maxact_card.errors import ReportError, UsageError
from maxact_card.report import Report

def front_matter(text: str) -> dict:
    """The front matter as huggingface_hub finds it."""
    m = REGEX_YAML_BLOCK.search(text.removeprefix("\ufeff"))
    assert m, "no front matter"
    data = yaml.safe_load(m.group(2))
    assert isinstance(data, dict)
    return data


@functools.lru_cache(maxsize=None)
def pieces(scale: float = 1.0, with_quant: bool = True) -> tuple[Report, str, str]:
    report = make_report(scale=scale, with_quant=with_quant)
    return report, card.render_section(report), card.metadata_yaml(report)


def merge(text: Optional[str], scale: float = 1.0, with_quant: bool = True) -> str:
    _, section, meta = pieces(scale, with_quant)
    return card.merge_readme(text, section=section, metadata=meta)


# -- rendering ---------------------------------------------------------------------------------------
def test_section_headline_figure_and_one_verdict_table_are_all_that_shows():
    report = make_report()
    text = card.render_section(report)
    assert text.startswith(card.BEGIN_MARKER + "\n") and text.endswith(card.END_MARKER + "\n")
    shown = visible_lines(text)
    assert len(shown) <= 25, "\n".join(shown)
    assert shown[:3] == ["## Activation range", "",
                         '**M = max |a| = 712,401** at layer 3, `layers.3.residual`, token `"\\n"`: the largest '
                         "activation in the residual stream ([definition](https://arxiv.org/abs/2605.15572)) over "
                         "98,304 tokens in bfloat16."]
    assert "- **fp16:** unsafe, M is 10.9x the fp16 maximum (65,504); **bf16:** ok" in shown
    assert "- **Deployment:** degraded: fp8_e4m3; unsafe: int8_absmax" in shown
    assert "![Per-layer max |activation|](maxact_layers.png)" in shown
    assert shown[-6:] == ["", "| Format | Verdict | ΔNLL (95% interval) |", "|---|---|---|",
                          "| int8_absmax | unsafe | +0.147 |", "| fp8_e4m3 | degraded | +0.0089 |", ""]
    # Folded: per-kind maxima, top layers, headroom, every verdict, end-to-end loss, worst sites, reproducibility.
    hidden = text[text.index("<details>"):]
    for kind in ("embed", "attn", "mlp.gate", "mlp.down_in", "router", "mlp", "residual", "final_norm"):
        assert f"| `{kind}` |" in hidden
    for layer, _, site in report.top_layers():
        assert f"| {layer} | " in hidden and f"`{site}`" in hidden
    assert "| fp16 | 65,504 |" in hidden and "| fp8_e4m3 | 448 |" in hidden
    assert "| bf16 | 3.39 × 10^38 | < 0.000001 | yes | none | ok |" in hidden  # no 1e+34, no 1e-34
    assert "| fp8_e4m3 | 448 | 1,590 | **no** |" in hidden and "| degraded (scaled) |" in hidden
    assert report.quant.recommendation in hidden
    for v in report.quant.verdicts:
        assert f"**{v.verdict}**" in hidden
    assert "| int8_absmax | 2.60 | 13.4 | +0.147 | - | 1.16 |" in hidden  # no interval in this report
    assert "e+" not in text and "e-0" not in text
    with_ci = dataclasses.replace(report, peak_interval=(512.5, report.peak.abs), quant=dataclasses.replace(
        report.quant, verdicts=tuple(dataclasses.replace(v, interval=(0.125, 0.25)) if v.format == "int8_absmax"
                                     else v for v in report.quant.verdicts)))
    text_ci = card.render_section(with_ci)
    assert "(95% interval 512 to 712,401)." in text_ci
    assert "| int8_absmax | unsafe | +0.147 (+0.125 to +0.25) |" in text_ci
    assert "| int8_absmax | 2.60 | 13.4 | +0.147 | +0.125 to +0.25 | 1.16 |" in text_ci
    assert "https://arxiv.org/abs/2605.15572" in text and card.PAPER_TITLE in text
    for fragment in (
        "maxact-card 0.1.0",
        REVISION,
        "`builtin` (fingerprint `sha256:9b2e61c04d7f`)",
        "256 samples",
        "98,304 tokens",
        "bfloat16",
        report.created,
        "```bash\n" + report.command + "\n```",
    ):
        assert fragment in hidden


def test_a_section_with_every_format_and_a_baseline_stays_short():
    """Eleven formats run end to end and a baseline: still at most 25 visible lines."""
    from maxact_card.comparison import baseline_change
    from maxact_card.report import EndToEnd

    report = make_report()
    names = ("int8_absmax", "int8_p99.9", "int8_p99.99", "int8_per_token", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3_per_token",
             "fp8_e4m3_block128", "mxfp8_e4m3", "nvfp4", "mxfp4_e2m1")
    e2e = tuple(EndToEnd(n, 2.5, 12.2, 0.01 * i, 1.0 + 0.01 * i) for i, n in enumerate(names))
    report = dataclasses.replace(report, quant=dataclasses.replace(report.quant, end_to_end=e2e))
    report = dataclasses.replace(report, baseline=baseline_change(report, make_report(scale=0.5), "previous"))
    shown = visible_lines(card.render_section(report))
    assert len(shown) <= 25, "\n".join(shown)
    assert any(line.startswith("- **Against the baseline:** against acme/tiny-moe-4l") for line in shown)


def test_section_without_quant_or_peak():
    text = card.render_section(make_report(with_quant=False, scale=1e-3))
    assert "Quantization check" not in text
    assert "- **fp16:** ok, 91.9x headroom; **bf16:** ok" in text
    empty = make_report(peak=None, kinds=(), sites=(), headroom=(), quant=None, fp16_safe=True)
    text = card.render_section(empty)
    assert "No activation was recorded" in text and "Maximum per site kind" not in text
    meta = yaml.safe_load(card.metadata_yaml(empty))["activation_range"]
    assert meta["max_abs_activation"] is None


def test_section_without_figure_and_default_command():
    report = make_report(command="")
    text = card.render_section(report, figure_path=None)
    assert "![" not in text
    assert f"maxact-card audit acme/tiny-moe-4l --revision {REVISION} --samples 256 --max-seq-len 512" in text


def test_markdown_escaping_of_tokens_and_cells():
    report = make_report()
    peak = dataclasses.replace(report.peak, token="a|`b`")
    text = card.render_section(dataclasses.replace(report, peak=peak))
    assert '``"a|`b`"``' in text
    assert card.md_cell("a|b\nc") == "a\\|b c"
    assert card.md_code("x|y", table=True) == "`x\\|y`"
    assert card.md_code_block("a\n```\nb").startswith("````bash\n")


@pytest.mark.parametrize(
    "x, expected",
    [
        (712345.625, "712,346"),
        (-712345.625, "-712,346"),
        (1234.5, "1,234"),
        (65504.0, "65,504"),
        (448.0, "448"),
        (12.345, "12.3"),
        (99.95, "100"),
        (2.4, "2.40"),
        (0.875, "0.875"),
        (0.0001234, "0.000123"),
        (3e-7, "≈ 0"),
        (3.3895313892515355e38, "3.39 × 10^38"),
        (0.0, "0"),
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
        (None, "n/a"),
    ],
)
def test_fmt_num(x, expected):
    assert card.fmt_num(x) == expected


def test_pr_description_reads_like_a_well_behaved_bot():
    report = make_report()
    text = card.render_pr_description(report)
    assert text.startswith("**This is an automated pull request** opened with "
                           "[maxact-card](https://pypi.org/project/maxact-card/) 0.1.0")
    assert "**M = max |a| = 712,401** at `layers.3.residual` (layer 3," in text
    assert "**fp16:** unsafe, M is 10.9x the fp16 maximum (65,504)" in text and REVISION in text
    assert "**Deployment formats:** degraded: fp8_e4m3; unsafe: int8_absmax" in text
    assert report.command in text and "maxact_layers.png" in text and "maxact_report.json" in text
    assert card.PAPER_URL in text and "Feel free to close this pull request" in text
    assert text.rstrip().endswith("Questions or problems: comment here.")  # no issue tracker URL recorded
    assert "**fp16:** ok, 91.9x headroom" in card.render_pr_description(make_report(scale=1e-3))
    measured = text.split("What was measured", 1)[1].split("Files:", 1)[0]
    assert len([line for line in measured.splitlines() if line.startswith("- ")]) == 3


def test_builtin_templates_are_found():
    for name in (card.SECTION_TEMPLATE, card.PR_TEMPLATE):
        assert (card.template_dir() / name).is_file()


def test_user_template(tmp_path: Path):
    tpl = tmp_path / "mine.md.j2"
    tpl.write_text("## Ranges\n\nM is {{ peak.abs|num }} at {{ peak.site }} ({{ model.id }}).\n", encoding="utf-8")
    text = card.render_section(make_report(), template=tpl)
    assert text == f"{card.BEGIN_MARKER}\n## Ranges\n\nM is 712,401 at layers.3.residual (acme/tiny-moe-4l).\n{card.END_MARKER}\n"


def test_user_template_can_extend_the_builtin(tmp_path: Path):
    tpl = tmp_path / "mine.md.j2"
    tpl.write_text('{% extends "activation_range.md.j2" %}{% block heading %}## Our activations\n{% endblock %}', encoding="utf-8")
    text = card.render_section(make_report(), template=tpl)
    assert "## Our activations" in text and "## Activation range" not in text and "<summary>Reproducibility</summary>" in text


@pytest.mark.parametrize(
    "body, message",
    [
        ("{{ peak.abs|num ", "line 1"),
        ("{{ no_such_name }}", "no_such_name"),
        ("<!-- maxact-card:end -->\n", "markers"),
    ],
)
def test_bad_user_templates(tmp_path: Path, body: str, message: str):
    tpl = tmp_path / "bad.md.j2"
    tpl.write_text(body, encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        card.render_section(make_report(), template=tpl)
    with pytest.raises(UsageError, match="no such file"):
        card.render_section(make_report(), template=tmp_path / "missing.j2")


# -- metadata ----------------------------------------------------------------------------------------
def test_metadata_block_is_plain_yaml():
    report = make_report()
    text = card.metadata_yaml(report)
    assert text.startswith("activation_range:\n  ") and text.endswith("\n")
    meta = yaml.safe_load(text)["activation_range"]
    assert meta["max_abs_activation"] == report.peak.abs
    assert meta["max_activation_site"] == "layers.3.residual" and meta["fp16_safe"] is False
    assert meta["revision"] == REVISION and meta["settings_key"] == card.settings_key(report)
    assert meta["verdicts"] == {"fp16": "unsafe", "bf16": "ok", "int8_absmax": "unsafe", "fp8_e4m3": "degraded"}

    assert meta["fp16_verdict"] == "unsafe" and "max_abs_activation_interval" not in meta
    sure = dataclasses.replace(report, peak_interval=(5e5, report.peak.abs), quant=dataclasses.replace(
        report.quant, verdicts=tuple(dataclasses.replace(v, interval=(0.125, 0.25)) if v.format == "int8_absmax"
                                     else v for v in report.quant.verdicts)))
    text_ci = card.metadata_yaml(sure)
    meta_ci = yaml.safe_load(text_ci)["activation_range"]
    assert meta_ci["max_abs_activation_interval"] == [5e5, report.peak.abs]
    assert meta_ci["delta_nll_intervals"] == {"int8_absmax": [0.125, 0.25]}

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)

    assert plain(meta) and plain(meta_ci)
    assert "!!" not in text and "!!" not in text_ci  # no python-specific tags


def test_settings_key_changes_with_each_setting():
    base = make_report()
    key = card.settings_key(base)
    for changed in (
        dataclasses.replace(base, model=dataclasses.replace(base.model, revision="0" * 40)),
        dataclasses.replace(base, model=dataclasses.replace(base.model, dtype="float32")),
        dataclasses.replace(base, corpus=dataclasses.replace(base.corpus, fingerprint="sha256:other")),
        dataclasses.replace(base, corpus=dataclasses.replace(base.corpus, samples=8)),
        dataclasses.replace(base, corpus=dataclasses.replace(base.corpus, max_seq_len=128)),
        dataclasses.replace(base, tool_version="1.0.0"),
    ):
        assert card.settings_key(changed) != key
    assert card.settings_key(dataclasses.replace(base, tool_version="0.2.0", created="later")) == key
    # With a weights fingerprint, the commit no longer matters; the fingerprint does.
    fp = dataclasses.replace(base, model=dataclasses.replace(base.model, weights="sha256:" + "ab" * 32))
    other_commit = dataclasses.replace(fp, model=dataclasses.replace(fp.model, revision="0" * 40))
    other_weights = dataclasses.replace(fp, model=dataclasses.replace(fp.model, weights="sha256:" + "cd" * 32))
    assert card.settings_key(other_commit) == card.settings_key(fp) != card.settings_key(other_weights)


def test_a_schema_1_0_report_without_a_weights_fingerprint_still_loads():
    report = make_report()
    data = report.to_dict()
    data["schema_version"] = "1.0"
    del data["model"]["weights"]
    old = Report.from_dict(data)
    assert old.model.weights is None and old.model.revision == report.model.revision and old.peak == report.peak
    del data["model"]["dtype"]  # a field without a default is still required
    with pytest.raises(ReportError, match="malformed report"):
        Report.from_dict(data)


def test_extract_metadata():
    assert card.extract_metadata(None) is None
    assert card.extract_metadata("") is None
    assert card.extract_metadata("# no front matter\n") is None
    assert card.extract_metadata("---\nlicense: mit\n---\nbody\n") is None
    merged = merge("---\nlicense: mit\n---\nbody\n")
    meta = card.extract_metadata(merged)
    assert meta == card.card_metadata(make_report()) | {"max_abs_activation": make_report().peak.abs}
    # The rest of the front matter need not be valid YAML.
    broken = merge("---\nlicense: [mit\n  : oops\n---\n")
    assert card.extract_metadata(broken)["settings_key"] == card.settings_key(make_report())


# -- merging: examples -------------------------------------------------------------------------------
def test_no_readme_and_empty_readme():
    _, section, meta = pieces()
    expected = "---\n" + meta + "---\n" + section
    assert merge(None) == expected
    assert merge("") == expected
    assert merge("\ufeff") == "\ufeff" + expected


def test_readme_without_front_matter():
    _, section, meta = pieces()
    assert merge("# My model\n\nHello.\n") == "---\n" + meta + "---\n# My model\n\nHello.\n\n" + section
    assert merge("# My model") == "---\n" + meta + "---\n# My model\n\n" + section
    assert merge("Text.\n\n") == "---\n" + meta + "---\nText.\n\n" + section


def test_front_matter_keeps_every_author_byte():
    _, section, meta = pieces()
    original = (
        "---\n"
        "# a comment the author cares about\n"
        "license: apache-2.0   # inline comment\n"
        "language:\n- en\n- fr\n"
        "tags: [a, b]\n"
        "model-index:\n  - name: x\n    results: []\n    unknown_field: ~\n"
        "empty:\n"
        "---\n"
        "\n# Model\n\nSome text.\n"
    )
    merged = merge(original)
    head, body = original.split("---\n\n", 1)
    assert merged == head + meta + "---\n\n" + body + "\n" + section
    fm = front_matter(merged)
    assert list(fm) == ["license", "language", "tags", "model-index", "empty", "activation_range"]
    assert fm["empty"] is None and fm["model-index"][0]["unknown_field"] is None


def test_existing_block_and_section_are_replaced_in_place():
    original = (
        "---\nlicense: mit\nactivation_range:\n  old: 1\n  nested:\n    deep: 2\n\n"
        "# kept\nlanguage: en\n---\n"
        "Intro.\n\n<!-- maxact-card:begin -->\nold section\n<!-- maxact-card:end -->\n\n## After\nMore.\n"
    )
    _, section, meta = pieces()
    merged = merge(original)
    assert merged == (
        "---\nlicense: mit\n" + meta + "\n# kept\nlanguage: en\n---\n"
        "Intro.\n\n" + section + "\n## After\nMore.\n"
    )
    assert list(front_matter(merged)) == ["license", "activation_range", "language"]
    assert merge(merged) == merged


def test_rerun_with_another_report_replaces_in_place():
    first = merge("---\nlicense: mit\n---\n# Card\n\nText after.\n")
    second = merge(first, scale=2.0, with_quant=False)
    assert second != first
    assert front_matter(second)["activation_range"]["max_abs_activation"] == make_report(scale=2.0).peak.abs
    assert second.count(card.BEGIN_MARKER) == 1 and "Quantization check" not in second
    assert merge(second) == first


def test_crlf_and_bom_are_kept():
    original = "\ufeff---\r\nlicense: mit\r\n---\r\n# Model\r\n\r\nText.\r\n"
    merged = merge(original)
    assert merged.startswith("\ufeff---\r\nlicense: mit\r\nactivation_range:\r\n")
    assert "\n" not in merged.replace("\r\n", "")
    assert merged.count("\ufeff") == 1
    assert front_matter(merged)["license"] == "mit"
    assert merge(merged) == merged


def test_front_matter_closed_at_end_of_file():
    _, section, meta = pieces()
    assert merge("---\nlicense: mit\n---") == "---\nlicense: mit\n" + meta + "---\n" + section


def test_duplicate_blocks_collapse_to_one():
    merged = merge("---\nactivation_range: 1\nlicense: mit\nactivation_range:\n  x: 2\n---\n")
    assert merged.count("activation_range:") == 1
    assert front_matter(merged)["license"] == "mit"


def test_begin_marker_without_end_is_refused():
    with pytest.raises(UsageError, match="without a matching"):
        merge("# Card\n<!-- maxact-card:begin -->\nhalf\n")


def test_marker_mentioned_inline_is_not_a_marker():
    original = "Markers look like `<!-- maxact-card:begin -->` in the source.\n"
    merged = merge(original)
    assert original in merged and merged.count(card.BEGIN_MARKER) == 2
    assert merge(merged) == merged


# -- merging: code blocks and front matter as the Hub reads them -------------------------------------
def hf_metadata(text: str, tmp_path: Path) -> Optional[dict]:
    """What huggingface_hub's own metadata_load reads from `text` saved as a README.md."""
    path = tmp_path / "README.md"
    path.write_bytes(text.encode("utf-8"))
    return metadata_load(path)


_MARKED = f"{card.BEGIN_MARKER}\nexample section\n{card.END_MARKER}\n"


@pytest.mark.parametrize(
    "code",
    [
        "```\n" + _MARKED + "```\n",
        "```markdown\n" + _MARKED + "```\n",
        "~~~\n" + _MARKED + "~~~\n",
        "~~~~ md\n" + _MARKED + "~~~\n````\n~~~~~\n",  # closed only by a tilde fence at least as long
        "  ```\n" + _MARKED + "   `````\n",  # indented up to 3 spaces, closed by a longer fence
        "- ```\n  " + _MARKED.replace("\n", "\n  ").rstrip(" ") + "  ```\n",  # a fence inside a list item
        "".join("    " + line + "\n" for line in _MARKED.splitlines()),  # indented code
        "".join("\t" + line + "\n" for line in _MARKED.splitlines()),
    ],
)
def test_markers_inside_code_are_the_authors_text(code: str, tmp_path: Path):
    _, section, meta = pieces()
    original = "# Using maxact-card\n\nThe section sits between two markers:\n\n" + code + "\nThat is all.\n"
    merged = merge(original)
    assert merged == "---\n" + meta + "---\n" + original + "\n" + section
    assert merge(merged) == merged
    assert hf_metadata(merged, tmp_path) == yaml.safe_load(meta)


def test_code_markers_and_a_real_section():
    example = "```\n" + _MARKED + "```\n"
    original = "Docs:\n\n" + example + "\n<!-- maxact-card:begin -->\nold\n<!-- maxact-card:end -->\n\n" + example
    _, section, meta = pieces()
    merged = merge(original)
    assert merged == "---\n" + meta + "---\nDocs:\n\n" + example + "\n" + section + "\n" + example
    assert merge(merged) == merged


def test_an_indented_line_after_a_paragraph_is_not_code():
    """CommonMark: indented code cannot interrupt a paragraph, so these markers are real."""
    _, section, meta = pieces()
    original = "Intro.\n    <!-- maxact-card:begin -->\n    old\n    <!-- maxact-card:end -->\nAfter.\n"
    assert merge(original) == "---\n" + meta + "---\nIntro.\n" + section + "After.\n"


@pytest.mark.parametrize(
    "original, line, block",
    [
        ("# Card\n\n```python\nprint(1)\n", 3, "code block ('```')"),
        ("---\nlicense: mit\n---\n# Card\n~~~\n```\n", 5, "code block ('~~~')"),
        ("```\n<!-- maxact-card:begin -->\nold\n<!-- maxact-card:end -->\n", 1, "code block ('```')"),
        ("Text.\n\n<pre>\nraw\n", 3, "HTML block"),
    ],
)
def test_a_section_that_would_land_in_an_open_block_is_refused(original: str, line: int, block: str):
    with pytest.raises(UsageError) as info:
        merge(original)
    message = str(info.value)
    assert "\n" not in message and f"inside the {block} opened on line {line}" in message
    assert "close that block" in message
    with pytest.raises(UsageError, match="opened on line"):
        card.check_readme(original)  # the same refusal before any measurement


def test_a_template_that_leaves_a_fence_open_is_refused(tmp_path: Path):
    tpl = tmp_path / "open.md.j2"
    tpl.write_text("## Ranges\n\n```\nM = {{ peak.abs|num }}\n", encoding="utf-8")
    with pytest.raises(UsageError, match="leaves a block open .*close it in the template"):
        card.render_section(make_report(), template=tpl)


def test_indented_front_matter_stays_a_mapping(tmp_path: Path):
    _, section, meta = pieces()
    original = "---\n  license: mit\n  tags:\n  - a\n---\n# Card\n"
    merged = merge(original)
    indented = "".join("  " + line + "\n" for line in meta.splitlines())
    assert merged == "---\n  license: mit\n  tags:\n  - a\n" + indented + "---\n# Card\n\n" + section
    assert hf_metadata(merged, tmp_path) == {"license": "mit", "tags": ["a"]} | yaml.safe_load(meta)
    assert card.extract_metadata(merged) == yaml.safe_load(meta)["activation_range"]
    assert merge(merged) == merged
    again = merge(merged, scale=2.0)  # the indented block is found and replaced in place
    assert again.count("activation_range:") == 1 and front_matter(again)["license"] == "mit"


def test_a_blank_after_the_opening_delimiter_is_refused(tmp_path: Path):
    original = "--- \nlicense: mit\n---\n# Card\n"
    assert hf_metadata(original, tmp_path) is None  # the Hub sees no metadata here
    for text in (original, "\ufeff\n---\t\r\nlicense: mit\r\n---\r\n"):
        with pytest.raises(UsageError) as info:
            merge(text)
        assert "\n" not in str(info.value) and "delete the blanks after that '---'" in str(info.value)


def test_a_blank_opening_around_plain_text_is_body(tmp_path: Path):
    """No mapping between the rules: markdown to the Hub, so a front matter goes on top."""
    _, section, meta = pieces()
    original = "--- \nJust a rule and a heading\n---\n"
    merged = merge(original)
    assert merged == "---\n" + meta + "---\n" + original + "\n" + section
    assert hf_metadata(merged, tmp_path) == yaml.safe_load(meta)


@pytest.mark.parametrize(
    "original, author",
    [
        ("---\nlicense: mit\n---  \n# Card\n", {"license": "mit"}),  # blanks after the closing '---' are fine
        ("\n\n---\nlicense: mit\n---\n# Card\n", {"license": "mit"}),  # whitespace before the opening one too
        ("  ---\r\nlicense: mit\r\n---\r\n", {"license": "mit"}),
        ("---\n\n---\n# Card\n", None),
    ],
)
def test_front_matter_where_huggingface_hub_finds_it(original: str, author: Optional[dict], tmp_path: Path):
    _, section, meta = pieces()
    assert hf_metadata(original, tmp_path) == author
    merged = merge(original)
    before, after = REGEX_YAML_BLOCK.search(original), REGEX_YAML_BLOCK.search(merged)
    # The key joins the author's block in place: same opening and closing lines, same body.
    assert after.group(1) == before.group(1) and after.group(3) == before.group(3)
    assert after.group(2).startswith(before.group(2)) and merged[after.end():].startswith(original[before.end():])
    assert hf_metadata(merged, tmp_path) == (author or {}) | yaml.safe_load(meta)
    assert merge(merged) == merged


def test_a_block_scalar_ending_the_front_matter_keeps_its_value(tmp_path: Path):
    """The Hub parses the YAML without the line break before the closing '---', so a key added after
    a `|` scalar would give it a trailing line break: the key goes first instead."""
    _, section, meta = pieces()
    original = "---\nlicense: mit\ndescription: |\n  Two\n  lines\n---\n# Card\n"
    author = hf_metadata(original, tmp_path)
    assert author == {"license": "mit", "description": "Two\nlines"}
    merged = merge(original)
    assert merged == "---\n" + meta + original[4:] + "\n" + section
    assert hf_metadata(merged, tmp_path) == author | yaml.safe_load(meta)
    assert merge(merged) == merged


@pytest.mark.parametrize(
    "original", ["---\nlicense: mit\r---\n# Card\n", "---\r\nlicense: mit\u2028tags: [a]\r\n---\r\n"]
)
def test_front_matter_lines_break_where_yaml_breaks_them(original: str, tmp_path: Path):
    """A lone CR (the Hub's pattern and YAML) or U+2028 (YAML) ends a front matter line too."""
    _, section, meta = pieces()
    author = hf_metadata(original, tmp_path)
    merged = merge(original)
    assert hf_metadata(merged, tmp_path) == author | yaml.safe_load(meta)
    assert merge(merged) == merged and merged.count("activation_range:") == 1
    assert merge(merge(merged, scale=2.0)) == merged


def test_two_rules_at_the_top_are_not_front_matter(tmp_path: Path):
    _, section, meta = pieces()
    assert hf_metadata("---\n---\n", tmp_path) is None
    assert merge("---\n---\n") == "---\n" + meta + "---\n---\n---\n\n" + section


@pytest.mark.parametrize("fm", ["- a\n- b", "just text", "{license: mit}", "{license: mit,\n  tags: [a]}", "!!map {a: 1}"])
def test_front_matter_the_key_cannot_join_is_refused(fm: str):
    with pytest.raises(UsageError, match="README.md's metadata block") as info:
        merge(f"---\n{fm}\n---\n# Card\n")
    assert "\n" not in str(info.value)


def test_our_regex_is_huggingface_hubs():
    assert readme_merge.HF_YAML_BLOCK.pattern == REGEX_YAML_BLOCK.pattern


# -- merging: properties -----------------------------------------------------------------------------
_PRINTABLE = st.characters(
    blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\x85\ufeff\ufffe\uffff"
)
_line_text = st.text(_PRINTABLE, max_size=30)
_key = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True).filter(lambda k: k != "activation_range")
_block_line = _line_text.map(lambda s: s.strip() or "x")


@st.composite
def _fm_entry(draw) -> list[str]:
    key = draw(_key)
    kind = draw(st.sampled_from(["str", "int", "comment", "blank", "inline", "map", "list", "block"]))
    if kind == "str":
        return [f"{key}: {json.dumps(draw(_line_text), ensure_ascii=False)}"]
    if kind == "int":
        return [f"{key}: {draw(st.integers(-10**6, 10**6))}"]
    if kind == "comment":
        return ["#" + draw(_line_text)]
    if kind == "blank":
        return [draw(st.sampled_from(["", "  "]))]
    if kind == "inline":
        return [f"{key}: {draw(st.integers(0, 99))}  # {draw(_line_text)}"]
    if kind == "map":
        sub = draw(_key)
        return [f"{key}:", f"  {sub}: {json.dumps(draw(_line_text), ensure_ascii=False)}"]
    if kind == "list":
        items = draw(st.lists(st.integers(0, 9), min_size=1, max_size=3))
        return [f"{key}:"] + [f"- {i}" for i in items]
    lines = draw(st.lists(_block_line, min_size=1, max_size=3))
    return [f"{key}: |"] + ["  " + s for s in lines]


# Body lines that open no code or raw-HTML block (those are the fence property test's business below).
_body_text = _line_text.filter(lambda s: not s.lstrip().startswith(("<", "`", "~")))
_md_line = st.one_of(
    _body_text,
    st.sampled_from(["# Title", "---", "| a | b |", "|---|---|", "<!-- note -->", "- item", "", "  "]),
)


@st.composite
def _author_readme(draw) -> dict:
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    has_fm = draw(st.booleans())
    body_lines = draw(st.lists(_md_line, max_size=8))
    body = nl.join(body_lines)
    if body_lines and draw(st.booleans()):
        body += nl
    if not has_fm and REGEX_YAML_BLOCK.match(body):  # the Hub would read front matter there
        body = "Text" + body
    # At least one line: '---' right after '---' is no front matter to the Hub.
    entries = draw(st.lists(_fm_entry(), min_size=1, max_size=6))
    fm_text = "".join(line + nl for entry in entries for line in entry) if has_fm else ""
    head = bom + ("---" + nl + fm_text + "---" + nl if has_fm else "")
    # A `|` block scalar ending the front matter would gain a line break from a key after it.
    first = has_fm and entries[-1][0].endswith(": |")
    return {"nl": nl, "bom": bom, "has_fm": has_fm, "fm_text": fm_text, "body": body, "text": head + body,
            "meta_first": first}


_report_args = st.tuples(st.sampled_from([1e-3, 1.0, 2.0]), st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_author_readme(), args=_report_args)
def test_merge_only_inserts_and_is_idempotent(doc, args):
    report, section, meta = pieces(*args)
    nl, bom, body, original = doc["nl"], doc["bom"], doc["body"], doc["text"]
    merged = card.merge_readme(original, section=section, metadata=meta)

    # The metadata block sits just before the closing '---' (a new front matter when there was none),
    # or just after the opening one when the front matter ends with a block scalar.
    meta_nl = meta.replace("\n", nl if (doc["has_fm"] or "\n" in body) else "\n")
    doc_nl = nl if (doc["has_fm"] or "\n" in body) else "\n"
    fm = meta_nl + doc["fm_text"] if doc["meta_first"] else doc["fm_text"] + meta_nl
    head = bom + "---" + doc_nl + fm + "---" + doc_nl
    assert merged.startswith(head)
    rest = merged[len(head):]
    # The section is appended once at the end, after exactly one blank line.
    core = section.rstrip("\n").replace("\n", doc_nl) + doc_nl
    assert rest.endswith(core)
    between = rest[: len(rest) - len(core)]
    assert between.startswith(body)
    if body == "":
        sep = ""
    else:
        last = body.split("\n")[-1]
        ends_nl = body.endswith("\n")
        last_line = body.split("\n")[-2] if ends_nl else last
        blank = last_line.strip() == ""
        sep = ("" if ends_nl else doc_nl) + ("" if blank else doc_nl)
    assert between[len(body):] == sep
    # Removing what was inserted gives back the author's bytes exactly.
    restored = bom + ("---" + nl + doc["fm_text"] + "---" + nl if doc["has_fm"] else "") + body
    assert restored == original

    assert card.merge_readme(merged, section=section, metadata=meta) == merged
    fm = front_matter(merged)
    assert fm["activation_range"]["max_abs_activation"] == report.peak.abs
    assert fm["activation_range"]["settings_key"] == card.settings_key(report)
    assert card.extract_metadata(merged)["max_abs_activation"] == report.peak.abs
    if doc["has_fm"]:
        # The author's keys as the Hub reads them (without the line break before the closing '---').
        author = yaml.safe_load(REGEX_YAML_BLOCK.search(doc["text"].removeprefix("\ufeff")).group(2)) or {}
        assert {k: v for k, v in fm.items() if k != "activation_range"} == author


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_author_readme(), first=_report_args, second=_report_args)
def test_rerun_changes_only_our_bytes(doc, first, second):
    a = merge(doc["text"], *first)
    b = merge(a, *second)
    assert merge(b, *first) == a
    assert b.count(card.BEGIN_MARKER) == 1 and b.count(card.END_MARKER) == 1


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


@settings(max_examples=200, deadline=None)
@given(text=st.text().filter(lambda t: "maxact-card:" not in t), args=_report_args)
def test_arbitrary_text_is_kept_and_merge_is_idempotent(text, args):
    try:
        merged = merge(text, *args)
    except UsageError as exc:  # an unclosed block or front matter the Hub reads otherwise: refused
        assert "\n" not in str(exc) and "README.md" in str(exc)
        return
    assert _is_subsequence(text, merged)
    assert merged.startswith(text[:1]) or text[:1] != "\ufeff"
    assert merge(merged, *args) == merged
    assert card.extract_metadata(merged)["settings_key"] == card.settings_key(pieces(*args)[0])


# -- merging: the property test over author content with code, odd front matter and mixed endings ---
_FENCE_CONTENT = st.sampled_from(
    [card.BEGIN_MARKER, card.END_MARKER, "    " + card.BEGIN_MARKER, "---", "code", "", "  indented", "# not a heading"]
)
_WORDS = ["word", "ünïcødé 模型", "a: b", "*emph*", "`code`", "x  ", "'q'", "#"]
# Front matter entries as (lines at the top level); few draws each, so 5,000 examples stay fast.
_FM_ENTRIES = st.sampled_from(
    [
        ["license: mit"],
        ["license: apache-2.0  # inline comment"],
        ["# a comment", "language:", "- en", "- fr"],
        ["tags: [a, 'b: c']"],
        ['pipeline_tag: "text-generation"'],
        ["model-index:", "  - name: x", "    results: []"],
        ["description: |", "  First line", "", "  " + card.BEGIN_MARKER, "  " + card.END_MARKER],
        ["notes: >-", "  folded", "  text"],
        ["empty:"],
        ["count: 12"],
        [""],
        ["widget:", "- text: 'Hello: there'"],
    ]
)


@st.composite
def _fenced(draw) -> tuple[list[str], bool]:
    """A fenced code block with markers inside; (its lines, whether it is closed)."""
    char = draw(st.sampled_from("`~"))
    n = draw(st.integers(3, 5))
    info = draw(st.sampled_from(["", "md", " python", " ~x" if char == "~" else "html"]))
    lines = [" " * draw(st.integers(0, 3)) + char * n + info]
    for text in draw(st.lists(_FENCE_CONTENT, min_size=1, max_size=4)):
        lines.append(text)
    if draw(st.booleans()):  # a fence that cannot close this one: the other character, or too short
        lines.append(("~" if char == "`" else "`") * draw(st.integers(3, 6)) if n == 3 else char * (n - 1))
    closed = draw(st.booleans())
    if closed:
        close = char * (n + draw(st.integers(0, 2)))
        lines.append(" " * draw(st.integers(0, 3)) + close + draw(st.sampled_from(["", " ", "\t"])))
    return lines, closed


@st.composite
def _indented(draw) -> list[str]:
    """An indented code block (after a blank line) with markers inside."""
    prefix = draw(st.sampled_from(["    ", "\t", "     ", "  \t"]))
    texts = draw(st.lists(_FENCE_CONTENT.filter(bool), min_size=1, max_size=4))
    return [prefix + t for t in texts]


_PLAIN_BLOCKS = st.sampled_from(
    [
        ["# Heading"],
        ["Some text", "    continued, not code"],  # indented code cannot interrupt a paragraph
        [f"Markers look like `{card.BEGIN_MARKER}`."],
        ["> quoted", "> ```", "> " + card.BEGIN_MARKER, "> ```"],
        ["***"],
        ["<!-- a note -->"],
        ["<div>", "html</div>"],
        ["| a | b |", "|---|---|", "| 1 | 2 |"],
    ]
)


@st.composite
def _md_body(draw) -> tuple[list[str], bool]:
    """Blocks separated by blank lines; (lines, whether a fence is left open)."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "plain", "fence", "indented", "list"]))
        if lines:
            lines.append(draw(st.sampled_from(["", " ", "\t"])))
        if kind == "text":
            lines.append("W " + draw(st.sampled_from(_WORDS)))
        elif kind == "plain":
            lines += draw(_PLAIN_BLOCKS)
        elif kind == "indented":
            lines += draw(_indented())
        elif kind == "list":  # a list item, then a paragraph that ends the list
            lines += [draw(st.sampled_from(["- item", "1. item"])), "", "After the list"]
            if draw(st.booleans()):
                lines[-3:-1] = ["- ```", "  " + card.BEGIN_MARKER, "  ```"]
        else:
            block, closed = draw(_fenced())
            lines += block
            if not closed:
                return lines, True  # everything after it is code: nothing may follow
    return lines, False


@st.composite
def _readme_with_code(draw) -> dict:
    kind = draw(st.sampled_from(["none", "plain", "indented", "leading", "blank-opening"]))
    fm: list[str] = []
    if kind != "none":
        entries = draw(st.lists(_FM_ENTRIES, min_size=1, max_size=3))
        if draw(st.booleans()):  # an earlier measurement: replaced, not kept
            entries.insert(draw(st.integers(0, len(entries))), ["activation_range:", "  old: 1"])
        if kind == "blank-opening":
            entries.insert(0, ["license: mit"])  # a mapping the Hub does not see
        pad = " " * draw(st.integers(1, 3)) if kind == "indented" else ""
        fm = [pad + line if line.strip() else line for entry in entries for line in entry]
        opening = {"leading": draw(st.sampled_from(["\n---", " ---", "\n\n  ---"])), "blank-opening": "---" + draw(
            st.sampled_from([" ", "\t", "  "]))}.get(kind, "---")
        fm = opening.split("\n") + fm + ["---" + draw(st.sampled_from(["", " ", "\t"]))]
    body, unclosed = draw(_md_body())
    if kind == "none" and body and re.match(r"\s*---", body[0]):
        body[:0] = ["# Title", ""]  # else the Hub reads front matter from '---' to the next '---' line
    lines = fm + body
    crlf = draw(st.sampled_from([0, -1, draw(st.integers(0, 2 ** len(lines)))]))  # LF, CRLF or a mix
    text = "".join(line + ("\r\n" if crlf >> i & 1 else "\n") for i, line in enumerate(lines))
    if lines and draw(st.booleans()):
        text = text.rstrip("\r\n")  # the last line without a line break
    bom = draw(st.sampled_from(["", "\ufeff"]))
    old = {pad + "activation_range:", pad + "  old: 1"} if kind != "none" else set()
    return {"text": bom + text, "lines": [x for x in lines if x not in old], "refused": unclosed or kind == "blank-opening"}


def _lines_of(text: str) -> list[str]:
    return re.split(r"\r?\n", text.removeprefix("\ufeff"))


def _in_order(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(line in it for line in small)


def _hub_reads(text: str, path: Path) -> Optional[dict]:
    """huggingface_hub's metadata_load of `text`, rewriting one file in place (replacing a file
    with O_TRUNC can cost milliseconds on ext4, which 5,000 examples would feel)."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.write(text.encode("utf-8"))
        f.truncate()
    return metadata_load(path)


@functools.lru_cache(maxsize=None)
def _small_pieces() -> tuple[str, str, dict]:
    """A section and metadata block of the real shape, short enough for 5,000 examples."""
    report = make_report(peak=None, kinds=(), sites=(), headroom=(), quant=None, fp16_safe=True)
    meta = card.metadata_yaml(report)
    return card.render_section(report), meta, yaml.safe_load(meta)


@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_readme_with_code())
def test_merge_keeps_code_and_front_matter_as_the_hub_reads_them(doc, tmp_path_factory):
    section, meta, ours = _small_pieces()
    original = doc["text"]
    if doc["refused"]:
        with pytest.raises(UsageError) as info:
            card.merge_readme(original, section=section, metadata=meta)
        assert "\n" not in str(info.value) and str(info.value).startswith("README.md")
        return
    merged = card.merge_readme(original, section=section, metadata=meta)
    assert _in_order(doc["lines"], _lines_of(merged))  # every author line, in order
    assert merged.startswith("\ufeff") == original.startswith("\ufeff")
    assert card.merge_readme(merged, section=section, metadata=meta) == merged
    assert merged.count(card.BEGIN_MARKER + "\n") + merged.count(card.BEGIN_MARKER + "\r\n") >= 1
    path = tmp_path_factory.getbasetemp() / "property-README.md"
    author = _hub_reads(original, path) or {}
    expected = {k: v for k, v in author.items() if k != "activation_range"} | ours
    assert _hub_reads(merged, path) == expected


# -- figure ------------------------------------------------------------------------------------------
def test_png_is_deterministic_and_valid():
    report = make_report()
    png = plot.render_png(report)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert plot.render_png(report) == png
    assert b"tIME" not in png and b"Software" not in png


def test_png_series_and_edge_cases():
    data = plot.series(make_report())
    assert set(data) == {"attn", "mlp.gate", "mlp.down_in", "router", "mlp", "residual", "embed", "final_norm"}
    assert [x for x, _ in data["residual"]] == [0, 1, 2, 3]
    assert data["embed"][0][0] == -1 and data["final_norm"][0][0] == 4
    empty = make_report(peak=None, kinds=(), sites=(), headroom=(), quant=None)
    assert plot.render_png(empty).startswith(b"\x89PNG")
    report = make_report()
    zeroed = dataclasses.replace(report, sites=tuple(dataclasses.replace(s, absmax=0.0) for s in report.sites))
    assert plot.render_png(zeroed).startswith(b"\x89PNG")


def test_figure_names_a_local_model_by_its_file_not_its_path():
    model = make_report().model
    assert dataclasses.replace(model, id="org/model", source="hub").name == "org/model"
    assert dataclasses.replace(model, id="/home/me/models/x.Q4_1.gguf", source="gguf").name == "x.Q4_1.gguf"
    assert dataclasses.replace(model, id="./my-checkpoint/", source="dir").name == "my-checkpoint"


# -- publish: local ----------------------------------------------------------------------------------
def test_write_card_creates_and_updates(tmp_path: Path):
    report = make_report()
    model_dir = tmp_path / "model"
    path = publish.write_card(report, model_dir)
    assert path == model_dir / "README.md"
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "maxact_layers.png", "maxact_report.json"]
    assert Report.load(model_dir / "maxact_report.json") == report
    first = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    publish.write_card(report, model_dir)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == first


def test_write_card_keeps_crlf_and_bom(tmp_path: Path):
    original = "\ufeff---\r\nlicense: mit\r\n---\r\n# Model\r\n".encode("utf-8")
    (tmp_path / "README.md").write_bytes(original)
    publish.write_card(make_report(), tmp_path)
    data = (tmp_path / "README.md").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf---\r\nlicense: mit\r\nactivation_range:\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_write_card_with_user_template(tmp_path: Path):
    tpl = tmp_path / "t.md.j2"
    tpl.write_text("M={{ peak.abs|num }}", encoding="utf-8")
    publish.write_card(make_report(), tmp_path / "m", template=tpl)
    assert "\nM=712,401\n" in (tmp_path / "m" / "README.md").read_text(encoding="utf-8")


def test_write_card_refuses_non_utf8(tmp_path: Path):
    (tmp_path / "README.md").write_bytes(b"\xff\xfe# bad")
    with pytest.raises(UsageError, match="UTF-8"):
        publish.write_card(make_report(), tmp_path)


def test_render_readme():
    text = publish.render_readme(make_report(), "# Hi\n")
    assert text.endswith(card.END_MARKER + "\n") and "# Hi\n\n" + card.BEGIN_MARKER in text


# -- publish: pull requests against the Hub test server ----------------------------------------------
def _hub_repo(hub, readme: bytes) -> tuple[Report, object]:
    from maxact_card.hub import Hub

    hub.add_token("hf_alice_write", user="alice", role="write")
    sha = hub.create_repo("alice/tiny", {"README.md": readme, "config.json": b"{}"})
    hub.add_commit("alice/tiny", {"config.json": b'{"a": 1}'})  # main moves on after the audit
    report = make_report()
    report = dataclasses.replace(report, model=dataclasses.replace(report.model, id="alice/tiny", revision=sha))
    return report, Hub(token="hf_alice_write")


def _quiet(line: str) -> None:
    pass


def test_open_pr_opens_a_new_pull_request_with_the_three_files(hub):
    original = "---\nlicense: mit\n---\n# Card\n"
    report, client = _hub_repo(hub, original.encode("utf-8"))
    lines: list[str] = []
    result = publish.open_pr(report, client, "alice/tiny", echo=lines.append)
    assert result.action == "opened" and result.pr_num == 1
    assert result.url == f"{hub.url}/alice/tiny/discussions/1"
    head = hub.commit_info("alice/tiny", hub.head("alice/tiny", "refs/pr/1"))
    assert head.parent == report.model.revision and head.message == publish.PR_TITLE
    assert head.description == card.render_pr_description(report)
    assert sorted(set(head.files) - {"config.json"}) == ["README.md", "maxact_layers.png", "maxact_report.json"]
    assert "+license: mit" not in result.diff and "+activation_range:" in result.diff
    assert any("opened" in line for line in lines)


def test_open_pr_without_readme_creates_one(hub):
    hub.add_token("hf_alice_write", user="alice", role="write")
    sha = hub.create_repo("alice/bare", {"config.json": b"{}"})
    report = make_report()
    report = dataclasses.replace(report, model=dataclasses.replace(report.model, id="alice/bare", revision=sha))
    from maxact_card.hub import Hub

    result = publish.open_pr(report, Hub(token="hf_alice_write"), "alice/bare", echo=_quiet)
    assert result.action == "opened"
    assert hub.files_at("alice/bare", "refs/pr/1")["README.md"].startswith(b"---\nactivation_range:\n")


def test_open_pr_is_a_no_op_when_the_card_already_has_these_settings(hub):
    """The audited commit is the merge of an earlier card PR: other sha, same weights, same settings."""
    audited, client = _hub_repo(hub, b"# Card\n")
    audited = dataclasses.replace(audited, model=dataclasses.replace(audited.model, weights="sha256:" + "ab" * 32))
    merged = hub.add_commit("alice/tiny", {"README.md": publish.render_readme(audited, "# Card\n").encode("utf-8")})
    report = dataclasses.replace(audited, model=dataclasses.replace(audited.model, revision=merged))
    lines: list[str] = []
    result = publish.open_pr(report, client, "alice/tiny", echo=lines.append)
    assert result.action == "unchanged" and hub.pull_requests("alice/tiny") == []
    assert "already" in lines[0]
    # A newer measurement with different numbers but the same settings is still "unchanged".
    newer = make_report(scale=2.0, model=report.model)
    assert publish.open_pr(newer, client, "alice/tiny", echo=_quiet).action == "unchanged"
    # Other weights are another checkpoint, whatever the settings.
    other = dataclasses.replace(report, model=dataclasses.replace(report.model, weights="sha256:" + "cd" * 32))
    assert publish.open_pr(other, client, "alice/tiny", dry_run=True, echo=_quiet).action == "dry-run"
    forced = publish.open_pr(report, client, "alice/tiny", force=True, echo=_quiet)
    assert forced.action == "opened" and len(hub.pull_requests("alice/tiny")) == 1


def test_open_pr_leaves_an_up_to_date_pull_request_alone_unless_forced(hub):
    report, client = _hub_repo(hub, b"# Card\n")
    assert publish.open_pr(report, client, "alice/tiny", echo=_quiet).action == "opened"
    head = hub.head("alice/tiny", "refs/pr/1")
    again = publish.open_pr(report, client, "alice/tiny", echo=_quiet)
    assert again.action == "unchanged" and again.pr_num == 1 and hub.head("alice/tiny", "refs/pr/1") == head
    forced = publish.open_pr(dataclasses.replace(report, created="2026-06-01T00:00:00+00:00"), client,
                             "alice/tiny", force=True, echo=_quiet)
    assert forced.action == "updated" and forced.pr_num == 1 and hub.head("alice/tiny", "refs/pr/1") != head


def test_open_pr_dry_run_touches_nothing(hub):
    report, client = _hub_repo(hub, b"---\nlicense: mit\n---\n# Card\n")
    commits = {sha for sha in hub.repo("alice/tiny").commits}
    lines: list[str] = []
    result = publish.open_pr(report, client, "alice/tiny", dry_run=True, echo=lines.append)
    assert result.action == "dry-run" and result.url is None
    assert set(hub.repo("alice/tiny").commits) == commits and hub.pull_requests("alice/tiny") == []
    assert result.files == ("README.md", "maxact_layers.png", "maxact_report.json")
    assert result.diff.startswith("--- a/README.md\n+++ b/README.md\n")
    assert " license: mit\n" in result.diff and "+activation_range:\n" in result.diff
    assert "\n".join(lines).count("+++ b/README.md") == 1


def test_open_pr_needs_a_hub_revision():
    from maxact_card.hub import Hub

    report = make_report()
    local = dataclasses.replace(report, model=dataclasses.replace(report.model, revision=None, source="local"))
    with pytest.raises(UsageError, match="no Hub revision"):
        publish.open_pr(local, Hub(token="unused"), "acme/x", echo=lambda s: None)


def test_open_pr_end_to_end_with_the_hub_test_server(hub):
    original = "---\nlicense: mit # keep\n---\n# Tiny\n\nText.\n"
    report, client = _hub_repo(hub, original.encode("utf-8"))

    dry = publish.open_pr(report, client, "alice/tiny", dry_run=True, echo=_quiet)
    assert dry.action == "dry-run" and hub.pull_requests("alice/tiny") == []

    result = publish.open_pr(report, client, "alice/tiny", echo=_quiet)
    assert result.action == "opened" and result.pr_num == 1
    files = hub.files_at("alice/tiny", "refs/pr/1")
    assert files["config.json"] == b"{}"  # branched from the audited commit
    assert files["README.md"].decode("utf-8") == publish.render_readme(report, original)
    assert files["maxact_layers.png"] == plot.render_png(report)
    assert Report.from_json(files["maxact_report.json"].decode("utf-8")) == report
    assert hub.pull_requests("alice/tiny")[0].title == publish.PR_TITLE

    again = publish.open_pr(report, client, "alice/tiny", echo=_quiet)
    assert again.action == "unchanged" and again.pr_num == 1
    newer = make_report(scale=2.0, tool_version="1.0.0", model=report.model)
    updated = publish.open_pr(newer, client, "alice/tiny", echo=_quiet)
    assert updated.action == "updated" and updated.pr_num == 1 and len(hub.pull_requests("alice/tiny")) == 1
    assert hub.files_at("alice/tiny", "refs/pr/1")["README.md"].decode("utf-8") == publish.render_readme(newer, original)


def test_open_pr_keeps_crlf_and_bom_of_a_hub_readme(hub):
    original = "\ufeff---\r\nlicense: mit\r\n---\r\n# Tiny\r\n\r\nText.\r\n"
    report, client = _hub_repo(hub, original.encode("utf-8"))
    publish.open_pr(report, client, "alice/tiny", echo=_quiet)
    readme = hub.files_at("alice/tiny", "refs/pr/1")["README.md"]
    assert readme.startswith(b"\xef\xbb\xbf---\r\nlicense: mit\r\nactivation_range:\r\n")
    assert b"\n" not in readme.replace(b"\r\n", b"")


def test_nvfp4_headroom_lists_the_sites_beyond_one_scale():
    from maxact_card.report import BlockSpan
    from maxact_card.summary import nvfp4_line

    report = make_report()
    spans = (BlockSpan("layers.0.mlp.down_in", 900.0, False), BlockSpan("layers.2.mlp.down_in", 65536.0, True),
             BlockSpan("layers.3.attn.o_proj.in", 30000.0, True))
    beyond = dataclasses.replace(report, quant=dataclasses.replace(report.quant, nvfp4_spans=spans))
    line = nvfp4_line(beyond)
    assert line.startswith("NVFP4 static scale: 2 of 3 linear inputs span more block amax than one FP32 scale "
                           "holds (limit 28,672x): layers.2.mlp.down_in (65,536.0x), layers.3.attn.o_proj.in "
                           "(30,000.0x);")
    assert line in card.render_section(beyond)
    within = dataclasses.replace(report, quant=dataclasses.replace(report.quant, nvfp4_spans=spans[:1]))
    assert nvfp4_line(within) == ("NVFP4 static scale: every linear input's block amax spans at most 900.0x "
                                  "(at layers.0.mlp.down_in; limit 28,672x)")
    assert nvfp4_line(make_report(with_quant=False)) is None
    from maxact_card.quant.blocks import NVFP4_SPAN_LIMIT
    from maxact_card import summary

    assert summary.NVFP4_SPAN_LIMIT == NVFP4_SPAN_LIMIT  # kept apart so the card renders without torch
    from maxact_card.quant import FP16_MAX

    assert summary.FP16_MAX == FP16_MAX
