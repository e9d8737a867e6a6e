"""A probe hook's work: each token row of a site's activation reduced into preallocated row buffers.

`device_rows` never reads a value back to the host and makes no data-dependent shape (what an
accelerator's hooks may do); `cpu_rows` computes the same statistics where reading a value costs
nothing. The bank (site_stats.py) folds the rows into its statistics after the forward pass.
"""

from __future__ import annotations

import math

import torch

from .context import Rows
from .histogram import FINE_BINS, add_counts, coarse, coarse_bins_host, fine_bins

# The accelerator path counts a site's histogram into SPREAD copies, channel c into copy c % SPREAD,
# summed in the fold: neighbouring values of a row mostly share a bin, and atomic adds to one bin
# wait for each other (one copy: the index_add was half the probe's time on an H200).
SPREAD = 4
TOP_K = 16  # top rows (tokens) per site, each with the channel of its largest |a|
MASSIVE_ABS = 100.0  # Sun et al. 2024: |a| > 100 ...
MASSIVE_RATIO = 1000.0  # ... and > 1000x the median |a| of its token
MASSIVE_CHUNK = 128  # candidate rows examined at a time on the CPU


class Scratch:
    """Row buffers of one forward pass for the sites on one device with one dtype."""

    def __init__(self, S: int, N: int, device: torch.device, dtype: torch.dtype, device_path: bool) -> None:
        f32, i64 = torch.float32, torch.int64
        self.N, self.dtype, self.device_path = N, dtype, device_path
        self.mx = torch.empty(S, N, dtype=dtype, device=device)
        self.mn = torch.empty(S, N, dtype=dtype, device=device)
        self.imx = torch.empty(S, N, dtype=i64, device=device)
        self.imn = torch.empty(S, N, dtype=i64, device=device)
        self.s1 = torch.empty(S, N, dtype=f32, device=device)
        self.s2 = torch.empty(S, N, dtype=f32, device=device)
        self.nf = torch.zeros(S, N, dtype=i64, device=device)  # non-finite values per row (exact mode)
        self.nfc = torch.zeros(S, N, dtype=i64, device=device)  # first non-finite channel (exact mode)
        self.mas = torch.zeros(S, N, dtype=i64, device=device)  # massive values per row
        # The CPU path's channel of each row's largest |a| and its signed value (the accelerator path
        # derives them in the fold from the channels of the row's max and min).
        self.ch = torch.zeros(S, N, dtype=i64, device=device) if not device_path else None
        self.val = torch.zeros(S, N, dtype=torch.float64, device=device) if not device_path else None
        # This forward's histogram counts (the CPU path counts straight into the state).
        self.hist = torch.zeros(S, SPREAD * FINE_BINS, dtype=torch.int32, device=device) if device_path else None
        self._spread: dict[int, torch.Tensor] = {}
        self.ones = torch.ones((), dtype=torch.int32, device=device)
        self.sites: list[int] = []

    def spread(self, C: int) -> torch.Tensor:
        """[C] int32: the copy of the histogram each channel counts into (c % SPREAD), as a bin offset."""
        t = self._spread.get(C)
        if t is None:
            t = self._spread[C] = ((torch.arange(C, device=self.mx.device) % SPREAD) * FINE_BINS).to(torch.int32)
        return t

    def clear(self) -> None:
        if self.hist is not None:
            self.hist.zero_()
        self.sites = []


def channel_and_value(mx: torch.Tensor, mn: torch.Tensor, imx: torch.Tensor, imn: torch.Tensor):
    """From each row's max and min and their (first) channels: the first channel of the row's largest
    |a|, and the signed value there."""
    ch = torch.where(mx > mn.neg(), imx, torch.where(mn.neg() > mx, imn, torch.minimum(imx, imn)))
    return ch, torch.where(ch == imx, mx, mn)


def device_rows(sc: Scratch, i: int, x2: torch.Tensor, rows: Rows, offset: int, stride: int, exact: bool,
                 massive: bool, hist: torch.Tensor) -> None:
    """No host sync, no data-dependent shape. Lean: six full-tensor ops."""
    if exact:
        ok = torch.isfinite(x2) & rows.valid[:, None]
        bad = ~ok & rows.valid[:, None]
        torch.sum(bad, -1, out=sc.nf[i])
        torch.argmax(bad.to(torch.uint8), -1, out=sc.nfc[i])
        torch.max(torch.where(ok, x2, -math.inf), -1, out=(sc.mx[i], sc.imx[i]))
        torch.min(torch.where(ok, x2, math.inf), -1, out=(sc.mn[i], sc.imn[i]))
        x2 = torch.where(ok, x2, 0)
    else:
        torch.max(x2, -1, out=(sc.mx[i], sc.imx[i]))
        torch.min(x2, -1, out=(sc.mn[i], sc.imn[i]))
    torch.sum(x2, -1, dtype=torch.float32, out=sc.s1[i])
    torch.linalg.vector_norm(x2, 2, -1, dtype=torch.float32, out=sc.s2[i])
    bins = fine_bins(x2[offset::stride], rows.hist_mask[offset::stride])
    if hist.shape[-1] > FINE_BINS:  # the scratch's SPREAD copies
        bins = bins + sc.spread(bins.shape[-1])
    add_counts(hist, bins, sc.ones, host=False)
    if exact or massive:
        a = x2.abs()
        med = a.kthvalue((a.shape[-1] - 1) // 2 + 1, -1).values
        thr = torch.clamp(med * MASSIVE_RATIO, min=MASSIVE_ABS)
        torch.sum(a > thr[:, None], -1, out=sc.mas[i])


def cpu_rows(sc: Scratch, i: int, x2: torch.Tensor, rows: Rows, offset: int, stride: int, best: float,
              hist: torch.Tensor) -> bool:
    """The same statistics on the CPU, where reading a value costs nothing (and a max with its index
    costs 10x a plain max): a batch with NaN/Inf takes the exact path; the channel of a row's
    largest |a| is found only for rows that can enter the top rows (score >= `best`, the current
    16th); massive-activation medians only for rows that can hold one; histogram counts go straight
    into the state's row `hist` (64 bins per octave). True: the exact path ran."""
    mx, mn = x2.amax(-1), x2.amin(-1)
    bad_rows = ~(torch.isfinite(mx) & torch.isfinite(mn)) & rows.valid
    uncounted = int((~rows.valid[offset::stride]).sum()) * x2.shape[1]  # padding: routed to bin 0
    if bool(bad_rows.any()):
        fine = torch.zeros(FINE_BINS, dtype=torch.int32)
        device_rows(sc, i, x2, rows, offset, stride, exact=True, massive=True, hist=fine)
        sc.ch[i], sc.val[i] = channel_and_value(sc.mx[i].double(), sc.mn[i].double(), sc.imx[i], sc.imn[i])
        hist += coarse(fine).double()
        hist[0] -= uncounted + int(sc.nf[i][offset::stride].sum())  # and the NaN/Inf, read as 0
        return True
    sc.mx[i], sc.mn[i] = mx, mn
    sc.nf[i].zero_()
    torch.sum(x2, -1, dtype=torch.float32, out=sc.s1[i])
    torch.linalg.vector_norm(x2, 2, -1, dtype=torch.float32, out=sc.s2[i])
    add_counts(hist, coarse_bins_host(x2[offset::stride], rows.hist_mask[offset::stride]), host=True)
    hist[0] -= uncounted
    rabs = torch.where(rows.valid, torch.maximum(mx, mn.neg()), -1)
    kth = float(rabs.topk(min(TOP_K, rabs.numel())).values[-1])
    top = (rabs >= max(kth, best, 0.0)).nonzero().reshape(-1)  # ties at the bound included
    sub = x2.index_select(0, top)
    ch = sub.abs().argmax(-1)
    sc.ch[i].index_copy_(0, top, ch)
    sc.val[i].index_copy_(0, top, sub.gather(1, ch[:, None])[:, 0].double())
    sc.mas[i].zero_()
    cand = (rabs > MASSIVE_ABS).nonzero().reshape(-1)
    C = x2.shape[-1]
    for start in range(0, cand.numel(), MASSIVE_CHUNK):
        r = cand[start : start + MASSIVE_CHUNK]
        a = x2.index_select(0, r).abs_()
        # A row whose median is already >= max/1000 holds none: fewer than (C-1)//2 + 1 of its
        # values lie below max/1000. One comparison settles most rows; the rest get a median.
        below = (a < (rabs[r] / MASSIVE_RATIO)[:, None].to(a.dtype)).sum(-1)
        keep = below > (C - 1) // 2
        if bool(keep.any()):
            a, r = a[keep], r[keep]
            thr = torch.clamp(a.median(-1).values * MASSIVE_RATIO, min=MASSIVE_ABS)
            sc.mas[i].index_copy_(0, r, (a > thr[:, None]).sum(-1))
    return False
