"""Fake quantizers, error statistics, headroom and verdicts against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest
import torch

from maxact_card import quant
from maxact_card.quant import (
    BF16_MAX,
    DEFAULT_THRESHOLDS,
    FORMATS,
    FP8_FORMATS,
    RowSums,
    Thresholds,
    build_verdicts,
    dtype_verdict,
    end_to_end,
    error_metrics,
    error_sums,
    format_names,
    fp8_static,
    fp16_safe,
    headroom,
    int8_per_token,
    int8_static,
    percentile_format,
    recommendation,
    scale_from_absmax,
    scale_from_clip,
    site_quantizers,
    verdict_for,
)
from maxact_card.quant import fake
from maxact_card.quant.metrics import _elementwise_sums, _row_sums, mean_nll, nll_sums
from maxact_card.report import EndToEnd, SiteQuantError, Verdict, _from_plain, _to_plain
from factories import site_error
from tensors import INF, NAN, same, t



def errors(x, xq, mask=None, clip=None):
    return error_metrics(error_sums(x, xq, mask, None if clip is None else torch.as_tensor(clip)).tolist())


def sqnr(x, xq, mask=None, clip=None):
    return errors(x, xq, mask, clip)["sqnr_db"]


# -- constants ----------------------------------------------------------------------------------
def test_format_constants():
    assert quant.FP16_MAX == 65504.0 == torch.finfo(torch.float16).max
    assert BF16_MAX == torch.finfo(torch.bfloat16).max == 3.3895313892515355e38
    assert quant.FP8_E4M3_MAX == 448.0 == torch.finfo(torch.float8_e4m3fn).max
    assert quant.FP8_E5M2_MAX == 57344.0 == torch.finfo(torch.float8_e5m2).max
    assert quant.INT8_QMAX == 127
    assert FORMATS == {"fp16": 65504.0, "bf16": BF16_MAX, "fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}


def test_format_names():
    assert format_names() == ("int8_absmax", "int8_p99.9", "int8_p99.99", "int8_per_token", "fp8_e4m3", "fp8_e5m2",
                              "fp8_e4m3_per_token", "fp8_e4m3_block128", "mxfp8_e4m3", "nvfp4", "mxfp4_e2m1")
    assert percentile_format(99.9) == "int8_p99.9"
    assert percentile_format(99.99) == "int8_p99.99"
    assert percentile_format(99.0) == "int8_p99"


# -- INT8 static --------------------------------------------------------------------------------
def test_int8_static_rounding_half_to_even_and_clipping():
    # scale 0.5:  x/s = 0.5 1.5 -0.5 -1.5 2.5 127 127.5 128 -200 0 0.6
    x = t([0.25, 0.75, -0.25, -0.75, 1.25, 63.5, 63.75, 64.0, -100.0, 0.0, 0.3])
    # round:       0   2   -0   -2   2   127  128->127 128->127 -200->-127 0 1
    want = t([0.0, 1.0, -0.0, -1.0, 1.0, 63.5, 63.5, 63.5, -63.5, 0.0, 0.5])
    assert same(int8_static(x, torch.tensor(0.5)), want)
    assert same(int8_static(x, 0.5), want)  # a Python float works too


def test_int8_static_clips_at_127_scale():
    s = torch.tensor(2.0)
    x = t([254.0, 255.0, 1e6, -254.0, -255.0, -1e6])
    assert same(int8_static(x, s), t([254.0, 254.0, 254.0, -254.0, -254.0, -254.0]))


def test_int8_static_zero_scale_gives_zeros_never_nan():
    x = t([0.0, 1.0, -3.0, 1e30, INF, -INF])
    for bad in (0.0, -1.0, NAN, INF):
        out = int8_static(x, torch.tensor(bad))
        assert same(out, torch.zeros(6)), bad
    # NaN input stays NaN even with a zero scale
    assert int8_static(t([NAN]), torch.tensor(0.0)).isnan().all()


def test_int8_static_all_zero_tensor():
    x = torch.zeros(2, 3, 4)
    s = scale_from_absmax(x.abs().amax(), 127)
    assert s.item() == 0.0
    out = int8_static(x, s)
    assert same(out, x)
    want = {"sqnr_db": INF, "rel_rmse": 0.0, "rel_mae": 0.0, "clip_rate": 0.0, "count": 24, "nonfinite": 0}
    assert errors(x, out, None, s * 127) == want


def test_int8_static_nonfinite_inputs():
    out = int8_static(t([NAN, INF, -INF, 1.0]), torch.tensor(0.5))
    assert same(out, t([NAN, 63.5, -63.5, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_quantizers_keep_dtype(dtype):
    x = t([[0.25, 1.0, -3.0]]).to(dtype)
    assert int8_static(x, torch.tensor(0.5)).dtype == dtype
    assert int8_per_token(x).dtype == dtype
    assert fp8_static(x, torch.tensor(1.0), "fp8_e4m3").dtype == dtype
    assert same(int8_static(x, torch.tensor(0.5)), t([[0.0, 1.0, -3.0]]).to(dtype))


# -- INT8 per token -----------------------------------------------------------------------------
def test_int8_per_token_by_hand():
    x = t(
        [
            [
                [127.0, 0.5, -1.5, 2.4],  # scale 1
                [254.0, 1.0, 3.0, -5.0],  # scale 2: /2 = 127 .5 1.5 -2.5
                [0.0, 0.0, 0.0, 0.0],  # all zero: stays zero
            ],
            [
                [-63.5, 0.25, 0.75, 10.1],  # scale 0.5: /0.5 = -127 .5 1.5 20.2
                [1.0, 2.0, 6.0, -508.0],  # scale 4: /4 = .25 .5 1.5 -127
                [1.984375, 0.5, -0.0078125, 0.01171875],  # scale 1/64: /s = 127 32 -0.5 0.75
            ],
        ]
    )
    want = t(
        [
            [[127.0, 0.0, -2.0, 2.0], [254.0, 0.0, 4.0, -4.0], [0.0, 0.0, 0.0, 0.0]],
            [[-63.5, 0.0, 1.0, 10.0], [0.0, 0.0, 8.0, -508.0], [1.984375, 0.5, -0.0, 0.015625]],
        ]
    )
    assert same(int8_per_token(x), want)


def test_int8_per_token_nonfinite_channel_keeps_rest_of_token():
    x = t([[NAN, 127.0, 0.4], [INF, 254.0, 3.0], [-INF, 0.0, 0.0]])
    # absmax over finite values: 127, 254, 0; Inf saturates to +-127*scale; zero scale -> 0
    assert same(int8_per_token(x), t([[NAN, 127.0, 0.0], [254.0, 254.0, 4.0], [0.0, 0.0, 0.0]]))


# -- FP8 ----------------------------------------------------------------------------------------
def test_fp8_e4m3_by_hand():
    # e4m3: 3 mantissa bits; in [1, 2) the spacing is 2**-3 = 0.125, in [256, 512) it is 32;
    # smallest normal 2**-6, subnormal spacing 2**-9 = 0.001953125; max 1.75 * 2**8 = 448.
    x = t([1.0, 1.0625, 1.1875, 1.2, 300.0, 304.0, 448.0, 500.0, -1000.0, INF, 0.001, 2.0**-10, 7 * 2.0**-9, NAN])
    want = t(
        [
            1.0,
            1.0,  # halfway 1.0 (mantissa 000) / 1.125 (001): ties to even
            1.25,  # halfway 1.125 (001) / 1.25 (010): ties to even
            1.25,  # 0.05 from 1.25, 0.075 from 1.125
            288.0,  # 256 + 32: 12 away vs 20 from 320
            320.0,  # halfway 288 (001) / 320 (010)
            448.0,
            448.0,  # saturates
            -448.0,
            448.0,
            2.0**-9,  # above half the smallest subnormal
            0.0,  # exactly half the smallest subnormal: ties to even (zero)
            7 * 2.0**-9,  # subnormal, representable
            NAN,
        ]
    )
    assert same(fp8_static(x, torch.tensor(1.0), "fp8_e4m3"), want)


def test_fp8_e5m2_by_hand():
    # e5m2: 2 mantissa bits; spacing 0.25 in [1, 2), 8192 in [32768, 65536); max 1.75 * 2**15.
    x = t([1.0625, 1.125, 1.375, 50000.0, 60000.0, -1e9])
    want = t([1.0, 1.0, 1.5, 49152.0, 57344.0, -57344.0])
    assert same(fp8_static(x, torch.tensor(1.0), "fp8_e5m2"), want)


def test_fp8_static_scale_and_saturation():
    # scale 0.5: y = 600 200 -2000 -> 448, 200 (halfway 192 (1.100b) / 208 (1.101b): even -> 192), -448
    x = t([300.0, 100.0, -1000.0])
    assert same(fp8_static(x, torch.tensor(0.5), "fp8_e4m3"), t([224.0, 96.0, -224.0]))
    # values beyond 448 * scale become 448 * scale
    s = torch.tensor(0.25)
    assert same(fp8_static(t([112.0, 113.0, 1e7]), s, "fp8_e4m3"), t([112.0, 112.0, 112.0]))


def test_fp8_zero_scale_and_unknown_format():
    assert same(fp8_static(t([1.0, INF, -5.0]), torch.tensor(0.0), "fp8_e4m3"), torch.zeros(3))
    with pytest.raises(ValueError, match="fp8_e4m3"):
        fp8_static(t([1.0]), torch.tensor(1.0), "fp8_e3m4")


@pytest.mark.parametrize("fmt", list(FP8_FORMATS))
def test_fp8_emulation_matches_native_cast(fmt):
    spec = FP8_FORMATS[fmt]
    codes = torch.arange(256, dtype=torch.uint8).view(spec.dtype).float()
    grid = codes[torch.isfinite(codes)].unique()
    grid = grid[grid.abs() <= spec.max]
    mids = (grid[1:] + grid[:-1]) / 2  # every tie
    g = torch.Generator().manual_seed(0)
    rnd = (torch.randn(20000, generator=g) * torch.exp2(torch.randint(-20, 20, (20000,), generator=g).float())).clamp(
        -spec.max, spec.max
    )
    above = torch.nextafter(mids, torch.full_like(mids, INF))
    below = torch.nextafter(mids, torch.full_like(mids, -INF))
    y = torch.cat([grid, mids, rnd, above, below])
    native = y.to(spec.dtype).float()
    assert torch.equal(fake._fp8_round_emulated(y, spec), native)


# -- scale policies and quantizer sets ----------------------------------------------------------
def test_scale_policies():
    assert scale_from_absmax(254.0, 127).item() == 2.0
    assert scale_from_absmax(torch.tensor(448.0), 448).item() == 1.0
    assert scale_from_clip(12.7 * 10, 127).item() == pytest.approx(1.0)
    # a quantile above the observed absmax is capped
    assert scale_from_clip(600.0, 127, absmax=254.0).item() == 2.0
    assert scale_from_clip(127.0, 127, absmax=254.0).item() == 1.0


def test_site_quantizers():
    qs = site_quantizers(254.0, {99.9: 12.7, 99.99: 127.0})
    assert [q.name for q in qs] == list(format_names())
    by = {q.name: q for q in qs}
    assert by["int8_absmax"].clip_threshold.item() == 254.0
    assert by["int8_p99.99"].clip_threshold.item() == 127.0
    assert by["int8_per_token"].clip_threshold is None
    assert by["fp8_e4m3"].clip_threshold.item() == 254.0
    x = t([[3.0, 130.0, -300.0]])
    assert same(by["int8_absmax"](x), t([[4.0, 130.0, -254.0]]))
    assert same(by["int8_p99.99"](x), t([[3.0, 127.0, -127.0]]))
    assert same(by["fp8_e4m3"](x), fp8_static(x, torch.tensor(254.0 / 448), "fp8_e4m3"))


# -- accumulator --------------------------------------------------------------------------------
def test_cpu_row_path_equals_the_elementwise_path():
    """The CPU's per-token fast path gives the elementwise path's sums, for every format of a
    heavy-tailed site with padding (holding NaN) and a clip threshold some tokens exceed."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 40, 24, generator=g) ** 3
    x[1, 7, 2] = 900.0
    x[2, 30:] = NAN  # padding
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[2, 30:] = False
    absmax = x[mask].abs().max()
    rows = RowSums.of(x)
    for q in site_quantizers(absmax, {99.0: torch.tensor(4.0)}):
        fast = _row_sums(x, q(x), mask, q.clip_threshold, rows)
        assert fast is not None
        a, b = error_metrics(fast.tolist()), error_metrics(_elementwise_sums(x, q(x), mask, q.clip_threshold).tolist())
        assert a["count"] == b["count"] == 110 * 24 and a["clip_rate"] == b["clip_rate"]
        for k in ("sqnr_db", "rel_rmse", "rel_mae"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), (q.name, k)
    assert _row_sums(x, x, None, None, rows) is None  # NaN on a real token


def test_accumulator_known_signal_with_masked_padding():
    # real token: x = [3, 4], xq = [3, 3] -> sum x^2 = 25, sum err^2 = 1, sum|err| = 1, sum|x| = 7
    x = t([[[3.0, 4.0], [1e30, -1e30]], [[NAN, INF], [-1e38, 5e37]]])
    xq = t([[[3.0, 3.0], [0.0, 0.0]], [[0.0, NAN], [1e38, 0.0]]])
    mask = torch.tensor([[True, False], [False, False]])
    r = errors(x, xq, mask, clip=3.5)
    assert r["sqnr_db"] == pytest.approx(10 * math.log10(25), abs=1e-12)
    assert r["sqnr_db"] == pytest.approx(13.979400086720377, abs=1e-12)
    assert r["rel_rmse"] == pytest.approx(0.2, abs=1e-15)
    assert r["rel_mae"] == pytest.approx(1 / 7, abs=1e-15)
    assert r["clip_rate"] == 0.5  # |4| > 3.5, |3| is not; padding never counts
    assert r["count"] == 2 and r["nonfinite"] == 0


def test_accumulator_excludes_nonfinite_and_streams():
    x = t([[[3.0, 4.0, NAN]], [[1.0, INF, 2.0]]])
    xq = t([[[3.0, 3.0, NAN]], [[1.0, 2.0, 2.0]]])
    mask = torch.tensor([[True], [True]])
    thr = torch.tensor(2.5)
    r1 = error_metrics(error_sums(x, xq, mask, thr).tolist())
    r2 = error_metrics((error_sums(x[:1], xq[:1], mask[:1], thr) + error_sums(x[1:], xq[1:], mask[1:], thr)).tolist())
    assert r1 == r2
    # valid: 3,4,1,2 -> sum x^2 = 30, err^2 = 1
    assert r1["count"] == 4 and r1["nonfinite"] == 2
    assert r1["sqnr_db"] == pytest.approx(10 * math.log10(30))
    assert r1["clip_rate"] == 0.5  # 3 and 4 exceed 2.5


def test_accumulator_empty_and_zero_signal_and_json():
    r = error_metrics([0.0] * 7)
    assert r["sqnr_db"] == INF and r["clip_rate"] == 0.0 and r["count"] == 0
    r = errors(t([[0.0, 0.0]]), t([[0.0, 1.0]]))
    assert r["sqnr_db"] == -INF and r["rel_rmse"] == INF and r["rel_mae"] == INF
    assert not any(isinstance(v, float) and math.isnan(v) for v in r.values())
    # inf survives the report's JSON round trip
    e = SiteQuantError("embed", None, "int8_absmax", **{k: error_metrics([0.0] * 7)[k] for k in
                                                           ("sqnr_db", "rel_rmse", "rel_mae", "clip_rate")})
    assert e.sqnr_db == INF
    back = _from_plain(SiteQuantError, json.loads(json.dumps(_to_plain(e), allow_nan=True)))
    assert back == e


def test_accumulator_bf16_inputs():
    x = t([[3.0, 4.0]], torch.bfloat16)
    sums = error_sums(x, t([[3.0, 3.0]], torch.bfloat16))
    assert error_metrics(sums.tolist())["sqnr_db"] == pytest.approx(10 * math.log10(25))
    assert sums.dtype == torch.float64


# -- heavy tails: percentile clipping vs absmax -------------------------------------------------
def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(x.abs().flatten().double(), q).float()


def test_percentile_clipping_beats_absmax_on_laplace():
    # Laplace(b=1), 10^6 values: absmax ~ ln(10^6) = 13.8, p99.99 = ln(10^4) = 9.2.
    # absmax noise Delta^2/12 with Delta = absmax/127; clipping at c adds E[(|x|-c)^2; |x|>c] = 2 e^-c.
    g = torch.Generator().manual_seed(1)
    u = torch.rand(1000, 1000, generator=g, dtype=torch.float64) - 0.5
    x = (-torch.sign(u) * torch.log1p(-2 * u.abs())).float()
    p_signal = x.double().square().mean().item()
    am, c = x.abs().max(), _quantile(x, 0.9999)
    s_abs = sqnr(x, int8_static(x, scale_from_absmax(am, 127)))
    s_clip = sqnr(x, int8_static(x, scale_from_clip(c, 127)))
    assert s_clip > s_abs + 1.0
    pred_abs = 10 * math.log10(p_signal / ((am.item() / 127) ** 2 / 12))
    pred_clip = 10 * math.log10(p_signal / ((c.item() / 127) ** 2 / 12 + 2 * math.exp(-c.item())))
    assert s_abs == pytest.approx(pred_abs, abs=0.5)
    assert s_clip == pytest.approx(pred_clip, abs=0.5)


def test_percentile_clipping_beats_absmax_with_a_rare_outlier():
    # One 100-sigma value among 10^6 Gaussians sets the absmax scale (Delta = 0.79 sigma);
    # clipping it at p99.9 (~3.3 sigma) costs (100 - 3.3)^2 / 10^6 = 0.0094 < Delta^2/12 = 0.052.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1000, 1000, generator=g)
    x[123, 456] = 100.0
    s_abs = sqnr(x, int8_static(x, scale_from_absmax(x.abs().max(), 127)))
    s_p999 = sqnr(x, int8_static(x, scale_from_clip(_quantile(x, 0.999), 127)))
    assert s_p999 > s_abs + 5.0


def test_absmax_beats_clipping_when_outliers_carry_the_energy():
    # 0.01% of values at 1000 sigma hold 99% of the energy: clipping them (error 1e-4 * 1000^2 = 100
    # per value) is far worse than rounding every ordinary value to zero (error sigma^2 = 1).
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1000, 1000, generator=g)
    idx = torch.randperm(x.numel(), generator=g)[:100]
    x.view(-1)[idx] = 1000.0
    s_abs = sqnr(x, int8_static(x, scale_from_absmax(x.abs().max(), 127)))
    s_p999 = sqnr(x, int8_static(x, scale_from_clip(_quantile(x, 0.999), 127)))
    assert s_abs > s_p999 + 10.0


# -- one massive token: per-tensor vs per-token -------------------------------------------------
def _gauss_rounding_noise(delta: float, kmax: int = 50) -> float:
    """E[(x - delta * round(x / delta))^2] for x ~ N(0, 1), exactly, bin by bin."""

    def phi(v):
        return math.exp(-v * v / 2) / math.sqrt(2 * math.pi)

    def cdf(v):
        return 0.5 * (1 + math.erf(v / math.sqrt(2)))

    total = 0.0
    for k in range(-kmax, kmax + 1):
        a, b, c = (k - 0.5) * delta, (k + 0.5) * delta, k * delta
        m0 = cdf(b) - cdf(a)
        m1 = phi(a) - phi(b)
        m2 = (cdf(b) - b * phi(b)) - (cdf(a) - a * phi(a))
        total += m2 - 2 * c * m1 + c * c * m0
    return total


def _tokens(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2048, 256, generator=g)


def test_per_tensor_sqnr_matches_uniform_noise_model_for_a_moderate_outlier():
    # Outlier 20 sigma: Delta = 20/127 = 0.157 sigma << sigma, so rounding noise is uniform, Delta^2/12.
    x = _tokens(4)
    x[0, 7, 3] = 20.0
    delta = 20.0 / 127
    p_signal = x.double().square().mean().item()
    got = sqnr(x, int8_static(x, scale_from_absmax(x.abs().max(), 127)))
    assert got == pytest.approx(10 * math.log10(p_signal / (delta**2 / 12)), abs=0.5)


def test_massive_token_per_tensor_drop_predicted_and_per_token_unaffected():
    x0 = _tokens(5)
    x = x0.clone()
    x[0, 0, 17] = 1000.0  # one token carries a 1000-sigma activation (an attention-sink-like BOS)
    p0 = x0.double().square().mean().item()
    p1 = x.double().square().mean().item()

    base = sqnr(x0, int8_static(x0, scale_from_absmax(x0.abs().max(), 127)))
    d0 = x0.abs().max().item() / 127  # ~0.04 sigma: uniform model holds
    assert base == pytest.approx(10 * math.log10(p0 / (d0**2 / 12)), abs=0.5)

    hit = sqnr(x, int8_static(x, scale_from_absmax(x.abs().max(), 127)))
    delta = 1000.0 / 127  # 7.9 sigma: Delta^2/12 = 5.2 would overstate the noise by 7 dB, because
    # almost every ordinary value rounds to zero; the exact Gaussian rounding noise is ~sigma^2.
    n = x.numel()
    noise = _gauss_rounding_noise(delta) * (n - 1) / n  # the outlier itself is exact (1000 = 127 Delta)
    predicted = 10 * math.log10(p1 / noise)
    assert hit == pytest.approx(predicted, abs=0.5)
    assert base - hit == pytest.approx(10 * math.log10(p0 / (d0**2 / 12)) - predicted, abs=1.0)
    assert hit < 20.0 < 30.0 < base

    # Per-token: every other token keeps its own scale, so over those tokens nothing changes at all,
    # while per-tensor INT8 wipes them out.
    others = torch.ones(1, 2048, dtype=torch.bool)
    others[0, 0] = False
    tok0 = sqnr(x0, int8_per_token(x0), others)
    tok1 = sqnr(x, int8_per_token(x), others)
    assert tok1 == tok0 and tok0 > 40.0
    assert sqnr(x, int8_static(x, scale_from_absmax(x.abs().max(), 127)), others) < 1.0
    # Over all tokens per-token stays well above the ok threshold.
    assert sqnr(x, int8_per_token(x)) > 30.0


# -- end to end ---------------------------------------------------------------------------------
def test_nll_accumulator_and_end_to_end():
    logits = torch.zeros(2, 3, 4)
    logits[1, 2] = NAN  # padding position
    targets = torch.tensor([[0, 1, 2], [3, 0, -100]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    sums = nll_sums(logits[:1], targets[:1], mask[:1]) + nll_sums(logits[1:], targets[1:], mask[1:])
    assert mean_nll(sums.tolist()) == pytest.approx(math.log(4))
    e = end_to_end("int8_absmax", math.log(4) + 0.05, math.log(4))
    assert e.ppl == pytest.approx(4 * math.exp(0.05))
    assert e.delta_nll == pytest.approx(0.05) and e.ppl_ratio == pytest.approx(math.exp(0.05))
    assert e.format == "int8_absmax" and e.nll == math.log(4) + 0.05
    assert end_to_end("x", 1000.0, 1.0).ppl == INF


# -- headroom -----------------------------------------------------------------------------------
SITES = {"embed": 10.0, "layers.0.residual": 65504.0, "layers.1.residual": 65505.0, "layers.1.mlp.down_in": 500.0}


def test_headroom_and_fp16_safe():
    h = {x.format: x for x in headroom(65505.0, SITES)}
    assert list(h) == ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2"]
    assert h["fp16"].ratio == 65505.0 / 65504.0 and h["fp16"].max_finite == 65504.0
    assert h["fp16"].overflow_sites == ("layers.1.residual",)
    assert h["bf16"].overflow_sites == ()
    assert h["fp8_e4m3"].overflow_sites == ("layers.0.residual", "layers.1.residual", "layers.1.mlp.down_in")
    assert h["fp8_e4m3"].ratio == 65505.0 / 448.0
    assert h["fp8_e5m2"].overflow_sites == ("layers.0.residual", "layers.1.residual")
    assert fp16_safe(SITES) is False
    assert fp16_safe({"a": 65504.0, "b": -3.0}) is True  # exactly the max is representable
    assert fp16_safe({"a": 65504.0001}) is False
    assert fp16_safe({"a": INF}) is False and fp16_safe({"a": NAN}) is False
    assert headroom(INF, {"a": INF})[1].overflow_sites == ("a",)


# -- verdicts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sq, want",
    [
        (INF, "ok"),
        (30.0, "ok"),
        (29.999, "degraded"),
        (20.0, "degraded"),
        (19.999, "unsafe"),
        (-INF, "unsafe"),
        (NAN, "unsafe"),
    ],
)
def test_verdict_sqnr_boundaries(sq, want):
    v = verdict_for("int8_absmax", sq, None, worst_site="layers.12.residual")
    assert v.verdict == want and v.format == "int8_absmax"
    assert "layers.12.residual" in v.reason


@pytest.mark.parametrize(
    "d, want",
    [(-0.5, "ok"), (0.0, "ok"), (0.01, "ok"), (0.0101, "degraded"), (0.1, "degraded"), (0.1001, "unsafe"), (NAN, "unsafe")],
)
def test_verdict_delta_nll_boundaries(d, want):
    assert verdict_for("fp8_e4m3", None, d).verdict == want


def test_verdict_is_worse_of_two():
    assert verdict_for("f", 35.0, 0.5).verdict == "unsafe"
    assert verdict_for("f", 25.0, 0.0).verdict == "degraded"
    assert verdict_for("f", 35.0, 0.005).verdict == "ok"
    with pytest.raises(ValueError):
        verdict_for("f", None, None)
    strict = Thresholds(sqnr_ok_db=40.0)
    assert verdict_for("f", 35.0, None, thresholds=strict).verdict == "degraded"
    with pytest.raises(ValueError):
        Thresholds(sqnr_ok_db=10.0)
    with pytest.raises(Exception):
        DEFAULT_THRESHOLDS.sqnr_ok_db = 1.0  # frozen


def test_dtype_verdict_boundaries():
    lim = 65504.0 / 8
    assert lim == 8188.0
    assert dtype_verdict("fp16", lim, {"a": lim}).verdict == "ok"
    assert dtype_verdict("fp16", 8188.5, {"a": 8188.5}).verdict == "degraded"
    assert dtype_verdict("fp16", 65504.0, {"a": 65504.0}).verdict == "degraded"
    v = dtype_verdict("fp16", 65505.0, SITES)
    assert v.verdict == "unsafe" and "layers.1.residual" in v.reason
    assert dtype_verdict("fp16", 10.0, {"a": 10.0}, nonfinite=3).verdict == "unsafe"
    assert dtype_verdict("bf16", 1e30, {"a": 1e30}).verdict == "ok"
    assert dtype_verdict("bf16", 1.0, {"a": 1.0}, nonfinite=1).verdict == "unsafe"
    assert dtype_verdict("bf16", INF, {"a": INF}).verdict == "unsafe"
    # a non-headline site above the limit still makes fp16 unsafe
    both = {"layers.0.residual": 100.0, "layers.0.mlp.down_in": 7e4}
    assert dtype_verdict("fp16", 100.0, both).verdict == "unsafe"
    assert dtype_verdict("fp16", 7e4, {}).verdict == "unsafe"
    assert dtype_verdict("fp16", 0.0, {}).verdict == "ok"
    with pytest.raises(ValueError):
        dtype_verdict("fp8_e4m3", 1.0, {})


def _site(site, fmt, sq):
    return site_error(site, fmt, sq)


def test_build_verdicts_and_recommendation():
    sites = [
        _site("layers.3.mlp.down_in", "int8_absmax", 38.0),
        _site("layers.12.residual", "int8_absmax", 26.9),
        _site("layers.3.mlp.down_in", "int8_per_token", 45.0),
        _site("layers.12.residual", "int8_per_token", 41.0),
    ]
    e2e = [EndToEnd("int8_absmax", 2.5, math.exp(2.5), 0.004, math.exp(0.004))]
    vs = build_verdicts(sites, e2e, 100.0, {"layers.12.residual": 100.0})
    by = {v.format: v for v in vs}
    assert [v.format for v in vs] == ["fp16", "bf16", "int8_absmax", "int8_per_token"]
    assert by["int8_absmax"].verdict == "degraded" and "layers.12.residual" in by["int8_absmax"].reason
    assert by["int8_per_token"].verdict == "ok"
    line = recommendation(vs, sites)
    assert "\n" not in line
    assert line.startswith("per-tensor static INT8 loses 3.1 dB against the 30 dB target at layers.12.residual")
    assert "use per-token activation scales (41.0 dB there) or keep that layer in bf16" in line


def test_recommendation_all_ok_and_fp16():
    ok = [Verdict("fp16", "ok", ""), Verdict("bf16", "ok", ""), Verdict("int8_per_token", "ok", "")]
    assert recommendation(ok).startswith("every checked format is ok (fp16, bf16, int8_per_token)")
    bad = [Verdict("fp16", "unsafe", "1 site(s) exceed fp16 max 65504"), Verdict("bf16", "ok", "")]
    assert "serve in bf16 or fp32" in recommendation(bad)
    only_bad = [_site("layers.1.mlp", "int8_absmax", 5.0), _site("layers.1.mlp", "int8_per_token", 12.0)]
    vs = build_verdicts(only_bad, [])
    assert recommendation(vs, only_bad).endswith("keep that layer in bf16; also not ok: int8_per_token")


# -- no host syncs in the hot path --------------------------------------------------------------
def _hot_path(device):
    x = torch.randn(2, 5, 8, device=device, dtype=torch.bfloat16)
    mask = torch.ones(2, 5, dtype=torch.bool, device=device)
    absmax = x.float().abs().amax()  # a device tensor, as the probe holds it
    for q in site_quantizers(absmax, {99.9: absmax * 0.5}, device=device):
        sums = _elementwise_sums(x, q(x), mask, q.clip_threshold)
        nll_sums(x.float(), torch.zeros(2, 5, dtype=torch.long, device=device), mask)
    return sums


def test_hot_path_never_reads_values_on_the_host():
    # Meta tensors have no data: any .item(), boolean indexing or data-dependent shape raises.
    assert _hot_path("meta").device.type == "meta"


def test_fp8_emulated_path_matches_native():
    x = torch.randn(1000) * 100
    for fmt in FP8_FORMATS:
        native = fp8_static(x, torch.tensor(0.37), fmt)
        saved = fake._NATIVE_FP8_DEVICES
        fake._NATIVE_FP8_DEVICES = ()
        try:
            emulated = fp8_static(x, torch.tensor(0.37), fmt)
        finally:
            fake._NATIVE_FP8_DEVICES = saved
        assert torch.equal(native, emulated)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hot_path_has_no_cuda_sync():
    torch.cuda.set_sync_debug_mode("error")
    try:
        _hot_path("cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_scales_follow_the_device_of_the_statistics():
    absmax = torch.tensor(254.0, device="meta")
    assert scale_from_clip(12.7, 127, absmax=absmax).device.type == "meta"
    assert all(q.clip_threshold is None or q.clip_threshold.device.type == "meta"
               for q in site_quantizers(absmax, {99.9: 12.7}))
