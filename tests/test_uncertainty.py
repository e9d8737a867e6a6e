"""Bootstrap intervals for M and the end-to-end delta NLL, and the uncertain verdict."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from maxact_card.quant.uncertainty import (
    MIN_RESAMPLES,
    Interval,
    _ranks,
    delta_nll_intervals,
    max_interval,
)
from maxact_card.quant.verdicts import (
    UNCERTAIN,
    VERDICT_LEVELS,
    build_verdicts,
    recommendation,
    verdict_for,
)
from maxact_card.report import EndToEnd, QuantReport, Report, Verdict, _from_plain, _to_plain
from factories import site_error

NAN = float("nan")
INF = float("inf")


def rows(nll, count):
    return torch.stack([torch.as_tensor(nll, dtype=torch.float64), torch.as_tensor(count, dtype=torch.float64)], -1)


def synthetic(n=256, n_formats=3, seed=1):
    """Per-sample (sum NLL, count) rows: baseline ~2.5 nats/position, format k adds ~0.02 k."""
    g = torch.Generator().manual_seed(seed)
    cnt = torch.randint(20, 200, (n,), generator=g).double()
    noise = lambda s: torch.randn(n, generator=g, dtype=torch.float64) * s * cnt.sqrt()  # noqa: E731
    base = rows(2.5 * cnt + noise(1.0), cnt)
    fmts = torch.stack([rows(base[:, 0] + 0.02 * k * cnt + noise(0.1), cnt) for k in range(n_formats)])
    return base, fmts


def point_delta(base, fmt):
    return float(fmt[:, 0].sum() / fmt[:, 1].sum() - base[:, 0].sum() / base[:, 1].sum())


# -- percentile ranks ------------------------------------------------------------------------------
def test_ranks_round_outwards():
    # a = 0.025: lower rank floor(0.025 * 999) = floor(24.975) = 24, upper ceil(0.975 * 999) = 975.
    assert _ranks(1000, 0.95) == (24, 975)
    # 0.025 * 200 is whole in exact arithmetic: floor(0.025 * 199 = 4.975) = 4, ceil(194.025) = 195.
    assert _ranks(201, 0.95) == (5, 195)
    assert _ranks(200, 0.95) == (4, 195)


def test_argument_checks():
    with pytest.raises(ValueError):
        max_interval([1.0, 2.0], resamples=MIN_RESAMPLES - 1)
    with pytest.raises(ValueError):
        max_interval([1.0, 2.0], level=1.0)
    with pytest.raises(ValueError):
        delta_nll_intervals(rows([1.0], [1.0]), rows([1.0, 2.0], [1.0, 1.0]).unsqueeze(0))
    with pytest.raises(ValueError):
        delta_nll_intervals(rows([1.0], [-1.0]), rows([1.0], [-1.0]).unsqueeze(0))


# -- max_interval -----------------------------------------------------------------------------------
def test_max_interval_degenerate():
    assert math.isnan(max_interval([])[0]) and math.isnan(max_interval([])[1])
    assert max_interval([7.5]) == (7.5, 7.5)
    # Every resample's maximum is v whatever it draws.
    assert max_interval([3.25] * 40) == (3.25, 3.25)
    assert max_interval(torch.full((64,), 3.0, dtype=torch.bfloat16)) == (3.0, 3.0)


def test_max_interval_nonfinite_is_certain():
    assert max_interval([1.0, NAN, 2.0]) == (INF, INF)
    assert max_interval([1.0, INF]) == (INF, INF)
    # -inf is an ordinary value for a maximum (e.g. a sample with nothing to measure).
    lo, hi = max_interval([-INF, 2.0, 2.0])
    assert hi == 2.0


def test_max_interval_single_outlier():
    # n - 1 samples of 1.0 and one outlier of 1000.0: a resample's max is 1000 when it draws the
    # outlier, else 1.0. P(resample misses the outlier) = (1 - 1/n)^n, 0.25 at n = 2 and rising to
    # 1/e = 0.368 (n = 50: 0.98^50 = 0.364). The lower bound is the 25th smallest of 1000 resampled
    # maxima (rank 24): it is 1.0 as soon as more than 25 resamples miss the outlier, expected
    # 364 of them (binomial sd 15), so with any seed. The upper bound (rank 975) is 1000 because
    # ~636 resamples (> 25) draw the outlier. (1 - 1/n)^n > 0.025 for every n >= 2, so the lower
    # bound is the second-largest value for every n >= 2; only n = 1 collapses to (v, v).
    for n in (2, 5, 50, 500):
        values = [1.0] * (n - 1) + [1000.0]
        for seed in (0, 1, 2):
            assert max_interval(values, seed=seed) == (1.0, 1000.0), (n, seed)
    # Position of the outlier does not matter.
    assert max_interval([1000.0] + [1.0] * 49) == (1.0, 1000.0)


def test_max_interval_distinct_values_exact_quantile():
    # Values x_1 < ... < x_50 (the largest an outlier). A resample's max is <= x_k with probability
    # (k/50)^50: k = 46 -> 0.92^50 = 0.0155, k = 47 -> 0.94^50 = 0.0453. With R = 20000 resamples the
    # lower rank is floor(0.025 * 19999) = 499: about 310 +- 18 resampled maxima are <= x_46 and
    # 906 +- 29 are <= x_47, so the 500th smallest is x_47 (10 sd of margin on either side).
    # The upper bound is x_50: P(max = x_50) = 1 - 0.98^50 = 0.636 > 0.025.
    values = [float(k) for k in range(1, 50)] + [1e6]
    assert max_interval(values, resamples=20000) == (47.0, 1e6)
    # Order of the samples does not change the distribution, only which draws map to which value.
    assert max_interval(values[::-1], resamples=20000) == (47.0, 1e6)


def test_max_interval_deterministic_and_contains_point():
    g = torch.Generator().manual_seed(3)
    values = torch.rand(300, generator=g, dtype=torch.float64) * 100
    a = max_interval(values, seed=7)
    assert a == max_interval(values.tolist(), seed=7)
    assert isinstance(a, Interval) and isinstance(a, tuple)
    assert a.lo <= a.hi and a.lo <= float(values.max()) <= a.hi
    assert a.hi == float(values.max())  # the bootstrap max never exceeds the observed max
    others = {max_interval(values, seed=s) for s in range(8)}
    assert all(i.hi == a.hi for i in others)


# -- delta_nll_intervals ----------------------------------------------------------------------------
def test_paired_constant_shift_is_exact():
    # Format NLL = baseline NLL + 0.05 per counted position on every sample: every resample's delta
    # is (B + 0.05 C) / C - B / C = 0.05 exactly, so the interval is (0.05, 0.05).
    base, _ = synthetic(n=300)
    shifted = rows(base[:, 0] + 0.05 * base[:, 1], base[:, 1])
    same = base.clone()
    (iv, iv0) = delta_nll_intervals(base, torch.stack([shifted, same]), seed=5)
    assert abs(iv.lo - 0.05) < 1e-12 and abs(iv.hi - 0.05) < 1e-12
    assert abs(iv0.lo) < 1e-12 and abs(iv0.hi) < 1e-12
    # A single format may be passed as [n, 2].
    (one,) = delta_nll_intervals(base, shifted, seed=5)
    assert one == iv


def test_delta_intervals_contain_point_and_are_deterministic():
    base, fmts = synthetic(n=512, n_formats=4)
    a = delta_nll_intervals(base, fmts, seed=11)
    assert a == delta_nll_intervals(base, fmts, seed=11)
    assert a != delta_nll_intervals(base, fmts, seed=12)
    for k, iv in enumerate(a):
        d = point_delta(base, fmts[k])
        assert iv.lo < d < iv.hi, (k, d, iv)
        assert iv.hi - iv.lo < 0.01  # paired: the shared sample noise cancels
    # Paired resampling: each format's interval does not depend on which other formats are present.
    assert delta_nll_intervals(base, fmts[2:3], seed=11)[0] == a[2]


def test_delta_intervals_nonfinite_and_empty():
    base, fmts = synthetic(n=64, n_formats=3)
    fmts[1, 5, 0] = INF
    out = delta_nll_intervals(base, fmts)
    assert all(math.isnan(v) for v in out[1])
    assert all(math.isfinite(v) for k in (0, 2) for v in out[k])  # the others are unaffected
    bad_base = base.clone()
    bad_base[3, 0] = NAN
    assert all(math.isnan(v) for iv in delta_nll_intervals(bad_base, fmts) for v in iv)
    # Samples without counted positions are dropped; none left -> NaN.
    z = rows([0.0, 0.0], [0.0, 0.0])
    assert all(math.isnan(v) for v in delta_nll_intervals(z, z.unsqueeze(0))[0])
    padded_base = torch.cat([base, rows([0.0], [0.0])])
    padded = torch.cat([fmts, rows([0.0], [0.0]).expand(3, 1, 2)], dim=1)
    assert delta_nll_intervals(padded_base, padded[[0, 2]])[0] == delta_nll_intervals(base, fmts[[0, 2]])[0]
    assert delta_nll_intervals(base, fmts[:0]) == []


def test_delta_intervals_one_sample():
    base = rows([5.0], [2.0])
    fmt = rows([5.5], [2.0])
    assert delta_nll_intervals(base, fmt.unsqueeze(0)) == [(0.25, 0.25)]


# -- verdicts ---------------------------------------------------------------------------------------
def test_verdict_levels():
    assert VERDICT_LEVELS == ("ok", "degraded", "unsafe")
    assert UNCERTAIN == "uncertain" and UNCERTAIN not in VERDICT_LEVELS


@pytest.mark.parametrize(
    "d, interval, want",
    [
        (0.012, (0.004, 0.020), "uncertain"),  # crosses 0.01
        (0.05, (0.02, 0.15), "uncertain"),  # crosses 0.1
        (0.05, (0.005, 0.15), "uncertain"),  # crosses both
        (0.004, (0.001, 0.008), "ok"),
        (0.004, (0.001, 0.01), "ok"),  # 0.01 itself is ok
        (0.012, (0.0101, 0.03), "degraded"),
        (0.5, (0.2, 0.9), "unsafe"),
        (0.008, (0.002, INF), "uncertain"),
        (0.012, (NAN, NAN), "degraded"),  # no information: the point estimate decides
    ],
)
def test_verdict_for_interval(d, interval, want):
    v = verdict_for("fp8_e4m3", None, d, delta_nll_interval=interval)
    assert v.verdict == want
    assert v.interval == (None if math.isnan(interval[0]) else interval)


def test_verdict_for_point_outside_interval_counts():
    # The point estimate lies inside for well-behaved data; if it does not, it is still plausible.
    assert verdict_for("f", None, 0.012, delta_nll_interval=(0.002, 0.008)).verdict == "uncertain"


def test_uncertain_reason_text():
    v = verdict_for("fp8_e4m3", None, 0.012, delta_nll_interval=(0.004, 0.020))
    assert v.reason == "end-to-end delta NLL +0.012 nats (95% CI +0.004 to +0.020, crosses 0.01)"
    v = verdict_for("fp8_e4m3", 35.0, 0.05, delta_nll_interval=(0.005, 0.15), worst_site="layers.1.mlp")
    assert v.reason == (
        "worst site SQNR 35.0 dB at layers.1.mlp (>= 30 dB); "
        "end-to-end delta NLL +0.050 nats (95% CI +0.005 to +0.150, crosses 0.01 and 0.1)"
    )
    v = verdict_for("fp8_e4m3", None, 0.004, delta_nll_interval=(0.001, 0.008), ci_level=0.9)
    assert v.verdict == "ok"
    assert v.reason == "end-to-end delta NLL +0.004 nats (90% CI +0.001 to +0.008, <= 0.01)"


def test_sqnr_dominates_uncertain_nll():
    # SQNR unsafe holds whatever the NLL is.
    v = verdict_for("int8_absmax", 12.0, 0.012, delta_nll_interval=(0.004, 0.020))
    assert v.verdict == "unsafe" and "crosses 0.01" in v.reason
    # SQNR degraded is as bad as the NLL at the top of an interval crossing 0.01 only.
    assert verdict_for("f", 25.0, 0.012, delta_nll_interval=(0.004, 0.020)).verdict == "degraded"
    # ... but not when the interval reaches past 0.1: the NLL could make it unsafe.
    assert verdict_for("f", 25.0, 0.05, delta_nll_interval=(0.02, 0.15)).verdict == "uncertain"
    # SQNR ok leaves the NLL's uncertainty standing.
    assert verdict_for("f", 35.0, 0.012, delta_nll_interval=(0.004, 0.020)).verdict == "uncertain"
    # Without an interval the old rule is unchanged.
    assert verdict_for("f", 35.0, 0.012).verdict == "degraded"
    assert verdict_for("f", 35.0, 0.012).interval is None


def test_verdict_for_interval_argument_checks():
    with pytest.raises(ValueError):
        verdict_for("f", 35.0, None, delta_nll_interval=(0.0, 0.1))
    with pytest.raises(ValueError):
        verdict_for("f", None, 0.05, delta_nll_interval=(0.1, 0.0))


def _site(site, fmt, sq):
    return site_error(site, fmt, sq, layer=1)


def test_build_verdicts_with_intervals_and_recommendation():
    sites = [
        _site("layers.1.mlp.down_in", "int8_absmax", 12.0),
        _site("layers.1.mlp.down_in", "int8_per_token", 41.0),
        _site("layers.1.mlp.down_in", "fp8_e4m3", 38.0),
    ]
    e2e = [
        EndToEnd("int8_absmax", 2.7, math.exp(2.7), 0.2, math.exp(0.2)),
        EndToEnd("int8_per_token", 2.5, math.exp(2.5), 0.002, math.exp(0.002)),
        EndToEnd("fp8_e4m3", 2.51, math.exp(2.51), 0.012, math.exp(0.012)),
    ]
    intervals = {"int8_absmax": (0.15, 0.25), "int8_per_token": (0.0, 0.004), "fp8_e4m3": (0.004, 0.02)}
    vs = build_verdicts(sites, e2e, 100.0, {"layers.1.mlp.down_in": 100.0}, intervals=intervals)
    by = {v.format: v for v in vs}
    assert [by[f].verdict for f in ("fp16", "bf16", "int8_absmax", "int8_per_token", "fp8_e4m3")] == [
        "ok", "ok", "unsafe", "ok", "uncertain"
    ]
    assert by["fp16"].interval is None and by["fp8_e4m3"].interval == (0.004, 0.02)
    line = recommendation(vs, sites)
    assert "\n" not in line
    assert line.startswith("per-tensor static INT8 loses 18.0 dB")
    assert "uncertain: fp8_e4m3 (run with more --samples to settle)" in line
    assert line.endswith("ok: fp16, bf16, int8_per_token")
    # Non-finite activations keep every format unsafe whatever the intervals say.
    vs = build_verdicts(sites, e2e, 100.0, {"layers.1.mlp.down_in": 100.0}, 2, intervals=intervals)
    assert all(v.verdict == "unsafe" for v in vs if v.format not in ("fp16", "bf16"))


def test_recommendation_only_uncertain():
    vs = [Verdict("fp16", "ok", ""), Verdict("fp8_e4m3", UNCERTAIN, "", (0.004, 0.02)),
          Verdict("int8_per_token", "ok", "")]
    assert recommendation(vs) == (
        "no checked format is known to fail; uncertain: fp8_e4m3 (run with more --samples to settle); "
        "ok: fp16, int8_per_token"
    )
    assert recommendation([Verdict("fp8_e4m3", UNCERTAIN, "")]) == (
        "no checked format is known to fail; uncertain: fp8_e4m3 (run with more --samples to settle)"
    )


# -- report round trip -----------------------------------------------------------------------------
def test_verdict_interval_json_round_trip():
    v = Verdict("fp8_e4m3", "uncertain", "r", (0.004, 0.02))
    plain = _to_plain(v)
    assert plain == {"format": "fp8_e4m3", "verdict": "uncertain", "reason": "r", "interval": [0.004, 0.02]}
    assert _from_plain(Verdict, json.loads(json.dumps(plain))) == v
    none = Verdict("fp16", "ok", "")
    assert _to_plain(none)["interval"] is None and _from_plain(Verdict, _to_plain(none)) == none
    # Positional construction of the first three fields still works; an Interval is stored as a tuple.
    from maxact_card.quant.uncertainty import Interval as Iv

    assert type(Verdict("f", "ok", "", Iv(0.0, 1.0)).interval) is tuple


def test_old_verdict_json_loads():
    old = {"format": "int8_absmax", "verdict": "degraded", "reason": "worst site SQNR 26.9 dB"}
    assert _from_plain(Verdict, old) == Verdict("int8_absmax", "degraded", "worst site SQNR 26.9 dB")
    assert _from_plain(Verdict, old).interval is None


def test_old_report_without_interval_loads():
    from factories import make_report

    report = make_report()
    assert report.quant is not None
    data = json.loads(report.to_json())
    for v in data["quant"]["verdicts"]:
        del v["interval"]
    loaded = Report.from_json(json.dumps(data))
    assert loaded == report
    # and one with intervals round-trips exactly
    q = dataclasses.replace(
        report.quant,
        verdicts=tuple(dataclasses.replace(v, interval=(0.001, 0.2)) for v in report.quant.verdicts),
    )
    assert isinstance(q, QuantReport)
    r2 = dataclasses.replace(report, quant=q)
    assert Report.from_json(r2.to_json()) == r2
