"""Bootstrap intervals over evaluation samples: for M (from per-sample maxima) and for each format's
end-to-end delta NLL (from per-sample [sum NLL, count] rows).

Pure torch on the CPU in float64, deterministic for a given seed: every resample draws ``n`` sample
indices with replacement from an explicitly seeded ``torch.Generator``. The interval is the
percentile interval of the resampled statistic. Its bounds are always resampled values (never
interpolated): the lower bound is the order statistic at ``floor(a * (R - 1))`` and the upper at
``ceil((1 - a) * (R - 1))`` of the ``R`` sorted resamples, with ``a = (1 - level) / 2``, which
rounds outwards, so the interval contains the linearly interpolated percentile interval.

The point estimates themselves (M, and ``delta_nll`` from the totals) are computed elsewhere; for
well-behaved data they lie inside these intervals.

A bootstrap of a maximum never exceeds the observed maximum: its interval says how much M depends
on which samples were drawn, not how much larger M could be on inputs that were never seen.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Union

import torch

DEFAULT_RESAMPLES = 1000
MIN_RESAMPLES = 200
DEFAULT_LEVEL = 0.95
# Elements of one [resamples, n] index block: bounds the memory of large sample counts.
_BLOCK_ELEMENTS = 1 << 22


class Interval(NamedTuple):
    """A two-sided interval ``(lo, hi)``; a plain tuple, so it serializes as a 2-list."""

    lo: float
    hi: float


NAN_INTERVAL = Interval(math.nan, math.nan)


def _check(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples must be an integer >= {MIN_RESAMPLES}, got {resamples!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def _index_blocks(n: int, resamples: int, gen: torch.Generator):
    """Yields [rows, n] int64 blocks of sample indices, ``resamples`` rows in all; the split depends
    only on ``n`` and ``resamples``, so the draws are a function of (n, resamples, seed)."""
    rows = max(1, _BLOCK_ELEMENTS // max(n, 1))
    done = 0
    while done < resamples:
        r = min(rows, resamples - done)
        yield torch.randint(0, n, (r, n), generator=gen, dtype=torch.int64)
        done += r


def _ranks(resamples: int, level: float) -> tuple[int, int]:
    a = (1.0 - float(level)) / 2.0
    pos_lo = a * (resamples - 1)
    pos_hi = (1.0 - a) * (resamples - 1)
    # 1e-9 absorbs representation error of products that are whole numbers (0.025 * 1001 etc.).
    lo = int(math.floor(pos_lo + 1e-9))
    hi = int(math.ceil(pos_hi - 1e-9))
    return max(0, min(lo, resamples - 1)), max(0, min(hi, resamples - 1))


def _bounds(stats: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bounds along dim 0 of ``stats`` [R, ...] (see the module docstring)."""
    lo, hi = _ranks(stats.shape[0], level)
    s = torch.sort(stats, dim=0).values
    return s[lo], s[hi]


def _as_float64(values: Union[Sequence[float], torch.Tensor]) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64)
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


def max_interval(
    per_sample_max: Union[Sequence[float], torch.Tensor],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Bootstrap interval of the maximum over samples of ``per_sample_max`` (one value per
    evaluation sample, e.g. its largest |a| over the headline sites).

    Each resample draws ``n`` samples with replacement; its statistic is their maximum.
      * ``n == 0``: ``(nan, nan)``; ``n == 1``: ``(v, v)``.
      * Any NaN or +inf value (a non-finite activation on some sample) gives ``(inf, inf)``: M is
        then infinite (see ``report.Peak``), and a non-finite activation the model computed is a
        fact about the model, not sampling noise. ``-inf`` is an ordinary value for a maximum.
    The upper bound equals the observed maximum whenever more than ``1 - level`` / 2 of the
    resamples contain its sample (probability ``1 - (1 - 1/n)^n >= 0.63`` per resample), i.e. in
    practice always; the lower bound shows how far M falls when the samples that carry it are left out.
    """
    _check(resamples, level)
    v = _as_float64(per_sample_max).reshape(-1)
    n = v.numel()
    if n == 0:
        return NAN_INTERVAL
    if bool(torch.isnan(v).any()) or bool(torch.isposinf(v).any()):
        return Interval(math.inf, math.inf)
    if n == 1:
        x = float(v[0])
        return Interval(x, x)
    # The maximum of a resample is the sorted value at the largest rank drawn.
    srt = torch.sort(v).values
    gen = _generator(seed)
    stats = torch.cat([srt[block.amax(dim=1)] for block in _index_blocks(n, resamples, gen)])
    lo, hi = _bounds(stats, level)
    return Interval(float(lo), float(hi))


def delta_nll_intervals(
    base: torch.Tensor,
    formats: torch.Tensor,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> list[Interval]:
    """Paired bootstrap intervals of each format's end-to-end delta NLL.

    ``base`` is [n, 2] and ``formats`` [F, n, 2] (or [n, 2] for one format): row ``i`` holds
    sample ``i``'s (sum of NLL over its counted positions, count of those positions), unquantized
    and with each format's fake quantization. One resample draws ``n`` sample indices with
    replacement and uses the same indices for the baseline and every format; its statistic is
    ``sum(nll_f[idx]) / sum(count_f[idx]) - sum(nll_b[idx]) / sum(count_b[idx])``, the delta NLL
    that the totals give (the counts are normally the same for every format).

      * Samples with no counted positions in the baseline and every format are dropped first (they
        add nothing to any sum); ``n == 0`` after that gives ``(nan, nan)`` for every format.
      * A format whose rows (or the baseline's) hold any NaN/inf gives ``(nan, nan)``: its delta
        NLL is not a finite number to bound, and its verdict rests on the point estimate alone.
      * A resample whose counted positions sum to zero (possible when some samples have none in one
        format but not another) has a NaN statistic; such resamples are left out of the percentiles.
    Returns one ``Interval`` per format, in order. Cost: one [R, n] x [n, 2(F + 1)] matrix product.
    """
    _check(resamples, level)
    b = _as_float64(base)
    f = _as_float64(formats)
    if f.dim() == 2:
        f = f.unsqueeze(0)
    if b.dim() != 2 or b.shape[1] != 2:
        raise ValueError(f"base must be [n, 2] (sum NLL, count), got {tuple(b.shape)}")
    if f.dim() != 3 or f.shape[1:] != b.shape:
        raise ValueError(f"formats must be [F, {b.shape[0]}, 2] to match base, got {tuple(f.shape)}")
    n_formats = f.shape[0]
    if n_formats == 0:
        return []
    if bool((b[:, 1] < 0).any()) or bool((f[..., 1] < 0).any()):
        raise ValueError("position counts must be >= 0")
    keep = (b[:, 1] != 0) | (f[..., 1] != 0).any(dim=0)
    b, f = b[keep], f[:, keep]
    n = b.shape[0]
    if n == 0:
        return [NAN_INTERVAL] * n_formats
    finite = bool(torch.isfinite(b).all()) & torch.isfinite(f).reshape(n_formats, -1).all(dim=1)
    # Columns: base (sum, count), then each format's (sum, count); non-finite ones zeroed so they
    # cannot leak NaN into the other columns of the product, their interval is NaN anyway.
    cols = torch.cat([b.unsqueeze(0), f], dim=0)  # [F + 1, n, 2]
    cols = torch.where(torch.isfinite(cols), cols, torch.zeros((), dtype=cols.dtype))
    cols = cols.permute(1, 0, 2).reshape(n, 2 * (n_formats + 1))
    gen = _generator(seed)
    sums = []
    ones = None
    for block in _index_blocks(n, resamples, gen):
        # Multiplicity of each sample in each resample: the sums over the drawn indices are then
        # one exact-integer-weighted matrix product instead of a [R, n, 2(F+1)] gather.
        if ones is None or ones.shape != block.shape:
            ones = torch.ones(block.shape, dtype=torch.float64)
        w = torch.zeros(block.shape, dtype=torch.float64).scatter_add_(1, block, ones)
        sums.append(w @ cols)
    s = torch.cat(sums).reshape(resamples, n_formats + 1, 2)
    mean = s[..., 0] / s[..., 1]  # [R, F + 1]; 0/0 -> NaN
    delta = mean[:, 1:] - mean[:, :1]  # [R, F]
    out: list[Interval] = []
    for k in range(n_formats):
        d = delta[:, k]
        d = d[~torch.isnan(d)]
        if not bool(finite[k]) or d.numel() == 0:
            out.append(NAN_INTERVAL)
            continue
        lo, hi = _bounds(d, level)
        out.append(Interval(float(lo), float(hi)))
    return out
