"""The INT8/FP8 check inside fused experts: what an MoE W8A8 / FP8 kernel quantizes.

Each expert's gate/up input (`layers.{i}.mlp.experts.in`: the tokens routed to it) and its own
down-projection input (`layers.{i}.mlp.experts.down_in`) are quantized, through the experts seam.
Static scales are calibrated per expert: an expert's max |a| over the calibration tokens routed
to it. An expert that got no calibration token is uncalibrated: it takes the layer's scale (the
max over all its experts), never a zero or NaN one. Clip percentiles read the histogram of all of
a layer's experts together, capped at each expert's max |a|. Dynamic formats need no calibration.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from ..quant import Quantizer
from ..quant.formats import REGISTRY, Format
from ..sites import ModelSites
from .context import BatchContext
from .expert_stats import ExpertRange
from .experts import Observing, tapped

WHERE = ("in", "down_in")  # the gate/up input and the down input of each expert


@dataclass(frozen=True)
class ExpertInputs:
    """The two quantized inputs of one MoE layer's fused experts."""

    layer: int
    module: nn.Module

    @property
    def names(self) -> tuple[str, str]:
        return f"layers.{self.layer}.mlp.experts.in", f"layers.{self.layer}.mlp.experts.down_in"

    @property
    def experts(self) -> int:
        return int(self.module.num_experts)


def expert_inputs(model_sites: ModelSites) -> list[ExpertInputs]:
    return [ExpertInputs(layer, next(s.module for s in model_sites.expert_sites if s.layer == layer))
            for layer, _ in model_sites.routers]


def _row_shape(fmt: Format) -> tuple[int, ...]:
    """How a per-row scale broadcasts: over the channels, or over a row's blocks and their values."""
    return (-1, 1, 1) if "block" in fmt.granularity else (-1, 1)


@dataclass(frozen=True)
class ExpertQuantizer:
    """One format at one expert input: a quantizer for rows of any experts (`at(expert_g)`)."""

    fmt: Format
    absmax: torch.Tensor  # [E] float32: each expert's scale source (the layer's where uncalibrated)
    clip: Optional[torch.Tensor]  # [E] the percentile value (capped at each expert's absmax), or None
    dynamic: Optional[Quantizer] = None  # a format without calibrated scales: one quantizer for all rows

    @property
    def name(self) -> str:
        return self.fmt.name

    def at(self, expert_g: torch.Tensor) -> Quantizer:
        if self.dynamic is not None:
            return self.dynamic
        shape = _row_shape(self.fmt)
        a = self.absmax[expert_g].view(shape)
        c = self.clip[expert_g].view(shape) if self.clip is not None else None
        return self.fmt.make(a, c, device=a.device)


def expert_quantizers(r: ExpertRange, percentiles: Sequence[float]) -> tuple[ExpertQuantizer, ...]:
    """Every registered format's quantizer for one expert input, in registry order (as
    `quant.site_quantizers` makes them for a site)."""
    absmax = r.scales_absmax()
    values = r.quantiles({f"p{p:g}": p / 100 for p in percentiles})
    out = []
    for f in REGISTRY:
        if f.family:
            out.extend(ExpertQuantizer(f.at(p), absmax, torch.clamp(absmax, max=values.get(f"p{p:g}", 0.0)))
                       for p in percentiles)
        elif f.static:
            out.append(ExpertQuantizer(f, absmax, None))
        else:
            out.append(ExpertQuantizer(f, absmax, None, f.make(absmax.amax(), device=absmax.device)))
    return tuple(out)


class _RangeTap(Observing):
    def __init__(self, ranges: tuple[ExpertRange, ExpertRange], ctx: BatchContext) -> None:
        self.ranges, self.ctx = ranges, ctx

    def gate_up_in(self, x, expert_g, token_g):
        self.ranges[0].update_rows(x, expert_g, token_g, self.ctx)

    def down_in(self, x, expert_g, token_g):
        self.ranges[1].update_rows(x, expert_g, token_g, self.ctx)


class _ErrorTap(Observing):
    """Each format's error at both inputs of one layer's experts (the unquantized forward)."""

    def __init__(self, names: tuple[str, str], quantizers: dict, errors: dict, ctx: BatchContext) -> None:
        self.names, self.quantizers, self.errors, self.ctx = names, quantizers, errors, ctx

    def _measure(self, name: str, x, expert_g, token_g) -> None:
        valid = self.ctx.on(x.device).rows().valid[token_g]
        for eq in self.quantizers.get(name, ()):
            q = eq.at(expert_g)
            self.errors[(name, eq.name)].update(x, None, q(x), q.clip_threshold, None, True, valid=valid)

    def gate_up_in(self, x, expert_g, token_g):
        self._measure(self.names[0], x, expert_g, token_g)

    def down_in(self, x, expert_g, token_g):
        self._measure(self.names[1], x, expert_g, token_g)


class _QuantizeTap(Observing):
    """Feeds q(rows) to the experts' projections: each expert with its own scale."""

    def __init__(self, quantizers: tuple[ExpertQuantizer, ExpertQuantizer]) -> None:
        self.quantizers = quantizers

    def gate_up_in(self, x, expert_g, token_g):
        return self.quantizers[0].at(expert_g)(x)

    def down_in(self, x, expert_g, token_g):
        return self.quantizers[1].at(expert_g)(x)


class ExpertCheck:
    """Calibration ranges, quantizers and the taps of the check for every MoE layer's experts."""

    def __init__(self, inputs: Sequence[ExpertInputs], *, accelerator: Optional[bool] = None) -> None:
        self.inputs = list(inputs)
        self.ranges = {li.layer: (ExpertRange(li.experts, accelerator=accelerator),
                                  ExpertRange(li.experts, accelerator=accelerator)) for li in self.inputs}

    @property
    def names(self) -> list[tuple[str, int]]:
        return [(n, li.layer) for li in self.inputs for n in li.names]

    def observers(self) -> list:
        return [r for pair in self.ranges.values() for r in pair]

    def calibration_taps(self, ctx: BatchContext) -> contextlib.AbstractContextManager[None]:
        return tapped([li.module for li in self.inputs], [_RangeTap(self.ranges[li.layer], ctx) for li in self.inputs])

    def block_spans(self) -> dict[str, float]:
        return {n: r.block_span() for li in self.inputs for n, r in zip(li.names, self.ranges[li.layer])}

    def uncalibrated(self) -> dict[int, tuple[int, ...]]:
        return {li.layer: self.ranges[li.layer][0].uncalibrated() for li in self.inputs}

    def quantizers(self, percentiles: Sequence[float]) -> dict[str, tuple[ExpertQuantizer, ...]]:
        return {n: expert_quantizers(r, percentiles) for li in self.inputs
                for n, r in zip(li.names, self.ranges[li.layer])}

    def error_taps(self, quantizers: dict, errors: dict, ctx: BatchContext) -> contextlib.AbstractContextManager[None]:
        return tapped([li.module for li in self.inputs],
                      [_ErrorTap(li.names, quantizers, errors, ctx) for li in self.inputs])

    def quantize_taps(self, quantizers: dict, fmt: str) -> contextlib.AbstractContextManager[None]:
        def pick(name: str) -> ExpertQuantizer:
            return next(q for q in quantizers[name] if q.name == fmt)

        return tapped([li.module for li in self.inputs],
                      [_QuantizeTap((pick(li.names[0]), pick(li.names[1]))) for li in self.inputs])
