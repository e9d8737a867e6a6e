"""The INT8/FP8 check inside the audit passes: identity, planted outliers, clipping, verdicts."""

from __future__ import annotations

import math

import pytest
import torch

from maxact_card.measure import measure
from maxact_card.measure.check import Calibration, linear_inputs
from maxact_card.quant import Quantizer, e2e_formats, format_names
from maxact_card.sites import find_sites
from models import tiny_model

SAMPLES = [[1] + [4 + ((i * 7 + j * 13) % 120) for j in range(6 + i % 9)] for i in range(16)]
CALIB = list(range(0, 16, 2))
TOK, CH = 7, 11


def check(model, samples=SAMPLES, calib=CALIB, batch_size=4, formats=None):
    return measure(model, find_sites(model), samples, 0, str, batch_size=batch_size, calib_indices=calib,
                   formats=formats)


def errors(quant, site):
    return {e.format: e for e in quant.sites if e.site == site}


def test_every_linear_input_is_covered_once_per_shared_tensor():
    names = [li.site.name for li in linear_inputs(find_sites(tiny_model("llama")))]
    assert names == [f"layers.{i}.{n}" for i in range(2) for n in
                     ("attn.q_proj.in", "attn.o_proj.in", "mlp.gate_proj.in", "mlp.down_in")]
    groups = {li.site.name: len(li.linears) for li in linear_inputs(find_sites(tiny_model("llama")))}
    assert groups["layers.0.attn.q_proj.in"] == 3 and groups["layers.0.mlp.gate_proj.in"] == 2
    moe = [li.site.name for li in linear_inputs(find_sites(tiny_model("qwen3_moe")))]
    assert "layers.0.mlp.experts.in" not in moe  # fused experts: quantized per expert in the seam
    from maxact_card.measure.expert_check import expert_inputs
    assert expert_inputs(find_sites(tiny_model("qwen3_moe")))[0].names == ("layers.0.mlp.experts.in",
                                                                          "layers.0.mlp.experts.down_in")


def test_identity_quantizers_give_exactly_zero_delta_nll(monkeypatch):
    """Every registered format run end to end, each quantizer made the identity: Delta NLL is 0."""
    def identity(self, percentiles):
        return {s.name: tuple(Quantizer(n, lambda x: x, None) for n in format_names(percentiles)) for s in self.sites}

    monkeypatch.setattr(Calibration, "quantizers", identity)
    everything = format_names((99.9, 99.99))
    assert {"nvfp4", "mxfp4_e2m1", "mxfp8_e4m3", "fp8_e4m3_block128", "fp8_e4m3_per_token"} <= set(everything)
    q = check(tiny_model("llama"), formats=everything).quant
    assert [e.format for e in q.end_to_end] == list(everything)
    for e in q.end_to_end:
        assert e.delta_nll == 0.0 and e.ppl_ratio == 1.0 and e.nll == q.baseline_nll
    assert all(e.sqnr_db == math.inf and e.rel_rmse == 0.0 and e.clip_rate == 0.0 for e in q.sites)
    assert q.calib_samples == 8 and q.eval_samples == 8
    assert q.eval_tokens == sum(len(SAMPLES[i]) for i in range(1, 16, 2))


def test_each_pass_reports_progress_on_its_own_display():
    """Calibration and evaluation get one display each, sized in samples and advanced to the end,
    the evaluation named with its forwards per sample; without the check, one probe display."""
    import contextlib

    shown: list[list] = []

    @contextlib.contextmanager
    def progress(total: int, desc: str):
        record = [desc, total, 0, 0]
        shown.append(record)

        def advance(samples: int, tokens: int) -> None:
            record[2] += samples
            record[3] += tokens

        yield advance

    model = tiny_model("llama")
    calib_tokens = sum(len(SAMPLES[i]) for i in CALIB)
    out = measure(model, find_sites(model), SAMPLES, 0, str, batch_size=3, calib_indices=CALIB, progress=progress)
    assert shown == [["calibrate", 8, 8, calib_tokens],
                     [f"evaluate (x{1 + len(e2e_formats((99.9, 99.99)))} forwards)", 8, 8, sum(map(len, SAMPLES)) - calib_tokens]]
    assert out.tokens == sum(map(len, SAMPLES)) and out.quant.eval_tokens == shown[1][3]
    shown.clear()
    measure(model, find_sites(model), SAMPLES, 0, str, batch_size=3, progress=progress)
    assert shown == [["probe", 16, 16, sum(map(len, SAMPLES))]]


def test_probe_statistics_are_the_same_with_and_without_the_check():
    model = tiny_model("qwen3")
    plain = {s.name: s for s in measure(model, find_sites(model), SAMPLES, 0, str, batch_size=4).sites}
    checked = {s.name: s for s in check(model).sites}
    for name, s in plain.items():
        c = checked[name]
        assert c.count == s.count and c.absmax_location == s.absmax_location
        assert c.absmax == pytest.approx(s.absmax, rel=1e-6) and c.mean == pytest.approx(s.mean, rel=1e-4, abs=1e-7)


def silence_blocks(model):
    with torch.no_grad():
        for blk in model.model.layers:
            blk.self_attn.o_proj.weight.zero_()
            blk.mlp.down_proj.weight.zero_()


def residual0(model, samples, idx):
    """layers.0.residual of the given samples (= the embeddings once the blocks write nothing)."""
    emb = model.model.embed_tokens.weight
    return torch.cat([emb[torch.tensor(samples[i])] for i in idx]).double().detach()


def test_planted_outlier_costs_per_tensor_int8_what_the_math_predicts():
    """A 40-sigma outlier sets the per-tensor scale: uniform rounding noise D^2/12 with D = 40s/127
    predicts the SQNR; per-token scales confine the damage to the outlier's own tokens."""
    wide = dict(hidden_size=256, intermediate_size=64)
    samples = [[1] + [4 + ((i * 31 + j * 17) % 124) for j in range(60)] for i in range(16)]
    samples = [s[:3] + [TOK] + s[3:] if i % 8 in (0, 1) else s for i, s in enumerate(samples)]
    results, predicted = {}, {}
    for planted in (False, True):
        model = tiny_model("llama", **wide)
        silence_blocks(model)
        with torch.no_grad():
            emb = model.model.embed_tokens.weight
            emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(1)))
            if planted:
                emb[TOK, CH] = 40.0
        results[planted] = errors(check(model, samples).quant, "layers.0.residual")
        x = residual0(model, samples, range(1, 16, 2))
        calib_absmax = float(residual0(model, samples, CALIB).abs().max())
        signal = float((x**2).sum())
        tensor_noise = x.numel() * (calib_absmax / 127) ** 2 / 12
        token_noise = float((x.shape[1] * (x.abs().amax(1) / 127) ** 2 / 12).sum())
        predicted[planted] = (10 * math.log10(signal / tensor_noise), 10 * math.log10(signal / token_noise))
    clean, hit = results[False], results[True]
    for planted, res in results.items():
        assert res["int8_absmax"].sqnr_db == pytest.approx(predicted[planted][0], abs=0.5)
        assert res["int8_per_token"].sqnr_db == pytest.approx(predicted[planted][1], abs=0.5)
    tensor_drop = clean["int8_absmax"].sqnr_db - hit["int8_absmax"].sqnr_db
    token_drop = clean["int8_per_token"].sqnr_db - hit["int8_per_token"].sqnr_db
    assert tensor_drop > 15 and token_drop < tensor_drop / 3


def test_percentile_clipping_beats_absmax_on_a_heavy_tailed_site():
    """Gaussian body with one 12-sigma outlier in 512k values: clipping it at a percentile costs
    less than the coarse rounding an absmax scale imposes on everything else."""
    model = tiny_model("llama", hidden_size=256, intermediate_size=64)
    silence_blocks(model)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.copy_(torch.randn(emb.shape, generator=torch.Generator().manual_seed(2)))
        emb[TOK, CH] = 12.0
    samples = [[1] + [8 + ((i * 31 + j * 17) % 120) for j in range(249)] for i in range(16)]
    samples[0][5] = samples[1][5] = TOK  # once in the calibration part, once in the evaluation part
    err = errors(check(model, samples).quant, "layers.0.residual")
    for fmt in ("int8_p99.9", "int8_p99.99"):
        assert err[fmt].sqnr_db > err["int8_absmax"].sqnr_db + 3.0
        assert 0 < err[fmt].clip_rate < 0.0015
    assert err["int8_absmax"].clip_rate == 0.0


def test_verdicts_and_fp16_headroom_of_a_model_past_65504():
    model = tiny_model("llama")
    silence_blocks(model)
    with torch.no_grad():
        model.model.embed_tokens.weight[TOK, CH] = 70000.0
    samples = [s[:2] + [TOK] + s[2:] for s in SAMPLES]
    q = check(model, samples).quant
    v = {x.format: x.verdict for x in q.verdicts}
    assert v["fp16"] == "unsafe" and v["bf16"] == "ok"
    assert "fp16" in q.recommendation


def test_calibration_leaving_nothing_to_evaluate_is_a_usage_error():
    from maxact_card.errors import UsageError

    with pytest.raises(UsageError, match="--calib-samples"):
        check(tiny_model("llama"), calib=list(range(16)))
