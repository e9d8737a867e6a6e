"""The terminal summary of a report: M and where it is, per-site-kind maxima, the top layers."""

from __future__ import annotations

import math

from .report import Report


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if 0.1 <= abs(v) < 1e5 else f"{v:.3e}"


def fmt_num(x: float | None) -> str:
    """One number format for the card: 712,401; 1,234; 448; 12.3; 0.875; 0.000123; 3.39 × 10^38.
    Thousands separators, three significant digits below 1,000, never an exponent below 10^9."""
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1e9:
        exp = math.floor(math.log10(a))
        return f"{x / 10 ** exp:.3g} × 10^{exp}"
    if a >= 1000:
        return f"{x:,.0f}"
    if a < 1e-6:
        return "≈ 0"
    r = float(f"{x:.3g}")  # three significant digits, then written out without an exponent
    if abs(r) >= 1000:
        return f"{r:,.0f}"
    text = f"{r:.{max(0, 2 - math.floor(math.log10(abs(r))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text and abs(r) < 1 else text


FP16_MAX = 65504.0


def fp16_answer(report: Report) -> tuple[str, str]:
    """(verdict, line): the fp16 answer every output gives, from the report's fp16 verdict, e.g.
    ("degraded", "fp16: degraded, 2.4x headroom (< 8x)")."""
    p = report.peak
    v = report.verdict("fp16")
    level = v.verdict if v is not None else ("ok" if report.fp16_safe else "unsafe")
    if p is None:
        return level, f"fp16: {level} (no activations were measured)"
    if p.nonfinite:
        return "unsafe", "fp16: unsafe (the model computes NaN/Inf activations)"
    if level == "unsafe":
        return level, f"fp16: unsafe, M is {p.abs / FP16_MAX:.3g}x the fp16 maximum (65,504)"
    room = f"{FP16_MAX / p.abs:.3g}x headroom" if p.abs else "all activations are zero"
    if level == "degraded":
        return level, f"fp16: degraded, {room} (< 8x)"
    return level, f"fp16: {level}, {room}"


NVFP4_SPAN_LIMIT = 28672.0  # 448 / 2**-6: quant.blocks.NVFP4_SPAN_LIMIT, without importing torch here


def nvfp4_line(report: Report) -> str | None:
    """One line on NVFP4 with a static per-tensor scale: the linear inputs whose 16-value block
    amaxes span more than one FP32 scale with E4M3 block scales holds."""
    spans = report.quant.nvfp4_spans if report.quant else ()
    if not spans:
        return None
    widest = max(spans, key=lambda b: b.span)
    beyond = [b for b in spans if b.beyond]
    if beyond:
        beyond.sort(key=lambda b: -b.span)
        names = ", ".join(f"{b.site} ({fmt(b.span)}x)" for b in beyond[:3]) + (", ..." if len(beyond) > 3 else "")
        return (f"NVFP4 static scale: {len(beyond)} of {len(spans)} linear inputs span more block amax than one "
                f"FP32 scale holds (limit {NVFP4_SPAN_LIMIT:,.0f}x): {names}; their smallest blocks flush to "
                "zero: use a dynamic global scale there (the report lists every site)")
    return (f"NVFP4 static scale: every linear input's block amax spans at most {fmt(widest.span)}x "
            f"(at {widest.site}; limit {NVFP4_SPAN_LIMIT:,.0f}x)")


def interval_text(lo: float, hi: float) -> str:
    return f"95% CI {fmt(lo)} to {fmt(hi)}"


def experts_line(report: Report) -> str:
    """One line on the MoE layers' expert coverage ("" for a dense model)."""
    layers = report.experts
    if not layers:
        return ""
    sizes = sorted({x.experts for x in layers})
    size = f"{sizes[0]}" if len(sizes) == 1 else f"up to {sizes[-1]}"
    dead = [x for x in layers if x.dead]
    if not dead:
        cover = "every expert got tokens in every layer"
    else:
        first = dead[0]
        shown = ", ".join(str(e) for e in first.dead[:5]) + (", ..." if len(first.dead) > 5 else "")
        cover = (f"{sum(len(x.dead) for x in dead)} experts got no token, in {len(dead)} of the layers "
                 f"(layer {first.layer}: {shown})")
    line = f"{len(layers)} MoE layers of {size} experts: {cover}; load imbalance up to {fmt_num(max(x.imbalance for x in layers))}x"
    down = [x for x in layers if x.down_in_absmax is not None]
    if down:
        top = max(down, key=lambda x: x.down_in_absmax)
        line += f"; largest per-expert down input {fmt_num(top.down_in_absmax)} (layer {top.layer}, expert {top.down_in_expert})"
    unc = sum(len(x.uncalibrated) for x in layers)
    if unc:
        line += f"; {unc} experts had no calibration token (quantized with their layer's scale)"
    return line


def where_channel(loc) -> str:
    """'channel 17', or 'stream 2, channel 17' in a multi-stream residual."""
    return (f"stream {loc.stream}, " if loc.stream is not None else "") + f"channel {loc.channel}"


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
                     f"sample {p.sample}, position {p.position}, token {p.token!r}, {where_channel(p)}")
        lines.append(f"largest finite |a|: {fmt(p.finite_abs) if p.finite_abs is not None else 'none'}")
        lines.append(fp16_answer(report)[1])
    else:
        where = f"layer {p.layer}, " if p.layer is not None else ""
        lines.append(f"M = {fmt(p.abs)}  (signed {p.value:.6g}) at {p.site}: {where}sample {p.sample}, "
                     f"position {p.position}, token {p.token!r}, {where_channel(p)}")
        if report.peak_interval:
            lines.append(f"  {interval_text(*report.peak_interval)} over the samples (bootstrap)")
        lines.append(fp16_answer(report)[1])
    if report.baseline is not None:
        from .comparison import change_lines

        first, *rest = change_lines(report.baseline)
        lines += [f"baseline: {first}", *(f"  {line}" for line in rest)]
    lines.append("")
    width = max([len("site kind")] + [len(k.kind) for k in report.kinds]) + 2
    lines.append(f"  {'site kind':<{width}}{'max|a|':>10}  where")
    for k in report.kinds:
        lines.append(f"  {k.kind:<{width}}{fmt(k.absmax):>10}  {k.site}")
    if experts_line(report):
        lines.append(f"  experts: {experts_line(report)}")
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
        cis = {v.format: v.interval for v in q.verdicts if v.interval is not None}
        for e in q.end_to_end:
            ci = f"  (95% CI {cis[e.format][0]:+.4f} to {cis[e.format][1]:+.4f})" if e.format in cis else ""
            lines.append(f"    {e.format:<20} dNLL {e.delta_nll:+.4f}{ci}  ppl x{e.ppl_ratio:.4f}")
        lines.append("    verdicts: " + ", ".join(f"{v.format}={v.verdict}" for v in q.verdicts))
        if nvfp4_line(report):
            lines.append(f"    {nvfp4_line(report)}")
        lines.append(f"    {q.recommendation}")
    t = report.timings
    lines.append("")
    passes = f"probe {t.probe_s:.1f}s" if report.quant is None else \
        f"calibration {t.probe_s:.1f}s, evaluation {t.quant_s:.1f}s"
    lines.append(f"  time: load {t.load_s:.1f}s, {passes} ({c.tokens:,} tokens at {t.tokens_per_s:,.0f} tok/s), "
                 f"total {t.total_s:.1f}s")
    return "\n".join(lines)
