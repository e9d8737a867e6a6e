"""Streaming statistics of every probe site: per-row reductions inside the hooks, one fold per forward.

A hook reduces each token row of its activation [B, T, C] into preallocated row buffers
(row_stats.py), a few full-tensor reductions and nothing else: max and min with their channels, the float32 sum and L2
norm, the histogram bins of every `hist_stride`-th row, and (residual sites) the channel maxima.
After the forward pass, `fold()` turns the rows of every site at once into the statistics:
count, max, min, sums, the top rows with their locations (M's location is the first), the
histogram, the massive-activation count and the non-finite values.

Two per-site modes cost more and are taken only where the data needs them:
* `exact`: NaN/Inf are counted, located and excluded (masked element by element);
* `massive`: each row's median |a| is found, for Sun et al.'s massive activations (|a| > 100 and
  > 1000x the median |a| of its token); a row whose max |a| is at most 100 holds none.
On the CPU the hook decides (asking the data is free there). On an accelerator a hook never waits
for the device: `fold()` reports the sites that need a mode they are not in, the batch loop sets
it and runs the batch again (at most twice per site over a whole audit), and only a clean fold
commits. Sums cross rows and batches in float64; padding rows never count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..report import ChannelMax, Location, SiteStats, TopValue
from .context import NO_KEY, BatchContext, Rows
from .histogram import FINE_BINS, HIST_BINS, coarse, histogram_quantiles
from .observers import KeepBest, Merge, Observer
from .row_stats import MASSIVE_ABS, SPREAD, TOP_K, Scratch, channel_and_value, cpu_rows, device_rows

# Every site's running totals, per site: how the banks allocate them, merge them across
# processes, and derive mean, std and rms from them.
MOMENT_MERGES = {"count": Merge.SUM, "nonfinite": Merge.SUM, "max": Merge.MAX, "min": Merge.MIN, "sum": Merge.SUM,
                 "sumsq": Merge.SUM}


def moment_totals(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The MOMENT_MERGES tensors of n sites, empty (a bank sets them as its attributes)."""
    f64, i64 = torch.float64, torch.int64
    return {"count": torch.zeros(n, dtype=i64, device=device), "nonfinite": torch.zeros(n, dtype=i64, device=device),
            "max": torch.full((n,), -math.inf, dtype=f64, device=device),
            "min": torch.full((n,), math.inf, dtype=f64, device=device),
            "sum": torch.zeros(n, dtype=f64, device=device), "sumsq": torch.zeros(n, dtype=f64, device=device)}


def moments(h: dict, i: int, count: int) -> tuple[float, float, float]:
    """(mean, std, rms) of site i from its host totals (count > 0)."""
    mean, ms = float(h["sum"][i]) / count, float(h["sumsq"][i]) / count
    return mean, math.sqrt(max(ms - mean * mean, 0.0)), math.sqrt(ms)


TOP_CHANNELS = 16

TOP = KeepBest(TOP_K, "top_score", "top_key", ("top_score", "top_key", "top_val", "top_loc"), dim=1)
FIRST_NONFINITE = KeepBest(1, "nf_score", "nf_key", ("nf_score", "nf_key", "nf_loc"), dim=1)


@dataclass(frozen=True)
class SiteInfo:
    name: str
    kind: str
    layer: Optional[int]
    channels: bool = False  # keep per-channel max |a| (residual sites)
    streams: int = 1  # rows hold every residual stream of a token: channel = stream * width + c


class SiteBank(Observer):
    """Statistics of every probe site, as one observer with a leading site dimension."""

    def __init__(self, sites: Sequence[SiteInfo], device: torch.device | str = "cpu", *, hist_stride: int = 1,
                 accelerator: Optional[bool] = None, samples: int = 0) -> None:
        S, dev = len(sites), torch.device(device)
        f64, i64 = torch.float64, torch.int64
        self.sites = tuple(sites)
        self.hist_stride = hist_stride
        # None: the accelerator path on every device but the CPU; True forces it (tests, op counts).
        self.accelerator = accelerator
        vars(self).update(moment_totals(S, dev))
        self.massive = torch.zeros(S, dtype=i64, device=dev)
        self.hist = torch.zeros(S, HIST_BINS, dtype=f64, device=dev)  # 64 bins per octave
        self.top_score = torch.full((S, TOP_K), -1.0, dtype=f64, device=dev)
        self.top_key = torch.full((S, TOP_K), NO_KEY, dtype=i64, device=dev)
        self.top_val = torch.zeros(S, TOP_K, dtype=f64, device=dev)
        self.top_loc = torch.full((S, TOP_K, 4), -1, dtype=i64, device=dev)
        self.nf_score = torch.full((S, 1), -1.0, dtype=f64, device=dev)
        self.nf_key = torch.full((S, 1), NO_KEY, dtype=i64, device=dev)
        self.nf_loc = torch.full((S, 1, 4), -1, dtype=i64, device=dev)
        # max |a| of each corpus sample over every site (inf where it met a NaN/Inf; -1: not seen):
        # what the bootstrap interval of M resamples.
        self.sample_max = torch.full((samples,), -1.0, dtype=f64, device=dev)
        self.chan_sites = [i for i, s in enumerate(sites) if s.channels]
        self.chan: Optional[torch.Tensor] = None  # [len(chan_sites), C] float32, once C is known
        self._chan_scratch: Optional[torch.Tensor] = None
        self.exact = [False] * S  # accelerator modes, set by the batch loop from fold()'s answer
        self.massive_mode = [False] * S
        self._scratch: dict[tuple, Scratch] = {}
        self._width = [0] * S
        self.row_width = [0] * S  # each site's row width (every stream of a multi-stream residual)
        self._fired: list[Optional[Scratch]] = [None] * S
        self._repeat: dict[tuple, Scratch] = {}  # a second call's rows (site_stats._again)
        self._chan_row = {s: r for r, s in enumerate(self.chan_sites)}

    # -- the observer interface ----------------------------------------------------------------------
    MERGES_BASE = {**MOMENT_MERGES, "massive": Merge.SUM, "hist": Merge.SUM, "sample_max": Merge.MAX}
    GROUPS = (TOP, FIRST_NONFINITE)

    @property
    def MERGES(self):  # type: ignore[override]
        return {**self.MERGES_BASE, **({"chan": Merge.MAX} if self.chan is not None else {})}

    def merge(self, other) -> None:
        theirs = other.state_dict() if isinstance(other, Observer) else other
        if self.chan is None and "chan" in theirs:
            self.chan = torch.zeros_like(theirs["chan"], device=self.count.device)
        super().merge(theirs)

    def load_state_dict(self, state) -> None:
        if self.chan is None and "chan" in state:
            self.chan = torch.zeros_like(state["chan"], device=self.count.device)
        elif self.chan is not None and "chan" not in state:
            self.chan = None
        super().load_state_dict(state)

    def hook(self, i: int) -> Callable[[torch.Tensor, BatchContext], None]:
        return lambda x, ctx: self.update_site(i, x, ctx)

    def update(self, x: torch.Tensor, ctx: BatchContext) -> None:
        """A bank of one site: the Observer interface's update."""
        self.update_site(0, x, ctx)

    # -- inside a hook ----------------------------------------------------------------------------------
    @torch.no_grad()
    def update_site(self, i: int, x: torch.Tensor, ctx: BatchContext) -> None:
        ctx = ctx.on(x.device)
        rows = ctx.rows()
        C = x.shape[-1]
        x2 = x.reshape(-1, C)
        offset = ctx.forward % self.hist_stride
        if self._fired[i] is not None:
            self._again(i, x2, rows, offset)
            return
        key = (x.device, x.dtype, x2.shape[0])
        sc = self._scratch.get(key)
        if sc is None:
            sc = self._scratch[key] = Scratch(len(self.sites), x2.shape[0], x.device, x.dtype,
                                               self._on_accelerator(x))
        sc.sites.append(i)
        self._fired[i] = sc
        self._width[i] = self.row_width[i] = C
        if sc.device_path:
            device_rows(sc, i, x2, rows, offset, self.hist_stride, self.exact[i], self.massive_mode[i], sc.hist[i])
            exact = self.exact[i]
        else:
            exact = cpu_rows(sc, i, x2, rows, offset, self.hist_stride, float(self.top_score[i, -1]), self.hist[i])
        if i in self._chan_row:
            self._channels(i, x2, rows, C, exact)

    def _again(self, i: int, x2: torch.Tensor, rows: Rows, offset: int) -> None:
        """Site i runs again in this forward pass (a looped layer, a norm applied twice): this call's
        rows go to a one-site scratch, then combine row by row with the earlier calls' (a row is a
        token: its max over every call, the sums of all of them)."""
        sc = self._fired[i]
        N, C = x2.shape
        if sc.N != N or sc.dtype != x2.dtype or sc.mx.device != x2.device or self._width[i] % C:
            raise RuntimeError(f"probe site {self.sites[i].name} ran twice in one forward pass with "
                               "different shapes; please open an issue with the model id")
        key = (x2.device, x2.dtype, N)
        tmp = self._repeat.get(key)
        if tmp is None:
            tmp = self._repeat[key] = Scratch(1, N, x2.device, x2.dtype, sc.device_path)
        for t in (tmp.nf, tmp.nfc, tmp.mas):  # written only in the modes that need them
            t.zero_()
        if sc.device_path:
            device_rows(tmp, 0, x2, rows, offset, self.hist_stride, self.exact[i], self.massive_mode[i], sc.hist[i])
            exact = self.exact[i]
        else:
            exact = cpu_rows(tmp, 0, x2, rows, offset, self.hist_stride, float(self.top_score[i, -1]), self.hist[i])
        if sc.ch is not None:  # the CPU path's channel and value of each row's largest |a|
            take = torch.maximum(tmp.mx[0], tmp.mn[0].neg()) > torch.maximum(sc.mx[i], sc.mn[i].neg())
            sc.ch[i] = torch.where(take, tmp.ch[0], sc.ch[i])
            sc.val[i] = torch.where(take, tmp.val[0], sc.val[i])
        up, down = tmp.mx[0] > sc.mx[i], tmp.mn[0] < sc.mn[i]
        sc.imx[i] = torch.where(up, tmp.imx[0], sc.imx[i])
        sc.imn[i] = torch.where(down, tmp.imn[0], sc.imn[i])
        torch.maximum(sc.mx[i], tmp.mx[0], out=sc.mx[i])
        torch.minimum(sc.mn[i], tmp.mn[0], out=sc.mn[i])
        sc.s1[i] += tmp.s1[0]
        torch.hypot(sc.s2[i], tmp.s2[0], out=sc.s2[i])
        sc.nfc[i] = torch.where(sc.nf[i] > 0, sc.nfc[i], tmp.nfc[0])
        sc.nf[i] += tmp.nf[0]
        sc.mas[i] += tmp.mas[0]
        self._width[i] += C
        if i in self._chan_row:
            self._channels(i, x2, rows, C, exact, again=True)

    def _on_accelerator(self, x: torch.Tensor) -> bool:
        return self.accelerator if self.accelerator is not None else x.device.type != "cpu"

    def _channels(self, i: int, x2: torch.Tensor, rows: Rows, C: int, exact: bool, again: bool = False) -> None:
        if self._chan_scratch is None or self._chan_scratch.shape[1] != C or self._chan_scratch.device != x2.device:
            self._chan_scratch = torch.zeros(len(self.chan_sites), C, dtype=torch.float32, device=x2.device)
        row = self._chan_scratch[self._chan_row[i]]
        out = torch.empty_like(row) if again else row
        self._channel_max(out, x2, rows, exact)
        if again:
            torch.maximum(row, out, out=row)

    def _channel_max(self, out: torch.Tensor, x2: torch.Tensor, rows: Rows, exact: bool) -> None:
        if not self._on_accelerator(x2):
            valid = x2 if bool(rows.valid.all()) else x2[rows.valid]
            if exact:
                valid = torch.where(torch.isfinite(valid), valid, 0)
            if valid.shape[0]:  # max(max, -min): two contiguous reductions, far faster than an inf-norm
                out.copy_(torch.maximum(valid.amax(0), valid.amin(0).neg()))
            else:
                out.zero_()
            return
        ok = rows.valid[:, None] & torch.isfinite(x2) if exact else rows.valid[:, None]
        torch.linalg.vector_norm(torch.where(ok, x2, 0), ord=math.inf, dim=0, dtype=torch.float32, out=out)

    # -- after the forward pass -------------------------------------------------------------------------
    @torch.no_grad()
    def fold(self, ctx: BatchContext) -> list[tuple[int, str]]:
        """Commit this forward's rows; or, where a site needs a mode it is not in, commit nothing and
        return [(site, 'exact' | 'massive'), ...] (the batch must run again with those modes)."""
        groups = [sc for sc in self._scratch.values() if sc.sites]
        if not groups:
            return []
        f = self._gather(groups)
        dev = self.count.device
        rows = ctx.on(dev).rows()
        S, N = f["mx"].shape
        fired = torch.tensor([s is not None for s in self._fired], device=dev)
        live = fired[:, None] & rows.valid[None, :]
        width = torch.tensor(self._width, dtype=torch.int64, device=dev)
        rowcount = torch.where(live, width[:, None] - f["nf"], 0)
        has = rowcount > 0
        mx, mn = f["mx"], f["mn"]
        rabs = torch.where(has, torch.maximum(mx, mn.neg()), -1.0)
        device_path = any(self._on_accelerator(sc.mx) for sc in groups)
        if device_path and self._wants_modes():
            need = self._needs(live, mx, mn, rabs)
            if need:
                self._discard()
                return need
        self.count += rowcount.sum(-1)
        self.nonfinite += torch.where(live, f["nf"], 0).sum(-1)
        torch.maximum(self.max, torch.where(has, mx, -math.inf).amax(-1), out=self.max)
        torch.minimum(self.min, torch.where(has, mn, math.inf).amin(-1), out=self.min)
        self.sum += torch.where(live, f["s1"], 0).sum(-1)
        self.sumsq += torch.where(live, f["s2"] * f["s2"], 0).sum(-1)
        self.massive += torch.where(live, f["mas"], 0).sum(-1)
        if "hist" in f:  # the accelerator path's counts (the CPU path counted into the state)
            hist_rows = (torch.arange(N, device=dev) % self.hist_stride == ctx.forward % self.hist_stride)
            pad = (hist_rows & ~rows.valid).sum()
            zeros = pad * width + torch.where(hist_rows, f["nf"], 0).sum(-1)  # routed to bin 0, not counted
            hist = coarse(f["hist"]).double()
            hist[:, 0] -= zeros
            on_device = torch.tensor([sc is not None and sc.device_path for sc in self._fired], device=dev)
            self.hist += torch.where(on_device[:, None], hist, 0)
        key = rows.key.expand(S, N)
        cand = {"top_score": rabs, "top_key": key, "top_val": f["val"],
                "top_loc": torch.cat([rows.loc.expand(S, N, 3), f["ch"][..., None]], dim=-1)}
        if not device_path:  # the CPU may ask: only rows at or above each site's 16th can enter
            cand = _top_candidates(cand, rabs)
        self.keep(TOP, cand)
        if self.sample_max.numel():
            row_max = torch.where(live & (f["nf"] > 0), math.inf, rabs).amax(0)
            self.sample_max.scatter_reduce_(0, rows.loc[:, 0], row_max, "amax")
        if (device_path and any(self.exact[i] for i, s in enumerate(self._fired) if s is not None)) or \
                (not device_path and bool((f["nf"] > 0).any())):
            bad = live & (f["nf"] > 0)
            nf_loc = torch.cat([rows.loc.expand(S, N, 3), f["nfc"][..., None]], dim=-1)
            self.keep(FIRST_NONFINITE, {"nf_score": torch.where(bad, 0.0, -1.0), "nf_loc": nf_loc,
                                        "nf_key": torch.where(bad, key, NO_KEY)})
        if self._chan_scratch is not None:
            if self.chan is None:
                self.chan = torch.zeros_like(self._chan_scratch, device=dev)
            torch.maximum(self.chan, self._chan_scratch.to(dev), out=self.chan)
        self._discard()
        return []

    def _wants_modes(self) -> bool:
        return not all(self.exact[i] or self.massive_mode[i] for i, s in enumerate(self._fired) if s is not None)

    def _needs(self, live, mx, mn, rabs) -> list[tuple[int, str]]:
        """One host sync per forward pass: the sites whose rows call for a mode they are not in."""
        dev = mx.device
        exact = torch.tensor(self.exact, device=dev)
        massive = torch.tensor(self.massive_mode, device=dev)
        bad = (live & ~(torch.isfinite(mx) & torch.isfinite(mn))).any(-1) & ~exact
        big = (live & (rabs > MASSIVE_ABS)).any(-1) & ~massive & ~exact
        codes = (bad.to(torch.int8) * 2 + big.to(torch.int8)).tolist()
        return [(i, "exact" if c >= 2 else "massive") for i, c in enumerate(codes) if c]

    def set_mode(self, site: int, mode: str) -> None:
        if mode == "exact":
            self.exact[site] = True
        self.massive_mode[site] = True

    def _discard(self) -> None:
        for sc in self._scratch.values():
            if sc.sites:
                sc.clear()
        self._fired = [None] * len(self.sites)

    def discard(self) -> None:
        """Forget the rows of a forward pass that did not finish (out of memory)."""
        self._discard()

    def _gather(self, groups: list[Scratch]) -> dict[str, torch.Tensor]:
        """The row buffers of every group as one set on the bank's device (float64 values)."""
        dev = self.count.device
        sets = [_group_rows(sc, dev) for sc in groups]
        if len(sets) == 1:
            return sets[0]
        out = {}
        for n in set().union(*sets):
            have = [(sc, part[n]) for sc, part in zip(groups, sets) if n in part]
            merged = have[0][1].clone()
            for sc, t in have[1:]:
                idx = torch.tensor(sc.sites, device=dev)
                merged[idx] = t[idx]
            out[n] = merged
        return out

    # -- results ----------------------------------------------------------------------------------------
    def result(self, decode: Callable[[int], str] = str) -> tuple[SiteStats, ...]:
        host = {n: t.detach().cpu() for n, t in self.state_dict().items()}
        host["width"] = self.row_width
        return tuple(_site_result(s, i, host, self._chan_row.get(i), decode) for i, s in enumerate(self.sites))


def _group_rows(sc: Scratch, dev: torch.device) -> dict[str, torch.Tensor]:
    """One group's row buffers on `dev`, values in float64; with each row's channel of its largest
    |a| (`ch`, the first among equals) and that signed value (`val`)."""
    out = {n: getattr(sc, n).to(dev) for n in ("mx", "mn", "s1", "s2", "nf", "nfc", "mas")}
    if sc.hist is not None:
        out["hist"] = sc.hist.view(sc.hist.shape[0], SPREAD, FINE_BINS).sum(1, dtype=torch.int32).to(dev)
    for n in ("mx", "mn", "s1", "s2"):
        out[n] = out[n].double()
    if sc.device_path:
        out["ch"], out["val"] = channel_and_value(out["mx"], out["mn"], sc.imx.to(dev), sc.imn.to(dev))
    else:
        out["ch"], out["val"] = sc.ch.to(dev), sc.val.to(dev)
    return out


def _top_candidates(cand: dict[str, torch.Tensor], rabs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows of each site whose score is at least its TOP_K-th (ties included), as a fixed number
    of columns: what the top rows' merge needs, without sorting every row (reads a count: CPU only)."""
    k = min(TOP_K, rabs.shape[1])
    bound = rabs.topk(k, dim=1).values[:, -1:]
    width = int((rabs >= bound).sum(1).max())
    idx = rabs.topk(width, dim=1).indices
    return {n: t.gather(1, idx if t.dim() == 2 else idx[..., None].expand(-1, -1, t.shape[2])) for n, t in cand.items()}


def _site_result(info: SiteInfo, i: int, h: dict, chan_row: Optional[int], decode) -> SiteStats:
    count, nonfinite = int(h["count"][i]), int(h["nonfinite"][i])

    width = h["width"][i] // info.streams if info.streams > 1 else 0

    def stream_channel(c: int) -> tuple[Optional[int], int]:
        return divmod(c, width) if width else (None, c)

    def loc(t: torch.Tensor, sign: int) -> Location:
        s, p, tok, c = (int(v) for v in t.tolist())
        stream, c = stream_channel(c)
        return Location(sample=s, position=p, token_id=tok, token=decode(tok), channel=c, sign=sign, stream=stream)

    nf_loc = loc(h["nf_loc"][i, 0], 0) if nonfinite else None
    if count == 0:
        return SiteStats(info.name, info.kind, info.layer, 0, nonfinite, nf_loc, None, None, None, None, None, None,
                         None, {}, (), 0, ())
    mean, std, rms = moments(h, i, count)
    top = tuple(TopValue(value=float(v), location=loc(l, 1 if v >= 0 else -1))
                for v, l, sc in zip(h["top_val"][i].tolist(), h["top_loc"][i], h["top_score"][i].tolist()) if sc >= 0)
    chans: tuple[ChannelMax, ...] = ()
    if chan_row is not None and "chan" in h:
        c = h["chan"][chan_row]
        cv, ci = c.double().topk(min(TOP_CHANNELS, c.numel()))
        chans = tuple(ChannelMax(channel=stream_channel(k)[1], absmax=float(v), stream=stream_channel(k)[0])
                      for v, k in zip(cv.tolist(), ci.tolist()))
    return SiteStats(
        name=info.name, kind=info.kind, layer=info.layer, count=count, nonfinite=nonfinite, nonfinite_location=nf_loc,
        max=float(h["max"][i]), min=float(h["min"][i]), absmax=abs(top[0].value), absmax_location=top[0].location,
        mean=mean, std=std, rms=rms, quantiles=histogram_quantiles(h["hist"][i]), top=top, massive=int(h["massive"][i]),
        top_channels=chans,
    )
