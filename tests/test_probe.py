"""The probe's statistics: planted activations, padding and batch-size invariance, brute force."""

from __future__ import annotations

import math

import pytest
import torch

from maxact_card.measure import kind_maxima, measure, peak_of
from maxact_card.sites import find_sites
from models import tiny_config, tiny_model

TOK, CH0, CH = 7, 3, 11  # planted token, its embedding channel, the channel the plant writes to
SAMPLES = [[1, 5, 9, 12, 40], [1, 22, TOK, 30, 31, 32, 33], [1, 8, 8], [1, 50, 51, 52, TOK, 60]]
# TOK first appears in sample 1 at position 2.


def run(model, samples, batch_size=2, hist_stride=1):
    return measure(model, find_sites(model), samples, 0, lambda i: f"w{i}", batch_size=batch_size,
                   hist_stride=hist_stride).sites


def silu(v: float) -> float:
    return v / (1 + math.exp(-v))


def plant_mlp(model, layer: int, moe: bool, g=2.0, u=3.0, d=500.0) -> float:
    """TOK's embedding becomes the one-hot e_CH0; every attention and MLP writes nothing except layer
    `layer`'s MLP, which maps e_CH0 to d * silu(g s) * (u s) on channel CH (s = the RMSNorm of e_CH0).
    Returns that value, computed by hand in float64."""
    cfg = model.config
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, CH0] = 0.0
        emb[:, CH] = 0.0
        emb[TOK] = 0.0
        emb[TOK, CH0] = 1.0
        for i, blk in enumerate(model.model.layers):
            blk.self_attn.o_proj.weight.zero_()
            if moe:
                experts = blk.mlp.experts
                experts.gate_up_proj.zero_()
                experts.down_proj.zero_()
                if i == layer:
                    inter = experts.down_proj.shape[-1]
                    experts.gate_up_proj[:, 0, CH0] = g
                    experts.gate_up_proj[:, inter, CH0] = u
                    experts.down_proj[:, CH, 0] = d
            else:
                blk.mlp.down_proj.weight.zero_()
                if i == layer:
                    blk.mlp.gate_proj.weight.zero_()
                    blk.mlp.up_proj.weight.zero_()
                    blk.mlp.gate_proj.weight[0, CH0] = g
                    blk.mlp.up_proj.weight[0, CH0] = u
                    blk.mlp.down_proj.weight[CH, 0] = d
    s = 1.0 / math.sqrt(1.0 / cfg.hidden_size + cfg.rms_norm_eps)
    return d * silu(g * s) * (u * s)


@pytest.mark.parametrize("arch,moe", [("llama", False), ("qwen3_moe", True), ("mixtral", True)])
def test_planted_mlp_activation_is_found_with_its_location(arch, moe):
    model = tiny_model(arch)
    if arch == "qwen3_moe":
        model.config.norm_topk_prob = True
        for blk in model.model.layers:
            blk.mlp.gate.norm_topk_prob = True
    expected = plant_mlp(model, layer=1, moe=moe)
    sites = run(model, SAMPLES)
    peak = peak_of(sites)
    # The plant is carried unchanged along the residual stream after layer 1: the earliest site wins.
    assert peak.site == "layers.1.mlp" and peak.kind == "mlp" and peak.layer == 1
    assert (peak.sample, peak.position, peak.token_id, peak.token, peak.channel) == (1, 2, TOK, f"w{TOK}", CH)
    assert peak.value == pytest.approx(expected, rel=1e-5) and peak.abs == peak.value
    residual = {s.name: s for s in sites}["layers.1.residual"]
    assert residual.absmax == peak.abs  # the tie the forward-order rule resolves
    assert residual.absmax_location.position == 2
    assert {k.kind: k.site for k in kind_maxima(sites)}["mlp"] == "layers.1.mlp"


def test_planted_embedding_after_gemma_scaling_negative_sign():
    model = tiny_model("gemma3_text")
    value = -40.0
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, CH] = 0.0
        emb[TOK, CH] = value
        for blk in model.model.layers:  # Gemma norms scale by (1 + w): -1 silences channel CH
            blk.post_attention_layernorm.weight[CH] = -1.0
            blk.post_feedforward_layernorm.weight[CH] = -1.0
    scale = torch.tensor(model.config.hidden_size**0.5, dtype=torch.float32)
    expected = float(torch.tensor(value) * scale)
    sites = run(model, SAMPLES)
    peak = peak_of(sites)
    assert peak.site == "embed" and peak.layer is None and peak.kind == "embed"
    assert peak.value == expected and peak.abs == -expected
    assert (peak.sample, peak.position, peak.channel, peak.token_id) == (1, 2, CH, TOK)
    by = {s.name: s for s in sites}
    assert by["embed"].absmax_location.sign == -1 and by["embed"].min == expected
    assert by["layers.1.residual"].absmax == -expected  # carried along, not re-counted as the peak


def _comparable(s):
    d = {k: getattr(s, k) for k in ("count", "nonfinite", "max", "min", "absmax", "massive")}
    d["loc"] = s.absmax_location
    d["top"] = sorted(round(t.value, 4) for t in s.top)
    d["chan"] = [(c.channel, round(c.absmax, 5)) for c in s.top_channels]
    d["q"] = s.quantiles
    return d


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe", "gemma2"])
def test_padding_and_batch_size_invariance(arch):
    model = tiny_model(arch)
    one = run(model, SAMPLES, batch_size=1)
    padded = run(model, SAMPLES, batch_size=4)
    two = run(model, SAMPLES, batch_size=2)
    for a, b, c in zip(one, padded, two):
        assert a.name == b.name == c.name
        for other in (b, c):
            x, y = _comparable(a), _comparable(other)
            assert x["count"] == y["count"] and x["loc"] == y["loc"] and x["massive"] == y["massive"]
            for k in ("max", "min", "absmax"):
                assert y[k] == pytest.approx(x[k], rel=1e-5, abs=1e-7)
            assert y["top"] == pytest.approx(x["top"], rel=1e-4, abs=1e-4)
            assert other.mean == pytest.approx(a.mean, rel=1e-4, abs=1e-6)
            assert other.std == pytest.approx(a.std, rel=1e-4)


def capture(model, samples):
    """Every site's activations, one sample at a time, by independent hooks."""
    ms = find_sites(model)
    got: dict[str, list[torch.Tensor]] = {s.name: [] for s in ms.sites}
    from maxact_card.measure.context import BatchContext
    from maxact_card.measure.hooks import hooked

    fns = [lambda x, ctx, n=s.name: got[n].append(x.detach().clone()[0]) for s in ms.sites]
    with torch.inference_mode():
        for ids in samples:
            t = torch.tensor([ids])
            with hooked(ms.sites, fns, BatchContext(torch.ones_like(t, dtype=torch.bool), torch.tensor([0]), t)):
                model(input_ids=t, attention_mask=torch.ones_like(t), use_cache=False)
    return got


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe", "phi3"])
def test_statistics_equal_brute_force(arch):
    model = tiny_model(arch, seed=3)
    got = capture(model, SAMPLES)
    stats = {s.name: s for s in run(model, SAMPLES, batch_size=3)}
    for name, rows in got.items():
        if ".experts." in name:  # fed by the experts seam, not a hook: tests/test_experts.py
            continue
        s = stats[name]
        allv = torch.cat([r.reshape(-1, r.shape[-1]) for r in rows]).double()
        a = allv.abs().reshape(-1)
        assert s.count == allv.numel()
        assert s.max == pytest.approx(allv.max().item(), rel=1e-6)
        assert s.min == pytest.approx(allv.min().item(), rel=1e-6)
        assert s.absmax == pytest.approx(a.max().item(), rel=1e-6)
        assert s.mean == pytest.approx(allv.mean().item(), rel=1e-5, abs=1e-7)
        assert s.rms == pytest.approx(allv.pow(2).mean().sqrt().item(), rel=1e-5)
        assert s.std == pytest.approx(allv.std(unbiased=False).item(), rel=1e-4)
        # the top rows (tokens) by their largest |a|, each with that value
        top = sorted(allv.abs().amax(-1).tolist(), reverse=True)[:16]
        assert [abs(t.value) for t in s.top] == pytest.approx(top, rel=1e-6)
        for t in s.top:
            assert rows[t.location.sample][t.location.position, t.location.channel].item() == pytest.approx(t.value)
        srt = torch.sort(a).values
        for key, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)):
            exact = srt[max(0, math.ceil(q * len(srt)) - 1)].item()
            assert s.quantiles[key] == pytest.approx(exact, rel=0.01), (name, key)
        # the location points at a value with that magnitude
        loc = s.absmax_location
        sample_rows = rows[loc.sample]
        assert abs(sample_rows[loc.position, loc.channel].item()) == pytest.approx(s.absmax, rel=1e-6)
        assert SAMPLES[loc.sample][loc.position] == loc.token_id
        if s.kind == "residual":
            chan = torch.cat([r.reshape(-1, r.shape[-1]) for r in rows]).abs().amax(0)
            best = chan.topk(len(s.top_channels))
            assert [c.channel for c in s.top_channels] == best.indices.tolist()


def test_massive_activation_count_by_hand():
    model = tiny_model("llama")
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.mul_(0.01)
        emb[TOK, CH] = 500.0  # |a| > 100 and > 1000x that token's median |a| (~0.005)
        emb[TOK, CH0] = 50.0  # below 100: not massive
        emb[8, CH] = 150.0  # > 100 but the token's median is raised below
        emb[8, :] += torch.where(torch.arange(emb.shape[1]) % 3 != 0, 1.0, 0.0)  # median |a| ~ 1
    sites = {s.name: s for s in run(model, SAMPLES)}
    # TOK appears twice, token 8 twice; only TOK's planted value is massive at the embedding
    assert sites["embed"].massive == 2
    assert sites["embed"].nonfinite == 0


def test_massive_count_equals_brute_force_over_many_candidate_rows():
    """More candidate rows (|a| > 100) than the CPU examines at a time, some massive, some not, one
    padding row that would count: the accumulator's count is the per-row definition's."""
    from maxact_card.measure.context import BatchContext
    from maxact_card.measure.row_stats import MASSIVE_CHUNK
    from maxact_card.measure.site_stats import SiteBank, SiteInfo

    g = torch.Generator().manual_seed(3)
    B, T, C = 3, 120, 65  # odd C: one median per row
    x = torch.randn(B, T, C, generator=g)
    x[:, ::2, 5] = 5000.0  # massive: > 100 and > 1000x a median |a| of ~0.67
    x[:, 1::2, 9] = -150.0  # candidates that are not massive
    x[0, 3, 20:60] = 1e-4  # a row whose median is tiny: its 150 is massive too
    x[2, 7, 1] = 2e6  # on a padding row: never counted
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[2, 7] = False
    assert B * T > 2 * MASSIVE_CHUNK
    a = x.abs()[valid]
    expected = int((a > torch.clamp(a.median(-1).values[:, None] * 1000, min=100)).sum())
    assert expected == B * (T // 2) + 1
    ctx = BatchContext(valid, torch.arange(B), torch.zeros(B, T, dtype=torch.long))
    for accelerator in (False, True):  # the CPU's candidate rows, and every row's median
        bank = SiteBank([SiteInfo("s", "residual", 0)], accelerator=accelerator)
        bank.update(x, ctx)
        if bank.fold(ctx):  # the accelerator path asks for the massive mode, then settles
            bank.set_mode(0, "massive")
            bank.update(x, ctx)
            assert bank.fold(ctx) == []
        assert bank.result()[0].massive == expected


def test_nonfinite_values_are_counted_located_and_excluded():
    model = tiny_model("llama")
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[TOK, CH] = float("nan")
        emb[TOK, CH0] = float("inf")
    sites = {s.name: s for s in run(model, SAMPLES)}
    e = sites["embed"]
    assert e.nonfinite == 4  # two occurrences of TOK, two non-finite channels each
    loc = e.nonfinite_location
    assert (loc.sample, loc.position, loc.token_id, loc.channel) == (1, 2, TOK, CH0)
    assert math.isfinite(e.max) and math.isfinite(e.absmax) and math.isfinite(e.mean)
    n_tokens = sum(len(s) for s in SAMPLES)
    assert e.count == n_tokens * model.config.hidden_size - 4


def test_architecture_without_layers_lists_what_it_found():
    from maxact_card.errors import UnsupportedArchitectureError

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(2, 2)
            self.stages = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(UnsupportedArchitectureError, match="top-level modules: encoder, stages"):
        find_sites(Odd())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "qwen3_moe", "qwen3_5_text", "gemma2", "gemma3_text",
                                  "mixtral", "gpt_oss", "phi3"])
def test_every_architecture_has_every_site(arch):
    model = tiny_model(arch)
    ms = find_sites(model)
    names = [s.name for s in ms.sites]
    n = tiny_config(arch).num_hidden_layers
    assert names[0] == "embed" and names[-1] == "final_norm"
    for i in range(n):
        for kind in ("attn", "mlp", "residual"):
            assert f"layers.{i}.{kind}" in names
        if arch in ("qwen3_moe", "mixtral", "gpt_oss"):
            assert f"layers.{i}.router" in names
        else:
            assert f"layers.{i}.mlp.gate" in names and f"layers.{i}.mlp.down_in" in names
    sites = run(model, SAMPLES[:2])
    assert all(s.count > 0 for s in sites)
    router = [s for s in sites if s.kind == "router"]
    for r in router:  # router logits: one value per token and expert
        assert r.count == sum(len(x) for x in SAMPLES[:2]) * 4


def test_vision_language_model_probes_its_text_backbone_only():
    from transformers import AutoModelForImageTextToText, Gemma3Config

    text = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, sliding_window=16, pad_token_id=0,
                bos_token_id=1, eos_token_id=2)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=28,
                  patch_size=14)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=127,
                       boi_token_index=125, eoi_token_index=126)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg).eval()
    ms = find_sites(model)
    assert ms.num_layers == 2  # the language model's layers, not the vision tower's 3
    assert all(s.module in set(model.model.language_model.modules()) for s in ms.sites)
    sites = run(model, SAMPLES)
    assert peak_of(sites) is not None and all(s.count > 0 for s in sites)


def test_out_of_memory_halves_the_batch_and_counts_every_sample_once():
    """An OOM half-way through a batch (after some hooks ran) is undone; the run finishes at a
    smaller batch size with exactly the statistics of an undisturbed run."""
    model = tiny_model("llama")
    reference = {s.name: s for s in run(model, SAMPLES, batch_size=1)}

    def fail_on_big_batches(module, args, kwargs):
        if kwargs.get("hidden_states", args[0] if args else None).shape[0] > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.model.layers[1].register_forward_pre_hook(fail_on_big_batches, with_kwargs=True)
    try:
        got = measure(model, find_sites(model), SAMPLES, 0, lambda i: f"w{i}", batch_size=None, hist_stride=1)
    finally:
        handle.remove()
    for s in got.sites:
        r = reference[s.name]
        assert s.count == r.count and s.absmax_location == r.absmax_location and s.massive == r.massive
        assert s.absmax == pytest.approx(r.absmax, rel=1e-6) and s.mean == pytest.approx(r.mean, rel=1e-5, abs=1e-7)
    assert got.tokens == sum(len(x) for x in SAMPLES)


def test_errors_other_than_out_of_memory_propagate():
    model = tiny_model("llama")

    def broken(module, args):
        raise RuntimeError("shape mismatch")

    handle = model.model.layers[0].register_forward_pre_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="shape mismatch"):
            measure(model, find_sites(model), SAMPLES, 0, str, batch_size=None)
    finally:
        handle.remove()
    assert not model.model.layers[1]._forward_hooks  # the probe's hooks were removed


def test_half_precision_activations_fall_in_the_same_histogram_bins_as_their_float32_values():
    from maxact_card.measure.histogram import FINE_BINS, add_counts, fine_bins

    torch.manual_seed(0)
    x = (torch.randn(2, 16, 64) * torch.logspace(-2, 4, 64)).to(torch.bfloat16)
    mask = torch.full((2, 16, 1), 0x7FFF, dtype=torch.int32)
    for dtype in (torch.bfloat16, torch.float16):
        h, h32 = (torch.zeros(FINE_BINS, dtype=torch.float64) for _ in range(2))
        add_counts(h, fine_bins(x.to(dtype), mask))
        add_counts(h32, fine_bins(x.to(dtype).float(), mask))
        assert torch.equal(h, h32) and h.sum() == 2 * 16 * 64


def test_every_value_is_within_0_78_percent_of_its_histogram_bin_centre():
    from maxact_card.measure.histogram import FINE_BINS, HIST_BINS, add_counts, bin_value, coarse, fine_bins

    torch.manual_seed(0)
    x = torch.cat([torch.exp(torch.empty(20000).uniform_(-80, 80)), torch.tensor([1.0, 1.0078125, 3e38, 1.2e-38])])
    x = x * torch.where(torch.rand(x.numel()) < 0.5, -1.0, 1.0)
    on = torch.tensor([0x7FFF], dtype=torch.int32)
    for v in x.tolist()[:2000]:
        h = torch.zeros(FINE_BINS, dtype=torch.float64)
        add_counts(h, fine_bins(torch.tensor([[v]]), on))
        (i,) = coarse(h).nonzero()[:, 0].tolist()
        assert abs(bin_value(i) / abs(v) - 1) < 0.0078, v
    keep = torch.ones(x.numel(), 1, dtype=torch.int32) * 0x7FFF
    keep[::7] = 0  # routed to bin 0 (the caller subtracts them)
    h = torch.zeros(FINE_BINS, dtype=torch.float64)
    add_counts(h, fine_bins(x[:, None], keep))
    h = coarse(h)
    assert h.shape == (HIST_BINS,) and h.sum() == x.numel() and h[0] == (keep == 0).sum()
    assert bin_value(0) == 0.0


def test_the_cpus_histogram_bins_are_the_accelerators():
    from maxact_card.measure.histogram import coarse_bins_host, fine_bins

    torch.manual_seed(1)
    x = torch.cat([torch.randn(64, 48) * torch.logspace(-30, 30, 48), torch.tensor([[0.0, -0.0, 1e-40, -3e38] * 12])])
    mask = torch.where(torch.arange(65) % 5 == 0, 0, 0x7FFF).to(torch.int32)[:, None]
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(coarse_bins_host(x.to(dtype), mask), fine_bins(x.to(dtype), mask) >> 1)
