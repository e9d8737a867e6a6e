"""The terminal summary of a report: M and where it is, per-site-kind maxima, the top layers."""

from __future__ import annotations

from .report import Report


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if 0.1 <= abs(v) < 1e5 else f"{v:.3e}"


def summary(report: Report) -> str:
    m, c = report.model, report.corpus
    lines = [f"maxact-card {report.tool_version}  {m.id}" + (f" @ {m.revision[:12]}" if m.revision else ""),
             f"  {m.architecture} ({m.model_type}), {m.num_layers} layers, {m.dtype} on {m.device}"
             + (f", {report.processes} processes (data parallel)" if report.processes > 1 else ""),
             f"  corpus {c.name}: {c.samples} samples, {c.tokens:,} tokens, {c.fingerprint[:19]}"]
    p = report.peak
    if p is None:
        lines.append("M: no activations were measured")
    elif p.nonfinite:
        where = f"layer {p.layer}, " if p.layer is not None else ""
        lines.append(f"M = NON-FINITE: {p.nonfinite:,} NaN/Inf activations, the first at {p.site}: {where}"
                     f"sample {p.sample}, position {p.position}, token {p.token!r}, channel {p.channel}")
        lines.append(f"largest finite |a|: {fmt(p.finite_abs) if p.finite_abs is not None else 'none'}")
        lines.append("fp16 safe: NO (non-finite activations)")
    else:
        where = f"layer {p.layer}, " if p.layer is not None else ""
        lines.append(f"M = {fmt(p.abs)}  (signed {p.value:.6g}) at {p.site}: {where}sample {p.sample}, "
                     f"position {p.position}, token {p.token!r}, channel {p.channel}")
        lines.append(f"fp16 safe: {'yes' if report.fp16_safe else 'NO (some site exceeds 65504)'}")
    lines.append("")
    lines.append(f"  {'site kind':<14}{'max|a|':>14}  where")
    for k in report.kinds:
        lines.append(f"  {k.kind:<14}{fmt(k.absmax):>14}  {k.site}")
    top = report.top_layers(5)
    if top:
        lines.append("")
        lines.append("  top layers: " + ", ".join(f"{layer} ({fmt(v)}, {name.rsplit('.', 1)[-1]})" for layer, v, name in top))
    bad = [s for s in report.sites if s.nonfinite]
    if bad:
        lines.append(f"  non-finite activations at {len(bad)} sites, first at {bad[0].name} ({bad[0].nonfinite} values)")
    if report.quant is not None:
        q = report.quant
        lines.append("")
        lines.append(f"  quant check: baseline NLL {q.baseline_nll:.4f} on {q.eval_samples} held-out samples")
        for e in q.end_to_end:
            lines.append(f"    {e.format:<16} dNLL {e.delta_nll:+.4f}  ppl x{e.ppl_ratio:.4f}")
        lines.append("    verdicts: " + ", ".join(f"{v.format}={v.verdict}" for v in q.verdicts))
        lines.append(f"    {q.recommendation}")
    t = report.timings
    lines.append("")
    passes = f"probe {t.probe_s:.1f}s" if report.quant is None else \
        f"calibration {t.probe_s:.1f}s, evaluation {t.quant_s:.1f}s"
    lines.append(f"  time: load {t.load_s:.1f}s, {passes} ({c.tokens:,} tokens at {t.tokens_per_s:,.0f} tok/s), "
                 f"total {t.total_s:.1f}s")
    return "\n".join(lines)
