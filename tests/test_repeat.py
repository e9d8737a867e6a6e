"""A probe site that runs several times in one forward pass (a looped layer, a norm applied to the
embeddings and again at the end): measured over every call, each token's rows combined."""

from __future__ import annotations

import math

import pytest
import torch

from maxact_card.measure.context import BatchContext
from maxact_card.measure.site_stats import SiteBank, SiteInfo


def _calls(nan: bool):
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(2, 6, 10, generator=g)
    x2 = torch.randn(2, 6, 10, generator=g) * 2
    x1[0, 1, 3] = -4000.0
    x2[1, 2, 5] = 9000.0  # the largest |a|: the second call's
    x2[1, 5, 0] = 50000.0  # on padding: never counts
    if nan:
        x2[0, 4, 7] = float("nan")
        x1[1, 0, 1] = float("inf")
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 4:] = False
    ids = torch.arange(12).reshape(2, 6) + 3
    return x1, x2, BatchContext(valid, torch.tensor([4, 7]), ids)


def _run(accelerator: bool, nan: bool, device: str = "cpu") -> SiteBank:
    x1, x2, ctx = _calls(nan)
    x1, x2, ctx = x1.to(device), x2.to(device), ctx.on(torch.device(device))
    bank = SiteBank([SiteInfo("final_norm", "final_norm", None, channels=True)], device, accelerator=accelerator,
                    samples=8)
    for _ in range(4):  # the accelerator path asks for its modes, then runs the batch again
        bank.update_site(0, x1, ctx)
        bank.update_site(0, x2, ctx)
        need = bank.fold(ctx)
        if not need:
            return bank
        for i, mode in need:
            bank.set_mode(i, mode)
    raise AssertionError("the modes never settled")


CUDA = pytest.param(None, "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))


@pytest.mark.parametrize("accelerator,device", [(False, "cpu"), (True, "cpu"), CUDA])
@pytest.mark.parametrize("nan", [False, True])
def test_a_site_called_twice_is_measured_over_both_calls(accelerator, device, nan):
    x1, x2, ctx = _calls(nan)
    (s,) = _run(accelerator, nan, device).result()
    both = torch.cat([x1[ctx.valid], x2[ctx.valid]]).double()  # every real token's rows, both calls
    finite = both[torch.isfinite(both)]
    assert s.count == finite.numel() == 2 * 10 * int(ctx.valid.sum()) - (2 if nan else 0)
    assert s.nonfinite == (2 if nan else 0)
    assert s.max == 9000.0 and s.min == pytest.approx(float(finite.min()))
    assert s.absmax == 9000.0
    loc = s.absmax_location
    assert (loc.sample, loc.position, loc.token_id, loc.channel, loc.sign) == (7, 2, 11, 5, 1)
    assert s.top[1].value == -4000.0 and (s.top[1].location.sample, s.top[1].location.channel) == (4, 3)
    assert s.mean == pytest.approx(float(finite.mean()), rel=1e-6)
    assert s.rms == pytest.approx(math.sqrt(float((finite**2).mean())), rel=1e-6)
    assert s.massive == 2  # 9000 and -4000 are > 100 and > 1000x their token's median |a|
    fin = torch.where(torch.isfinite(both), both, 0).abs().amax(0)
    assert [c.channel for c in s.top_channels[:2]] == [5, 3]
    assert s.top_channels[0].absmax == float(fin[5]) and s.top_channels[1].absmax == float(fin[3])
