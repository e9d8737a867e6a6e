"""The format registry and the per-token, block and microscaling quantizers against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from maxact_card.errors import UsageError
from maxact_card.quant import (
    NVFP4_SPAN_LIMIT,
    REGISTRY,
    advice,
    block_amax_range,
    block_span,
    e2e_formats,
    e2m1_round,
    find_format,
    format_names,
    fp8_block,
    fp8_per_token,
    label,
    mx_quantize,
    mxfp4_e2m1,
    mxfp8_e4m3,
    nvfp4,
    nvfp4_block_span,
    nvfp4_global_scale,
    registered_formats,
    resolve_formats,
    site_quantizers,
)
from maxact_card.quant import fake
from maxact_card.quant.blocks import mx_scale
from tensors import INF, NAN, same, t



# -- registry ------------------------------------------------------------------------------------
NEW = ("fp8_e4m3_per_token", "fp8_e4m3_block128", "mxfp8_e4m3", "nvfp4", "mxfp4_e2m1")


def test_format_names_are_the_registry_in_report_order():
    assert format_names() == ("int8_absmax", "int8_p99.9", "int8_p99.99", "int8_per_token", "fp8_e4m3",
                              "fp8_e5m2", *NEW)
    assert format_names((99.0,)) == ("int8_absmax", "int8_p99", "int8_per_token", "fp8_e4m3", "fp8_e5m2", *NEW)
    assert [f.name for f in registered_formats(())] == [f.name for f in REGISTRY if not f.family]


def test_default_end_to_end_set():
    assert e2e_formats((99.9, 99.99)) == ("int8_absmax", "int8_per_token", "fp8_e4m3", "fp8_e4m3_per_token",
                                          "nvfp4", "mxfp4_e2m1")
    assert e2e_formats(()) == e2e_formats((99.0,))


def test_every_entry_is_complete():
    elements = {"int8", "fp8_e4m3", "fp8_e5m2", "e2m1"}
    maxima = {"int8": 127.0, "fp8_e4m3": 448.0, "fp8_e5m2": 57344.0, "e2m1": 6.0}
    for f in registered_formats():
        assert f.element in elements and f.max_element == maxima[f.element], f.name
        for text in (f.granularity, f.scale_rule, f.label, f.advice, f.deployed, f.spec):
            assert text and "\n" not in text and "{p}" not in text, f.name
    by = {f.name: f for f in registered_formats()}
    assert [n for n, f in by.items() if f.static] == ["int8_absmax", "int8_p99.9", "int8_p99.99", "fp8_e4m3",
                                                      "fp8_e5m2", "nvfp4"]
    assert by["mxfp4_e2m1"].granularity == "32-value blocks" and by["nvfp4"].granularity == "16-value blocks"
    assert by["fp8_e4m3_block128"].granularity == "token x 128 channels"
    assert "Microscaling" in by["mxfp8_e4m3"].spec


def test_labels_and_advice():
    assert label("int8_absmax") == "per-tensor static INT8"
    assert label("int8_p99.9") == "per-tensor INT8 clipped at p99.9"
    assert label("int8_p99.5") == "per-tensor INT8 clipped at p99.5"  # any percentile of the family
    assert label("fp8_e4m3_per_token") == "per-token FP8 E4M3"
    assert advice("fp8_e4m3_per_token") == "use FP8 E4M3 with per-token dynamic scales"
    assert advice("int8_p99.99") == "clip activation scales at the p99.99 percentile"
    assert advice("int8_per_token") == "use per-token activation scales"
    assert label("bogus") == "bogus" and advice("bogus") == "use bogus"
    assert find_format("int8_pxyz") is None and find_format("int8_p") is None


def test_resolve_formats():
    assert resolve_formats(["nvfp4", " int8_absmax", "nvfp4"], (99.9,)) == ("nvfp4", "int8_absmax")
    assert resolve_formats(["int8_p99.9"], (99.9,)) == ("int8_p99.9",)
    assert resolve_formats([], (99.9,)) == ()
    with pytest.raises(UsageError, match=r"unknown quantization format 'fp4'; valid formats: int8_absmax, ") as e:
        resolve_formats(["int8_absmax", "fp4"], (99.9,))
    assert "\n" not in str(e.value) and "mxfp4_e2m1" in str(e.value)
    with pytest.raises(UsageError, match="int8_p99.9, int8_per_token"):  # only the configured percentiles
        resolve_formats(["int8_p99.5"], (99.9,))


def test_site_quantizers_cover_every_registered_format():
    qs = site_quantizers(torch.tensor(1000.0), {99.9: 10.0, 99.99: 100.0})
    assert tuple(q.name for q in qs) == format_names((99.9, 99.99))
    by = {q.name: q for q in qs}
    assert all(by[n].clip_threshold is None for n in NEW + ("int8_per_token",))
    x = torch.randn(3, 70, generator=torch.Generator().manual_seed(0)) * 3
    assert same(by["fp8_e4m3_per_token"](x), fp8_per_token(x))
    assert same(by["fp8_e4m3_block128"](x), fp8_block(x))
    assert same(by["mxfp8_e4m3"](x), mxfp8_e4m3(x))
    assert same(by["mxfp4_e2m1"](x), mxfp4_e2m1(x))
    assert same(by["nvfp4"](x), nvfp4(x, torch.tensor(1000.0) / 2688))


# -- E2M1 element --------------------------------------------------------------------------------
def test_e2m1_grid_ties_saturation_and_nonfinite():
    grid = t([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    assert same(e2m1_round(grid), grid) and same(e2m1_round(-grid), -grid)
    # Ties go to the even code (codes 0, 0.5, 1, 1.5, 2, 3, 4, 6 = 0..7; even: 0, 1, 2, 4):
    # 0.25 (0 | 0.5) -> 0; 0.75 (0.5 | 1) -> 1; 1.25 (1 | 1.5) -> 1; 1.75 (1.5 | 2) -> 2;
    # 2.5 (2 | 3) -> 2; 3.5 (3 | 4) -> 4; 5 (4 | 6) -> 4.
    ties = t([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    assert same(e2m1_round(ties), t([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]))
    assert same(e2m1_round(-ties), -t([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]))
    # Just off the ties the nearest value wins; 0.3 -> the subnormal 0.5; 0.2 -> 0.
    assert same(e2m1_round(t([0.2, 0.3, 2.51, 4.99, 5.01, 0.74])), t([0.0, 0.5, 3.0, 4.0, 6.0, 0.5]))
    # Saturation at 6: 7 (between 6 and the would-be 8) and far beyond; +-Inf too; NaN stays NaN.
    assert same(e2m1_round(t([6.9, 7.0, 100.0, 1e30, INF, -INF, -7.0, NAN])),
                t([6.0, 6.0, 6.0, 6.0, 6.0, -6.0, -6.0, NAN]))


def test_mx_scale_is_the_floor_power_of_two_clamped_to_e8m0():
    e4m3, e2m1 = fake.FP8_FORMATS["fp8_e4m3"], fake.E2M1
    assert e4m3.emax == 8 and e2m1.emax == 2
    # floor(log2(1000)) = 9: E4M3 X = 2**1, E2M1 X = 2**7; exactly at a power of two: 2**10 -> 2**2.
    amax = t([1000.0, 1024.0, 1023.9999, 1.0, 2.0**-126])
    assert same(mx_scale(amax, e4m3), t([2.0, 4.0, 2.0, 2.0**-8, 2.0**-127]))  # -134 clamped to -127
    assert same(mx_scale(amax, e2m1), t([128.0, 256.0, 128.0, 0.25, 2.0**-127]))  # -128 clamped to -127
    # Every power of two float32 holds, and the float just below it: floor(log2) exact, then clamped.
    e = torch.arange(-149, 128, dtype=torch.float32)
    assert torch.equal(mx_scale(torch.exp2(e), e4m3), torch.exp2((e - 8).clamp(-127, 127)))
    below = torch.nextafter(torch.exp2(e[1:]), torch.tensor(0.0))
    assert torch.equal(mx_scale(below, e4m3), torch.exp2((e[1:] - 9).clamp(-127, 127)))
    assert same(mx_scale(t([0.0, 2.0**-140]), e2m1), t([2.0**-127, 2.0**-127]))  # zero and subnormal amax


# -- per-token FP8 -------------------------------------------------------------------------------
def test_fp8_per_token_hand_values():
    x = t([
        # amax 7: scale 7/448 = 2**-6. x/scale: 448, 64, -160 (1.25 * 2**7, exact), 19.2 -> binade
        # [16, 32) with step 2: 9.6 -> 10 -> 20 -> 20/64 = 0.3125.
        [7.0, 1.0, -2.5, 0.3, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],  # all-zero token stays zero
        # finite amax 1.75: scale 2**-8. NaN stays NaN, +-Inf saturate to +-448 * scale = +-1.75.
        [NAN, 1.75, INF, -INF, 0.5],
        # ties in [16, 32) (step 2): 19 -> 9.5 -> 10 (20); 17 -> 8.5 -> 8 (16); -21 -> -10.5 -> -10 (-20)
        [7.0, 19 / 64, 17 / 64, -21 / 64, 0.0],
    ])
    want = t([[7.0, 1.0, -2.5, 0.3125, 0.0], [0.0] * 5, [NAN, 1.75, 1.75, -1.75, 0.5],
              [7.0, 20 / 64, 16 / 64, -20 / 64, 0.0]])
    assert same(fp8_per_token(x), want)
    assert same(fp8_per_token(x.to(torch.bfloat16)), want.to(torch.bfloat16))


# -- 1x128 FP8 -----------------------------------------------------------------------------------
def test_fp8_block128_hand_values_and_short_last_block():
    # 200 channels: a block of 128, then a shorter block of 72 whose scale comes from its own values.
    x = torch.zeros(2, 200)
    x[0, 0], x[0, 1] = 448.0, 17.0  # block amax 448: scale 1; 17 -> binade [16, 32) step 2: 8.5 -> 8 -> 16
    x[0, 128], x[0, 129] = 7 / 1024, 3 / 1024  # block amax 7/1024: scale 2**-16; 448 and 192 exact
    x[0, 199] = NAN
    y = fp8_block(x)
    want = torch.zeros(2, 200)
    want[0, 0], want[0, 1], want[0, 128], want[0, 129], want[0, 199] = 448.0, 16.0, 7 / 1024, 3 / 1024, NAN
    assert same(y, want)  # the second token is all zeros: zeros
    # One scale per token (1) puts 7/1024 and 3/1024 in E4M3's subnormals (step 2**-9): 3.5 -> 4, 1.5 -> 2.
    assert same(fp8_per_token(x)[0, 128:130], t([8 / 1024, 4 / 1024]))
    # A block is a token of its own: per-token FP8 on each 128-channel slice.
    g = torch.randn(3, 256, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 3, 256)
    assert same(fp8_block(g), torch.cat([fp8_per_token(g[:, :128]), fp8_per_token(g[:, 128:])], -1))


# -- MX ------------------------------------------------------------------------------------------
def test_mxfp8_hand_values():
    x = torch.zeros(40)  # blocks: channels 0..31 and a short block 32..39
    # amax 1000: X = 2**(9 - 8) = 2. 1000/2 = 500 saturates to 448 -> 896; 3/2 = 1.5 exact;
    # 1.1/2 = 0.55 -> binade [0.5, 1) step 1/16: 8.8 -> 9 -> 0.5625 -> 1.125.
    x[:3] = t([1000.0, 3.0, 1.1])
    # amax 1: X = 2**-8. 1 -> 256; 0.3 -> 76.8 -> binade [64, 128) step 8: 9.6 -> 10 -> 80/256;
    # ties 76/256 -> 9.5 -> 10 (80/256), 68/256 -> 8.5 -> 8 (64/256).
    x[32:36] = t([1.0, 0.3, 76 / 256, 68 / 256])
    want = torch.zeros(40)
    want[:3] = t([896.0, 3.0, 1.125])
    want[32:36] = t([1.0, 80 / 256, 80 / 256, 64 / 256])
    assert same(mxfp8_e4m3(x), want)
    assert same(mx_quantize(x, "fp8_e4m3"), want)


def test_mxfp4_hand_values():
    x = torch.zeros(2, 40)
    # Block 0..31, amax 1000: X = 2**(9 - 2) = 128. 1000/128 = 7.8125 -> 6 (768); 100/128 = 0.78125 ->
    # below 1 the step is 0.5: 1.5625 -> 2 -> 1.0 (128); 1/128 -> 0; -300/128 = -2.34 -> -2 (-256).
    x[0, :4] = t([1000.0, 100.0, 1.0, -300.0])
    # Short block 32..39, amax 7: X = 2**(2 - 2) = 1: 7 saturates to 6, the rest are the E2M1 ties.
    x[0, 32:] = t([6.0, 7.0, 2.5, 0.25, -5.0, 3.5, 0.75, 1.25])
    want = torch.zeros(2, 40)
    want[0, :4] = t([768.0, 128.0, 0.0, -256.0])
    want[0, 32:] = t([6.0, 6.0, 2.0, 0.0, -4.0, 4.0, 1.0, 1.0])
    assert same(mxfp4_e2m1(x), want)  # the second token: two zero blocks, zeros
    assert same(mxfp4_e2m1(x.to(torch.bfloat16)), want.to(torch.bfloat16))


def test_mx_nonfinite_zero_blocks_and_e8m0_clamp():
    # NaN stays NaN and Inf saturates to the block's 448 * X (amax over finite values: 3 -> X = 2**-7).
    x = t([NAN, INF, -INF, 3.0])
    assert same(mxfp8_e4m3(x), t([NAN, 3.5, -3.5, 3.0]))
    assert same(mxfp4_e2m1(x), t([NAN, 3.0, -3.0, 3.0]))  # E2M1: X = 2**(1 - 2), 6 * X = 3
    # A block without finite non-zero values: amax 0, so the smallest scale 2**-127 (the spec's
    # floor(log2 0) clamped): zeros stay zeros, NaN stays NaN, Inf saturates to 448 * 2**-127.
    assert same(mxfp8_e4m3(t([0.0, INF, NAN, -0.0])), t([0.0, 448 * 2.0**-127, NAN, 0.0]))
    assert same(mxfp4_e2m1(torch.zeros(3, 33)), torch.zeros(3, 33))
    # E8M0 floor: amax 2**-130 wants X = 2**-138 but gets 2**-127; 3 * 2**-140 / 2**-127 = 3 * 2**-13
    # is below half of E4M3's smallest subnormal 2**-9: 0.
    assert same(mxfp8_e4m3(t([2.0**-130, 3 * 2.0**-140])), t([2.0**-130, 0.0]))


# -- NVFP4 ---------------------------------------------------------------------------------------
def test_nvfp4_hand_values():
    g = nvfp4_global_scale(2688.0)  # calibration absmax 2688 = 448 * 6: global scale 1
    assert g.item() == 1.0 and nvfp4_global_scale(torch.tensor(448.0)).item() == pytest.approx(1 / 6)
    x = torch.zeros(69)  # blocks of 16: 0, 16, 32, 48 and a short one of 5 at 64
    # amax 6: block scale (6 / 6) / 1 = 1; elements are the E2M1 ties.
    x[:7] = t([6.0, 2.5, 0.25, -5.0, 3.5, 0.75, 1.25])
    # amax 1000: 1000 / 6 = 166.67 -> E4M3 binade [128, 256) step 16: 10.42 -> 10 -> 160.
    # 1000/160 = 6.25 saturates to 6 (960); 100/160 = 0.625 -> 0.5 (80); 1/160 -> 0; -300/160 = -1.875 -> -2 (-320).
    x[16:20] = t([1000.0, 100.0, 1.0, -300.0])
    x[32] = 3000.0  # beyond the calibration: 500 saturates at 448; 3000/448 = 6.7 -> 6: 2688
    x[48] = 0.001  # 0.001 / 6 = 1.7e-4 rounds to E4M3 0 (smallest subnormal 2**-9): the block is zero
    # Short block, amax 0.5: 0.5 / 6 = 0.0833 -> binade [2**-4, 2**-3) step 2**-7: 10.67 -> 11 -> 11/128.
    # 0.5 / (11/128) = 5.82 -> 6 (66/128 = 0.515625); 0.25 / (11/128) = 2.91 -> 3 (33/128 = 0.2578125).
    x[64:66] = t([0.5, 0.25])
    want = torch.zeros(69)
    want[:7] = t([6.0, 2.0, 0.0, -4.0, 4.0, 1.0, 1.0])
    want[16:20] = t([960.0, 80.0, 0.0, -320.0])
    want[32] = 2688.0
    want[64:66] = t([66 / 128, 33 / 128])
    assert same(nvfp4(x, g), want)
    assert same(nvfp4(x.to(torch.bfloat16), g), want.to(torch.bfloat16))


def test_nvfp4_nonfinite_and_unusable_scales():
    g = torch.tensor(1.0)
    # finite amax 3: block scale 0.5; NaN stays NaN; +-Inf saturate to +-6 * 0.5.
    assert same(nvfp4(t([NAN, INF, -INF, 3.0]), g), t([NAN, 3.0, -3.0, 3.0]))
    assert same(nvfp4(torch.zeros(2, 17), g), torch.zeros(2, 17))
    for bad in (0.0, NAN, INF, -1.0):  # no usable global scale: zeros for finite inputs
        assert same(nvfp4(t([1.0, -5.0, INF]), torch.tensor(bad)), torch.zeros(3))


# -- block span ----------------------------------------------------------------------------------
def test_block_amax_range_and_span():
    assert NVFP4_SPAN_LIMIT == 448 / 2**-6 == 28672.0
    x = torch.zeros(2, 48)
    x[0, 0], x[0, 17], x[0, 40] = -1000.0, 0.5, NAN  # blocks: amax 1000, 0.5, 0 (NaN is not finite)
    x[1, 20] = 3.0
    top, low = block_amax_range(x)
    assert top.shape == low.shape == () and top.item() == 1000.0 and low.item() == 0.5
    assert nvfp4_block_span(x).item() == 2000.0
    # padding tokens are left out; the merge of two batches is max of maxima and min of minima
    top1, low1 = block_amax_range(x, mask=torch.tensor([False, True]))
    assert (top1.item(), low1.item()) == (3.0, 3.0)
    a, b = block_amax_range(x[:1]), block_amax_range(x[1:])
    assert torch.maximum(a[0], b[0]).item() == 1000.0 and torch.minimum(a[1], b[1]).item() == 0.5
    assert block_span(torch.maximum(a[0], b[0]), torch.minimum(a[1], b[1])).item() == 2000.0
    # no non-zero block: min is +inf and the span 0; a short last block counts on its own
    top0, low0 = block_amax_range(torch.zeros(3, 5))
    assert top0.item() == 0.0 and low0.item() == INF and nvfp4_block_span(torch.zeros(3, 5)).item() == 0.0
    assert block_amax_range(t([[4.0] * 16 + [0.25]]))[1].item() == 0.25
    assert block_amax_range(x, block=32)[1].item() == 3.0  # 32-value blocks: 1000, 0 | 3, 0


# -- planted outlier -----------------------------------------------------------------------------
def test_planted_outlier_block_formats_keep_the_other_blocks():
    """One 1000 among ones (2 tokens x 256 channels, calibration absmax 1000). Squared error, by hand:

    * int8_absmax: scale 1000/127, every 1 rounds to 0: 511 ones lost -> 511.
    * int8_per_token: only the outlier's token loses its 255 ones -> 255.
    * fp8_e4m3 (static, scale 1000/448): 1 -> 0.448 -> 0.4375 (step 2**-5) -> 0.9765625, error 3/128
      on each of the 511 ones -> 511 * 9/16384.
    * fp8_e4m3_per_token: the same on the outlier's token only -> 255 * 9/16384.
    * fp8_e4m3_block128: the same on the outlier's 1x128 tile only -> 127 * 9/16384.
    * mxfp8_e4m3: X = 2 in the outlier's block, ones exact (1/2 = 0.5); the outlier itself 500 > 448
      saturates: 1000 -> 896 -> 104**2 = 10816. Every other block exact.
    * nvfp4 (g = 1000/2688): the outlier's block scale 448, elements 1000/(448 g) = 6 exact and
      1/(448 g) = 0.006 -> 0: its 15 ones are lost. Other blocks: (1/6)/g = 0.448 -> E4M3 0.4375,
      1/(0.4375 g) = 6.14 saturates to 6 -> 0.9765625: 496 * 9/16384. Total 15 + 496 * 9/16384.
    * mxfp4_e2m1: X = 2**7 in the outlier's block: 31 ones -> 0, 1000/128 = 7.8 -> 6 (768): 31 + 232**2.
      Other blocks: X = 1/4, 1 -> 4 exact.
    """
    x = torch.ones(2, 256)
    x[0, 0] = 1000.0
    qs = {q.name: q for q in site_quantizers(torch.tensor(1000.0), {99.9: 1.0})}
    err = {n: float(((q(x).double() - x.double()) ** 2).sum()) for n, q in qs.items()}
    small = {n: float(((q(x).double() - x.double())[x != 1000] ** 2).sum()) for n, q in qs.items()}
    e = 9 / 16384  # (3/128)**2
    want = {"int8_absmax": 511.0, "int8_per_token": 255.0, "fp8_e4m3": 511 * e, "fp8_e4m3_per_token": 255 * e,
            "fp8_e4m3_block128": 127 * e, "mxfp8_e4m3": 0.0, "nvfp4": 15 + 496 * e, "mxfp4_e2m1": 31.0}
    for n, w in want.items():
        assert small[n] == pytest.approx(w, rel=1e-5, abs=1e-9), n
    assert err["mxfp8_e4m3"] == 104.0**2 and err["mxfp4_e2m1"] == 31 + 232.0**2
    for n in ("int8_absmax", "fp8_e4m3", "nvfp4"):  # the outlier is (nearly) exact: absmax maps onto qmax
        assert err[n] == pytest.approx(want[n], abs=1e-3), n
    # A power-of-two outlier fits an MX block without saturating: MXFP8 is exact everywhere.
    x[0, 0] = 1024.0
    assert same(mxfp8_e4m3(x), x)


# -- no host reads ------------------------------------------------------------------------------
def test_new_formats_never_read_values_on_the_host():
    # Meta tensors have no data: any .item(), boolean indexing or data-dependent shape raises.
    x = torch.empty(2, 3, 70, device="meta", dtype=torch.bfloat16)
    absmax = torch.empty((), device="meta")
    for q in site_quantizers(absmax, {99.9: absmax * 0.5}):
        assert q(x).shape == x.shape and q(x).dtype == torch.bfloat16
    top, low = block_amax_range(x, mask=torch.ones(2, 3, dtype=torch.bool, device="meta"))
    assert top.device.type == low.device.type == "meta" and nvfp4_block_span(x).shape == ()


def test_emulated_element_cast_matches_native():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 300, generator=g) * torch.exp2(torch.randint(-12, 12, (4, 300), generator=g).float())
    x[0, 5], x[1, 7], x[2, 9] = NAN, INF, -INF
    fns = (fp8_per_token, fp8_block, mxfp8_e4m3, mxfp4_e2m1, lambda v: nvfp4(v, torch.tensor(0.01)))
    native = [f(x) for f in fns]
    saved = fake._NATIVE_FP8_DEVICES
    fake._NATIVE_FP8_DEVICES = ()
    try:
        emulated = [f(x) for f in fns]
    finally:
        fake._NATIVE_FP8_DEVICES = saved
    assert all(same(a, b) for a, b in zip(native, emulated))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_without_sync():
    x = torch.randn(3, 5, 200, generator=torch.Generator().manual_seed(4)) * 50
    x[0, 0, 0] = 3000.0
    absmax = torch.tensor(1000.0)
    cpu = [q(x) for q in site_quantizers(absmax, {99.9: 10.0})]
    xc, ac = x.cuda(), absmax.cuda()
    qs = site_quantizers(ac, {99.9: ac * 0.01})
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = [q(xc) for q in qs]
        block_amax_range(xc)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for q, a, b in zip(qs, cpu, out):
        assert torch.allclose(a, b.cpu(), rtol=1e-6, atol=0), q.name
