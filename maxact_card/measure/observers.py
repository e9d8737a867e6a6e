"""One interface for every statistic an audit keeps: the observer.

An observer holds its state as named tensors, each with a declared merge:

* ``Merge.SUM``, ``Merge.MAX``, ``Merge.MIN``: elementwise;
* ``KeepBest(k, score, key)``: a group of tensors whose first dimension after any leading site
  dimension holds k entries; merging keeps the k entries with the highest ``score``, ties broken by
  the smallest ``key`` (a total order, so the result does not depend on how the data was split).

``update(x, ctx)`` folds in one batch, ``result()`` reads the state back, ``state_dict()`` /
``load_state_dict()`` copy it out and in (the batch loop undoes a batch that ran out of memory
with them), and ``merge(other)`` combines two observers of the same shape with the declared ops
(what processes of a data-parallel run do with each other's state). The arithmetic stays in the
observers' own modules; this one knows only state and merging.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Union

import torch


class Merge(str, enum.Enum):
    SUM = "sum"
    MAX = "max"
    MIN = "min"


@dataclass(frozen=True)
class KeepBest:
    """Keep the `k` best entries of a group of state tensors along `dim` (higher `score` first,
    then smaller `key`). `tensors` names every member of the group, `score` and `key` included."""

    k: int
    score: str
    key: str
    tensors: tuple[str, ...]
    dim: int = 0


MergeSpec = Union[Merge, KeepBest]


def keep_best(score: torch.Tensor, key: torch.Tensor, payload: dict[str, torch.Tensor], k: int,
              dim: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The k best of candidates along `dim`: score descending, then key ascending. No host sync."""
    order = torch.sort(key, dim=dim, stable=True).indices
    order = order.gather(dim, torch.sort(score.gather(dim, order), dim=dim, descending=True, stable=True).indices)
    order = order.narrow(dim, 0, k)

    def take(t: torch.Tensor) -> torch.Tensor:
        idx = order
        while idx.dim() < t.dim():
            idx = idx.unsqueeze(-1)
        return t.gather(dim, idx.expand(*order.shape, *t.shape[order.dim():]))

    return take(score), take(key), {n: take(t) for n, t in payload.items()}


class Observer:
    """Base class: subclasses declare `MERGES` (state name -> Merge, plus KeepBest groups) and keep
    each state tensor as an attribute of that name, allocated once and updated in place."""

    MERGES: dict[str, MergeSpec] = {}
    GROUPS: tuple[KeepBest, ...] = ()

    def state_names(self) -> tuple[str, ...]:
        return tuple(self.MERGES) + tuple(n for g in self.GROUPS for n in g.tensors)

    def update(self, x: torch.Tensor, ctx: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def result(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Copies of every state tensor (on their device)."""
        return {n: getattr(self, n).clone() for n in self.state_names()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.state_names()) - set(state)
        if missing:
            raise KeyError(f"state lacks {sorted(missing)}")
        for n in self.state_names():
            dst = getattr(self, n)
            src = state[n].to(dst.device)
            if src.shape != dst.shape:
                raise ValueError(f"state {n}: shape {tuple(src.shape)} != {tuple(dst.shape)}")
            dst.copy_(src)

    @torch.no_grad()
    def merge(self, other: "Observer | dict[str, torch.Tensor]") -> None:
        """Fold `other`'s state (an observer of the same shape, or its state_dict) into this one."""
        theirs = other.state_dict() if isinstance(other, Observer) else other
        for n, op in self.MERGES.items():
            mine, t = getattr(self, n), theirs[n].to(getattr(self, n).device)
            if op is Merge.SUM:
                mine.add_(t)
            elif op is Merge.MAX:
                torch.maximum(mine, t, out=mine)
            else:
                torch.minimum(mine, t, out=mine)
        for g in self.GROUPS:
            self.keep(g, {n: theirs[n].to(getattr(self, n).device) for n in g.tensors})

    def keep(self, g: KeepBest, cand: dict[str, torch.Tensor]) -> None:
        """Merge candidate entries `cand` (the group's tensors, any count along g.dim) into group g."""
        both = {n: torch.cat([getattr(self, n), cand[n]], dim=g.dim) for n in g.tensors}
        score, key = both.pop(g.score), both.pop(g.key)
        score, key, rest = keep_best(score, key, both, g.k, g.dim)
        getattr(self, g.score).copy_(score)
        getattr(self, g.key).copy_(key)
        for n, t in rest.items():
            getattr(self, n).copy_(t)
