"""The INT8/FP8 check's observers: calibration ranges, quantization errors and the loss.

Each keeps its state as named tensors with a declared merge (all sums, and a max for the range),
so the batch loop can undo a batch and data-parallel processes can merge, like the probe's.
The arithmetic is `maxact_card.quant`'s.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..quant import ERROR_SUMS, RowSums, error_metrics, error_sums, mean_nll
from ..quant.blocks import NVFP4_BLOCK, block_amax_range, block_span
from ..quant.metrics import acc_dtype, nll_rows
from .context import BatchContext
from .histogram import HIST_BINS, add_counts, fine_bins, histogram_quantiles
from .observers import Merge, Observer


class RangeObserver(Observer):
    """What a quantization scale needs: max |a| and the log-histogram of |a| over every real token."""

    MERGES = {"absmax": Merge.MAX, "hist": Merge.SUM, "block_max": Merge.MAX, "block_min": Merge.MIN}

    def __init__(self, device: torch.device | str = "cpu", *, accelerator: Optional[bool] = None) -> None:
        self.accelerator = accelerator  # True: the accelerator path on the CPU too
        self.absmax = torch.zeros((), dtype=torch.float64, device=device)
        self.hist = torch.zeros(HIST_BINS, dtype=torch.float64, device=device)
        # The largest and the smallest non-zero amax of NVFP4's 16-value blocks (+inf: none yet).
        self.block_max = torch.zeros((), dtype=torch.float32, device=device)
        self.block_min = torch.full((), math.inf, dtype=torch.float32, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, ctx: BatchContext) -> None:
        rows = ctx.on(x.device).rows()
        self.fold_rows(x.reshape(-1, x.shape[-1]), rows.valid, rows.hist_mask)

    def fold_rows(self, x2: torch.Tensor, valid: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fold rows x2 [R, C] whose `valid` [R] are real tokens (`mask`: their histogram bits, as
        `Rows.hist_mask`); returns them with padding and NaN/Inf zeroed."""
        if self.absmax.device != x2.device:
            self.absmax, self.hist = self.absmax.to(x2.device), self.hist.to(x2.device)
            self.block_max, self.block_min = self.block_max.to(x2.device), self.block_min.to(x2.device)
        ok = torch.isfinite(x2) & valid[:, None]
        xz = torch.where(ok, x2, 0)
        torch.maximum(self.absmax, torch.linalg.vector_norm(xz, ord=math.inf).double(), out=self.absmax)
        if mask is None:
            mask = torch.where(valid, 0x7FFF, 0).to(torch.int32)[:, None]
        bins = fine_bins(xz, mask).bitwise_right_shift_(1)  # 64 bins per octave
        add_counts(self.hist, bins, host=x2.device.type == "cpu" and not self.accelerator)
        self.hist[0] -= x2.numel() - ok.sum()  # padding and NaN/Inf were counted as zeros
        top, low = block_amax_range(xz, NVFP4_BLOCK)  # padding rows are zeros in xz: no block there
        torch.maximum(self.block_max, top, out=self.block_max)
        torch.minimum(self.block_min, low, out=self.block_min)
        return xz

    def block_span(self) -> float:
        """Largest over smallest non-zero NVFP4 block amax (0 when no block was non-zero)."""
        return float(block_span(self.block_max, self.block_min))

    def result(self) -> float:
        return float(self.absmax)

    def quantiles(self, quantiles: dict[str, float]) -> dict[str, float]:
        return histogram_quantiles(self.hist.cpu(), quantiles)


class ErrorObserver(Observer):
    """Quantization error of one (site, format) on held-out tokens: the sums of `quant.ERROR_SUMS`."""

    MERGES = {"sums": Merge.SUM}

    def __init__(self, device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)
        self.sums = torch.zeros(len(ERROR_SUMS), dtype=acc_dtype(dev), device=dev)

    @torch.no_grad()
    def update(self, x: torch.Tensor, ctx: BatchContext, xq: Optional[torch.Tensor] = None,
               clip_threshold: Optional[torch.Tensor] = None, rows: Optional[RowSums] = None,
               elementwise: bool = False, valid: Optional[torch.Tensor] = None) -> None:
        """`valid`: which rows of x are real tokens, where x is not the batch's [B, T, C] (ctx's mask)."""
        if self.sums.device != x.device:
            self.sums = self.sums.to(device=x.device, dtype=acc_dtype(x.device))
        mask = valid if valid is not None else ctx.on(x.device).valid if ctx is not None else None
        self.sums += error_sums(x, x if xq is None else xq, mask, clip_threshold, rows, elementwise).to(self.sums.dtype)

    def result(self) -> dict[str, float]:
        return error_metrics(self.sums.cpu().tolist())


class LossObserver(Observer):
    """Mean next-token negative log-likelihood over real tokens: [sum NLL, count], in total and per
    corpus sample (`samples` > 0; what the bootstrap interval of a delta NLL resamples)."""

    MERGES = {"sums": Merge.SUM, "per_sample": Merge.SUM}

    def __init__(self, device: torch.device | str = "cpu", samples: int = 0) -> None:
        dev = torch.device(device)
        self.sums = torch.zeros(2, dtype=acc_dtype(dev), device=dev)
        self.per_sample = torch.zeros(samples, 2, dtype=acc_dtype(dev), device=dev)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None,
               sample_index: Optional[torch.Tensor] = None) -> None:
        """`logits` [B, T, V], `targets` [B, T], `mask` [B, T]; `sample_index` [B]: each row's sample."""
        if self.sums.device != logits.device:
            self.sums = self.sums.to(device=logits.device, dtype=acc_dtype(logits.device))
            self.per_sample = self.per_sample.to(device=logits.device, dtype=acc_dtype(logits.device))
        if mask is None:
            mask = torch.ones(targets.shape, dtype=torch.bool, device=logits.device)
        rows = nll_rows(logits, targets, mask).to(self.sums.dtype)
        self.sums += rows.sum(0)
        if self.per_sample.numel() and sample_index is not None:
            self.per_sample.index_add_(0, sample_index.to(logits.device), rows)

    def result(self) -> float:
        """Mean NLL in nats; NaN when no position was counted."""
        return mean_nll(self.sums.cpu().tolist())
