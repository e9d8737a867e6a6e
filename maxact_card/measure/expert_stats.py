"""Inside the experts: per-expert statistics of the experts sites, routing counts, calibration ranges.

The experts seam (experts.py) hands these observers rows: one per (token, expert) assignment, with
the expert of each row and its token (an index into the batch's flattened tokens). Padding tokens
are routed like real ones; their rows never count. Everything reduces on the rows' device into
preallocated state, with no host sync:

* `ExpertBank`: for every experts site (`layers.{i}.mlp.experts.gate`, `.down_in`) the count, sums,
  signed extremes and each expert's max |a| with its location (ties: the earliest token), and for
  every MoE layer the assignments per expert;
* `ExpertRange`: what a static scale needs, per expert (max |a|, calibration assignments) and over
  the layer's experts together (the log-histogram for clip percentiles, NVFP4's block amaxes).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..report import ExpertLayer, Location, SiteStats, TopValue
from ..sites import ModelSites
from .context import NO_KEY, BatchContext
from .experts import Observing, tapped
from .observers import KeepBest, Merge, Observer
from .quant_observers import RangeObserver
from .site_stats import MOMENT_MERGES, TOP_K, moment_totals, moments

BEST = KeepBest(1, "e_score", "e_key", ("e_score", "e_key", "e_val", "e_loc"), dim=2)


@dataclass(frozen=True)
class ExpertSite:
    name: str
    kind: str  # "mlp.experts.gate" | "mlp.experts.down_in"
    layer: int
    slot: int  # the MoE layer's row in the routing counts


def best_rows(score: torch.Tensor, key: torch.Tensor, group: torch.Tensor, groups: int) -> tuple[torch.Tensor, ...]:
    """Per group (expert): the highest score, the smallest key among the rows holding it, and that
    row's index (-1 where the group has no row with score >= 0). No host sync."""
    dev = score.device
    best = torch.full((groups,), -1.0, dtype=score.dtype, device=dev).scatter_reduce(0, group, score, "amax")
    cand = (score == best[group]) & (score >= 0)
    bkey = torch.full((groups,), NO_KEY, dtype=torch.int64, device=dev).scatter_reduce(
        0, group, torch.where(cand, key, NO_KEY), "amin")
    win = cand & (key == bkey[group])
    idx = torch.arange(score.shape[0], device=dev)
    row = torch.full((groups,), -1, dtype=torch.int64, device=dev).scatter_reduce(
        0, group, torch.where(win, idx, -1), "amax")
    return best, bkey, row


class ExpertBank(Observer):
    """Statistics of every experts site, per expert, and the routing counts of every MoE layer.

    Like the probe's SiteBank, a hook only reduces each row into row buffers (five reductions);
    `fold()` after the forward pass turns the rows of every experts site at once into the state.
    A row holding a NaN/Inf is left out whole and counted in `nonfinite` (as rows)."""

    MERGES = {**MOMENT_MERGES, "routed": Merge.SUM}
    GROUPS = (BEST,)

    def __init__(self, sites: Sequence[ExpertSite], layers: int, experts: int,
                 device: torch.device | str = "cpu") -> None:
        P, E, dev = len(sites), experts, torch.device(device)
        f64, i64 = torch.float64, torch.int64
        self.sites, self.experts = tuple(sites), E
        vars(self).update(moment_totals(P, dev))
        self.e_score = torch.full((P, E, 1), -1.0, dtype=f64, device=dev)
        self.e_key = torch.full((P, E, 1), NO_KEY, dtype=i64, device=dev)
        self.e_val = torch.zeros(P, E, 1, dtype=f64, device=dev)
        self.e_loc = torch.full((P, E, 1, 4), -1, dtype=i64, device=dev)
        self.routed = torch.zeros(layers, E, dtype=i64, device=dev)
        self._rows: Optional[dict[str, torch.Tensor]] = None
        self._fired = [False] * P
        self._width = [0] * P
        # Each site's slot in the routing counts (its down input's rows: every expert layer has one).
        self._route = torch.tensor([s.slot if s.kind == "mlp.experts.down_in" else -1 for s in sites], device=dev)

    def _buffers(self, x: torch.Tensor, S: int) -> dict[str, torch.Tensor]:
        r = self._rows
        if r is None or r["rmax"].shape[1] != S or r["rmax"].device != x.device or r["rmax"].dtype != x.dtype:
            P, dev = len(self.sites), x.device
            r = {n: torch.empty(P, S, dtype=x.dtype, device=dev) for n in ("rmax", "mx", "mn")}
            r.update({n: torch.empty(P, S, dtype=torch.float32, device=dev) for n in ("s1", "s2")})
            r.update({n: torch.zeros(P, S, dtype=torch.int64, device=dev) for n in ("ch", "expert", "token")})
            self._rows = r
        return r

    @torch.no_grad()
    def update_site(self, p: int, x: torch.Tensor, expert_g: torch.Tensor, token_g: torch.Tensor,
                    ctx: BatchContext) -> None:
        """Inside the seam: row reductions of site p's rows x [S, C] into the row buffers."""
        r = self._buffers(x, x.shape[0])
        torch.max(x.abs(), -1, out=(r["rmax"][p], r["ch"][p]))
        torch.amax(x, -1, out=r["mx"][p])
        torch.amin(x, -1, out=r["mn"][p])
        torch.sum(x, -1, dtype=torch.float32, out=r["s1"][p])
        torch.linalg.vector_norm(x, 2, -1, dtype=torch.float32, out=r["s2"][p])
        r["expert"][p].copy_(expert_g)
        r["token"][p].copy_(token_g)
        self._fired[p], self._width[p] = True, x.shape[1]

    def discard(self) -> None:
        self._fired = [False] * len(self.sites)

    @torch.no_grad()
    def fold(self, ctx: BatchContext) -> None:
        """Commit the rows of the forward pass just run (no host sync)."""
        if not any(self._fired) or self._rows is None:
            return
        r = self._rows
        dev = self.count.device
        P, S = r["rmax"].shape
        E = self.experts
        rows = ctx.on(dev).rows()
        fired = torch.tensor(self._fired, device=dev)
        token = r["token"].to(dev)
        expert = r["expert"].to(dev)
        valid = rows.valid[token] & fired[:, None]
        rmax, mx, mn = r["rmax"].to(dev).double(), r["mx"].to(dev).double(), r["mn"].to(dev).double()
        fin = torch.isfinite(rmax)
        ok = valid & fin
        width = torch.tensor(self._width, dtype=torch.int64, device=dev)
        self.count += ok.sum(-1) * width
        self.nonfinite += (valid & ~fin).sum(-1)
        torch.maximum(self.max, torch.where(ok, mx, -math.inf).amax(-1), out=self.max)
        torch.minimum(self.min, torch.where(ok, mn, math.inf).amin(-1), out=self.min)
        self.sum += torch.where(ok, r["s1"].to(dev).double(), 0).sum(-1)
        self.sumsq += torch.where(ok, r["s2"].to(dev).double().square(), 0).sum(-1)
        route = self._route[:, None].expand(P, S)
        self.routed.view(-1).index_add_(0, (route.clamp(min=0) * E + expert).reshape(-1),
                                        (valid & (route >= 0)).reshape(-1).to(torch.int64))
        score = torch.where(ok, rmax, -1.0).reshape(-1)
        key = rows.key[token].reshape(-1)
        group = (torch.arange(P, device=dev)[:, None] * E + expert).reshape(-1)
        best, bkey, row = best_rows(score, key, group, P * E)
        has = row >= 0
        i = row.clamp(min=0)
        ch = r["ch"].to(dev).reshape(-1)[i]
        loc = torch.cat([rows.loc[token.reshape(-1)[i]], ch[:, None]], dim=-1)
        # The signed value at the row's largest |a|: its max or its min.
        val = torch.where(mx.reshape(-1)[i] >= -mn.reshape(-1)[i], mx.reshape(-1)[i], mn.reshape(-1)[i])
        cand = {"e_score": torch.where(has, best, -1.0).view(P, E, 1), "e_key": torch.where(has, bkey, NO_KEY).view(P, E, 1),
                "e_val": val.view(P, E, 1), "e_loc": loc.view(P, E, 1, 4)}
        old_s, old_k = self.e_score, self.e_key
        better = (cand["e_score"] > old_s) | ((cand["e_score"] == old_s) & (cand["e_key"] < old_k))
        self.e_val.copy_(torch.where(better, cand["e_val"], self.e_val))
        self.e_loc.copy_(torch.where(better[..., None], cand["e_loc"], self.e_loc))
        self.e_score.copy_(torch.where(better, cand["e_score"], old_s))
        self.e_key.copy_(torch.where(better, cand["e_key"], old_k))
        self.discard()

    # -- results ----------------------------------------------------------------------------------------
    def result(self, decode: Callable[[int], str] = str) -> tuple[SiteStats, ...]:
        h = {n: t.detach().cpu() for n, t in self.state_dict().items()}
        return tuple(_site_result(s, p, h, decode) for p, s in enumerate(self.sites))

    def layers(self, moe: Sequence[tuple[int, str]], sites: Sequence[SiteStats],
               uncalibrated: Optional[dict[int, tuple[int, ...]]] = None) -> tuple[ExpertLayer, ...]:
        """One ExpertLayer per MoE layer: `moe` lists (layer, router module) in slot order."""
        routed = self.routed.cpu().tolist()
        out = []
        for slot, (layer, router) in enumerate(moe):
            counts = routed[slot][: self.experts]
            total = sum(counts)
            down = next((s for s in sites if s.layer == layer and s.kind == "mlp.experts.down_in"), None)
            top = down.absmax_location if down is not None else None
            out.append(ExpertLayer(
                layer=layer, experts=len(counts), router=router, routed=tuple(counts),
                dead=tuple(e for e, c in enumerate(counts) if c == 0),
                imbalance=max(counts) * len(counts) / total if total else 0.0,
                down_in_absmax=down.absmax if down is not None else None,
                down_in_expert=top.expert if top is not None else None,
                uncalibrated=(uncalibrated or {}).get(layer, ()),
            ))
        return tuple(out)


def _location(loc: Sequence[int], val: float, expert: int, decode) -> Location:
    s, pos, tok, c = loc
    return Location(sample=s, position=pos, token_id=tok, token=decode(tok), channel=c, sign=1 if val >= 0 else -1,
                    expert=expert)


def _site_result(info: ExpertSite, p: int, h: dict, decode) -> SiteStats:
    count, nonfinite = int(h["count"][p]), int(h["nonfinite"][p])
    scores = h["e_score"][p, :, 0].tolist()
    vals = h["e_val"][p, :, 0].tolist()
    locs = h["e_loc"][p, :, 0].tolist()
    per_expert = tuple(TopValue(value=v, location=_location(loc, v, e, decode)) if sc >= 0 else None
                       for e, (sc, v, loc) in enumerate(zip(scores, vals, locs)))
    ranked = sorted((t for t in per_expert if t is not None),
                    key=lambda t: (-abs(t.value), t.location.sample, t.location.position, t.location.expert))
    if count == 0 or not ranked:
        return SiteStats(info.name, info.kind, info.layer, count, nonfinite, None, None, None, None, None, None, None,
                         None, {}, (), 0, (), per_expert)
    mean, std, rms = moments(h, p, count)
    return SiteStats(
        name=info.name, kind=info.kind, layer=info.layer, count=count, nonfinite=nonfinite, nonfinite_location=None,
        max=float(h["max"][p]), min=float(h["min"][p]), absmax=abs(ranked[0].value),
        absmax_location=ranked[0].location, mean=mean, std=std, rms=rms,
        quantiles={}, top=tuple(ranked[:TOP_K]), massive=0, top_channels=(), per_expert=per_expert,
    )


class ExpertRange(RangeObserver):
    """A RangeObserver over all experts of one input together, plus each expert's max |a| and its
    calibration assignments (what per-expert static scales and the uncalibrated list need)."""

    MERGES = {**RangeObserver.MERGES, "expert_absmax": Merge.MAX, "expert_rows": Merge.SUM}

    def __init__(self, experts: int, device: torch.device | str = "cpu", *,
                 accelerator: Optional[bool] = None) -> None:
        super().__init__(device, accelerator=accelerator)
        self.expert_absmax = torch.zeros(experts, dtype=torch.float64, device=device)
        self.expert_rows = torch.zeros(experts, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update_rows(self, x: torch.Tensor, expert_g: torch.Tensor, token_g: torch.Tensor, ctx: BatchContext) -> None:
        if self.expert_absmax.device != x.device:
            self.expert_absmax, self.expert_rows = self.expert_absmax.to(x.device), self.expert_rows.to(x.device)
        valid = ctx.on(x.device).rows().valid[token_g]
        xz = self.fold_rows(x, valid)
        self.expert_absmax.scatter_reduce_(0, expert_g, xz.abs().amax(-1).double(), "amax")
        self.expert_rows.index_add_(0, expert_g, valid.to(torch.int64))

    def uncalibrated(self) -> tuple[int, ...]:
        return tuple(int(e) for e in (self.expert_rows == 0).nonzero().reshape(-1).tolist())

    def scales_absmax(self) -> torch.Tensor:
        """Each expert's calibration max |a|; the layer's (all experts) where an expert got no token."""
        return torch.where(self.expert_rows > 0, self.expert_absmax, self.absmax).float()


class _BankTap(Observing):
    """Feeds one MoE layer's rows into the bank, with the forward's batch context."""

    def __init__(self, bank: ExpertBank, gate: Optional[int], down: Optional[int], ctx: BatchContext):
        self.bank, self.gate_p, self.down_p, self.ctx = bank, gate, down, ctx

    def gate(self, x, expert_g, token_g) -> None:
        if self.gate_p is not None:
            self.bank.update_site(self.gate_p, x, expert_g, token_g, self.ctx)

    def down_in(self, x, expert_g, token_g) -> None:
        if self.down_p is not None:
            self.bank.update_site(self.down_p, x, expert_g, token_g, self.ctx)


class ProbeExperts:
    """The probe inside the experts of every MoE layer: the bank and the taps that feed it."""

    def __init__(self, model_sites: ModelSites, device: torch.device) -> None:
        sites = model_sites.expert_sites
        layers = [layer for layer, _ in model_sites.routers]
        self.routers = model_sites.routers
        self.modules = [next(s.module for s in sites if s.layer == layer) for layer in layers]
        slot = {layer: k for k, layer in enumerate(layers)}
        infos = [ExpertSite(s.name, s.kind, s.layer, slot[s.layer]) for s in sites]
        self.bank = ExpertBank(infos, len(layers), max(m.num_experts for m in self.modules), device)
        self._index = {(i.layer, i.kind): p for p, i in enumerate(infos)}

    def taps(self, ctx: BatchContext) -> contextlib.AbstractContextManager[None]:
        taps = [_BankTap(self.bank, self._index.get((layer, "mlp.experts.gate")),
                         self._index.get((layer, "mlp.experts.down_in")), ctx) for layer, _ in self.routers]
        return tapped(self.modules, taps)
