"""From the sites' statistics to the report's headline: M with its location, the maximum of each kind."""

from __future__ import annotations

from typing import Optional, Sequence

from ..report import HEADLINE_KINDS, KIND_ORDER, KindMax, Peak, SiteStats


def peak_of(sites: Sequence[SiteStats]) -> Optional[Peak]:
    """M over the headline sites; among equal values the earliest site in forward order."""
    best: Optional[SiteStats] = None
    for s in sites:
        if s.kind in HEADLINE_KINDS and s.absmax is not None and (best is None or s.absmax > best.absmax):
            best = s
    if best is None or best.absmax_location is None:
        return None
    loc = best.absmax_location
    return Peak(value=loc.sign * best.absmax, abs=best.absmax, site=best.name, kind=best.kind, layer=best.layer,
                sample=loc.sample, position=loc.position, token=loc.token, token_id=loc.token_id, channel=loc.channel)


def kind_maxima(sites: Sequence[SiteStats]) -> tuple[KindMax, ...]:
    best: dict[str, SiteStats] = {}
    for s in sites:
        if s.absmax is not None and (s.kind not in best or s.absmax > best[s.kind].absmax):
            best[s.kind] = s
    return tuple(KindMax(k, best[k].absmax, best[k].name, best[k].layer) for k in KIND_ORDER if k in best)
