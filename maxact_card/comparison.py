"""Reports side by side: whether two measurements compare, and what changed between them.

Pure functions of reports (no torch), shared by `maxact-card compare`, `audit --baseline` and
`audit --models`.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .report import AuditSettings, BaselineChange, Report, Verdict, VerdictChange
from .summary import FP16_MAX

# quant.verdicts.DEFAULT_THRESHOLDS' delta-NLL thresholds (ok / degraded / unsafe), without importing
# torch here; a test pins them to the quant package's.
DELTA_NLL_THRESHOLDS = (0.01, 0.1)
LEVELS = ("ok", "degraded", "unsafe")


def short(fingerprint: Optional[str], n: int = 12) -> str:
    """`sha256:3f2a...` -> `3f2a...` (n hex digits)."""
    return (fingerprint or "").split(":", 1)[-1][:n] or "-"


def corpus_identity(report: Report, other: Report) -> tuple[str, str]:
    """The corpus fingerprints to compare: of the documents when both reports have one (schema 1.4,
    the same for every tokenizer), else of the token ids."""
    a, b = report.corpus, other.corpus
    if a.documents and b.documents:
        return a.documents, b.documents
    return a.fingerprint, b.fingerprint


def differences(report: Report, reference: Report) -> tuple[str, ...]:
    """The settings in which `report` differs from `reference`, each named with both values
    ("samples 6 vs 12"); empty when the two measurements compare."""
    a, b = report, reference
    out = []
    pairs: list[tuple[str, Any, Any]] = [
        ("corpus", a.corpus.name, b.corpus.name),
        ("samples", a.corpus.samples, b.corpus.samples),
        ("max_seq_len", a.corpus.max_seq_len, b.corpus.max_seq_len),
        ("seed", a.corpus.seed, b.corpus.seed),
        ("dtype", a.model.dtype, b.model.dtype),
    ]
    if a.quant is not None and b.quant is not None:
        pairs.append(("calib_samples", a.quant.calib_samples, b.quant.calib_samples))
        if a.settings is not None and b.settings is not None:
            pairs.append(("clip_percentiles", _floats(a.settings.clip_percentiles), _floats(b.settings.clip_percentiles)))
    for name, x, y in pairs:
        if x != y:
            out.append(f"{name} {x} vs {y}")
    if not out:
        mine, theirs = corpus_identity(a, b)
        if mine != theirs:  # same name and sizes, other text: another version of the file, or of the tool
            out.append(f"corpus text {short(mine, 8)} vs {short(theirs, 8)}")
    return tuple(out)


def settings_differences(settings: AuditSettings, baseline: Report) -> tuple[str, ...]:
    """What an audit about to run with `settings` will differ in from `baseline`, as far as the options
    tell before the model is loaded (the baseline's own options where it records them)."""
    theirs = baseline.settings
    pairs: list[tuple[str, Any, Any]] = [("samples", settings.samples, theirs.samples if theirs else baseline.corpus.samples),
                                         ("seed", settings.seed, baseline.corpus.seed)]
    if theirs is not None:
        pairs += [("max_seq_len", settings.max_seq_len, theirs.max_seq_len), ("dtype", settings.dtype, theirs.dtype)]
        if settings.calib_samples and theirs.calib_samples:
            pairs.append(("calib_samples", settings.calib_samples, theirs.calib_samples))
    return tuple(f"--{name.replace('_', '-')} {x} (the baseline's: {y})" for name, x, y in pairs if x != y)


def _floats(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


# -- verdicts --------------------------------------------------------------------------------------
def _level(delta: float) -> int:
    ok, degraded = DELTA_NLL_THRESHOLDS
    return 0 if delta <= ok else 1 if delta <= degraded else 2


def verdict_rank(v: Verdict) -> float:
    """ok 0, degraded 1, unsafe 2; uncertain lies between the levels at the two ends of its
    interval (ok-or-degraded 0.5, degraded-or-unsafe 1.5), or at 1 without an interval."""
    if v.verdict in LEVELS:
        return float(LEVELS.index(v.verdict))
    if v.interval is not None:
        lo, hi = v.interval
        return (_level(lo) + _level(hi)) / 2
    return 1.0


def verdict_changes(report: Report, baseline: Report) -> tuple[VerdictChange, ...]:
    """Every format both reports judged whose verdict differs (fp16 and bf16 first)."""
    formats = [v.format for v in report.dtype_verdicts] + [v.format for v in (report.quant.verdicts if report.quant else ())]
    out = []
    for fmt in dict.fromkeys(formats):
        now, then = report.verdict(fmt), baseline.verdict(fmt)
        if now is None or then is None or now.verdict == then.verdict:
            continue
        out.append(VerdictChange(fmt, then.verdict, now.verdict, verdict_rank(now) > verdict_rank(then)))
    return tuple(out)


# -- the change against a baseline -----------------------------------------------------------------
def m_of(report: Report) -> Optional[float]:
    return report.peak.abs if report.peak is not None else None


def m_ratio(m: Optional[float], base: Optional[float]) -> Optional[float]:
    """M over the baseline's M: 1 when equal (infinite ones too), inf from a zero baseline."""
    if m is None or base is None or math.isnan(m) or math.isnan(base):
        return None
    if m == base:
        return 1.0
    if base == 0:
        return math.inf
    return m / base


def fp16_overflow(report: Report) -> tuple[str, ...]:
    return next((h.overflow_sites for h in report.headroom if h.format == "fp16"), ())


def baseline_change(report: Report, baseline: Report, source: str) -> BaselineChange:
    before = set(fp16_overflow(baseline))
    return BaselineChange(
        source=source,
        model=baseline.model.name,
        revision=baseline.model.revision,
        weights=baseline.model.weights,
        m=m_of(baseline),
        ratio=m_ratio(m_of(report), m_of(baseline)),
        fp16_new_sites=tuple(s for s in fp16_overflow(report) if s not in before),
        verdicts=verdict_changes(report, baseline),
        differences=differences(report, baseline),
    )


def regressions(change: BaselineChange, max_ratio: float) -> list[str]:
    """Why this audit is a regression against its baseline: M grew by more than `max_ratio`
    times, or a verdict got worse. Empty: no regression."""
    out = []
    if change.ratio is not None and not change.ratio <= max_ratio:
        out.append(f"M is {fmt_ratio(change.ratio)} the baseline's (more than {max_ratio:g}x)")
    out += [f"{v.format} {v.before} -> {v.after}" for v in change.verdicts if v.worse]
    return out


def fmt_ratio(r: Optional[float]) -> str:
    """3 significant digits and an x: 1.23x, 0.0456x, 1,230x; 'n/a' when there is none."""
    if r is None or math.isnan(r):
        return "n/a"
    if math.isinf(r):
        return "inf"
    r = float(f"{r:.3g}")
    return f"{r:,.0f}x" if r >= 1000 else f"{r:g}x"


def change_lines(change: BaselineChange) -> list[str]:
    """The change in a few lines: terminal summary and card."""
    what = change.model + (f"@{change.revision[:12]}" if change.revision else "")
    where = change.source if change.source.endswith(what) else f"{what} ({change.source})"
    base_m = "n/a" if change.m is None else fmt_m(change.m)
    lines = [f"against {where}: M {fmt_ratio(change.ratio)} the baseline's {base_m}"]
    if change.fp16_new_sites:
        names = ", ".join(change.fp16_new_sites[:4]) + (", ..." if len(change.fp16_new_sites) > 4 else "")
        lines.append(f"newly over fp16's 65,504: {len(change.fp16_new_sites)} sites ({names})")
    if change.verdicts:
        lines.append("verdicts changed: " + ", ".join(
            f"{v.format} {v.before} -> {v.after}{' (worse)' if v.worse else ''}" for v in change.verdicts))
    else:
        lines.append("no verdict changed")
    if change.differences:
        lines.append("not comparable: " + "; ".join(change.differences))
    return lines


def fmt_m(m: Optional[float]) -> str:
    """M as the tables print it: 27,347; 712,345; 345; 2.41; inf."""
    if m is None:
        return "n/a"
    if math.isnan(m):
        return "NaN"
    if math.isinf(m):
        return "inf"
    return f"{m:,.0f}" if m >= 100 else f"{float(f'{m:.3g}'):g}"


def fp16_headroom(m: Optional[float]) -> Optional[float]:
    """65,504 / M: above 1 fits, below 1 overflows by that factor's inverse."""
    if m is None or math.isnan(m):
        return None
    return math.inf if m == 0 else FP16_MAX / m
