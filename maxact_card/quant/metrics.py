"""Quantization error and loss: the per-batch sums (pure tensor code, no host sync on accelerators)
and the metrics computed from them.

Error sums of one (site, format) over the real tokens of a batch, in ``ERROR_SUMS`` order:
sum err^2, sum x^2, sum |err|, sum |x|, count, clipped, non-finite. Elementwise errors are
computed in float32 (squares overflow only for |a| > 1.8e19) and summed in float64. Every element
where the input or its quantized value is non-finite is excluded and counted separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..report import EndToEnd

ERROR_SUMS = ("sum_err2", "sum_x2", "sum_abs_err", "sum_abs_x", "count", "clipped", "nonfinite")


def acc_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else accumulate in float64.
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass(frozen=True)
class RowSums:
    """Per-token sums of one activation x [..., C] in float32: what every format's error shares."""

    x: torch.Tensor  # x as float32 [N, C]
    x2: torch.Tensor  # [N] L2 norm
    x1: torch.Tensor  # [N] L1 norm
    absmax: torch.Tensor  # [N] max |x|

    @staticmethod
    def of(x: torch.Tensor) -> "RowSums":
        xf = x.float().reshape(-1, x.shape[-1])
        absmax = torch.maximum(xf.amax(-1), xf.amin(-1).neg())
        return RowSums(xf, torch.linalg.vector_norm(xf, dim=-1), torch.linalg.vector_norm(xf, ord=1, dim=-1), absmax)


def error_sums(x: torch.Tensor, xq: torch.Tensor, mask: Optional[torch.Tensor] = None,
               clip_threshold: Optional[torch.Tensor] = None, rows: Optional[RowSums] = None,
               elementwise: bool = False) -> torch.Tensor:
    """The ERROR_SUMS of one batch: x/xq [..., C], `mask` [...] bool of real tokens (None: all),
    `clip_threshold` qmax * scale (None: never clips). On the CPU, from per-token sums (`rows`,
    shared by every format of a site) unless a real token holds a NaN/Inf; `elementwise`: the
    accelerator's way on the CPU too."""
    if x.device.type == "cpu" and not elementwise:
        out = _row_sums(x, xq, mask, clip_threshold, rows)
        if out is not None:
            return out
    return _elementwise_sums(x, xq, mask, clip_threshold)


def _elementwise_sums(x, xq, mask, clip_threshold) -> torch.Tensor:
    acc = acc_dtype(x.device)
    xf, qf = x.float(), xq.float()
    finite = torch.isfinite(xf) & torch.isfinite(qf)
    if mask is not None:
        real = mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1).expand_as(xf)
        valid = finite & real
        nonfinite = (real & ~finite).sum()
    else:
        valid = finite
        nonfinite = (~finite).sum()
    xv = torch.where(valid, xf, 0.0)
    err = torch.where(valid, xf - qf, 0.0)
    if clip_threshold is not None:
        clipped = (valid & (xv.abs() > clip_threshold)).sum()
    else:
        clipped = torch.zeros((), dtype=torch.int64, device=x.device)
    return torch.stack([err.square().sum(dtype=acc), xv.square().sum(dtype=acc), err.abs().sum(dtype=acc),
                        xv.abs().sum(dtype=acc), valid.sum().to(acc), clipped.to(acc), nonfinite.to(acc)])


def _row_sums(x, xq, mask, clip_threshold, rows: Optional[RowSums]) -> Optional[torch.Tensor]:
    """The CPU fast path (no mask or where tensor, one error tensor); None when a real token holds
    a NaN/Inf in x or xq, or when the clip threshold is one per row (the elementwise path then)."""
    if clip_threshold is not None and clip_threshold.dim():
        return None
    rows = rows if rows is not None else RowSums.of(x)
    err = (x.float() - xq.float()).reshape(rows.x.shape)
    e2 = torch.linalg.vector_norm(err, dim=-1)
    e1 = torch.linalg.vector_norm(err, ord=1, dim=-1)
    real = mask.reshape(-1).to(torch.bool) if mask is not None else None
    checks = torch.stack([rows.x2, e2])
    if not bool(torch.isfinite(checks if real is None else checks[:, real]).all()):
        return None
    acc = torch.float64

    def total(v: torch.Tensor) -> torch.Tensor:  # over real tokens (padding may hold NaN)
        v = v.to(acc)
        return (v if real is None else torch.where(real, v, 0)).sum()

    C = rows.x.shape[-1]
    count = (int(real.sum()) if real is not None else rows.x.shape[0]) * C
    clipped = 0
    if clip_threshold is not None:
        thr = clip_threshold.float().cpu()
        over = rows.absmax > thr  # only these tokens can hold a clipped value
        if real is not None:
            over &= real
        if bool(over.any()):
            clipped = int((rows.x[over].abs() > thr).sum())
    return torch.stack([total(e2.to(acc).square()), total(rows.x2.to(acc).square()), total(e1), total(rows.x1),
                        torch.tensor(float(count), dtype=acc), torch.tensor(float(clipped), dtype=acc),
                        torch.zeros((), dtype=acc)])


def error_metrics(sums: Sequence[float]) -> dict[str, float]:
    """From ERROR_SUMS: ``sqnr_db = 10 log10(sum x^2 / sum err^2)`` (``inf`` when the error is exactly
    zero, also when nothing was counted; ``-inf`` when the signal is zero but the error is not),
    ``rel_rmse = sqrt(sum err^2 / sum x^2)``, ``rel_mae = sum|err| / sum|x|`` (0 for zero error, inf
    for zero signal with error), ``clip_rate = clipped / count`` (0 if empty). Never NaN."""
    se, sx, sae, sax, count, clipped, nonfinite = (float(v) for v in sums)
    if se == 0.0:
        sqnr = math.inf
    elif sx == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(sx / se)
    return {
        "sqnr_db": sqnr,
        "rel_rmse": _ratio(se, sx, math.sqrt),
        "rel_mae": _ratio(sae, sax),
        "clip_rate": clipped / count if count else 0.0,
        "count": int(count),
        "nonfinite": int(nonfinite),
    }


def _ratio(num: float, den: float, f: Callable[[float], float] = lambda v: v) -> float:
    if num == 0.0:
        return 0.0
    if den == 0.0:
        return math.inf
    return f(num / den)


def nll_sums(logits: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[sum NLL, count] of next-token losses: `logits` [..., V] already aligned with `targets` [...],
    `mask` [...] bool of the positions that count. Non-finite losses at counted positions are kept."""
    acc = acc_dtype(logits.device)
    if mask is None:
        mask = torch.ones(targets.shape, dtype=torch.bool, device=logits.device)
    mask = mask.to(dtype=torch.bool, device=logits.device)
    safe = torch.where(mask, targets, 0)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), safe.reshape(-1), reduction="none")
    nll = torch.where(mask.reshape(-1), nll, 0.0)
    return torch.stack([nll.sum(dtype=acc), mask.sum().to(acc)])


def nll_rows(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, 2]: [sum NLL, count] of each row's next-token losses (`logits` [B, T, V] aligned with
    `targets` [B, T], `mask` [B, T] bool); what `nll_sums` sums, row by row."""
    acc = acc_dtype(logits.device)
    mask = mask.to(dtype=torch.bool, device=logits.device)
    safe = torch.where(mask, targets, 0)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), safe.reshape(-1), reduction="none")
    nll = torch.where(mask.reshape(-1), nll, 0.0).reshape(mask.shape)
    return torch.stack([nll.sum(-1, dtype=acc), mask.sum(-1).to(acc)], dim=-1)


def mean_nll(sums: Sequence[float]) -> float:
    s, n = (float(v) for v in sums)
    return s / n if n else math.nan


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def end_to_end(format: str, nll: float, baseline_nll: float) -> EndToEnd:
    """Loss of the model with ``format`` fake quantization against the unquantized baseline."""
    delta = nll - baseline_nll
    return EndToEnd(format=format, nll=float(nll), ppl=_exp(nll), delta_nll=float(delta), ppl_ratio=_exp(delta))
