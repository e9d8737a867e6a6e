"""From the sites' statistics to the report's headline: M with its location, the maximum of each kind."""

from __future__ import annotations

import math
from typing import Optional, Sequence

from ..report import HEADLINE_KINDS, KIND_ORDER, KindMax, Peak, SiteStats


def peak_of(sites: Sequence[SiteStats]) -> Optional[Peak]:
    """M over the headline sites; among equal values the earliest site in forward order. A NaN/Inf
    at a headline site makes M infinite, located at the first one (in forward order), with the
    largest finite |a| beside it."""
    best: Optional[SiteStats] = None
    for s in sites:
        if s.kind in HEADLINE_KINDS and s.absmax is not None and (best is None or s.absmax > best.absmax):
            best = s
    bad = [s for s in sites if s.kind in HEADLINE_KINDS and s.nonfinite and s.nonfinite_location is not None]
    if bad:
        first, loc = bad[0], bad[0].nonfinite_location
        return Peak(value=math.inf, abs=math.inf, site=first.name, kind=first.kind, layer=first.layer,
                    sample=loc.sample, position=loc.position, token=loc.token, token_id=loc.token_id,
                    channel=loc.channel, stream=loc.stream, nonfinite=sum(s.nonfinite for s in bad),
                    finite_abs=best.absmax if best is not None else None)
    if best is None or best.absmax_location is None:
        return None
    loc = best.absmax_location
    return Peak(value=loc.sign * best.absmax, abs=best.absmax, site=best.name, kind=best.kind, layer=best.layer,
                sample=loc.sample, position=loc.position, token=loc.token, token_id=loc.token_id, channel=loc.channel,
                stream=loc.stream)


def site_maxima(sites: Sequence[SiteStats]) -> dict[str, float]:
    """Each site's max |a|, infinite where the site held a NaN/Inf: what headroom and fp16 read."""
    return {s.name: math.inf if s.nonfinite else s.absmax for s in sites if s.absmax is not None or s.nonfinite}


def kind_maxima(sites: Sequence[SiteStats]) -> tuple[KindMax, ...]:
    best: dict[str, SiteStats] = {}
    for s in sites:
        if s.absmax is not None and (s.kind not in best or s.absmax > best[s.kind].absmax):
            best[s.kind] = s
    return tuple(KindMax(k, best[k].absmax, best[k].name, best[k].layer) for k in KIND_ORDER if k in best)
