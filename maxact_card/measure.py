"""The forward passes of an audit: the probe over every sample, and the INT8/FP8 check.

Without the check: one pass over all samples. With it: pass 1 over the calibration samples
(probe + calibration statistics), pass 2 over the evaluation samples (probe + per-site errors +
the loss of the unquantized model and of each format; see quant_check.py).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional, Sequence

import torch
from torch import nn

from .errors import UnsupportedArchitectureError, UsageError
from .loading import text_config
from .probe import Probe, estimate_batch_size, forward, peak_of, run_batches
from .report import QuantReport, SiteStats
from .sites import ModelSites
from .stats import BatchContext

# Every 8th token row feeds the quantile histogram (README, "Statistics"); 1 = every row.
HIST_STRIDE = 8

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
    progress: Progress = no_progress,
) -> Measurement:
    """The probe over every sample; with `calib_indices`, also the INT8/FP8 check (calibration on
    those samples, evaluation on the rest). `batch_size=None`: estimate, halve on out-of-memory.
    Each pass reports to its own `progress` display: an evaluation sample costs 1 + (end-to-end
    formats) forwards, so one bar over both passes would misjudge the time left."""
    from .quant_check import Calibration, Evaluation, e2e_formats, error_sites, linear_inputs

    n = len(corpus_ids)
    check = calib_indices is not None
    first = list(calib_indices) if check else list(range(n))
    taken = set(first)
    rest = [i for i in range(n) if i not in taken]
    if check and not rest:
        raise UsageError(f"--calib-samples {len(first)} leaves no samples to evaluate on; "
                         "lower --calib-samples or raise --samples")
    probe = Probe(model_sites, hist_stride=hist_stride)
    bs = batch_size or estimate_batch_size(model, max(len(x) for x in corpus_ids), with_logits=False)
    adaptive = batch_size is None
    tokens = sum(len(ids) for ids in corpus_ids)  # every token of a sample is real (padding is added)

    inputs = linear_inputs(model_sites) if check else []
    cal = Calibration(error_sites(model_sites, inputs)) if check else None

    def calib_step(ctx: BatchContext, attention_mask: torch.Tensor) -> None:
        probe.ctx = ctx
        if cal is not None:
            cal.ctx = ctx
        with probe.hooks(), cal.hooks() if cal is not None else contextlib.nullcontext():
            forward(model, ctx.input_ids, attention_mask)

    start = time.perf_counter()
    with torch.inference_mode():
        with progress(len(first), "calibrate" if check else "probe") as advance:
            bs = run_batches(model, corpus_ids, first, bs, pad_id, calib_step, adaptive=adaptive,
                             stateful=probe.accs + (cal.accs if cal else []), on_batch=advance)
        probe_s = time.perf_counter() - start
        if cal is None:
            return Measurement(probe.results(decode), tokens, probe_s, 0.0, None)
        final_norm = next((s for s in model_sites.sites if s.kind == "final_norm"), None)
        if final_norm is None:
            raise UnsupportedArchitectureError("no final norm found, so the loss cannot be computed; "
                                               "run with --no-quant-check")
        cfg = text_config(model.config)
        formats = e2e_formats(percentiles)
        ev = Evaluation(error_sites(model_sites, inputs), cal.quantizers(percentiles), inputs, formats, final_norm,
                        model.get_output_embeddings(), getattr(cfg, "final_logit_softcapping", None))
        eval_tokens = sum(len(corpus_ids[i]) for i in rest)
        passes = f"evaluate (x{1 + len(formats)} forwards)"

        def eval_step(ctx: BatchContext, attention_mask: torch.Tensor) -> None:
            probe.ctx = ev.ctx = ctx
            with probe.hooks(), ev.baseline_hooks():
                forward(model, ctx.input_ids, attention_mask)
            ev.loss(0)
            for f, fmt in enumerate(formats, start=1):
                with ev.quantized_hooks(fmt):
                    forward(model, ctx.input_ids, attention_mask)
                ev.loss(f)

        start = time.perf_counter()
        with progress(len(rest), passes) as advance:
            run_batches(model, corpus_ids, rest, bs, pad_id, eval_step, adaptive=adaptive,
                        stateful=probe.accs + ev.stateful(), on_batch=advance)
        quant_s = time.perf_counter() - start
    sites = probe.results(decode)
    peak = peak_of(sites)
    absmax = {s.name: s.absmax for s in sites if s.absmax is not None}
    layers = {s.name: s.layer for s in ev.sites}
    report = ev.report(len(first), len(rest), eval_tokens, layers, peak.abs if peak else None, absmax,
                       sum(s.nonfinite for s in sites))
    return Measurement(sites, tokens, probe_s, quant_s, report)
