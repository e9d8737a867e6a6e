"""Streaming statistics of one probe site, kept on the activation's device.

State tensors are allocated once and updated in place: a new small long-lived tensor per batch
would land between the forward pass's large temporaries on the CPU heap and keep it from shrinking.

`SiteAccumulator.update(x, batch)` reduces one batch of activations [B, T, C] inside the hook:
per-token (row) reductions first, then tiny tensors; no copy of the activation leaves the device
and no value is read back to the host except where that is free (CPU tensors). Sums cross rows
and batches in float64. Padding rows never count; NaN/Inf are counted, located, and excluded from
every other statistic.

`result()` reads the state back once, at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .report import ChannelMax, Location, SiteStats, TopValue

TOP_K = 16
TOP_CHANNELS = 16
MASSIVE_ABS = 100.0  # Sun et al. 2024: |a| > 100 ...
MASSIVE_RATIO = 1000.0  # ... and > 1000x the median |a| of its token
MASSIVE_CHUNK = 128  # candidate rows examined at a time on the CPU
# Log-histogram of |a| read off the float32 bit pattern: with the sign bit cleared, the top 14 bits
# (8 of exponent, 6 of mantissa) are the bin, so every octave splits into 64 bins, each at most 1/64
# of its lower edge wide: the geometric centre of a bin is within 0.78% of every value in it (normal
# floats; zero and subnormals read as 0). One integer shift per element, no logarithm.
HIST_SHIFT = 23 - 6
HIST_BINS = 1 << (31 - HIST_SHIFT)  # 16384; slot HIST_BINS of a histogram takes what is not counted
QUANTILES = {"p50": 0.5, "p99": 0.99, "p99.9": 0.999, "p99.99": 0.9999}


@dataclass(frozen=True)
class BatchContext:
    """What every hook of one forward pass shares: which rows are real tokens, and whose."""

    valid: torch.Tensor  # [B, T] bool, False on padding
    sample_index: torch.Tensor  # [B] long: index of each row's sample in the corpus
    input_ids: torch.Tensor  # [B, T] long

    def on(self, device: torch.device) -> "BatchContext":
        if self.valid.device == device:
            return self
        return BatchContext(self.valid.to(device), self.sample_index.to(device), self.input_ids.to(device))


def _loc_key(sample: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """A sortable key for (sample, position): smaller = earlier in the corpus."""
    return sample * (1 << 32) + position


class SiteAccumulator:
    """Running statistics of one site. One `update` per batch, one `result` at the end."""

    def __init__(self, *, channel_absmax: bool = False, hist_stride: int = 1) -> None:
        self.channel_absmax = channel_absmax
        self.hist_stride = hist_stride
        self.calls = 0
        self.state: Optional[dict[str, torch.Tensor]] = None

    def _init_state(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        dev, f64, i64 = x.device, torch.float64, torch.int64
        return {
            "count": torch.zeros((), dtype=i64, device=dev),
            "nonfinite": torch.zeros((), dtype=i64, device=dev),
            "nonfinite_loc": torch.full((4,), -1, dtype=i64, device=dev),  # sample, pos, token, channel
            "nonfinite_key": torch.full((), 2**62, dtype=i64, device=dev),
            "max": torch.full((), -math.inf, dtype=f64, device=dev),
            "min": torch.full((), math.inf, dtype=f64, device=dev),
            "sum": torch.zeros((), dtype=f64, device=dev),
            "sumsq": torch.zeros((), dtype=f64, device=dev),
            "best_abs": torch.full((), -1.0, dtype=f64, device=dev),
            "best_val": torch.zeros((), dtype=f64, device=dev),
            "best_loc": torch.full((4,), -1, dtype=i64, device=dev),  # sample, pos, token, channel
            "top_abs": torch.full((TOP_K,), -1.0, dtype=f64, device=dev),  # -1: empty slot
            "top_val": torch.zeros((TOP_K,), dtype=f64, device=dev),
            "top_loc": torch.full((TOP_K, 4), -1, dtype=i64, device=dev),
            "hist": torch.zeros(HIST_BINS + 1, dtype=f64, device=dev),
            "massive": torch.zeros((), dtype=i64, device=dev),
            "chan": torch.zeros(x.shape[-1], dtype=f64, device=dev) if self.channel_absmax else torch.zeros(0),
        }

    @torch.no_grad()
    def update(self, x: torch.Tensor, ctx: BatchContext) -> None:
        if self.state is None:
            self.state = self._init_state(x)
        ctx = ctx.on(x.device)
        offset = self.calls % self.hist_stride
        self.calls += 1
        if x.device.type == "cpu":
            # A row holds a NaN or an Inf exactly when its max or min is not finite. On the CPU
            # asking is free, and rows without one take the fast path.
            rmax, rmin = x.amax(-1), x.amin(-1)
            rowbad = ~(torch.isfinite(rmax) & torch.isfinite(rmin))
            if not bool((rowbad & ctx.valid).any()):
                return _fast_update(self.state, x, ctx, rmax, rmin, self.channel_absmax, self.hist_stride, offset)
        # On an accelerator the exact path always runs, so that no hook waits for the host.
        _exact_update(self.state, x, ctx, self.channel_absmax, self.hist_stride, offset)

    # -- result ----------------------------------------------------------------------------------------
    def result(self, name: str, kind: str, layer: Optional[int], decode: Callable[[int], str]) -> SiteStats:
        st = self.state
        if st is None:
            return SiteStats(name, kind, layer, 0, 0, None, None, None, None, None, None, None, None, {}, (), 0, ())
        host = {k: v.detach().cpu() for k, v in st.items()}
        count = int(host["count"])
        nonfinite = int(host["nonfinite"])

        def loc(t: torch.Tensor, sign: int) -> Location:
            s, p, tok, c = (int(v) for v in t.tolist())
            return Location(sample=s, position=p, token_id=tok, token=decode(tok), channel=c, sign=sign)

        nf_loc = loc(host["nonfinite_loc"], 0) if nonfinite else None
        if count == 0:
            return SiteStats(name, kind, layer, 0, nonfinite, nf_loc, None, None, None, None, None, None, None, {}, (), 0, ())
        mean = float(host["sum"]) / count
        ms = float(host["sumsq"]) / count
        best_val = float(host["best_val"])
        top = tuple(
            TopValue(value=float(v), location=loc(l, 1 if v >= 0 else -1))
            for v, l, ab in zip(host["top_val"].tolist(), host["top_loc"], host["top_abs"].tolist())
            if ab >= 0
        )
        chans: tuple[ChannelMax, ...] = ()
        if self.channel_absmax:
            cv, ci = host["chan"].topk(min(TOP_CHANNELS, host["chan"].numel()))
            chans = tuple(ChannelMax(channel=int(i), absmax=float(v)) for v, i in zip(cv.tolist(), ci.tolist()))
        return SiteStats(
            name=name,
            kind=kind,
            layer=layer,
            count=count,
            nonfinite=nonfinite,
            nonfinite_location=nf_loc,
            max=float(host["max"]),
            min=float(host["min"]),
            absmax=float(host["best_abs"]),
            absmax_location=loc(host["best_loc"], 1 if best_val >= 0 else -1),
            mean=mean,
            std=math.sqrt(max(ms - mean * mean, 0.0)),
            rms=math.sqrt(ms),
            quantiles=histogram_quantiles(host["hist"]),
            top=top,
            massive=int(host["massive"]),
            top_channels=chans,
        )


# -- the pieces of an update, functions of the state dict and tensors only ------------------------------
def _fast_update(st: dict, x: torch.Tensor, ctx: BatchContext, rmax: torch.Tensor, rmin: torch.Tensor,
                 channel_absmax: bool, stride: int, offset: int) -> None:
    """A batch without NaN/Inf: row max/min are already known."""
    valid = ctx.valid
    full = bool(valid.all())  # CPU only, so asking is free
    rmax = rmax.masked_fill(~valid, -math.inf)
    rmin = rmin.masked_fill(~valid, math.inf)
    finite_rows = valid.to(torch.int64) * x.shape[-1]
    _accumulate(st, x, ctx, rmax, rmin, finite_rows, None if full else valid, None, stride, offset)
    if channel_absmax:  # padding rows hold real values here: leave them out
        C = x.shape[-1]
        rows = x if full else x.reshape(-1, C)[valid.reshape(-1)]
        _channel_absmax(st, rows.reshape(-1, C))


def _exact_update(st: dict, x: torch.Tensor, ctx: BatchContext, channel_absmax: bool, stride: int,
                  offset: int) -> None:
    """Any batch: NaN/Inf are counted and located, then excluded (read as 0, outside every extreme)."""
    valid = ctx.valid
    ok = torch.isfinite(x) & valid[..., None]
    rmax = torch.where(ok, x, -math.inf).amax(-1)
    rmin = torch.where(ok, x, math.inf).amin(-1)
    x = torch.where(ok, x, 0)
    _nonfinite(st, ok, valid, ctx)
    _accumulate(st, x, ctx, rmax, rmin, ok.sum(-1), None, ok, stride, offset)
    if channel_absmax:  # padding is 0 in x now
        _channel_absmax(st, x.reshape(-1, x.shape[-1]))


def _accumulate(st: dict, x: torch.Tensor, ctx: BatchContext, rmax: torch.Tensor, rmin: torch.Tensor,
                finite_rows: torch.Tensor, hist_valid: Optional[torch.Tensor], hist_ok: Optional[torch.Tensor],
                stride: int, offset: int) -> None:
    """Everything but the channel maxima. Each pass over x is a reduction: no activation-sized
    temporary (|x| is taken on the few rows that need it), so the probe adds next to no memory."""
    valid = ctx.valid
    st["count"] += finite_rows.sum()
    torch.maximum(st["max"], rmax.max().double(), out=st["max"])
    torch.minimum(st["min"], rmin.min().double(), out=st["min"])
    vf = valid.to(torch.float64)
    st["sum"] += (x.sum(-1, dtype=torch.float32).double() * vf).sum()
    norms = torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).double()
    st["sumsq"] += (norms * norms * vf).sum()

    rabs = torch.maximum(rmax.abs().masked_fill(~valid, -1), rmin.abs().masked_fill(~valid, -1))
    rabs = torch.where(torch.isfinite(rabs), rabs, -1.0)
    _absmax(st, x, rabs, ctx)
    _top(st, x, rabs, ctx)
    _hist(st, x, hist_valid, hist_ok, stride, offset)
    _massive(st, x, rabs)


def _channel_absmax(st: dict, rows: torch.Tensor) -> None:
    """Per-channel max |a| over `rows` [N, C] (real tokens only, or padding set to 0)."""
    if rows.shape[0]:
        # max(max, -min) per channel: two contiguous reductions, 14x faster on the CPU than an inf-norm
        torch.maximum(st["chan"], torch.maximum(rows.amax(0), rows.amin(0).neg()).double(), out=st["chan"])


def _nonfinite(st: dict, ok: torch.Tensor, valid: torch.Tensor, ctx: BatchContext) -> None:
    bad = ~ok & valid[..., None]
    st["nonfinite"] += bad.sum()
    T = bad.shape[1]
    # earliest (sample, position, channel) holding a non-finite value
    pos = torch.arange(T, device=bad.device)
    key = _loc_key(ctx.sample_index[:, None], pos[None, :])  # [B, T]
    row_bad = bad.any(-1)
    kmin = torch.where(row_bad, key, 2**62).amin()
    hit = row_bad & (key == kmin)
    flat = hit.reshape(-1).to(torch.int64).argmax()
    c = _row(bad, flat).to(torch.int64).argmax()
    loc = _location(ctx, flat, T, c)
    better = kmin < st["nonfinite_key"]
    st["nonfinite_loc"].copy_(torch.where(better, loc, st["nonfinite_loc"]))
    torch.minimum(st["nonfinite_key"], kmin, out=st["nonfinite_key"])

def _absmax(st: dict, x: torch.Tensor, rabs: torch.Tensor, ctx: BatchContext) -> None:
    T = x.shape[1]
    best = rabs.max()
    if x.device.type == "cpu" and float(best) < float(st["best_abs"]):
        return  # nothing new; free to ask on the CPU
    pos = torch.arange(T, device=x.device)
    key = _loc_key(ctx.sample_index[:, None], pos[None, :])
    kmin = torch.where(rabs == best, key, 2**62).amin()  # ties: the earliest sample and position
    flat = (key == kmin).reshape(-1).to(torch.int64).argmax()
    c = _row(x, flat).abs().argmax()
    val = _row(x, flat).gather(0, c.reshape(1))[0].double()
    loc = _location(ctx, flat, T, c)
    best = best.double()
    old_key = _loc_key(st["best_loc"][0], st["best_loc"][1])
    better = (best > st["best_abs"]) | ((best == st["best_abs"]) & (kmin < old_key))
    st["best_val"].copy_(torch.where(better, val, st["best_val"]))
    st["best_loc"].copy_(torch.where(better, loc, st["best_loc"]))
    st["best_abs"].copy_(torch.where(better, best, st["best_abs"]))

def _top(st: dict, x: torch.Tensor, rabs: torch.Tensor, ctx: BatchContext) -> None:
    """Top-k |a| elements: they can only sit in the k rows with the largest row max."""
    B, T, C = x.shape
    k = min(TOP_K, B * T)
    rvals, rows = rabs.reshape(-1).topk(k)
    if x.device.type == "cpu" and float(rvals[0]) < float(st["top_abs"][-1]):
        return  # no value of this batch enters the top k (free to ask on the CPU)
    cand = x.reshape(B * T, C)[rows].abs()  # [k, C]
    cand = torch.where((rvals >= 0)[:, None], cand, -1.0)
    vals, idx = cand.reshape(-1).topk(min(TOP_K, k * C))
    r, c = rows[idx // C], idx % C
    b, t = r // T, r % T
    signed = x.reshape(B * T, C)[r, c].double()
    loc = torch.stack([ctx.sample_index[b], t, ctx.input_ids[b, t], c], dim=1)
    keep = vals >= 0
    signed = torch.where(keep, signed, 0.0)
    absv = torch.where(keep, vals.double(), -1.0)
    allabs = torch.cat([st["top_abs"], absv])
    allsigned = torch.cat([st["top_val"], signed])
    allloc = torch.cat([st["top_loc"], loc])
    # order: |a| descending, then earliest sample, position, channel (deterministic under ties)
    order = torch.arange(allabs.numel(), device=x.device)
    for key in (allloc[:, 3], allloc[:, 1], allloc[:, 0]):
        order = order[torch.sort(key[order], stable=True).indices]
    order = order[torch.sort(-allabs[order], stable=True).indices][:TOP_K]
    st["top_abs"].copy_(allabs[order])
    st["top_val"].copy_(allsigned[order])
    st["top_loc"].copy_(allloc[order])

def _hist(st: dict, x: torch.Tensor, valid: Optional[torch.Tensor], ok: Optional[torch.Tensor], stride: int,
          offset: int) -> None:
    """Log-histogram of |a| over every `stride`-th token row from `offset`: rows outside `valid`
    [B, T] (or elements outside `ok` [B, T, C]) skipped; both None: every row counts."""
    B, T, C = x.shape
    rows = x.reshape(B * T, C)[offset::stride]
    if ok is not None:
        keep = ok.reshape(B * T, C)[offset::stride]
    elif valid is not None:
        keep = valid.reshape(B * T)[offset::stride, None]
    else:
        keep = None
    add_log_histogram(st["hist"], rows, keep)


def _massive(st: dict, x: torch.Tensor, rabs: torch.Tensor) -> None:
    """Sun et al. 2024: |a| > 100 and > 1000x the median |a| of the same token."""
    B, T, C = x.shape
    flat, rabs = x.reshape(B * T, C), rabs.reshape(-1)
    cand = rabs > MASSIVE_ABS
    if x.device.type != "cpu":  # no host sync: every row, candidates weighted in
        a = flat.abs()
        st["massive"] += (_massive_hits(a) & cand[:, None]).sum()
        return
    # On the CPU only rows that can hold one, a few at a time (temporaries stay small). A row whose
    # median is already >= max/1000 holds none: fewer than (C-1)//2 + 1 of its values lie below
    # max/1000. One comparison settles most rows; the rest get a median.
    rows = cand.nonzero().reshape(-1)
    for i in range(0, rows.numel(), MASSIVE_CHUNK):
        r = rows[i : i + MASSIVE_CHUNK]
        a = flat.index_select(0, r).abs_()
        below = (a < (rabs[r] / MASSIVE_RATIO)[:, None]).sum(-1)
        a = a[below > (C - 1) // 2]
        if a.shape[0]:
            st["massive"] += _massive_hits(a).sum()


def _massive_hits(a: torch.Tensor) -> torch.Tensor:
    """Which of |a| [N, C] are massive: above 100 and above 1000x their row's median."""
    thr = torch.clamp(a.median(-1).values * MASSIVE_RATIO, min=MASSIVE_ABS)
    return a > thr[:, None]


def _row(x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Row `flat` (a 0-d index tensor into B*T) of x [B, T, C], without reading the index on the host."""
    return x.reshape(-1, x.shape[-1]).index_select(0, flat.reshape(1))[0]


def _location(ctx: BatchContext, flat: torch.Tensor, T: int, channel: torch.Tensor) -> torch.Tensor:
    """[sample, position, token id, channel] of row `flat` of the batch, as a device tensor."""
    sample = ctx.sample_index.index_select(0, (flat // T).reshape(1))[0]
    token = ctx.input_ids.reshape(-1).index_select(0, flat.reshape(1))[0]
    return torch.stack([sample, flat % T, token, channel])


def add_log_histogram(hist: torch.Tensor, x: torch.Tensor, keep: Optional[torch.Tensor]) -> None:
    """Count |x| into `hist` [HIST_BINS + 1] (float64); elements where `keep` (broadcastable to x)
    is False go to the last slot. Finite values only: Inf/NaN would land in the top bins."""
    if x.dtype != torch.float32:  # bfloat16/float16 values are float32 values: same bins
        x = x.float()
    bins = x.view(torch.int32).bitwise_and(0x7FFFFFFF).bitwise_right_shift_(HIST_SHIFT)
    if keep is not None:
        bins.masked_fill_(~keep, HIST_BINS)
    bins = bins.reshape(-1)
    if bins.device.type == "cpu":  # faster there; on CUDA bincount would wait for the host
        hist += torch.bincount(bins, minlength=HIST_BINS + 1)
    else:
        hist.index_add_(0, bins, torch.ones((), dtype=hist.dtype, device=hist.device).expand(bins.numel()))


def bin_value(i: int) -> float:
    """The geometric centre of histogram bin `i` (0 for the zero/subnormal bins)."""
    exponent, mantissa = (i >> 6) - 127, i & 63
    if exponent < -126:
        return 0.0
    return 2.0**exponent * math.sqrt((1 + mantissa / 64) * (1 + (mantissa + 1) / 64))


class RangeAccumulator:
    """Only what a quantization scale needs: max |a| and the log-histogram of |a| (every row)."""

    def __init__(self) -> None:
        self.absmax: Optional[torch.Tensor] = None
        self.hist: Optional[torch.Tensor] = None

    @torch.no_grad()
    def update(self, x: torch.Tensor, ctx: BatchContext) -> None:
        valid = ctx.on(x.device).valid
        ok = torch.isfinite(x) & valid[..., None]
        xz = torch.where(ok, x, 0)
        m = torch.linalg.vector_norm(xz, ord=math.inf).double()
        if self.absmax is None:
            self.absmax = m
            self.hist = torch.zeros(HIST_BINS + 1, dtype=torch.float64, device=x.device)
        else:
            torch.maximum(self.absmax, m, out=self.absmax)
        add_log_histogram(self.hist, xz, ok)

    def quantiles(self, quantiles: dict[str, float]) -> dict[str, float]:
        return histogram_quantiles(self.hist.cpu(), quantiles)


def histogram_quantiles(hist: torch.Tensor, quantiles: Optional[dict[str, float]] = None) -> dict[str, float]:
    """Quantiles of |a| from a log-histogram [HIST_BINS + 1] (its last slot is not counted)."""
    cum = torch.cumsum(hist[:HIST_BINS], 0)
    total = float(cum[-1])
    if total <= 0:
        return {}
    out: dict[str, float] = {}
    for name, q in (quantiles or QUANTILES).items():
        rank = max(1.0, math.ceil(q * total))
        i = int(torch.searchsorted(cum, torch.tensor(rank, dtype=cum.dtype)).item())
        out[name] = bin_value(min(i, HIST_BINS - 1))
    return out
