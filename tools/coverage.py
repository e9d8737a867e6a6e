"""Which architectures maxact-card measures: every model type in the installed transformers'
causal-LM mapping, built tiny with random weights, audited, and cross-checked.

    python tools/coverage.py                     # every type; writes docs/coverage.md
    python tools/coverage.py --types llama,qwen3_moe --jobs 2 -o -   # some, to stdout
    python tools/coverage.py --types gpt2,opt --merge   # re-run some, keep the other rows (docs/coverage.json)

For each type: a tiny model from its config class (hidden 64, 2 layers, 4 experts of which 2 per
token); the probe's sites; an audit with the quant check (calibration and evaluation passes); the
residual stream cross-checked against plain forward hooks on the decoder layers, each sample run
alone; and for fused MoE experts, the experts seam against transformers' `eager` experts (logits bit
for bit in float32) and the routing counts (every real token routed to top-k experts). Types run in
worker processes, each with a time limit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import warnings

SAMPLES = [[1, 5, 9, 22, 41, 7, 88, 13, 64, 3, 17], [1, 30, 31, 32, 99, 100, 12], [1, 77, 6, 120, 54, 45, 46, 47, 8],
           [1, 9, 9, 9, 60, 61, 62], [1, 101, 102, 103, 104, 105, 106, 107]]
SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, head_dim=16, max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
             eos_token_id=2, moe_intermediate_size=32, num_experts=4, num_local_experts=4, n_routed_experts=4,
             num_experts_per_tok=2, first_k_dense_replace=0, n_group=1, topk_group=1, mlp_only_layers=[],
             decoder_sparse_step=1)


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


# Sub-configs: the text one and the other parts of the language model (BLT's encoder/decoder/global/
# patcher, DBRX's attn/ffn) get SMALL, the towers of multimodal models (names below) these (the towers
# are built, never measured).
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, depth=1, num_attention_heads=2, num_heads=2,
             embed_dim=32)
TOWER_NAMES = ("vision", "audio", "image", "video", "speech", "vq", "text_encoder")
MAX_PARAMS = 50_000_000  # a type that will not shrink below this is reported, not built

# Types whose default config will not shrink by the rules alone: fields the rules cannot know (sizes
# under their own names, a layer pattern with one layer of each kind, defaults that do not build).
# Nested dicts are merged into that sub-config.
OVERRIDES = {
    "ctrl": dict(dff=64),
    "gptj": dict(rotary_dim=16),  # at most the head dim
    "codegen": dict(rotary_dim=16),
    "dbrx": dict(attn_config=dict(rope_theta=10_000.0, kv_n_heads=2, clip_qkv=8.0),  # the default lacks rope_theta
                 ffn_config=dict(ffn_hidden_size=32, moe_num_experts=4, moe_top_k=2)),
    "mimo_v2_flash": dict(num_key_value_heads=2),  # sliding layers double the kv heads
    "kimi_linear": dict(layer_types=["linear_attention", "full_attention"], linear_num_heads=4, linear_head_dim=16),
    "dots3_note": dict(vision_config=dict(adapter_in_dim=TOWER["hidden_size"], adapter_out_dim=SMALL["hidden_size"]),
                       audio_config=dict(adapter_input_size=TOWER["hidden_size"], adapter_out_dim=SMALL["hidden_size"]),
                       text_config=dict(index_n_heads=4, index_head_dim=64, q_lora_rank=32)),
    "dots1": dict(n_shared_experts=1),  # None by default
    "cohere_compass_text": dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10_000.0}}),
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]]),
    "zamba": dict(num_hidden_layers=3, layers_block_type=["mamba", "hybrid", "hybrid"]),  # ties hybrids to the first
    "zamba2": dict(layers_block_type=["mamba", "hybrid"]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], num_dense_layers=1),
    "kolibri1_1": dict(layer_types=["sliding_attention", "indexed_attention"], num_key_value_heads=2,
                       index_num_heads=2, index_topk=16, index_pool_size=256, index_compression=4),
    "gemma3n_text": dict(num_kv_shared_layers=0),
    "blt": dict(encoder_config=dict(hidden_size_global=64), decoder_config=dict(hidden_size_global=64),
                encoder_hash_byte_group_size=[3, 4]),
}


def _known(config) -> set[str]:
    """The names a config takes: its own fields and the standard names its attribute_map maps to them."""
    fields = config.to_dict()
    return set(fields) | {k for k, v in (getattr(config, "attribute_map", None) or {}).items() if v in fields}


def _own_names(config, kw: dict) -> dict:
    """Standard names that the config's attribute_map sends to its own fields, renamed to those fields
    (set before its __post_init__ reads them, as DBRX's copies d_model into its ffn_config)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    amap = getattr(config, "attribute_map", None) or {}
    rename = {k: v for k, v in amap.items() if v in fields and k not in fields and v not in kw}
    return {rename.get(k, k): v for k, v in kw.items()}


def _shrink(config, small: dict) -> dict:
    """The entries of `small` the config knows (under their own names or its attribute_map's), its
    vocabulary-sized fields cut to SMALL's vocabulary, and its sub-configs shrunk likewise."""
    known, fields = _known(config), config.to_dict()
    kw = {k: v for k, v in small.items() if k in known}
    for k, v in fields.items():  # vocab_size_per_layer_input, encoder_hash_byte_group_vocab, ...
        if "vocab" in k and k != "vocab_size" and type(v) is int and v > SMALL["vocab_size"]:
            kw[k] = SMALL["vocab_size"]
    if {"expand", "num_heads", "head_dim"} <= set(fields) and "hidden_size" in kw:  # Mamba-2: heads x dim = expanded
        kw["num_heads"] = kw["hidden_size"] * fields["expand"] // kw.get("head_dim", fields["head_dim"])
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            tower = name != "text_config" and any(t in name for t in TOWER_NAMES)
            kw[name] = _per_layer({**sub.to_dict(), **_own_names(sub, _shrink(sub, TOWER if tower else SMALL))},
                                  sub.to_dict())
    return kw


def _per_layer(kw: dict, default: dict) -> dict:
    """Per-layer lists (layer_types, ...) cut to the shrunk number of layers, counts of layers that were
    all of them (num_kv_shared_layers) made all of them again; a per_layer_config keyed by layer
    indices past it dropped (the config derives it again)."""
    n, old = kw.get("num_hidden_layers"), default.get("num_hidden_layers")
    if not isinstance(n, int) or not isinstance(old, int) or n >= old:
        return kw
    per_layer = kw.get("per_layer_config")
    if isinstance(per_layer, dict) and any(str(k).isdigit() and int(k) >= n for k in per_layer):
        kw = {k: v for k, v in kw.items() if k != "per_layer_config"}
    kw = {k: n if k.endswith("_layers") and v == old and not isinstance(v, bool) else v for k, v in kw.items()}
    return {k: v[:n] if isinstance(v, list) and len(v) == old else v for k, v in kw.items()}


def _merge(kw: dict, over: dict) -> dict:
    """`over` on top of `kw`, nested dicts (sub-configs) merged."""
    out = dict(kw)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_configs(model_type: str):
    """The type's config, shrunk: first with every SMALL field the config class (or its text
    sub-config) knows, then without head_dim (multi-head latent attention derives its own), then
    with the sizes alone; each with the type's OVERRIDES."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    known = {**_shrink(default, SMALL), "num_hidden_layers": 2, "vocab_size": SMALL["vocab_size"]}
    sizes = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "pad_token_id", "bos_token_id", "eos_token_id", "text_config", "vision_config")
    tries = [known, {k: v for k, v in known.items() if k != "head_dim"},
             {k: v for k, v in known.items() if k in sizes}]
    over = OVERRIDES.get(model_type, {})
    for kw in tries:
        yield lambda kw=_own_names(default, _merge(kw, over)): AutoConfig.for_model(model_type, **kw)


def build(model_type: str):
    """A tiny random model of the type (the first shrunk config it builds from, counted on the meta
    device before it is built)."""
    import torch
    from transformers import AutoModelForCausalLM

    err: Exception = RuntimeError("no config")
    for make in tiny_configs(model_type):
        try:
            cfg = make()
            with torch.device("meta"):
                n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
            if n > MAX_PARAMS:
                raise RuntimeError(f"{n / 1e6:.0f}M parameters after shrinking its config")
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
            with torch.no_grad():
                model(torch.tensor([SAMPLES[0]]), use_cache=False)
            return model
        except Exception as e:  # noqa: BLE001 - the next, smaller set of overrides
            err = e
    raise err


def row_of(model_type: str, status: str = "fails", note: str = "") -> dict:
    return {"type": model_type, "status": status, "kinds": [], "quant": False, "residual": "-", "blocks": "-", "experts": "-",
            "note": note}


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (type(e).__name__ + (": " + text[0] if text else ""))[:160]


def residual_check(model, sites, stats) -> str:
    """Each decoder layer's output |a| max (plain hooks, each sample alone) against the report's."""
    import torch

    from maxact_card.measure.context import make_context
    from maxact_card.measure.hooks import activation

    seen: dict[int, float] = {}
    residual = {s.layer: s for s in sites.sites if s.kind == "residual"}
    ctx = None

    def hook(i):
        def fn(module, args, out):  # the layer's output; past tokens the model put before the input
            x = activation(residual[i], out, ctx)
            if x is not None:
                seen[i] = max(seen.get(i, 0.0), float(x.detach().float().abs().max()))
        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(sites.layers)]
    try:
        with torch.no_grad():
            for ids in SAMPLES:
                t = torch.tensor([ids])
                ctx = make_context(t, torch.ones_like(t), torch.arange(1), None)
                model(t, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    got = {s.name: s.absmax for s in stats}
    diffs = []
    for i, v in seen.items():
        r = got.get(f"layers.{i}.residual")
        if r is None:
            return f"no layers.{i}.residual"
        diffs.append(abs(r - v) / max(v, 1e-30))
    worst = max(diffs, default=0.0)
    return "bit for bit" if worst == 0 else f"within {worst:.0e}" if worst <= 1e-5 else f"differs ({worst:.1e})"


def contributions(model, sites, ids):
    """One forward of `ids` [B, T]: each layer's input and output and what its attn/mixer/mlp sites
    see (their first call), as the probe reads them."""
    import torch

    from maxact_card.measure.context import make_context
    from maxact_card.measure.hooks import activation

    ctx = make_context(ids, torch.ones_like(ids), torch.arange(ids.shape[0]), None)
    residual = {s.layer: s for s in sites.sites if s.kind == "residual"}
    seen: dict[str, torch.Tensor] = {}

    def keep(name, site, x):
        x = activation(site, x, ctx)
        if name not in seen and x is not None:
            seen[name] = x.detach().clone()

    handles = [s.module.register_forward_hook(lambda m, a, out, s=s: keep(s.name, s, out))
               for s in sites.sites if s.kind in ("attn", "mixer", "mlp", "residual") and s.capture == "output"]
    handles += [layer.register_forward_pre_hook(
        lambda m, a, kw, i=i: keep(f"in.{i}", residual[i], a[0] if a else kw["hidden_states"]), with_kwargs=True)
        for i, layer in enumerate(sites.layers)]
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


# Layers whose output is not their input plus their blocks, by design: the blocks column says why
# (checked: each differs without its reason, and only there).
NOT_A_SUM = {
    "beam": "depth-scaled adds (block / sqrt(k) + stream * sqrt((k-1)/k))",
    "dory": "interpolating adds (x + rate * (block - x)) on a normalized stream",
    "minimax": "weighted adds (alpha * stream + beta * block)",
    "ergo": "gated adds (branch_gate * block + residual_gate * stream)",
    "minicpm3": "scaled adds (stream + residual_scale * block)",
    "openai-gpt": "post-norm layers (LayerNorm after each add)",
    "git": "post-norm layers (BERT's LayerNorm after each add)",
    "rwkv": "layer 0 normalizes the embeddings first (pre_ln)",
    "zamba": "the shared transformer block's output feeds the mamba mixer's input, not the stream",
    "zamba2": "the shared transformer block's output feeds the mamba mixer's input, not the stream",
    "inkling2_text": "block attention residuals (at a block boundary the stream restarts from earlier block states)",
    "inkling2_loop_text": "block attention residuals (at a block boundary the stream restarts from earlier block states)",
}


def blocks_check(model, sites, model_type: str = "") -> str:
    """Per layer: its input plus its attn/mixer/mlp sites equals its output (the sites are what the
    blocks add to the residual stream)."""
    import torch

    if any(s.streams > 1 for s in sites.sites):
        return "n/a (streams)"  # hyper-connections mix the streams: no plain sum
    seen = contributions(model, sites, torch.tensor([SAMPLES[0]]))
    worst, where = 0.0, None
    for i in range(sites.num_layers):
        out = seen[f"layers.{i}.residual"].double()
        total = seen[f"in.{i}"].double() + sum(seen[b.name].double() for b in sites.blocks if b.layer == i)
        diff = float((total - out).abs().max() / out.abs().max().clamp_min(1e-12))
        if diff > worst:
            worst, where = diff, i
    if worst <= 1e-4:
        return "sum = output"
    return f"not a plain sum: {NOT_A_SUM[model_type]}" if model_type in NOT_A_SUM else \
        f"differs at layer {where} ({worst:.1e})"


def experts_check(model, sites, out) -> str:
    """The seam's logits against eager's, bit for bit (float32), and top-k routing of every token."""
    import torch

    from maxact_card.measure.experts import experts_seam

    ids = torch.tensor([SAMPLES[0][:9], SAMPLES[2][:9]])
    model.set_experts_implementation("eager")
    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
        with experts_seam(model):
            seam = model(ids, use_cache=False).logits
    model.set_experts_implementation("grouped_mm")
    ex = sites.expert_sites[0].module
    k = getattr(ex.config, "num_experts_per_tok", None)
    tokens = sum(len(s) for s in SAMPLES)
    routed = {x.layer: sum(x.routed) for x in out.experts}
    if not torch.equal(seam, plain):
        return "seam != eager"
    if k and any(n != tokens * k for n in routed.values()):
        return f"routed {sorted(set(routed.values()))} != {tokens} tokens x top-{k}"
    return f"{len(out.experts)} layers x {ex.num_experts} experts, router logits from {out.experts[0].router}; seam = eager"


def probe_type(model_type: str) -> dict:
    """One type's row: status, site kinds, quant check, residual and experts cross-checks, a note."""
    warnings.filterwarnings("ignore")
    from transformers.utils import logging

    from maxact_card.measure import measure
    from maxact_card.sites import find_sites

    logging.set_verbosity_error()
    row = row_of(model_type)
    from transformers import AutoConfig

    from maxact_card.errors import UnsupportedArchitectureError
    from maxact_card.loading import check_config

    try:  # what `maxact-card audit` says from config.json alone, before any download
        try:
            cfg = AutoConfig.for_model(model_type).to_dict()
        except Exception:  # noqa: BLE001 - a default that does not validate (gemma4_assistant's)
            cfg = {"model_type": model_type}
        check_config(cfg, model_type, trust_remote_code=True)
    except UnsupportedArchitectureError as e:
        return {**row, "status": "out of scope", "note": str(e).split(";")[0][:160]}
    try:
        model = build(model_type)
    except Exception as e:  # noqa: BLE001 - a row says why
        return {**row, "status": "not built tiny", "note": one_line(e)}
    row["class"] = type(model).__name__
    try:
        sites = find_sites(model)
        row["kinds"] = sorted({s.kind for s in sites.sites})
        try:
            out = measure(model, sites, SAMPLES, 0, str, batch_size=2, calib_indices=[0, 2, 4])
            row["quant"] = True
        except Exception as e:  # noqa: BLE001
            row["note"] = "quant check: " + one_line(e)
            out = measure(model, sites, SAMPLES, 0, str, batch_size=2)
        row["residual"] = residual_check(model, sites, out.sites)
        row["blocks"] = blocks_check(model, sites, model_type)
        if sites.expert_sites:
            row["experts"] = experts_check(model, sites, out)
        ok = row["quant"] and row["residual"] != "-" and not row["residual"].startswith(("differs", "no "))
        ok = ok and (row["experts"] == "-" or row["experts"].endswith("seam = eager"))
        ok = ok and not row["blocks"].startswith("differs")
        row["status"] = "ok" if ok else "partial"
    except Exception as e:  # noqa: BLE001
        row["note"] = one_line(e)
    return row


class _TimeUp(Exception):
    pass


def _alarm(signum, frame):
    raise _TimeUp()


def run_one(args: tuple[str, float]) -> dict:
    """probe_type in a pool worker, stopped after `timeout` seconds (SIGALRM)."""
    import signal

    model_type, timeout = args
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(timeout))
    try:
        return probe_type(model_type)
    except _TimeUp:
        return row_of(model_type, "timed out", f"over {timeout:.0f} s on the CPU")
    except Exception as e:  # noqa: BLE001 - a crash is a row too
        return row_of(model_type, note=f"crashed: {one_line(e)}")
    finally:
        signal.alarm(0)


def run_all(types: list[str], jobs: int, timeout: float) -> list[dict]:
    """Every type's row, from worker processes. A worker that dies (out of
    memory) breaks its pool: the types it left are run again one pool each, so the one that kills its
    process is named."""
    import concurrent.futures as cf
    import multiprocessing

    def pool(n: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))

    rows, again = [], []

    def done(row: dict) -> None:
        rows.append(row)
        print(f"[{len(rows)}/{len(types)}] {row['type']}: {row['status']} {row['note']}", file=sys.stderr, flush=True)

    with pool(jobs) as ex:
        futures = {ex.submit(run_one, (t, timeout)): t for t in types}
        for f in cf.as_completed(futures):
            try:
                done(f.result())
            except cf.process.BrokenProcessPool:
                again.append(futures[f])
    for t in again:
        with pool(1) as ex:
            try:
                done(ex.submit(run_one, (t, timeout)).result())
            except cf.process.BrokenProcessPool:
                done(row_of(t, note="crashed: the process died (out of memory?)"))
    return rows


def markdown(rows: list[dict]) -> str:
    import transformers

    count = {s: sum(r["status"] == s for r in rows)
             for s in ("ok", "partial", "fails", "out of scope", "not built tiny", "timed out")}
    moe = [r["type"] for r in rows if r["experts"].endswith("seam = eager")]
    out = ["# Coverage: every causal-LM type of transformers, measured", "",
           f"Generated by `python tools/coverage.py` with transformers {transformers.__version__} on "
           f"{datetime.date.today().isoformat()}: {len(rows)} types; "
           + ", ".join(f"{n} {s}" for s, n in count.items() if n) + ".", "",
           "Each type is built tiny with random weights from its config class (hidden 64, 2 layers, 4 experts "
           "of which 2 per token), audited with the quant check, and cross-checked: **residual** compares "
           "each `layers.{i}.residual` with a plain forward hook on the decoder layer (each sample alone); "
           "**blocks** checks that each layer's input plus its `attn`/`mixer`/`mlp` sites equals its output "
           "(the sites are what the blocks add to the residual stream); "
           "**experts** (fused MoE experts) runs the experts seam against transformers' `eager` experts "
           "(logits bit for bit in float32), checks that every token was routed to top-k experts, and names "
           "the module whose first output is the router's pre-softmax logits.", "",
           f"Fused MoE families with per-expert sites ({len(moe)}): " + ", ".join(f"`{t}`" for t in moe) + ".", "",
           "| type | status | site kinds | quant check | residual | blocks | experts | note |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        note = r["note"].replace("|", "\\|")
        out.append(f"| `{r['type']}` | {r['status']} | {', '.join(r['kinds'])} | {'yes' if r['quant'] else 'no'} "
                   f"| {r['residual']} | {r.get('blocks', '-')} | {r['experts']} | {note} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", help="comma-separated model types (default: every causal-LM type)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per type")
    ap.add_argument("-o", "--output", default=os.path.join(os.path.dirname(__file__), "..", "docs", "coverage.md"))
    ap.add_argument("--merge", action="store_true", help="keep the other types' rows of the last run (its .json)")
    a = ap.parse_args()
    types = a.types.split(",") if a.types else causal_lm_types()
    data = os.path.splitext(a.output)[0] + ".json"
    kept = {}
    if a.merge and os.path.exists(data):  # rows of the other types from the last run
        with open(data) as fh:
            kept = {r["type"]: r for r in json.load(fh) if r["type"] not in types}
    rows = run_all(types, a.jobs, a.timeout)
    rows = sorted([*kept.values(), *rows], key=lambda r: r["type"])
    text = markdown(rows)
    if a.output == "-":
        sys.stdout.write(text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    for path, content in ((data, json.dumps(rows, indent=1) + "\n"), (a.output, text)):
        with open(path + ".tmp", "w") as fh:
            fh.write(content)
        os.replace(path + ".tmp", path)
    print(f"wrote {a.output} and {data}", file=sys.stderr)


if __name__ == "__main__":
    main()
