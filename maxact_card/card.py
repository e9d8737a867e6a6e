"""The model-card side: render the "Activation range" section and merge it into a README.md.

The merge itself (markers, front matter, line endings) lives in `readme_merge`; its names are
re-exported here.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from .errors import UsageError
from .readme_merge import (  # noqa: F401  (re-exported: the card's public names)
    BEGIN_MARKER,
    BOM,
    END_MARKER,
    METADATA_KEY,
    check_readme,
    check_section,
    extract_metadata,
    merge_readme,
)
from .report import HEADLINE_KINDS, KIND_ORDER, LINEAR_INPUT_SUFFIXES, AuditSettings, Report, yaml_metadata
from .comparison import change_lines
from .summary import FP16_MAX, experts_line, fmt_num, fp16_answer, nvfp4_line
SECTION_TEMPLATE = "activation_range.md.j2"
PR_TEMPLATE = "pr_description.md.j2"
FIGURE_NAME = "maxact_layers.png"
REPORT_NAME = "maxact_report.json"
PAPER_URL = "https://arxiv.org/abs/2605.15572"
PAPER_TITLE = "Measuring Maximum Activations in Open Large Language Models"
PROJECT_URL = "https://pypi.org/project/maxact-card/"


def project_urls() -> dict[str, str]:
    """The package's Project-URL entries (pyproject's [project.urls]), by label, lower case."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        entries = metadata("maxact-card").get_all("Project-URL") or []
    except PackageNotFoundError:
        return {}
    return {label.strip().lower(): url.strip() for label, _, url in (e.partition(",") for e in entries)}


# -- metadata --------------------------------------------------------------------------------------
def settings_key(report: Report) -> str:
    """What makes two audits the same measurement: the same weights, corpus documents and options
    that change a number, by the same major version of the tool. A card that already carries this
    key needs no new pull request.

    The weights are named by their fingerprint when there is one (so a commit that only changed the
    card, such as the merge of this tool's pull request, is the same checkpoint), else by the commit
    sha. Reports before schema 1.4 (no settings) get the key they were published with."""
    major = str(report.tool_version).split(".")[0]
    if report.settings is not None and report.corpus.documents:
        return key_of(report.model.weights, report.model.revision, report.corpus.documents, report.settings, major)
    weights = f"weights={report.model.weights}" if report.model.weights else f"rev={report.model.revision or 'local'}"
    return (
        f"{weights};corpus={report.corpus.fingerprint};"
        f"samples={report.corpus.samples};max_seq_len={report.corpus.max_seq_len};"
        f"dtype={report.model.dtype};tool={major}"
    )


def key_of(weights: Optional[str], revision: Optional[str], documents: str, s: AuditSettings, major: str) -> str:
    """The settings key from its parts, as known before an audit (`pipeline.expected_key`) or after it."""
    ident = f"weights={weights}" if weights else f"rev={revision or 'local'}"
    clip = ",".join(f"{p:g}" for p in s.clip_percentiles)
    return (f"{ident};documents={documents};samples={s.samples};max_seq_len={s.max_seq_len};seed={s.seed};"
            f"dtype={s.dtype};calib_samples={s.calib_samples};clip={clip};formats={','.join(s.formats)};tool={major}")


def card_metadata(report: Report) -> dict[str, Any]:
    """The value of the `activation_range:` key: `yaml_metadata(report)` plus the settings key."""
    meta = dict(yaml_metadata(report))
    meta["settings_key"] = settings_key(report)
    return meta


def metadata_yaml(report: Report) -> str:
    """The `activation_range:` block as YAML text (LF line endings, ends with a newline)."""
    return yaml.safe_dump(
        {METADATA_KEY: card_metadata(report)},
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )


# -- rendering -------------------------------------------------------------------------------------
def template_dir() -> Any:
    """The built-in templates: inside the installed package, else `<repo>/templates` in a checkout."""
    packaged = importlib.resources.files("maxact_card") / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "templates"


def _load_builtin(name: str) -> Optional[tuple[str, Optional[str], Callable[[], bool]]]:
    entry = template_dir() / name
    if not entry.is_file():
        return None
    return entry.read_text(encoding="utf-8"), None, lambda: True


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_builtin),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=fmt_num,
        signed=fmt_signed,
        count=fmt_count,
        pct=fmt_pct,
        code=md_code,
        cell=md_cell,
        token=fmt_token,
        codeblock=md_code_block,
    )
    return env


def _user_template(env: Any, template: Path) -> Any:
    """A user's template, read and compiled: one line for a file that cannot be read."""
    path = Path(template)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--template {path}: no such file; pass a Jinja2 markdown template") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--template {path}: cannot read it ({exc}); pass a UTF-8 text file") from None
    return env.from_string(text)


def _render(name: str, context: dict[str, Any], template: Optional[Path] = None) -> str:
    import jinja2

    env = _environment()
    label = str(template) if template is not None else name
    try:
        tpl = env.get_template(name) if template is None else _user_template(env, template)
        return tpl.render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"template {label}, line {exc.lineno}: {exc.message}; fix the template") from None
    except jinja2.UndefinedError as exc:
        raise UsageError(
            f"template {label}: {exc.message}; available names: {', '.join(sorted(context))}"
        ) from None
    except jinja2.TemplateError as exc:
        raise UsageError(f"template {label}: {exc}; fix the template") from None


def section_context(report: Report, *, figure_path: Optional[str] = FIGURE_NAME) -> dict[str, Any]:
    """Every name the section and PR-description templates can use."""
    peak = report.peak
    m = peak.abs if peak is not None else None
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    kinds = [
        {"kind": k.kind, "absmax": k.absmax, "site": k.site, "layer": k.layer, "in_m": k.kind in HEADLINE_KINDS}
        for k in sorted(report.kinds, key=lambda k: (order.get(k.kind, len(order)), k.kind))
    ]
    quant = report.quant
    urls = project_urls()
    headroom = []
    for h in report.headroom:
        ratio = m / h.max_finite if m is not None and h.max_finite > 0 else h.ratio
        headroom.append(
            {
                "format": h.format,
                "max_finite": h.max_finite,
                # Far below 1 (bf16: ~1e-34) the ratio says nothing more than "fits easily".
                "ratio": ratio if ratio >= 1e-6 or not math.isfinite(ratio) else None,
                "fits": bool(m is not None and math.isfinite(m) and m <= h.max_finite),
                "overflow_sites": list(h.overflow_sites),
                # fp16/bf16 run unscaled: their verdict is this row's; FP8 runs with a scale, checked apart.
                "verdict": v.verdict if (v := report.verdict(h.format)) else None,
                "scaled": h.format not in ("fp16", "bf16"),
            }
        )
    worst_sites = []
    if quant is not None:
        worst: dict[str, Any] = {}
        for s in quant.sites:
            if not s.site.endswith(LINEAR_INPUT_SUFFIXES):
                continue
            if s.format not in worst or _lt(s.sqnr_db, worst[s.format].sqnr_db):
                worst[s.format] = s
        worst_sites = list(worst.values())
    return {
        "report": report,
        "model": report.model,
        "corpus": report.corpus,
        "peak": peak,
        "m": m,
        "fp16_safe": report.fp16_safe,
        "fp16": dict(zip(("verdict", "line"), fp16_answer(report))),
        "peak_interval": report.peak_interval,
        "nvfp4": nvfp4_line(report),
        "bf16": v.verdict if (v := report.verdict("bf16")) else None,
        "deployment": deployment_line(report),
        "verdicts": {v.format: v.verdict for v in (quant.verdicts if quant else ())},
        "baseline": report.baseline,
        "baseline_lines": change_lines(report.baseline) if report.baseline is not None else [],
        "experts_line": experts_line(report),
        "intervals": {v.format: v.interval for v in (quant.verdicts if quant else ()) if v.interval is not None},
        "fp16_max": FP16_MAX,
        "fp16_ratio": (m / FP16_MAX) if m is not None else None,
        "kinds": kinds,
        "top_layers": [{"layer": layer, "absmax": v, "site": site} for layer, v, site in report.top_layers()],
        "headroom": headroom,
        "quant": quant,
        "worst_sites": worst_sites,
        "figure_path": figure_path,
        "tool_version": report.tool_version,
        "revision": report.model.revision,
        "created": report.created,
        "command": reproduce_command(report),
        "settings_key": settings_key(report),
        "metadata_key": METADATA_KEY,
        "paper_url": PAPER_URL,
        "paper_title": PAPER_TITLE,
        "project_url": urls.get("homepage", PROJECT_URL),
        "issues_url": urls.get("issues"),
        "files": ["README.md", FIGURE_NAME, REPORT_NAME],
        "begin_marker": BEGIN_MARKER,
        "end_marker": END_MARKER,
    }


def deployment_line(report: Report) -> Optional[str]:
    """Which of the formats run end to end are fine, in one line: "ok: int8_per_token, fp8_e4m3;
    degraded: nvfp4; unsafe: int8_absmax"; None without the check."""
    if report.quant is None or not report.quant.end_to_end:
        return None
    groups: dict[str, list[str]] = {}
    for e in report.quant.end_to_end:
        v = report.verdict(e.format)
        groups.setdefault(v.verdict if v else "not judged", []).append(e.format)
    order = ("ok", "uncertain", "degraded", "unsafe", "not judged")
    return "; ".join(f"{level}: {', '.join(groups[level])}" for level in order if level in groups)


def reproduce_command(report: Report) -> str:
    """`report.command`, or an equivalent `maxact-card audit` line when the report has none."""
    if report.command.strip():
        return report.command.strip()
    parts = ["maxact-card", "audit", report.model.id]
    if report.model.revision:
        parts += ["--revision", report.model.revision]
    parts += [
        "--samples", str(report.corpus.samples),
        "--max-seq-len", str(report.corpus.max_seq_len),
        "--dtype", report.model.dtype,
    ]
    return " ".join(shlex.quote(p) for p in parts)


def render_section(
    report: Report, *, template: Optional[Path] = None, figure_path: Optional[str] = FIGURE_NAME
) -> str:
    """The card section between its two marker lines (LF line endings, ends with a newline).

    `template` is a user's own Jinja2 file for the section; it sees the names of
    `section_context` and may `{% extends "activation_range.md.j2" %}` to override blocks.
    """
    inner = _render(SECTION_TEMPLATE, section_context(report, figure_path=figure_path), template)
    inner = inner.replace("\r\n", "\n").strip("\n")
    if inner.endswith(">"):  # an HTML block (</details>) runs to the next blank line: end it before the marker
        inner += "\n"
    for line in inner.split("\n"):
        if line.strip() in (BEGIN_MARKER, END_MARKER):
            raise UsageError(
                f"the rendered section contains a line {line.strip()!r}; the markers are added "
                "around the section, remove them from the template"
            )
    section = f"{BEGIN_MARKER}\n{inner}\n{END_MARKER}\n"
    check_section(section)
    return section


def check_template(template: Optional[Path]) -> None:
    """A --template that does not parse, refused before the audit (names it uses are checked when
    the section renders)."""
    if template is None:
        return
    import jinja2

    try:
        _user_template(_environment(), template)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"template {template}, line {exc.lineno}: {exc.message}; fix the template") from None


def render_pr_description(report: Report) -> str:
    """The pull-request description: what was measured, M and where, fp16 safety, how to reproduce."""
    return _render(PR_TEMPLATE, section_context(report)).strip("\n") + "\n"


# -- merging ---------------------------------------------------------------------------------------
def render_readme(
    report: Report,
    readme_text: Optional[str],
    *,
    template: Optional[Path] = None,
    figure_path: Optional[str] = FIGURE_NAME,
) -> str:
    """`readme_text` (None: no README yet) with this report's section and metadata merged in."""
    return merge_readme(
        readme_text,
        section=render_section(report, template=template, figure_path=figure_path),
        metadata=metadata_yaml(report),
    )


# -- formatting filters ----------------------------------------------------------------------------
def fmt_signed(x: Any) -> str:
    """A change, with its sign: +0.147, -0.0021, +0."""
    text = fmt_num(x)
    return text if text.startswith(("-", "n/a", "NaN", "≈")) else "+" + text


def fmt_count(n: Any) -> str:
    return f"{int(n):,}"


def fmt_pct(x: Any) -> str:
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    p = 100.0 * float(x)
    return f"{p:.2g}%" if 0 < abs(p) < 0.1 else f"{p:.1f}%"


def md_cell(text: Any) -> str:
    """Plain text safe inside a markdown table cell."""
    return str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def md_code(text: Any, table: bool = False) -> str:
    """An inline code span that survives backticks (and pipes, inside a table)."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    runs = [len(r) for r in re.findall(r"`+", s)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    out = f"{fence}{pad}{s}{pad}{fence}"
    return out.replace("|", "\\|") if table else out


def fmt_token(token: Any, table: bool = False) -> str:
    """A token as a quoted code span, so spaces and line breaks are visible: `" the"`, `"\\n"`."""
    return md_code(json.dumps(str(token), ensure_ascii=False), table=table)


def md_code_block(text: Any, lang: str = "bash") -> str:
    s = str(text)
    runs = [len(r) for r in re.findall(r"`{3,}", s)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{lang}\n{s}\n{fence}"


def _lt(a: float, b: float) -> bool:
    if math.isnan(a):
        return False
    return math.isnan(b) or a < b
