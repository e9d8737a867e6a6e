"""Inside fused MoE experts: per-expert sites, routing coverage, per-expert quantization (the seam)."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest
import torch
from models import tiny_model

from maxact_card.measure import measure
from maxact_card.measure.dispatch import HostReads, ops_per_forward
from maxact_card.measure.expert_check import expert_quantizers
from maxact_card.measure.expert_stats import ExpertRange
from maxact_card.measure.experts import Observing, experts_seam, tapped
from maxact_card.measure.context import make_context
from maxact_card.measure.passes import Probe
from maxact_card.quant.fake import int8_static
from maxact_card.sites import find_sites

FAMILIES = ("qwen3_moe", "mixtral", "gpt_oss", "deepseek_v3")
DEEPSEEK = {"n_routed_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "first_k_dense_replace": 0,
            "n_group": 1, "topk_group": 1, "kv_lora_rank": 16, "q_lora_rank": None, "qk_rope_head_dim": 8,
            "qk_nope_head_dim": 8, "v_head_dim": 8, "n_shared_experts": 1, "num_key_value_heads": 4, "head_dim": 8}
SAMPLES = [[1, 5, 9, 22, 41, 7, 88, 13, 64, 3, 17], [1, 30, 31, 32, 99, 100, 12], [1, 77, 6, 120, 54, 45, 46, 47, 8],
           [1, 9, 9, 9, 60], [1, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111]]


def moe_model(arch: str, **kw):
    if arch == "deepseek_v3":
        from transformers import AutoModelForCausalLM, DeepseekV3Config
        from models import COMMON

        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(DeepseekV3Config(**{**COMMON, **DEEPSEEK, **kw})).eval()
    return tiny_model(arch, **kw)


def experts_of(model, layer: int):
    return next(s.module for s in find_sites(model).expert_sites if s.layer == layer)


def plant(model, layer: int, expert: int, channel: int, factor: float = 60.0) -> None:
    """Scale the gate and up weights of one intermediate channel of one expert: its down input there grows
    by about factor**2."""
    ex = experts_of(model, layer)
    w = ex.gate_up_proj.data[expert]  # [2I, H], or [H, 2I] transposed
    inter = ex.down_proj.shape[-1] if not ex.is_transposed else ex.down_proj.shape[-2]
    cols = (channel, inter + channel) if ex.is_concatenated else (2 * channel, 2 * channel + 1)
    for c in cols:
        if ex.is_transposed:
            w[:, c] *= factor
        else:
            w[c] *= factor


def brute_force(model, layer: int):
    """Each sample alone, through transformers' eager experts: every (sample, position, expert)'s down
    input, by a plain loop over tokens; returns expert -> (|a|, sample, position, token, channel)."""
    ex = experts_of(model, layer)
    seen = {}

    def grab(module, args, kwargs):
        seen["args"] = args

    best: dict[int, tuple] = {}
    model.set_experts_implementation("eager")
    h = ex.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for s, ids in enumerate(SAMPLES):
                model(torch.tensor([ids]), use_cache=False)
                hidden, index, _ = seen["args"]
                for t in range(hidden.shape[0]):
                    for e in index[t].tolist():
                        if ex.is_transposed:
                            gu = hidden[t] @ ex.gate_up_proj[e] + (ex.gate_up_proj_bias[e] if ex.has_bias else 0)
                        else:
                            gu = torch.nn.functional.linear(hidden[t], ex.gate_up_proj[e])
                        a = ex._apply_gate(gu[None])[0].abs()
                        v, c = float(a.max()), int(a.argmax())
                        if e not in best or v > best[e][0]:
                            best[e] = (v, s, t, ids[t], c)
    finally:
        h.remove()
        model.set_experts_implementation("grouped_mm")
    return best


@pytest.mark.parametrize("arch", FAMILIES)
def test_a_planted_outlier_in_one_expert_is_found_where_it_is(arch):
    model = moe_model(arch)
    plant(model, layer=1, expert=2, channel=5)
    out = measure(model, find_sites(model), SAMPLES, 0, lambda i: f"w{i}", batch_size=2, hist_stride=1)
    site = next(s for s in out.sites if s.name == "layers.1.mlp.experts.down_in")
    expected = brute_force(model, 1)
    top = max(expected.items(), key=lambda kv: kv[1][0])
    loc = site.absmax_location
    assert top[0] == 2 and loc.expert == 2
    assert (loc.sample, loc.position, loc.token_id, loc.token, loc.channel) == (*top[1][1:4], "w%d" % top[1][3],
                                                                                  top[1][4])
    assert site.absmax == pytest.approx(top[1][0], rel=1e-5)
    for e, (v, s, t, tok, c) in expected.items():  # and every expert's own maximum
        got = site.per_expert[e]
        assert abs(got.value) == pytest.approx(v, rel=1e-5)
        assert (got.location.expert, got.location.sample, got.location.position, got.location.channel) == (e, s, t, c)
    gate = next(s for s in out.sites if s.name == "layers.1.mlp.experts.gate")
    assert gate.absmax_location.expert == 2 and gate.kind == "mlp.experts.gate"
    layer = next(x for x in out.experts if x.layer == 1)
    assert layer.down_in_expert == 2 and layer.down_in_absmax == site.absmax
    assert sum(layer.routed) == sum(len(s) for s in SAMPLES) * find_sites(model).expert_sites[0].module.config.num_experts_per_tok


def test_an_unreachable_expert_is_dead_uncalibrated_and_never_quantized_to_nan():
    model = moe_model("gpt_oss")
    for layer in model.model.layers:
        layer.mlp.router.bias.data[3] = -1e4  # never among the top 2
    out = measure(model, find_sites(model), SAMPLES, 0, str, batch_size=2, calib_indices=[0, 1])
    for x in out.experts:
        assert x.dead == (3,) and x.routed[3] == 0 and x.reached == 3 and x.uncalibrated == (3,)
        assert x.imbalance == pytest.approx(max(x.routed) * 4 / sum(x.routed))
        assert x.router == "mlp.router (GptOssTopKRouter)"
    assert all(math.isfinite(e.delta_nll) for e in out.quant.end_to_end)
    names = {e.site for e in out.quant.sites}
    assert {"layers.0.mlp.experts.in", "layers.0.mlp.experts.down_in"} <= names
    assert "layers.0.mlp.experts.in" not in {s.name for s in find_sites(model).hooked}


def test_an_uncalibrated_expert_takes_the_layers_scale():
    r = ExpertRange(3)
    ctx = make_context(torch.tensor([[1, 2, 3]]), torch.ones(1, 3), torch.tensor([0]), None)
    x = torch.tensor([[1.0, -2.0], [4.0, 0.5], [0.25, 8.0]])
    r.update_rows(x, torch.tensor([0, 0, 1]), torch.tensor([0, 1, 2]), ctx)
    assert r.uncalibrated() == (2,)
    assert r.scales_absmax().tolist() == [4.0, 8.0, 8.0]
    q = next(q for q in expert_quantizers(r, (99.9,)) if q.name == "int8_absmax")
    rows = torch.tensor([[3.0, -7.0], [3.0, -7.0]])
    got = q.at(torch.tensor([0, 2]))(rows)
    assert torch.equal(got[0], int8_static(rows[:1], 4.0 / 127)[0])
    assert torch.equal(got[1], int8_static(rows[1:], 8.0 / 127)[0])
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_seam_computes_what_eager_computes_bit_for_bit(arch):
    model = moe_model(arch)
    ex = experts_of(model, 0)
    torch.manual_seed(1)
    for k in (2, 3):
        h = torch.randn(40, 32)
        idx = torch.stack([torch.randperm(ex.num_experts)[:k] for _ in range(40)])
        w = torch.rand(40, k)
        model.set_experts_implementation("eager")
        with torch.no_grad():
            ref = ex(h, idx, w)
        model.set_experts_implementation("grouped_mm")
        with torch.no_grad(), experts_seam(model):
            assert torch.equal(ex(h, idx, w), ref)
        with torch.no_grad(), experts_seam(model, accelerator=True):
            grouped = ex(h, idx, w)  # grouped_mm's ops: the accelerator path
        with torch.no_grad():
            assert torch.equal(grouped, ex(h, idx, w))


@pytest.mark.parametrize("arch", FAMILIES)
def test_logits_with_the_probe_attached_equal_logits_without_it(arch):
    for dtype in (torch.float32, torch.bfloat16):
        model = moe_model(arch).to(dtype)
        ids = torch.tensor([SAMPLES[0][:9], SAMPLES[2][:9]])
        mask = torch.ones_like(ids)
        model.set_experts_implementation("eager")
        with torch.no_grad():
            plain = model(ids, attention_mask=mask, use_cache=False).logits
        model.set_experts_implementation("grouped_mm")
        sites = find_sites(model)
        probe = Probe(model, sites)
        ctx = make_context(ids, mask, torch.arange(2), None)
        with torch.no_grad(), experts_seam(model), probe.hooks(ctx):
            probed = model(ids, attention_mask=mask, use_cache=False).logits
        assert probed.dtype == plain.dtype
        assert torch.equal(probed, plain), (arch, dtype)


def test_the_accelerator_path_reads_nothing_back_inside_the_experts():
    model = moe_model("qwen3_moe")
    sites = find_sites(model)
    ids = torch.tensor([SAMPLES[0][:9], SAMPLES[2][:9]])
    mask = torch.ones_like(ids)
    probe = Probe(model, sites, accelerator=True)
    ctx = make_context(ids, mask, torch.arange(2), None)
    reads = HostReads()

    class Inside(Observing):  # the seam's own ops between the taps count too
        def gate_up_in(self, x, e, t):
            reads.inside = True

    with torch.no_grad(), experts_seam(model, accelerator=True), probe.hooks(ctx), \
            tapped([s.module for s in sites.expert_sites[::2]], [Inside() for _ in sites.expert_sites[::2]]), reads:
        model(ids, attention_mask=mask, use_cache=False)
    assert reads.found == []


@pytest.mark.parametrize("arch", ("qwen3_moe", "mixtral"))
def test_the_op_budget_holds_with_the_experts_sites_counted(arch):
    """The engine's budget (probe <= 2x the bare forward's ops, each quantized forward <= 3x) on the
    accelerator path, with the per-expert sites, routing counts and per-expert quantization counted,
    at 24 layers (the per-forward folds are fixed costs that a 2-layer model would overstate)."""
    model = moe_model(arch, num_hidden_layers=24)
    ids = torch.tensor([SAMPLES[0][:9], SAMPLES[2][:9]])
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    ops = ops_per_forward(model, ids, mask)
    assert ops["probe"] <= 2 * ops["bare"], ops
    for fmt, n in ops.items():
        assert n <= 3 * ops["bare"], (fmt, ops)


def test_the_report_keeps_the_experts_block_and_the_card_has_one_line_on_it():

    from factories import make_report, visible_lines

    from maxact_card.card import render_section
    from maxact_card.report import ExpertLayer, Report

    layers = (ExpertLayer(0, 8, "mlp.gate (Qwen3MoeTopKRouter)", (5, 0, 9, 2, 0, 7, 1, 8), (1, 4), 1.875, 41.5, 2,
                          (1, 4, 6)),
              ExpertLayer(1, 8, "mlp.gate (Qwen3MoeTopKRouter)", (4,) * 8, (), 1.0, 1234.5, 7))
    report = dataclasses.replace(make_report(), experts=layers)
    assert Report.from_json(report.to_json()) == report
    section = render_section(report)
    lines = [line for line in visible_lines(section) if "**Experts:**" in line]
    assert lines == ["- **Experts:** 2 MoE layers of 8 experts: 2 experts got no token, in 1 of the layers "
                     "(layer 0: 1, 4); load imbalance up to 1.88x; largest per-expert down input 1,234 "
                     "(layer 1, expert 7); 3 experts had no calibration token (quantized with their layer's scale)"]
    assert "**Experts:**" not in render_section(make_report())
    from maxact_card.report import KindMax
    from maxact_card.summary import summary

    wide = KindMax("mlp.experts.down_in", 1234.5, "layers.1.mlp.experts.down_in", 1)
    text = summary(dataclasses.replace(report, kinds=report.kinds + (wide,))).splitlines()
    assert "  experts: " + lines[0].removeprefix("- **Experts:** ") in text
    head = next(i for i, t in enumerate(text) if t.split()[:2] == ["site", "kind"])
    table = text[head : head + len(report.kinds) + 2]
    assert len({t.rindex(" ") for t in table}) == 1, table  # the "where" column lines up
    assert text[head + len(report.kinds) + 2].startswith("  experts: ")


on_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@on_cuda
@pytest.mark.parametrize("arch", FAMILIES)
def test_on_cuda_logits_with_the_probe_attached_equal_grouped_mms(arch):
    """On the device the seam runs grouped_mm's kernels: the model's own default, bit for bit."""
    for dtype in (torch.float32, torch.bfloat16):
        model = moe_model(arch).to("cuda", dtype)
        ids = torch.tensor([SAMPLES[0][:9], SAMPLES[2][:9]], device="cuda")
        mask = torch.ones_like(ids)
        model.set_experts_implementation("grouped_mm")
        with torch.no_grad():
            plain = model(ids, attention_mask=mask, use_cache=False).logits
        probe = Probe(model, find_sites(model))
        ctx = make_context(ids, mask, torch.arange(2, device="cuda"), None)
        with torch.no_grad(), experts_seam(model), probe.hooks(ctx):
            probed = model(ids, attention_mask=mask, use_cache=False).logits
        assert probed.dtype == plain.dtype
        assert torch.equal(probed, plain), (arch, dtype)


@on_cuda
@pytest.mark.parametrize("arch", ("qwen3_moe", "gpt_oss"))
def test_on_cuda_the_experts_taps_add_no_device_sync(arch):
    import warnings

    model = moe_model(arch).to("cuda")
    sites = find_sites(model)
    ids = torch.tensor([SAMPLES[0][:9], SAMPLES[2][:9]], device="cuda")
    mask = torch.ones_like(ids)
    probe = Probe(model, sites)
    ctx = make_context(ids, mask, torch.arange(2, device="cuda"), None)

    def syncs(taps: bool) -> int:
        with warnings.catch_warnings(record=True) as seen, torch.inference_mode():
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with experts_seam(model), probe.hooks(ctx) if taps else contextlib.nullcontext():
                    model(ids, attention_mask=mask, use_cache=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in seen)

    syncs(False)  # lazy initialisation may synchronize once
    assert syncs(True) == syncs(False)


@on_cuda
@pytest.mark.parametrize("arch", FAMILIES)
def test_on_cuda_the_experts_statistics_and_quant_check_match_the_cpus(arch):
    torch.backends.cuda.matmul.allow_tf32 = False
    out = {}
    for device in ("cpu", "cuda"):
        model = moe_model(arch).to(device)
        plant(model, layer=1, expert=2, channel=5)
        out[device] = measure(model, find_sites(model), SAMPLES, 0, str, batch_size=2, hist_stride=1,
                              calib_indices=[0, 2])
    cpu, gpu = out["cpu"], out["cuda"]
    assert [x.routed for x in gpu.experts] == [x.routed for x in cpu.experts]
    assert [x.dead for x in gpu.experts] == [x.dead for x in cpu.experts]
    for c, g in zip(cpu.sites, gpu.sites):
        if "experts" not in c.name:
            continue
        assert g.absmax == pytest.approx(c.absmax, rel=1e-4), c.name
        assert g.absmax_location == c.absmax_location, c.name
        # per expert: the same row (a token after the same prefix in two samples ties; either sample is right)
        for p, q in zip(g.per_expert, c.per_expert):
            assert (p is None) == (q is None), c.name
            if p is not None:
                assert abs(p.value) == pytest.approx(abs(q.value), rel=1e-4), c.name
                assert dataclasses.replace(p.location, sample=0) == dataclasses.replace(q.location, sample=0), c.name
    e2e = {e.format: e.delta_nll for e in cpu.quant.end_to_end}
    for e in gpu.quant.end_to_end:
        assert math.isfinite(e.delta_nll) and e.delta_nll == pytest.approx(e2e[e.format], abs=5e-3), e.format


@pytest.mark.parametrize("arch", FAMILIES)
def test_the_accelerator_path_checks_every_family_as_the_cpu_path_does(arch):
    """Elementwise error sums and [B, 1, T, C] linear inputs (deepseek_v3's latent kv_b_proj) included."""
    out = {}
    for accelerator in (False, True):
        model = moe_model(arch)
        out[accelerator] = measure(model, find_sites(model), SAMPLES, 0, str, batch_size=2, calib_indices=[0, 2],
                                   accelerator=accelerator)
    cpu = {(e.site, e.format): (e.rel_rmse, e.clip_rate) for e in out[False].quant.sites}
    assert cpu and {(e.site, e.format) for e in out[True].quant.sites} == set(cpu)
    for e in out[True].quant.sites:
        assert (e.rel_rmse, e.clip_rate) == pytest.approx(cpu[(e.site, e.format)], rel=1e-4, abs=1e-9), (e.site, e.format)
    e2e = {e.format: e.delta_nll for e in out[False].quant.end_to_end}
    for e in out[True].quant.end_to_end:
        assert e.delta_nll == pytest.approx(e2e[e.format], abs=1e-4), e.format
