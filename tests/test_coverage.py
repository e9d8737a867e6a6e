"""Every decoder-only layout measured at the same places: one tiny model per failure class of the
coverage sweep (tools/coverage.py) and the paper's families, the site-name meaning, the coverage table."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from maxact_card.sites import find_sites

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import coverage  # noqa: E402  (tools/coverage.py)

# One type per layout the site finder once failed on, then the paper's families.
CLASSES = {
    "gpt2": "GPT-2's transformer.h stack, Conv1D projections",
    "bloom": "blocks that add the residual inside (BLOOM's dropout_add)",
    "gpt_neox": "parallel attention and MLP, final_layer_norm",
    "mamba": "a layer that is a mamba mixer alone",
    "jamba": "hybrid: mamba layers and attention layers, MoE",
    "falcon_h1": "parallel branches: attention beside a mamba mixer",
    "opt": "the layer's own fc1/fc2 MLP under model.decoder",
    "biogpt": "fc1/fc2 MLP, final norm named layer_norm",
    "lfm2": "short-convolution layers, final norm named embedding_norm",
    "olmo2": "post-block norms (no pre-norm)",
    "glm4": "post_self_attn_layernorm / post_mlp_layernorm",
    "openai-gpt": "no final norm: the loss from the model's own head",
    "nanochat": "one norm applied to the embeddings and again at the end",
    "dory": "looped layers: sites that run several times per forward",
    "hrm_text": "two stacks of layers (HRM's L and H modules), each looped",
    "deepseek_v4": "hyper-connections: a residual of 4 streams [B, T, 4, C]",
    "qwen4_exp_text": "hyper-connections with the streams flattened [B, T, 4C]; no final norm",
    "cpmant": "blocks that add the residual themselves; a prompt before the input; a mask of its own",
    "git": "BERT-style post-norm layers (attention.output.dense, intermediate/output)",
    "inkling_text": "a short convolution after each block, before the add",
    "longcat_flash": "two attentions and two MLPs per layer beside an MoE",
    "granitemoehybrid": "a shared MLP beside the MoE",
    "ergo": "gated adds; experts that give each route its own row",
    "zaya": "a projection run again on a zero state [B, 1, C]",
    "gemma4_text": "a gated per-layer-input block; post-block norms read in the layer's own branch",
    "gemma3n_text": "AltUp: residual streams first [streams, B, T, C]",
    "zamba2": "a shared transformer block inside a hybrid layer",
    "dbrx": "the attention inside a wrapper (norm_attn_norm)",
    "ctrl": "multi_head_attention",
    "dots3_note_text": "per-layer settings (once a crash in the batch-size estimate)",
    "jetmoe": "mixture of attention (once a KeyError in the quant check)",
    "kolibri1": "an MoE named `moe` beside `mlp`",
}
PAPER = ("qwen2", "qwen3", "qwen3_5_text", "gemma2", "gemma3_text", "llama", "gpt_oss", "bailing_hybrid")  # bailing: Ling


@pytest.mark.parametrize("model_type", [*CLASSES, *PAPER])
def test_each_layout_audits_with_the_quant_check_and_its_residual_matches_plain_hooks(model_type):
    row = coverage.probe_type(model_type)
    assert row["status"] == "ok", row
    assert row["quant"] and (row["residual"] == "bit for bit" or row["residual"].startswith("within")), row
    assert row["blocks"] in ("sum = output", "n/a (streams)") or row["blocks"].startswith("not a plain sum: "), row
    assert row["blocks"] != "n/a (streams)" or model_type in ("deepseek_v4", "qwen4_exp_text", "gemma3n_text"), row
    assert model_type not in PAPER or row["blocks"] == "sum = output", row  # the paper's families: plain sums


def test_mixers_and_parallel_branches_are_each_measured():
    sites = find_sites(coverage.build("falcon_h1"))
    names = [s.name for s in sites.sites if s.layer == 0]
    assert names[:3] == ["layers.0.attn", "layers.0.mixer", "layers.0.mlp.gate"], names
    assert {s.kind for s in sites.sites} >= {"attn", "mixer", "mlp", "residual"}
    mamba = find_sites(coverage.build("mamba"))
    assert [s.kind for s in mamba.sites if s.layer == 0] == ["mixer", "residual"]
    hrm = coverage.build("hrm_text")
    stacks = find_sites(hrm)
    assert stacks.layers == (*hrm.model.L_module.layers, *hrm.model.H_module.layers)
    assert stacks.sites[-1].name == "final_norm" and stacks.sites[-1].module is hrm.model.H_module.final_norm
    opt = find_sites(coverage.build("opt"))
    down = next(s for s in opt.sites if s.name == "layers.0.mlp.down_in")
    assert down.module is opt.layers[0].fc2 and down.capture == "input"


@pytest.mark.parametrize("model_type", ["olmo2", "glm4", "gemma3_text", "llama", "bloom", "qwen3_5_moe_text", "nemotron_h"])
def test_attn_and_mlp_are_what_the_block_adds_to_the_residual_stream(model_type):
    """input + attn (+ mixer) + mlp == the layer's output, for every layer: the sites are the summands,
    after any post-block norm (olmo2's raw attention output is 0.002 where 0.6 is added); nemotron_h's
    one `mixer` per layer is an attention, a mamba mixer or an MLP by its class."""
    model = coverage.build(model_type)
    sites = find_sites(model)
    seen = coverage.contributions(model, sites, torch.tensor([coverage.SAMPLES[0]]))
    for i in range(sites.num_layers):
        parts = [b.name for b in sites.blocks if b.layer == i]
        assert model_type == "nemotron_h" or {b.kind for b in sites.blocks if b.layer == i} >= {"attn", "mlp"}, parts
        total = seen[f"in.{i}"] + sum(seen[name] for name in parts)
        torch.testing.assert_close(total, seen[f"layers.{i}.residual"], rtol=1e-5, atol=1e-5)
    if model_type == "nemotron_h":
        assert {b.kind for b in sites.blocks} == {"attn", "mixer", "mlp"}, sites.blocks


def test_an_encoder_decoder_layer_is_out_of_scope_in_one_line():
    from transformers import AutoConfig, AutoModelForCausalLM

    from maxact_card.errors import UnsupportedArchitectureError

    cfg = AutoConfig.for_model("bart", **{k: v for k, v in coverage.SMALL.items() if k in ("vocab_size",)},
                               d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UnsupportedArchitectureError, match="encoder-decoder models are out of its scope") as e:
        find_sites(model)
    assert "open an issue" not in str(e.value)


def test_the_coverage_table_lists_every_causal_lm_type_of_the_installed_transformers():
    table = (ROOT / "docs" / "coverage.md").read_text()
    rows = json.loads((ROOT / "docs" / "coverage.json").read_text())
    missing = [t for t in coverage.causal_lm_types() if f"| `{t}` |" not in table]
    assert not missing, f"docs/coverage.md lacks {missing}: run python tools/coverage.py"
    assert {r["type"] for r in rows} >= set(coverage.causal_lm_types())
    for t in list(CLASSES) + list(PAPER):
        assert next(r for r in rows if r["type"] == t)["status"] == "ok", t
    assert os.path.getsize(ROOT / "docs" / "coverage.md") > 0


def test_multi_stream_residuals_are_measured_over_every_stream_and_located_by_stream():
    """DeepSeek-V4's hyper-connections carry the residual as [B, T, streams, C]: every stream of a
    token is measured, and the location of M names the stream."""
    from maxact_card.measure.passes import measure
    from maxact_card.summary import where_channel

    model = coverage.build("deepseek_v4")
    S, C = model.config.hc_mult, model.config.hidden_size
    assert S > 1

    def plant(module, args, out):
        if out.shape[1] != 9:  # one sample per batch: sample 1 is the one of 9 tokens
            return out
        out = out.clone()
        out[0, 3, 2, 5] = -7.5e4  # sample 1, position 3, stream 2, channel 5
        return out

    handle = model.model.layers[0].register_forward_hook(plant)
    ids = [list(range(3, 15)), list(range(20, 29))]
    try:
        m = measure(model, find_sites(model), ids, pad_id=0, calib_indices=None, decode=str, batch_size=1)
    finally:
        handle.remove()
    res = {s.name: s for s in m.sites}["layers.0.residual"]
    assert res.count == (12 + 9) * S * C
    loc = res.absmax_location
    assert (res.absmax, loc.sample, loc.position, loc.stream, loc.channel, loc.sign) == (7.5e4, 1, 3, 2, 5, -1)
    assert (res.top_channels[0].stream, res.top_channels[0].channel) == (2, 5)
    assert where_channel(loc) == "stream 2, channel 5"
    embed = {s.name: s for s in m.sites}["embed"]
    assert embed.count == (12 + 9) * S * C and embed.absmax_location.stream is not None


def test_gemma4_experts_beside_the_dense_mlp_are_measured_and_summed():
    """Gemma 4's MoE layers keep `router` and `experts` on the layer, beside the dense MLP; the two
    branches are normed, summed and normed again before the add: `mlp` is that last norm's output."""
    from transformers import AutoModelForCausalLM

    from maxact_card.measure.passes import measure

    config = coverage.build("gemma4_text").config
    config.enable_moe_block, config.num_experts, config.top_k_experts, config.moe_intermediate_size = True, 4, 2, 32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    sites = find_sites(model)
    layer = model.model.layers[0]
    names = {s.name: s for s in sites.sites if s.layer == 0}
    assert names["layers.0.mlp"].module is layer.post_feedforward_layernorm
    assert names["layers.0.router"].module is layer.router
    assert names["layers.0.mlp.experts.down_in"].module is layer.experts
    assert names["layers.0.mlp.per_layer_input"].module is layer.post_per_layer_input_norm
    assert coverage.blocks_check(model, sites) == "sum = output"
    out = measure(model, sites, coverage.SAMPLES, 0, str, batch_size=2, calib_indices=[0, 2, 4])
    assert coverage.experts_check(model, sites, out).endswith("seam = eager")
    assert out.quant is not None and all(e.layer in (0, 1) for e in out.experts)


def test_a_draft_model_is_out_of_scope_in_one_line():
    from maxact_card.errors import UnsupportedArchitectureError
    from maxact_card.loading import check_config

    with pytest.raises(UnsupportedArchitectureError, match=r"draft model for speculative decoding.*audit the target"):
        check_config({"model_type": "gemma4_assistant"}, "google/gemma-4-assistant", trust_remote_code=False)
