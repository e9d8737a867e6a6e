"""The INT8/FP8 check's observers: calibration ranges, quantization errors and the loss.

Each keeps its state as named tensors with a declared merge (all sums, and a max for the range),
so the batch loop can undo a batch and data-parallel processes can merge, like the probe's.
The arithmetic is `maxact_card.quant`'s.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..quant import ERROR_SUMS, RowSums, error_metrics, error_sums, mean_nll, nll_sums
from ..quant.metrics import acc_dtype
from .context import BatchContext
from .histogram import HIST_BINS, add_counts, fine_bins, histogram_quantiles
from .observers import Merge, Observer


class RangeObserver(Observer):
    """What a quantization scale needs: max |a| and the log-histogram of |a| over every real token."""

    MERGES = {"absmax": Merge.MAX, "hist": Merge.SUM}

    def __init__(self, device: torch.device | str = "cpu", *, accelerator: Optional[bool] = None) -> None:
        self.accelerator = accelerator  # True: the accelerator path on the CPU too
        self.absmax = torch.zeros((), dtype=torch.float64, device=device)
        self.hist = torch.zeros(HIST_BINS, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, ctx: BatchContext) -> None:
        if self.absmax.device != x.device:
            self.absmax, self.hist = self.absmax.to(x.device), self.hist.to(x.device)
        rows = ctx.on(x.device).rows()
        x2 = x.reshape(-1, x.shape[-1])
        ok = torch.isfinite(x2) & rows.valid[:, None]
        xz = torch.where(ok, x2, 0)
        torch.maximum(self.absmax, torch.linalg.vector_norm(xz, ord=math.inf).double(), out=self.absmax)
        bins = fine_bins(xz, rows.hist_mask).bitwise_right_shift_(1)  # 64 bins per octave
        add_counts(self.hist, bins, host=x.device.type == "cpu" and not self.accelerator)
        self.hist[0] -= x2.numel() - ok.sum()  # padding and NaN/Inf were counted as zeros

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
               elementwise: bool = False) -> None:
        if self.sums.device != x.device:
            self.sums = self.sums.to(device=x.device, dtype=acc_dtype(x.device))
        mask = ctx.on(x.device).valid if ctx is not None else None
        self.sums += error_sums(x, x if xq is None else xq, mask, clip_threshold, rows, elementwise).to(self.sums.dtype)

    def result(self) -> dict[str, float]:
        return error_metrics(self.sums.cpu().tolist())


class LossObserver(Observer):
    """Mean next-token negative log-likelihood over real tokens: [sum NLL, count]."""

    MERGES = {"sums": Merge.SUM}

    def __init__(self, device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)
        self.sums = torch.zeros(2, dtype=acc_dtype(dev), device=dev)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        if self.sums.device != logits.device:
            self.sums = self.sums.to(device=logits.device, dtype=acc_dtype(logits.device))
        self.sums += nll_sums(logits, targets, mask).to(self.sums.dtype)

    def result(self) -> float:
        """Mean NLL in nats; NaN when no position was counted."""
        return mean_nll(self.sums.cpu().tolist())
