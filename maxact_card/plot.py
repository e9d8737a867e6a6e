"""The per-layer figure of the card: max |a| of every site kind, per layer, on a log axis."""

from __future__ import annotations

import io
import math
from typing import Any

from .report import Report

FIGURE_NAME = "maxact_layers.png"
FP16_MAX = 65504.0
FP8_E4M3_MAX = 448.0

# Site kinds drawn as one line per kind, in the forward order inside a layer.
LINE_KINDS = ("attn", "mlp.gate", "mlp.down_in", "router", "mlp", "residual")
_STYLE = {
    "residual": {"color": "#1f3b73", "linewidth": 2.2, "marker": "o", "markersize": 4},
    "attn": {"color": "#2a9d8f", "linewidth": 1.4, "marker": "s", "markersize": 3},
    "mlp": {"color": "#e76f51", "linewidth": 1.4, "marker": "^", "markersize": 3},
    "mlp.gate": {"color": "#8d99ae", "linewidth": 1.0, "linestyle": "--", "marker": ".", "markersize": 3},
    "mlp.down_in": {"color": "#b5838d", "linewidth": 1.0, "linestyle": "--", "marker": ".", "markersize": 3},
    "router": {"color": "#6a994e", "linewidth": 1.0, "linestyle": ":", "marker": ".", "markersize": 3},
}
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 120


def _positive(v: Any) -> bool:
    return v is not None and math.isfinite(v) and v > 0


def series(report: Report) -> dict[str, list[tuple[int, float]]]:
    """(layer, max |a|) points per line kind, plus 'embed' and 'final_norm' as single points.

    Layers without a finite, positive value are left out (a log axis cannot show them).
    """
    out: dict[str, list[tuple[int, float]]] = {k: [] for k in LINE_KINDS}
    out["embed"], out["final_norm"] = [], []
    layers = [s.layer for s in report.sites if s.layer is not None]
    last = max(layers) + 1 if layers else report.model.num_layers
    for s in report.sites:
        if not _positive(s.absmax):
            continue
        if s.kind == "embed":
            out["embed"].append((-1, float(s.absmax)))
        elif s.kind == "final_norm":
            out["final_norm"].append((last, float(s.absmax)))
        elif s.kind in out and s.layer is not None:
            out[s.kind].append((s.layer, float(s.absmax)))
    for pts in out.values():
        pts.sort()
    return {k: v for k, v in out.items() if v}


def render_png(report: Report) -> bytes:
    """The figure as PNG bytes. The same report gives the same bytes (no timestamp, fixed size)."""
    # The Agg canvas is used directly: no pyplot, no global backend state, nothing shown.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = series(report)
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)

    for kind in LINE_KINDS:
        pts = data.get(kind)
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=kind, **_STYLE[kind])
    if "embed" in data:
        xs, ys = zip(*data["embed"])
        ax.scatter(xs, ys, marker="D", s=36, color="#264653", zorder=3, label="embed")
    if "final_norm" in data:
        xs, ys = zip(*data["final_norm"])
        ax.scatter(xs, ys, marker="*", s=90, color="#9b2226", zorder=3, label="final_norm")

    ax.axhline(FP16_MAX, color="#d62828", linewidth=1.0, linestyle="-.")
    ax.axhline(FP8_E4M3_MAX, color="#f77f00", linewidth=1.0, linestyle="-.")
    trans = ax.get_yaxis_transform()
    ax.text(0.01, FP16_MAX, "fp16 max 65,504", transform=trans, ha="left", va="bottom", fontsize=8, color="#d62828")
    ax.text(0.01, FP8_E4M3_MAX, "FP8 E4M3 max 448", transform=trans, ha="left", va="bottom", fontsize=8, color="#f77f00")

    peak = report.peak
    if peak is not None and _positive(peak.abs):
        x = peak.layer if peak.layer is not None else (-1 if peak.kind == "embed" else _last_x(data, report))
        ax.annotate(
            f"M = {peak.abs:.3g}",
            xy=(x, peak.abs),
            xytext=(6, 6),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold",
        )

    values = [v for pts in data.values() for _, v in pts]
    low = min(values + [FP8_E4M3_MAX]) / 3.0
    high = max(values + [FP16_MAX]) * 4.0
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    ax.set_xlabel("layer (embed at -1, final_norm after the last layer)", fontsize=9)
    ax.set_ylabel("max |activation|", fontsize=9)
    title = f"{report.model.name}: per-layer max |activation|"
    ax.set_title(title if len(title) <= 90 else title[:87] + "...", fontsize=10)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.tick_params(labelsize=8)
    xs_all = [x for pts in data.values() for x, _ in pts]
    if xs_all:
        ax.set_xlim(min(xs_all) - 0.5, max(xs_all) + 0.5)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if data:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def _png(fig: Any) -> bytes:
    """The laid-out figure as PNG bytes, with no timestamp or software tag: same figure, same bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _last_x(data: dict[str, list[tuple[int, float]]], report: Report) -> int:
    pts = data.get("final_norm")
    return pts[0][0] if pts else report.model.num_layers


def residual_series(report: Report) -> list[tuple[int, float]]:
    """(layer, max |a|) of the residual stream after each layer; non-positive or non-finite left out."""
    return sorted((s.layer, float(s.absmax)) for s in report.sites
                  if s.kind == "residual" and s.layer is not None and _positive(s.absmax))


def render_compare_png(reports: list[Report], labels: list[str]) -> bytes:
    """`maxact-card compare --plot`: M per model on a log axis with the fp16 and FP8 E4M3 limits
    (left), and the per-layer residual maxima of every model overlaid (right). Same input, same bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, max(4.5, 0.25 * len(reports) + 3.5)), dpi=DPI)
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ms = [r.peak.abs if r.peak is not None else float("nan") for r in reports]
    shown = [(i, m) for i, m in enumerate(ms) if _positive(m)]
    if shown:
        left.scatter([m for _, m in shown], [i for i, _ in shown], marker="o", s=40, color="#1f3b73", zorder=3)
        for i, m in shown:
            left.annotate(f"{m:,.0f}" if m >= 100 else f"{m:.3g}", xy=(m, i), xytext=(0, 7), textcoords="offset points",
                          ha="center", fontsize=8)
    for i, m in enumerate(ms):
        if math.isinf(m):  # NaN/Inf activations: drawn at the right edge, labelled
            left.annotate("not finite", xy=(1.0, i), xycoords=("axes fraction", "data"), ha="right", va="center",
                          fontsize=8, color="#9b2226")
    left.set_yticks(range(len(reports)))
    left.set_yticklabels([label if len(label) <= 40 else label[:37] + "..." for label in labels], fontsize=8)
    left.set_ylim(len(reports) - 0.5, -0.5)  # the first SOURCE on top
    left.set_xscale("log")
    values = [m for _, m in shown] + [FP8_E4M3_MAX, FP16_MAX]
    left.set_xlim(min(values) / 3.0, max(values) * 4.0)
    for limit, color, text in ((FP16_MAX, "#d62828", "fp16 max 65,504"), (FP8_E4M3_MAX, "#f77f00", "FP8 E4M3 max 448")):
        left.axvline(limit, color=color, linewidth=1.0, linestyle="-.")
        right.axhline(limit, color=color, linewidth=1.0, linestyle="-.")
        left.text(limit, 1.0, text, transform=left.get_xaxis_transform(), rotation=90, ha="right", va="top",
                  fontsize=8, color=color)
    left.set_xlabel("M = max |activation|", fontsize=9)
    left.grid(True, which="major", axis="x", alpha=0.3)
    left.tick_params(labelsize=8)
    left.set_title("M per model", fontsize=10)

    curves = [(label, residual_series(r)) for r, label in zip(reports, labels)]
    ys = [v for _, pts in curves for _, v in pts] + [FP8_E4M3_MAX, FP16_MAX]
    for label, pts in curves:
        if pts:
            xs, vs = zip(*pts)
            right.plot(xs, vs, marker=".", markersize=3, linewidth=1.2, label=label if len(label) <= 40 else label[:37] + "...")
    right.set_yscale("log")
    right.set_ylim(min(ys) / 3.0, max(ys) * 4.0)
    right.set_xlabel("layer", fontsize=9)
    right.set_ylabel("max |a| of the residual stream", fontsize=9)
    right.set_title("Residual stream per layer", fontsize=10)
    right.grid(True, which="major", axis="y", alpha=0.3)
    right.tick_params(labelsize=8)
    from matplotlib.ticker import MaxNLocator

    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any(pts for _, pts in curves):
        right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return _png(fig)
