"""Hand-built reports for tests that need a realistic `Report` without loading a model."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from maxact_card.report import (
    HEADLINE_KINDS,
    SCHEMA_VERSION,
    ChannelMax,
    CorpusRecord,
    EndToEnd,
    Headroom,
    KindMax,
    Location,
    ModelRecord,
    Peak,
    QuantReport,
    Report,
    SiteQuantError,
    SiteStats,
    Timings,
    TopValue,
    Verdict,
)

NUM_LAYERS = 4
REVISION = "3f1c0a9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
FP16_MAX = 65504.0
BF16_MAX = 3.3895313892515355e38
FP8_E4M3_MAX = 448.0

# |a| per layer and site kind, before `scale`: layer 2's residual stream carries the massive activation.
_LAYER_ABSMAX = {
    "attn": (3.5, 9.25, 41.0, 12.5),
    "mlp.gate": (6.0, 11.5, 18.75, 14.0),
    "mlp.down_in": (20.5, 96.0, 1840.0, 310.0),
    "router": (4.25, 5.5, 7.75, 6.0),
    "mlp": (15.0, 120.0, 712345.625, 2200.0),
    "residual": (18.5, 130.0, 712360.5, 712401.25),
}
_EMBED_ABSMAX = 0.875
_FINAL_NORM_ABSMAX = 402.5
_TOKENS = ("<bos>", " the", " of", "\n", " model", "|", "`x`")


def _loc(i: int, sign: int) -> Location:
    return Location(
        sample=i % 7,
        position=(3 * i) % 61,
        token_id=100 + i,
        token=_TOKENS[i % len(_TOKENS)],
        channel=(37 * i + 11) % 1024,
        sign=sign,
    )


def _site(name: str, kind: str, layer: Optional[int], absmax: float, i: int) -> SiteStats:
    loc = _loc(i, -1 if i % 3 == 0 else 1)
    value = absmax * loc.sign
    return SiteStats(
        name=name,
        kind=kind,
        layer=layer,
        count=20480,
        nonfinite=0,
        nonfinite_location=None,
        max=absmax if loc.sign > 0 else absmax * 0.5,
        min=-absmax if loc.sign < 0 else -absmax * 0.5,
        absmax=absmax,
        absmax_location=loc,
        mean=0.0125 * (i + 1),
        std=absmax / 50.0,
        rms=absmax / 49.0,
        quantiles={"p50": absmax / 200.0, "p99": absmax / 20.0, "p99.9": absmax / 4.0},
        top=(TopValue(value=value, location=loc), TopValue(value=value * 0.5, location=_loc(i + 1, 1))),
        massive=1 if absmax > 1000 else 0,
        top_channels=(ChannelMax(channel=loc.channel, absmax=absmax), ChannelMax(channel=7, absmax=absmax / 8.0)),
    )


def make_sites(scale: float = 1.0) -> tuple[SiteStats, ...]:
    sites = [_site("embed", "embed", None, _EMBED_ABSMAX * scale, 0)]
    i = 1
    for layer in range(NUM_LAYERS):
        for kind in ("attn", "mlp.gate", "mlp.down_in", "router", "mlp", "residual"):
            sites.append(_site(f"layers.{layer}.{kind}", kind, layer, _LAYER_ABSMAX[kind][layer] * scale, i))
            i += 1
    sites.append(_site("final_norm", "final_norm", None, _FINAL_NORM_ABSMAX * scale, i))
    return tuple(sites)


def _kinds(sites: tuple[SiteStats, ...]) -> tuple[KindMax, ...]:
    best: dict[str, SiteStats] = {}
    for s in sites:
        if s.kind not in best or (s.absmax or 0.0) > (best[s.kind].absmax or 0.0):
            best[s.kind] = s
    order = ("embed", "attn", "mlp.gate", "mlp.down_in", "router", "mlp", "residual", "final_norm")
    return tuple(KindMax(kind=k, absmax=best[k].absmax or 0.0, site=best[k].name, layer=best[k].layer) for k in order if k in best)


def _peak(sites: tuple[SiteStats, ...]) -> Peak:
    top = max((s for s in sites if s.kind in HEADLINE_KINDS), key=lambda s: s.absmax or 0.0)
    loc = top.absmax_location
    assert loc is not None and top.absmax is not None
    return Peak(
        value=top.absmax * loc.sign,
        abs=top.absmax,
        site=top.name,
        kind=top.kind,
        layer=top.layer,
        sample=loc.sample,
        position=loc.position,
        token=loc.token,
        token_id=loc.token_id,
        channel=loc.channel,
    )


def _headroom(sites: tuple[SiteStats, ...], m: float) -> tuple[Headroom, ...]:
    out = []
    for fmt, top in (("fp16", FP16_MAX), ("bf16", BF16_MAX), ("fp8_e4m3", FP8_E4M3_MAX)):
        over = tuple(s.name for s in sites if s.kind in HEADLINE_KINDS and (s.absmax or 0.0) > top)
        out.append(Headroom(format=fmt, max_finite=top, ratio=m / top, overflow_sites=over))
    return tuple(out)


def make_quant() -> QuantReport:
    sites = []
    for layer in range(NUM_LAYERS):
        for fmt, base in (("int8", 38.0), ("fp8_e4m3", 31.0)):
            sites.append(
                SiteQuantError(
                    site=f"layers.{layer}.mlp.down_in",
                    layer=layer,
                    format=fmt,
                    sqnr_db=base - 9.5 * (layer == 2),
                    rel_rmse=0.01 * (layer + 1),
                    rel_mae=0.008 * (layer + 1),
                    clip_rate=0.0001 * layer,
                )
            )
    return QuantReport(
        calib_samples=128,
        eval_samples=64,
        eval_tokens=16384,
        baseline_nll=2.4512,
        baseline_ppl=11.6032,
        sites=tuple(sites),
        end_to_end=(
            EndToEnd(format="int8", nll=2.5987, ppl=13.4471, delta_nll=0.1475, ppl_ratio=1.1589),
            EndToEnd(format="fp8_e4m3", nll=2.4601, ppl=11.7069, delta_nll=0.0089, ppl_ratio=1.0089),
            EndToEnd(format="fp16", nll=2.4512, ppl=11.6032, delta_nll=0.0, ppl_ratio=1.0),
        ),
        verdicts=(
            Verdict(format="int8", verdict="risky", reason="per-tensor INT-8 clips layer 2's massive activation (+0.147 nats)"),
            Verdict(format="fp8_e4m3", verdict="ok", reason="+0.009 nats with per-tensor scales"),
            Verdict(format="fp16", verdict="unsafe", reason="M = 7.12e+05 overflows fp16 (max 65,504)"),
        ),
        recommendation="Serve in bf16 or FP8 (E4M3) with per-tensor scales; avoid fp16 and per-tensor INT-8.",
    )


def make_report(*, scale: float = 1.0, with_quant: bool = True, **overrides: Any) -> Report:
    """A 4-layer report with every site kind. `scale` multiplies every activation (and so M).

    Keyword overrides replace fields of `Report` (for example `quant=None`, `command=""`).
    """
    sites = make_sites(scale)
    peak = _peak(sites)
    report = Report(
        schema_version=SCHEMA_VERSION,
        tool_version="0.1.0",
        created="2026-05-20T12:34:56+00:00",
        command=f"maxact-card audit acme/tiny-moe-4l --revision {REVISION} --samples 256 --dtype bfloat16",
        model=ModelRecord(
            id="acme/tiny-moe-4l",
            source="hub",
            revision=REVISION,
            architecture="MixtralForCausalLM",
            model_type="mixtral",
            num_layers=NUM_LAYERS,
            dtype="bfloat16",
            device="cpu",
            gguf_file=None,
        ),
        corpus=CorpusRecord(
            name="builtin",
            fingerprint="sha256:9b2e61c04d7f",
            samples=256,
            tokens=98304,
            bos_added=True,
            max_seq_len=512,
            seed=0,
            domains={"prose": 96, "code": 64, "math": 48, "multilingual": 48},
        ),
        peak=peak,
        kinds=_kinds(sites),
        fp16_safe=peak.abs <= FP16_MAX,
        headroom=_headroom(sites, peak.abs),
        sites=sites,
        timings=Timings(load_s=1.25, probe_s=12.5, quant_s=4.75, total_s=18.5, tokens_per_s=7864.3),
        quant=make_quant() if with_quant else None,
    )
    return dataclasses.replace(report, **overrides) if overrides else report
