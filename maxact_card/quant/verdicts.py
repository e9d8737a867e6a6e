"""Headroom of the unscaled dtypes, and the verdicts and recommendation the report carries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..report import EndToEnd, Headroom, SiteQuantError, Verdict
from .formats import FORMATS, FP16_MAX, advice as _advice, label as _label

# ---------------------------------------------------------------------------------------------
# Headroom
# ---------------------------------------------------------------------------------------------
def _exceeds(v: float, limit: float) -> bool:
    # NaN/Inf maxima count as exceeding: the format cannot hold them.
    return not (abs(v) <= limit)


def headroom(peak_abs: float, site_absmax: Mapping[str, float]) -> tuple[Headroom, ...]:
    """M against each format of ``FORMATS``: ``ratio = M / max_finite``; ``overflow_sites`` are the
    sites (in the mapping's order) whose max |a| exceeds the format max, or is non-finite.

    For FP8 the comparison is with the *unscaled* format max: an overflow site needs a scale
    (every FP8 deployment uses one; this says how far the raw activations are from fitting).
    """
    return tuple(
        Headroom(
            format=fmt,
            max_finite=limit,
            ratio=float(peak_abs) / limit,
            overflow_sites=tuple(name for name, v in site_absmax.items() if _exceeds(v, limit)),
        )
        for fmt, limit in FORMATS.items()
    )


def fp16_safe(site_absmax: Mapping[str, float]) -> bool:
    """True when no site's max |a| exceeds 65504 (and all are finite)."""
    return not any(_exceeds(v, FP16_MAX) for v in site_absmax.values())


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------
# Severity order of a settled verdict (``_worse`` ranks by it).
VERDICT_LEVELS = ("ok", "degraded", "unsafe")
# A delta-NLL interval that straddles a threshold: the data cannot tell which level holds.
UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Thresholds:
    """Every threshold behind a verdict, in one place.

    Per-site SQNR (signal-to-quantization-noise ratio of one site's activations):
      * ok >= 30 dB: noise power <= 0.1% of the signal (relative RMS error <= 3.2%). Well-behaved
        activations under per-tensor INT8 reach ~35-40 dB (a Gaussian clipped at 4.5 sigma gives
        10 log10(12 * 127^2 / 4.5^2) = 39.8 dB), so 30 dB leaves ~1.5 bits of slack (6 dB/bit).
      * degraded >= 20 dB: noise power <= 1% (relative RMS error <= 10%), ~5 effective bits.
      * unsafe below 20 dB: the format destroys most of the site's resolution, typically because a
        few massive activations set the scale and every ordinary value rounds to zero.
    End-to-end next-token loss with every linear input fake-quantized (delta NLL in nats):
      * ok <= 0.01 (perplexity +1%), degraded <= 0.1 (perplexity +10.5%), unsafe above.
    The verdict of a quantized format is the worse of its two verdicts (either may be missing).
    With a bootstrap interval (lo, hi) of the delta NLL over evaluation samples, the NLL verdict is
    uncertain when lo and hi fall on different sides of a delta-NLL threshold; the format then
    reads ``uncertain``, unless its SQNR verdict alone is already as bad as the NLL verdict at hi
    (that level holds whatever the NLL is).
    FP16 (no scaling): unsafe if any site's max |a| exceeds 65504 (it becomes Inf) or any
    activation is non-finite; degraded if the largest max exceeds 65504 / 8 = 8188 (less than
    three binades of headroom: longer contexts, other inputs or fp16 intermediate sums in kernels
    can overflow); otherwise ok. BF16 shares FP32's exponent range: ok unless an activation is
    non-finite or exceeds 3.39e38.
    The fp16/bf16 verdicts are never uncertain: they rest on observed maxima, and a bootstrap of a
    maximum over samples never exceeds the observed maximum, so an observed overflow is certain
    (and an observed non-finite activation too); what a bootstrap cannot bound is a larger maximum
    on inputs never seen, which the fp16 headroom margin is for.
    """

    sqnr_ok_db: float = 30.0
    sqnr_degraded_db: float = 20.0
    delta_nll_ok: float = 0.01
    delta_nll_degraded: float = 0.1
    fp16_headroom: float = 8.0

    def __post_init__(self) -> None:
        if not self.sqnr_ok_db >= self.sqnr_degraded_db:
            raise ValueError("sqnr_ok_db must be >= sqnr_degraded_db")
        if not 0 <= self.delta_nll_ok <= self.delta_nll_degraded:
            raise ValueError("need 0 <= delta_nll_ok <= delta_nll_degraded")
        if not self.fp16_headroom >= 1:
            raise ValueError("fp16_headroom must be >= 1")


DEFAULT_THRESHOLDS = Thresholds()


def _worse(a: str, b: str) -> str:
    return a if VERDICT_LEVELS.index(a) >= VERDICT_LEVELS.index(b) else b


def _sqnr_level(sqnr: float, th: Thresholds) -> str:
    # NaN compares False everywhere and lands on unsafe.
    if sqnr >= th.sqnr_ok_db:
        return "ok"
    if sqnr >= th.sqnr_degraded_db:
        return "degraded"
    return "unsafe"


def _nll_level(delta: float, th: Thresholds) -> str:
    if delta <= th.delta_nll_ok:
        return "ok"
    if delta <= th.delta_nll_degraded:
        return "degraded"
    return "unsafe"


def _fmt_db(v: float) -> str:
    return f"{v:.1f} dB" if math.isfinite(v) else ("inf dB" if v > 0 else f"{v} dB")


def _nll_thresholds_crossed(lo: float, hi: float, th: Thresholds) -> list[float]:
    """The delta-NLL thresholds ``t`` with ``lo <= t < hi`` (a value equal to a threshold is on its
    lower, better side, as in ``_nll_level``)."""
    return [t for t in dict.fromkeys((th.delta_nll_ok, th.delta_nll_degraded)) if lo <= t < hi]


def _fmt_nats(v: float) -> str:
    return f"{v:+.3f}" if math.isfinite(v) else f"{v:+}"


def verdict_for(
    format: str,
    worst_site_sqnr: Optional[float],
    delta_nll: Optional[float],
    *,
    worst_site: Optional[str] = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    delta_nll_interval: Optional[tuple[float, float]] = None,
    ci_level: float = 0.95,
) -> Verdict:
    """Verdict of a fake-quantized format: the worse of the per-site SQNR verdict (at its worst
    site) and the end-to-end delta-NLL verdict. Either input may be ``None`` (not measured), not both.

    ``delta_nll_interval`` is a bootstrap interval (lo, hi) of ``delta_nll`` over the evaluation
    samples (``ci_level`` is its coverage, for the reason text). When the plausible values, the
    interval together with the point estimate, fall on different sides of a delta-NLL threshold, the
    verdict is ``"uncertain"`` unless the SQNR verdict alone is as bad as or worse than the NLL
    verdict at the upper end (it then stands whatever the NLL is). An interval with a NaN bound
    (the per-sample losses were not finite) carries no information and is ignored. The interval is
    kept on the returned ``Verdict``."""
    th = thresholds
    if worst_site_sqnr is None and delta_nll is None:
        raise ValueError(f"verdict_for({format!r}): need a site SQNR or an end-to-end delta NLL")
    if delta_nll_interval is not None and delta_nll is None:
        raise ValueError(f"verdict_for({format!r}): a delta-NLL interval needs the delta NLL itself")
    interval: Optional[tuple[float, float]] = None
    if delta_nll_interval is not None:
        lo, hi = (float(v) for v in delta_nll_interval)
        if not (math.isnan(lo) or math.isnan(hi)):
            if lo > hi:
                raise ValueError(f"verdict_for({format!r}): interval ({lo}, {hi}) has lo > hi")
            interval = (lo, hi)
    level = "ok"
    sqnr_level: Optional[str] = None
    parts = []
    if worst_site_sqnr is not None:
        s = float(worst_site_sqnr)
        lv = sqnr_level = _sqnr_level(s, th)
        level = _worse(level, lv)
        where = f" at {worst_site}" if worst_site else ""
        bound = {"ok": f">= {th.sqnr_ok_db:g}", "degraded": f"< {th.sqnr_ok_db:g}"}.get(
            lv, f"< {th.sqnr_degraded_db:g}"
        )
        parts.append(f"worst site SQNR {_fmt_db(s)}{where} ({bound} dB)")
    if delta_nll is not None:
        d = float(delta_nll)
        lv = _nll_level(d, th)
        bound = {"ok": f"<= {th.delta_nll_ok:g}", "degraded": f"> {th.delta_nll_ok:g}"}.get(
            lv, f"> {th.delta_nll_degraded:g}"
        )
        crossed: list[float] = []
        if interval is not None:
            lo, hi = interval
            # The point estimate normally lies inside; if it does not, it still counts as plausible.
            span_lo, span_hi = (min(lo, d), max(hi, d)) if not math.isnan(d) else (lo, hi)
            crossed = _nll_thresholds_crossed(span_lo, span_hi, th)
            ci = f"{ci_level * 100:g}% CI {_fmt_nats(lo)} to {_fmt_nats(hi)}"
            if crossed:
                bound = f"{ci}, crosses {' and '.join(f'{t:g}' for t in crossed)}"
            else:
                bound = f"{ci}, {bound}"
        parts.append(f"end-to-end delta NLL {_fmt_nats(d)} nats ({bound})")
        if crossed:
            worst_nll = _nll_level(span_hi, th)
            if sqnr_level is not None and _worse(sqnr_level, worst_nll) == sqnr_level:
                level = sqnr_level  # holds whatever the NLL is
            else:
                level = UNCERTAIN
        else:
            level = _worse(level, lv)
    return Verdict(format=format, verdict=level, reason="; ".join(parts), interval=interval)


def dtype_verdict(
    format: str,
    peak_abs: float,
    site_absmax: Mapping[str, float],
    nonfinite: int = 0,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Verdict:
    """Verdict for running the model unscaled in ``'fp16'`` or ``'bf16'`` (see ``Thresholds``).

    ``peak_abs`` is M, ``site_absmax`` every site's max |a| (all kinds), ``nonfinite`` the number
    of non-finite activations seen."""
    if format not in ("fp16", "bf16"):
        raise ValueError(f"dtype_verdict: expected 'fp16' or 'bf16', got {format!r}")
    limit = FORMATS[format]
    if nonfinite:
        return Verdict(format, "unsafe", f"{nonfinite} non-finite activation(s) observed")
    values = dict(site_absmax) if site_absmax else {"M": float(peak_abs)}
    over = [(n, v) for n, v in values.items() if _exceeds(v, limit)]
    if over:
        name, v = max(over, key=lambda nv: math.inf if math.isnan(nv[1]) else abs(nv[1]))
        return Verdict(
            format, "unsafe", f"{len(over)} site(s) exceed {format} max {limit:,g}; largest {abs(v):,.6g} at {name}"
        )
    top_name, top = max(values.items(), key=lambda nv: abs(nv[1]))
    if abs(float(peak_abs)) > abs(top):
        top_name, top = "M", float(peak_abs)
    top = abs(top)
    if format == "fp16" and top > limit / thresholds.fp16_headroom:
        return Verdict(
            format,
            "degraded",
            f"max |a| {top:,.6g} at {top_name} is within {thresholds.fp16_headroom:g}x of fp16 max {limit:,g} "
            f"(headroom {limit / top:.3g}x)",
        )
    if not top:
        return Verdict(format, "ok", "all activations are zero")
    if format == "bf16":  # a ratio of 1e+34 says nothing a reader can use
        return Verdict(format, "ok", f"max |a| {top:,.6g} at {top_name}; bf16 shares fp32's exponent range")
    return Verdict(format, "ok", f"max |a| {top:,.6g} at {top_name}; headroom {limit / top:.3g}x")


def worst_site(sites: Sequence[SiteQuantError], format: str) -> Optional[SiteQuantError]:
    """The site of ``format`` with the lowest SQNR (NaN counts as lowest); None if absent."""
    cand = [s for s in sites if s.format == format]
    if not cand:
        return None
    return min(cand, key=lambda s: -math.inf if math.isnan(s.sqnr_db) else s.sqnr_db)


def build_verdicts(
    sites: Sequence[SiteQuantError],
    end_to_end: Sequence[EndToEnd],
    peak_abs: Optional[float] = None,
    site_absmax: Optional[Mapping[str, float]] = None,
    nonfinite: int = 0,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    intervals: Optional[Mapping[str, tuple[float, float]]] = None,
    ci_level: float = 0.95,
) -> tuple[Verdict, ...]:
    """Every verdict: fp16 and bf16 (when ``site_absmax`` is given), then each quantized format in
    the order it first appears in ``sites`` / ``end_to_end``.

    ``intervals`` maps a format to the bootstrap interval of its end-to-end delta NLL (see
    ``verdict_for``; ``maxact_card.quant.uncertainty.delta_nll_intervals`` computes them); formats
    without an end-to-end measurement ignore theirs. Non-finite activations make every format
    unsafe whatever the intervals say."""
    out: list[Verdict] = []
    if site_absmax is not None:
        m = float(peak_abs) if peak_abs is not None else max((abs(v) for v in site_absmax.values()), default=0.0)
        for fmt in ("fp16", "bf16"):
            out.append(dtype_verdict(fmt, m, site_absmax, nonfinite, thresholds=thresholds))
    formats = list(dict.fromkeys([s.format for s in sites] + [e.format for e in end_to_end]))
    e2e = {e.format: e for e in end_to_end}
    if nonfinite:  # no format represents a NaN/Inf the model computes: none can be called safe
        return tuple(out) + tuple(Verdict(fmt, "unsafe", f"{nonfinite} non-finite activation(s) observed")
                                  for fmt in formats)
    for fmt in formats:
        w = worst_site(sites, fmt)
        e = e2e.get(fmt)
        out.append(
            verdict_for(
                fmt,
                w.sqnr_db if w else None,
                e.delta_nll if e else None,
                worst_site=w.site if w else None,
                thresholds=thresholds,
                delta_nll_interval=intervals.get(fmt) if intervals is not None and e is not None else None,
                ci_level=ci_level,
            )
        )
    return tuple(out)


def recommendation(
    verdicts: Sequence[Verdict],
    sites: Sequence[SiteQuantError] = (),
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> str:
    """One line for the deployer: the most important problem and what to do about it.

    Priority: fp16 overflow first, then the first quantized format (report order, so per-tensor
    static INT8 first) that is degraded or unsafe, with its worst site and the best format that is
    ok at that site; then the other formats that are degraded or unsafe, those that are uncertain
    (their delta-NLL interval straddles a threshold: more samples would settle them), and those
    that are ok."""
    if not verdicts:
        return "no formats were checked"
    unsure = [v.format for v in verdicts if v.verdict == UNCERTAIN]
    bad = [v for v in verdicts if v.verdict not in ("ok", UNCERTAIN)]
    good = [v.format for v in verdicts if v.verdict == "ok"]
    unsure_part = f"uncertain: {', '.join(unsure)} (run with more --samples to settle)"
    if not bad and not unsure:
        return f"every checked format is ok ({', '.join(good)}): deploy in any of them as measured"
    if not bad:
        head = "no checked format is known to fail"
        return "; ".join([head, unsure_part] + ([f"ok: {', '.join(good)}"] if good else []))
    parts: list[str] = []
    dtype_bad = [v for v in bad if v.format in ("fp16", "bf16")]
    quant_bad = [v for v in bad if v.format not in ("fp16", "bf16")]
    for v in dtype_bad:
        if v.verdict == "unsafe":
            alt = "serve in bf16 or fp32" if v.format == "fp16" else "serve in fp32"
            parts.append(f"{v.format} is unsafe ({v.reason}); {alt}")
        else:
            parts.append(f"{v.format} has little headroom ({v.reason}); prefer bf16")
    if quant_bad:
        v = quant_bad[0]
        w = worst_site(sites, v.format)
        label = _label(v.format)
        if w is not None and not (w.sqnr_db >= thresholds.sqnr_ok_db):
            short = thresholds.sqnr_ok_db - w.sqnr_db
            head = (
                f"{label} loses {short:.1f} dB against the {thresholds.sqnr_ok_db:g} dB target at {w.site} "
                f"({_fmt_db(w.sqnr_db)} SQNR)"
            )
            alts = [
                s for s in sites
                if s.site == w.site and s.format != v.format and s.sqnr_db >= thresholds.sqnr_ok_db
                and s.format in good
            ]
            if alts:
                best = max(alts, key=lambda s: s.sqnr_db)
                head += f"; {_advice(best.format)} ({_fmt_db(best.sqnr_db)} there) or keep that layer in bf16"
            else:
                head += "; keep that layer in bf16"
        else:
            head = f"{label} is {v.verdict} ({v.reason})"
            if good:
                head += f"; prefer {', '.join(f for f in good if f not in ('fp16', 'bf16')) or 'bf16'}"
        parts.append(head)
        others = [u.format for u in quant_bad[1:]]
        if others:
            parts.append(f"also not ok: {', '.join(others)}")
    if unsure:
        parts.append(unsure_part)
    if good:
        parts.append(f"ok: {', '.join(good)}")
    return "; ".join(parts)
