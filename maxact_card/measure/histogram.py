"""The log-histogram of |a|, read off the float32 bit pattern.

The high 16 bits of a float32 (its bfloat16 bits) with the sign cleared are the bin: 8 bits of
exponent and 7 of mantissa, 128 bins per octave. The report's quantiles read 64 bins per octave
(pairs of those summed), each at most 1/64 of its lower edge wide: the geometric centre of a bin
is within 0.78% of every value in it (normal floats; zero and subnormals read as 0). One bitwise
AND per element, no logarithm; bfloat16 and float16 values fall in the bins of their float32 values.
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import torch

FINE_BINS = 1 << 15  # 32768: what the hooks count into
HIST_BINS = 1 << 14  # 16384: what quantiles read (64 per octave)
QUANTILES = {"p50": 0.5, "p99": 0.99, "p99.9": 0.999, "p99.99": 0.9999}
_SIGN_CLEARED = 0x7FFF


def high_bits(x: torch.Tensor) -> torch.Tensor:
    """The bfloat16 bit pattern of each value of x (int16, a view where x is float32 or bfloat16)."""
    if x.stride(-1) != 1:  # a transposed input (mamba's x_proj reads one): the bits need whole elements
        x = x.contiguous()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16)
    if x.dtype != torch.float32:
        x = x.float()
    if sys.byteorder != "little":  # pragma: no cover - no big-endian machine runs torch here
        raise RuntimeError("the histogram reads float32 bits on little-endian machines only")
    return x.view(torch.int16)[..., 1::2]


def fine_bins(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bins [..., C] int32 of x [..., C]; `mask` [..., 1] int32 is 0x7FFF (count) or 0 (route to bin 0,
    which the caller corrects by the number of such elements)."""
    return torch.bitwise_and(high_bits(x), mask)


def coarse_bins_host(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bins at 64 per octave for the CPU (fine_bins >> 1; `mask` as there): a shift and an AND on
    whole int32 words beat one AND on every other int16 there (3.5x on float32 rows)."""
    if x.dtype != torch.float32:
        return fine_bins(x, mask).bitwise_right_shift_(1)
    return x.view(torch.int32).bitwise_right_shift(17).bitwise_and_(mask.bitwise_right_shift(1))


def add_counts(hist: torch.Tensor, bins: torch.Tensor, ones: Optional[torch.Tensor] = None, *,
               host: Optional[bool] = None) -> None:
    """Count `bins` into `hist` [n] (any number type). `host` (default: on the CPU) counts with
    bincount, faster there; else an index_add that never waits for the device (`ones`: a 0-d one
    of hist's dtype, to spare an allocation)."""
    flat = bins.reshape(-1)
    if host if host is not None else flat.device.type == "cpu":
        hist += torch.bincount(flat, minlength=hist.shape[-1]).to(hist.dtype)
        return
    if ones is None:
        ones = torch.ones((), dtype=hist.dtype, device=hist.device)
    hist.index_add_(0, flat, ones.expand(flat.numel()))


def coarse(fine: torch.Tensor) -> torch.Tensor:
    """[..., FINE_BINS] -> [..., HIST_BINS]: 64 bins per octave."""
    return fine.reshape(*fine.shape[:-1], HIST_BINS, 2).sum(-1)


def bin_value(i: int) -> float:
    """The geometric centre of coarse bin `i` (0 for the zero/subnormal bins)."""
    exponent, mantissa = (i >> 6) - 127, i & 63
    if exponent < -126:
        return 0.0
    return 2.0**exponent * math.sqrt((1 + mantissa / 64) * (1 + (mantissa + 1) / 64))


def histogram_quantiles(hist: torch.Tensor, quantiles: Optional[dict[str, float]] = None) -> dict[str, float]:
    """Quantiles of |a| from a coarse histogram [HIST_BINS]."""
    cum = torch.cumsum(hist[:HIST_BINS].double().cpu(), 0)
    total = float(cum[-1])
    if total <= 0:
        return {}
    out: dict[str, float] = {}
    for name, q in (quantiles or QUANTILES).items():
        rank = max(1.0, math.ceil(q * total))
        i = int(torch.searchsorted(cum, torch.tensor(rank, dtype=cum.dtype)).item())
        out[name] = bin_value(min(i, HIST_BINS - 1))
    return out
