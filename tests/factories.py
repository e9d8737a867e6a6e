"""Hand-built reports for tests that need a realistic `Report` without loading a model."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from maxact_card.measure import kind_maxima, peak_of
from maxact_card.readme_merge import BEGIN_MARKER, END_MARKER
from maxact_card.quant import build_verdicts, dtype_verdict, end_to_end, fp16_safe, headroom, recommendation
from maxact_card.report import (
    SCHEMA_VERSION,
    ChannelMax,
    CorpusRecord,
    Location,
    ModelRecord,
    QuantReport,
    Report,
    SiteQuantError,
    SiteStats,
    Timings,
    TopValue,
)

NUM_LAYERS = 4
REVISION = "3f1c0a9d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"

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


def site_error(site: str, fmt: str, sqnr_db: float, layer: int = 12) -> SiteQuantError:
    """One site's error under one format, only its SQNR set (what the verdicts read)."""
    return SiteQuantError(site=site, layer=layer, format=fmt, sqnr_db=sqnr_db, rel_rmse=0.0, rel_mae=0.0,
                          clip_rate=0.0)


def make_quant(sites: tuple[SiteStats, ...] = ()) -> QuantReport:
    """The check's report as production builds it: per-site errors of two production formats,
    their end-to-end losses, and the verdicts and recommendation production derives from them."""
    errors = []
    for layer in range(NUM_LAYERS):
        for fmt, base in (("int8_absmax", 38.0), ("fp8_e4m3", 31.0)):
            errors.append(
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
    base_nll = 2.4512
    e2e = (end_to_end("int8_absmax", base_nll + 0.1475, base_nll), end_to_end("fp8_e4m3", base_nll + 0.0089, base_nll))
    sites = sites or make_sites()
    peak = peak_of(sites)
    site_max = {s.name: s.absmax for s in sites if s.absmax is not None}
    verdicts = build_verdicts(errors, e2e, peak.abs if peak else None, site_max, 0)
    return QuantReport(
        calib_samples=128,
        eval_samples=64,
        eval_tokens=16384,
        baseline_nll=base_nll,
        baseline_ppl=math.exp(base_nll),
        sites=tuple(errors),
        end_to_end=e2e,
        verdicts=verdicts,
        recommendation=recommendation(verdicts, errors),
    )


def make_report(*, scale: float = 1.0, with_quant: bool = True, **overrides: Any) -> Report:
    """A 4-layer report with every site kind. `scale` multiplies every activation (and so M).

    Keyword overrides replace fields of `Report` (for example `quant=None`, `command=""`).
    """
    sites = make_sites(scale)
    peak = peak_of(sites)
    site_max = {s.name: s.absmax for s in sites if s.absmax is not None}
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
        kinds=kind_maxima(sites),
        fp16_safe=fp16_safe(site_max),
        headroom=headroom(peak.abs, site_max),
        sites=sites,
        timings=Timings(load_s=1.25, probe_s=12.5, quant_s=4.75, total_s=18.5, tokens_per_s=7864.3),
        quant=make_quant(sites) if with_quant else None,
        dtype_verdicts=tuple(dtype_verdict(f, peak.abs, site_max) for f in ("fp16", "bf16")),
    )
    return dataclasses.replace(report, **overrides) if overrides else report


def visible_lines(section: str) -> list[str]:
    """The markdown lines a reader sees without opening a <details> block: everything before the first
    one (after it, only blank lines may lie between the folded blocks)."""
    lines = [line for line in section.splitlines() if line.strip() not in (BEGIN_MARKER, END_MARKER)]
    first = next((i for i, line in enumerate(lines) if line.strip() == "<details>"), len(lines))
    depth = 0
    for line in lines[first:]:
        depth += (line.strip() == "<details>") - (line.strip() == "</details>")
        assert depth in (0, 1) and (depth == 1 or line.strip() in ("", "</details>")), line
    return [line.rstrip() for line in lines[:first]]
