"""The forward passes of an audit: the probe over every sample, and the INT8/FP8 check.

Without the check: one pass over all samples. With it: pass 1 over the calibration samples
(probe + calibration ranges), pass 2 over the evaluation samples (probe + per-site errors + the
loss of the unquantized model and of each format; see check.py). In a data-parallel run each
process takes its share of each pass's batches; the calibration is merged between the passes
(every process quantizes with the same scales) and everything else at the end.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Optional, Sequence

import torch
from torch import nn

from ..errors import UsageError
from ..quant import e2e_formats
from ..report import ExpertLayer, QuantReport, SiteStats
from ..sites import ModelSites
from .batches import estimate_batch_size, plan_batches, run_batches
from .check import Calibration, Evaluation, error_sites, linear_inputs
from .expert_check import expert_inputs
from .head import OutputHead
from .padding import pads_cleanly
from .context import BatchContext
from .distributed import Group
from .expert_stats import ProbeExperts
from .experts import experts_seam
from .hooks import forward, hooked, input_device, release_heap
from .observers import Observer
from .results import peak_of, site_maxima
from .site_stats import SiteBank, SiteInfo

# Every 8th token row feeds the quantile histogram (README, "Statistics"); 1 = every row.
HIST_STRIDE = 8
MAX_RERUNS = 2  # a site's mode changes at most twice: to `massive`, then to `exact`

Advance = Callable[[int, int], None]  # (samples, tokens) just done
# progress(total samples, description) opens the progress display of one pass.
Progress = Callable[[int, str], ContextManager[Advance]]


def no_progress(total: int, desc: str) -> ContextManager[Advance]:
    return contextlib.nullcontext(lambda n, t: None)


@dataclass(frozen=True)
class Measurement:
    sites: tuple[SiteStats, ...]
    tokens: int
    probe_s: float
    quant_s: float
    quant: Optional[QuantReport]
    processes: int = 1
    sample_max: tuple[float, ...] = ()  # max |a| of each sample over every site (-1: not measured)
    experts: tuple[ExpertLayer, ...] = ()  # one per MoE layer with fused experts


def site_bank(model_sites: ModelSites, device: torch.device, *, hist_stride: int = HIST_STRIDE,
              accelerator: Optional[bool] = None, samples: int = 0) -> SiteBank:
    infos = [SiteInfo(s.name, s.kind, s.layer, channels=s.kind == "residual", streams=s.streams)
             for s in model_sites.hooked]
    return SiteBank(infos, device, hist_stride=hist_stride, accelerator=accelerator, samples=samples)


class Probe:
    """The probe's hooks on a model (and its taps inside fused experts), and the fold that follows
    each forward pass."""

    def __init__(self, model: nn.Module, model_sites: ModelSites, *, hist_stride: int = HIST_STRIDE,
                 accelerator: Optional[bool] = None, samples: int = 0) -> None:
        self.model, self.sites, self.order = model, model_sites.hooked, [s.name for s in model_sites.sites]
        device = input_device(model)
        if device.type == "mps":  # no float64 there: the statistics read host copies (hooks.py)
            device = torch.device("cpu")
        self.bank = site_bank(model_sites, device, hist_stride=hist_stride, accelerator=accelerator, samples=samples)
        self.experts = ProbeExperts(model_sites, device) if model_sites.expert_sites else None

    def observers(self) -> list[Observer]:
        return [self.bank] + ([self.experts.bank] if self.experts else [])

    def _bank_hooks(self, ctx: BatchContext) -> ContextManager[None]:
        return hooked(self.sites, [self.bank.hook(i) for i in range(len(self.sites))], ctx)

    @contextlib.contextmanager
    def hooks(self, ctx: BatchContext) -> Iterator[None]:
        with self._bank_hooks(ctx), self.experts.taps(ctx) if self.experts else contextlib.nullcontext():
            yield

    def settle(self, ctx: BatchContext, attention_mask: torch.Tensor) -> None:
        """Fold the forward pass just run; where a site needs a costlier mode (NaN/Inf, rows that can
        hold a massive activation), run the batch again with the hooks of the bank alone."""
        if self.experts:
            self.experts.bank.fold(ctx)
        for _ in range(MAX_RERUNS + 1):
            need = self.bank.fold(ctx)
            if ctx.valid.device.type == "cpu":
                release_heap()  # the fold's temporaries: out of the heap the next forward grows
            if not need:
                return
            for site, mode in need:
                self.bank.set_mode(site, mode)
            with self._bank_hooks(ctx):
                forward(self.model, ctx.input_ids, attention_mask)
        raise RuntimeError("the probe's fold did not settle")  # pragma: no cover - modes only escalate

    def forward(self, ctx: BatchContext, attention_mask: torch.Tensor) -> None:
        with self.hooks(ctx):
            forward(self.model, ctx.input_ids, attention_mask)
        self.settle(ctx, attention_mask)

    def discard(self) -> None:
        """Forget the rows of a forward pass that did not finish (out of memory)."""
        self.bank.discard()
        if self.experts:
            self.experts.bank.discard()

    def result(self, decode: Callable[[int], str]) -> tuple[SiteStats, ...]:
        """Every site's statistics, in forward order."""
        found = {s.name: s for s in self.bank.result(decode)}
        if self.experts:
            found.update((s.name, s) for s in self.experts.bank.result(decode))
        return tuple(found[n] for n in self.order)

    def expert_layers(self, sites: Sequence[SiteStats], uncalibrated=None) -> tuple[ExpertLayer, ...]:
        return self.experts.bank.layers(self.experts.routers, sites, uncalibrated) if self.experts else ()


def measure(
    model: nn.Module,
    model_sites: ModelSites,
    corpus_ids: Sequence[Sequence[int]],
    pad_id: int,
    decode: Callable[[int], str],
    *,
    batch_size: Optional[int],
    hist_stride: int = HIST_STRIDE,
    calib_indices: Optional[Sequence[int]] = None,
    percentiles: Sequence[float] = (99.9, 99.99),
    formats: Optional[Sequence[str]] = None,
    seed: int = 0,
    progress: Progress = no_progress,
    group: Group = Group(),
    accelerator: Optional[bool] = None,
    note: Callable[[str], None] = lambda s: None,
) -> Measurement:
    """The probe over every sample; with `calib_indices`, also the INT8/FP8 check (calibration on
    those samples, evaluation on the rest; `formats`: the end-to-end ones, default
    `quant.e2e_formats`; `seed`: the bootstrap's). `batch_size=None`: estimate, halve on out-of-memory.
    Each pass reports to its own `progress` display: an evaluation sample costs 1 + (end-to-end
    formats) forwards, so one bar over both passes would misjudge the time left. `accelerator`:
    force the statistics' accelerator path (True) or the CPU path (False); default: by device.
    A model whose real tokens change with the padding beside them runs one sample per batch
    (padding.py), said through `note`."""
    n = len(corpus_ids)
    check = calib_indices is not None
    first = list(calib_indices) if check else list(range(n))
    taken = set(first)
    rest = [i for i in range(n) if i not in taken]
    if check and not rest:
        raise UsageError(f"--calib-samples {len(first)} leaves no samples to evaluate on; "
                         "lower --calib-samples or raise --samples")
    probe = Probe(model, model_sites, hist_stride=hist_stride, accelerator=accelerator, samples=n)
    lengths = [len(ids) for ids in corpus_ids]
    if batch_size != 1 and not pads_cleanly(model, corpus_ids, pad_id):
        note(f"{type(model).__name__}: padding changes the activations of the real tokens beside it (the model "
             "does not follow the attention mask), so each sample runs alone (--batch-size 1)")
        batch_size = 1
    adaptive = batch_size is None
    bs = batch_size or group.smallest(estimate_batch_size(model, max(lengths), with_logits=False))
    tokens = sum(lengths)  # every token of a sample is real (padding is added)
    inputs = linear_inputs(model_sites) if check else []
    cal = Calibration(error_sites(model_sites, inputs), accelerator=accelerator,
                      experts=expert_inputs(model_sites)) if check else None

    def calib_step(ctx: BatchContext, attention_mask: torch.Tensor) -> None:
        with probe.hooks(ctx), cal.hooks(ctx) if cal is not None else contextlib.nullcontext():
            forward(model, ctx.input_ids, attention_mask)
        probe.settle(ctx, attention_mask)

    plan1 = plan_batches(lengths, first, bs)
    plan = group.share(plan1)
    start = time.perf_counter()
    with torch.inference_mode(), experts_seam(model, accelerator):
        with progress(sum(len(p.samples) for p in plan), "calibrate" if check else "probe") as advance:
            bs = run_batches(model, corpus_ids, plan, pad_id, calib_step, adaptive=adaptive,
                             observers=probe.observers() + (cal.observers() if cal else []), on_batch=advance,
                             on_oom=probe.discard)
        probe_s = time.perf_counter() - start
        if cal is None:
            group.merge(probe.observers())
            sites = probe.result(decode)
            return Measurement(sites, tokens, probe_s, 0.0, None, group.world,
                               tuple(probe.bank.sample_max.tolist()), probe.expert_layers(sites))
        group.merge(cal.observers())
        formats = tuple(formats) if formats is not None else e2e_formats(percentiles)
        ev = Evaluation(error_sites(model_sites, inputs), cal.quantizers(percentiles), inputs, formats,
                        OutputHead(model), accelerator, samples=n, experts=cal.experts,
                        expert_quantizers=cal.expert_quantizers(percentiles))
        eval_tokens = sum(lengths[i] for i in rest)

        def eval_step(ctx: BatchContext, attention_mask: torch.Tensor) -> None:
            with probe.hooks(ctx), ev.baseline_hooks(ctx):
                out = forward(model, ctx.input_ids, attention_mask)
            ev.loss(0, ctx, out.logits)
            probe.settle(ctx, attention_mask)
            for f, fmt in enumerate(formats, start=1):
                with ev.quantized_hooks(fmt, ctx):
                    forward(model, ctx.input_ids, attention_mask)
                ev.loss(f, ctx)

        def dropped() -> None:
            probe.discard()
            ev.head.drop()

        bs = group.smallest(bs)
        plan = group.share(plan_batches(lengths, rest, bs, first=len(plan1)))
        start = time.perf_counter()
        with progress(sum(len(p.samples) for p in plan), f"evaluate (x{1 + len(formats)} forwards)") as advance:
            run_batches(model, corpus_ids, plan, pad_id, eval_step, adaptive=adaptive,
                        observers=probe.observers() + ev.observers(), on_batch=advance, on_oom=dropped)
        quant_s = time.perf_counter() - start
        group.merge(probe.observers() + ev.observers())
    sites = probe.result(decode)
    peak = peak_of(sites)
    absmax = site_maxima(sites)
    layers = ev.site_layers()
    report = ev.report(len(first), len(rest), eval_tokens, layers, peak.abs if peak else None, absmax,
                       sum(s.nonfinite for s in sites), eval_indices=rest, seed=seed, spans=cal.block_spans())
    return Measurement(sites, tokens, probe_s, quant_s, report, group.world, tuple(probe.bank.sample_max.tolist()),
                       probe.expert_layers(sites, cal.uncalibrated()))
