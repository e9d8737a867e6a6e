"""Find the probe sites of a decoder-only model and give them canonical names.

Canonical names (the same for every architecture):
    embed, layers.{i}.attn, layers.{i}.mlp.gate, layers.{i}.mlp.down_in, layers.{i}.router,
    layers.{i}.mlp.experts.gate, layers.{i}.mlp.experts.down_in, layers.{i}.mlp, layers.{i}.residual,
    final_norm

The per-expert sites of fused experts (3-D weights) are not hooked: the experts seam
(measure/experts.py) feeds them (`capture="experts"`).

Each site says which module to hook, whether its input or output is the activation, and how to
pull the activation tensor out of what the module returns.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from dataclasses import dataclass
from typing import Iterator, Optional

from torch import nn

import torch

from .errors import UnsupportedArchitectureError

# A decoder layer's blocks, by attribute name: attention, other token mixers (SSM, convolution,
# recurrence), MLPs. A block whose class says otherwise (nemotron_h's `mixer` may be an attention or
# an MLP) is taken for what its class is.
ATTN_NAMES = ("self_attn", "linear_attn", "attn", "attention", "self_attention", "self_att", "multi_head_attention")
MIXER_NAMES = ("mixer", "mamba", "conv", "short_conv", "temporal_block", "recurrent", "ssm", "mlstm_layer")
MLP_NAMES = ("mlp", "block_sparse_moe", "feed_forward", "moe", "ffn", "mlp_block", "mlps", "shared_mlp", "laurel")
# Inside an MoE block (one with `experts`), the router; dense MLPs name their projection gate_proj.
ROUTER_NAMES = ("gate", "router")
NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "final_norm", "ln_f", "norm_f", "embedding_norm", "layer_norm",
              "out_norm", "ln_out", "output_layernorm")
# The decoder's list of layers, and an MLP's projections: gate, down (whose input is `down_in`).
LAYER_LISTS = ("layers", "h", "blocks", "layer")
GATE_NAMES = ("gate_proj", "w1", "proj_up_gate")
DOWN_NAMES = ("down_proj", "c_proj", "fc_out", "dense_4h_to_h", "fc2", "w2", "proj_down")
OUT_NAMES = ("o_proj", "dense", "out_proj", "c_proj")  # an attention's or mixer's output projection
RESIDUAL_INSIDE = "+residual"


@dataclass(frozen=True)
class Site:
    """One hook point. `capture` is 'output' (forward hook) or 'input' (pre-hook on arg 0 / hidden_states).

    `select` picks the tensor from a tuple output; `half` keeps the first half of the last dim
    (the gate of a fused gate_up projection); `flat` marks outputs flattened to [tokens, dim].
    """

    name: str
    kind: str
    layer: Optional[int]
    module: nn.Module
    capture: str = "output"  # "output", "input", or "experts" (fed by the experts seam)
    select: int = 0
    half: bool = False
    flat: bool = False
    streams: int = 1  # a multi-stream residual, each token's row holding every stream: channel = stream * C + c


@dataclass(frozen=True)
class ModelSites:
    sites: tuple[Site, ...]
    num_layers: int
    layers: tuple[nn.Module, ...]
    # MoE layers with fused experts: (layer, the module giving its router logits, "mlp.gate (Class)").
    routers: tuple[tuple[int, str], ...] = ()
    blocks: tuple["Block", ...] = ()

    @property
    def hooked(self) -> tuple[Site, ...]:
        """The sites forward hooks read (all but the per-expert ones)."""
        return tuple(s for s in self.sites if s.capture != "experts")

    @property
    def expert_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.capture == "experts")


@dataclass(frozen=True)
class Block:
    """An attention, mixer or MLP block of a decoder layer: what the quant check quantizes inside it
    (`module`'s linear layers, or only the layer's own `parts` for an fc1/fc2 MLP) and which module's
    output the block adds to the residual stream (`out`: a post-block norm where the layer has one)."""

    layer: int
    kind: str  # attn, mixer, mlp
    name: str  # its site: layers.{i}.attn, layers.{i}.mixer, layers.{i}.mlp
    module: nn.Module
    out: nn.Module
    parts: tuple[str, ...] = ()


def _layer_list(module: nn.Module) -> Optional[nn.ModuleList]:
    for n in LAYER_LISTS:
        m = getattr(module, n, None)
        if isinstance(m, nn.ModuleList) and len(m):
            return m
    return None


def find_decoder(model: nn.Module) -> nn.Module:
    """The text decoder (for vision-language models, the language model backbone): the module that
    holds the list of decoder layers (`layers`, GPT-2's `h`, MPT's `blocks`), found through
    get_decoder() or breadth first below the model."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError):
            decoder = None
        if isinstance(decoder, nn.Module) and _layer_list(decoder) is not None:
            return decoder
    level = [model]
    for _ in range(4):
        for m in level:
            if _layer_list(m) is not None:
                return m
        level = [c for m in level for c in m.children() if not isinstance(c, nn.ModuleList)]
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.ModuleList)})
    top = ", ".join(n for n, _ in model.named_children())
    raise UnsupportedArchitectureError(
        f"cannot find the decoder layers of {type(model).__name__}: no list of layers "
        f"({', '.join(LAYER_LISTS)}) below it (top-level modules: {top or 'none'}; "
        f"module lists found: {', '.join(found) or 'none'}); please open an issue with the model id"
    )


def _first(module: nn.Module, names: tuple[str, ...]) -> Optional[nn.Module]:
    for n in names:
        m = getattr(module, n, None)
        if isinstance(m, nn.Module):
            return m
    return None


def decoder_stacks(model: nn.Module) -> list[nn.Module]:
    """The decoder, and beside it any sibling of its class with layers of its own: a model that runs
    several stacks (HRM's low- and high-level modules) has its layers in all of them."""
    decoder = find_decoder(model)
    parent = next((m for m in model.modules() if any(c is decoder for c in m.children())), None)
    if parent is None:
        return [decoder]
    return [c for c in parent.children() if c is decoder or (type(c) is type(decoder) and _layer_list(c) is not None)]


def find_sites(model: nn.Module) -> ModelSites:
    stacks = decoder_stacks(model)
    layers = tuple(layer for stack in stacks for layer in _layer_list(stack))
    sites: list[Site] = [Site("embed", "embed", None, layers[0], capture="input")]
    blocks: list[Block] = []
    for i, layer in enumerate(layers):
        found = layer_blocks(i, layer)
        blocks.extend(found)
        sites.extend(_layer_sites(i, layer, found))
    norm = _first(stacks[-1], NORM_NAMES)
    if norm is not None:
        sites.append(Site("final_norm", "final_norm", None, norm))
    streams = residual_streams(model)
    if streams > 1:  # the layers read and write [B, T, streams, C]: the embeddings' copies, the residuals
        sites = [dataclasses.replace(s, streams=streams) if s.kind in ("embed", "residual") else s for s in sites]
    return ModelSites(tuple(sites), len(layers), layers, _routers(layers, sites), tuple(blocks))


def residual_streams(model: nn.Module) -> int:
    """How many residual streams the layers carry: 1, or the hyper-connections' `hc_mult`
    (DeepSeek-V4, HY-V4: [B, T, streams, C]) or `hc_count` (Qwen4-exp: [B, T, streams*C]), or
    Gemma 3n's AltUp `altup_num_inputs` ([streams, B, T, C])."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    streams = getattr(text, "hc_mult", None) or getattr(text, "hc_count", None) or getattr(text, "altup_num_inputs", None)
    return streams if isinstance(streams, int) and streams > 1 else 1


def is_fused(module: Optional[nn.Module]) -> bool:
    """Experts whose forward goes through transformers' experts registry (3-D weights)."""
    return module is not None and hasattr(module, "has_gate") and isinstance(getattr(module, "down_proj", None),
                                                                              torch.Tensor)


def _routers(layers: tuple[nn.Module, ...], sites: list[Site]) -> tuple[tuple[int, str], ...]:
    """(layer, "mlp.gate (Qwen3MoeTopKRouter)") for each layer with per-expert sites: the module
    whose output (its first element) is the router logits."""
    out = []
    for i in sorted({s.layer for s in sites if s.capture == "experts"}):
        router = next((s.module for s in sites if s.layer == i and s.kind == "router"), None)
        path = next((n for n, m in layers[i].named_modules() if m is router), None)
        out.append((i, f"{path} ({type(router).__name__})" if router is not None else "none"))
    return tuple(out)


def _kind(name: str, module: nn.Module) -> Optional[str]:
    """attn, mixer or mlp for a layer's child, by its attribute name; a `mixer` (nemotron_h's may be
    an attention, a mamba mixer, an MLP or an MoE) by its class."""
    if name in ATTN_NAMES:
        return "attn"
    if name in MLP_NAMES:
        return "mlp"
    if name not in MIXER_NAMES:
        return None
    cls = type(module).__name__.lower()
    if cls.endswith("attention"):
        return "attn"
    return "mlp" if cls.endswith(("mlp", "moe", "experts", "feedforward")) else "mixer"


def layer_blocks(i: int, layer: nn.Module) -> list[Block]:
    """The blocks of decoder layer i, in the order the layer defines them; parallel branches (an
    attention beside a mamba mixer) each get theirs; an MLP made of the layer's own fc1/fc2 too."""
    p = f"layers.{i}"
    if any(isinstance(getattr(layer, n, None), nn.Module) for n in ("encoder_attn", "crossattention")):
        raise UnsupportedArchitectureError(
            f"decoder layer {i} ({type(layer).__name__}) attends to an encoder's output: maxact-card measures "
            "decoder-only language models (and the text decoder of vision-language models); encoder-decoder "
            "models are out of its scope")
    post = post_block_norms(layer)
    found: list[Block] = []
    count: dict[str, int] = {}
    candidates: list[tuple[str, nn.Module, str]] = []
    for attr, child in layer.named_children():
        kind = _kind(attr, child)
        if kind is not None:
            candidates.append((attr, child, kind))
        elif not isinstance(child, nn.ModuleList):  # a wrapper: DBRX's norm_attn_norm, Zamba's shared transformer
            inner = [(f"{attr}.{sub}", g, k) for sub, g in child.named_children()
                     if (k := _kind(sub, g)) is not None and not isinstance(g, nn.ModuleList)]
            if any(k != "mlp" for _, _, k in inner):  # (not a gated norm's own small MLP: AXK2's)
                candidates += inner
    for attr, child, kind in candidates:
        members = [(f"{attr}.{j}", m) for j, m in enumerate(child)] if isinstance(child, nn.ModuleList) \
            else [(attr, child)]
        for path, m in members:  # several of one kind: layers.{i}.attn, then layers.{i}.attn.<path>
            count[kind] = count.get(kind, 0) + 1
            name = f"{p}.{kind}" if count[kind] == 1 else f"{p}.{kind}.{path}"
            out = m
            if post.get(attr) == RESIDUAL_INSIDE:
                out = _output_projection(m, kind)
            elif added_term(type(m)) is not None:
                out = _added_module(m, kind)
            elif (dense := _post_norm_output(m)) is not None:
                out = dense
            elif attr in post and len(members) == 1 and isinstance(getattr(layer, post[attr], None), nn.Module):
                out = getattr(layer, post[attr])  # (a norm the forward uses only under some configs may be absent)
            found.append(Block(i, kind, name, m, out))
    fc1, fc2 = getattr(layer, "fc1", None), getattr(layer, "fc2", None)
    if not any(b.kind == "mlp" for b in found) and isinstance(fc1, nn.Module) and isinstance(fc2, nn.Module):
        found.append(Block(i, "mlp", f"{p}.mlp", layer, fc2, ("fc1", "fc2")))
    dense = _post_norm_output(layer)
    if not any(b.kind == "mlp" for b in found) and isinstance(getattr(layer, "intermediate", None), nn.Module) \
            and dense is not None:
        found.append(Block(i, "mlp", f"{p}.mlp", layer, dense, ("intermediate", "output")))
    ple, ple_out = getattr(layer, "per_layer_projection", None), getattr(layer, "post_per_layer_input_norm", None)
    if isinstance(ple, nn.Linear) and isinstance(ple_out, nn.Module):  # Gemma 3n/4's per-layer input, gated
        found.append(Block(i, "mlp", f"{p}.mlp.per_layer_input", layer, ple_out,
                           ("per_layer_input_gate", "per_layer_projection")))
    found.sort(key=lambda b: ("attn", "mixer", "mlp").index(b.kind))  # forward order; parallel branches first
    if not found:
        children = ", ".join(n for n, _ in layer.named_children())
        raise UnsupportedArchitectureError(
            f"decoder layer {i} ({type(layer).__name__}) has no attention, mixer or MLP block "
            f"(found: {children}); please open an issue with the model id"
        )
    return found


def _post_norm_output(block: nn.Module) -> Optional[nn.Module]:
    """BERT's layout (GIT's text decoder): an `output` module computing LayerNorm(dense(x) + input);
    what the block adds is that dense layer's output."""
    output = getattr(block, "output", None)
    dense = getattr(output, "dense", None)
    return dense if isinstance(dense, nn.Linear) and isinstance(getattr(output, "LayerNorm", None), nn.Module) else None


def _output_projection(block: nn.Module, kind: str) -> nn.Module:
    """The linear layer whose output a block that adds the residual itself adds to it: its output
    (or down) projection by name, else its last linear layer (CPM-Ant's attention_out, w_out)."""
    named = _first(block, OUT_NAMES if kind != "mlp" else DOWN_NAMES)
    if named is not None:
        return named
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else block


@functools.cache
def added_term(cls: type) -> Optional[str]:
    """For a block whose forward returns its input plus what it computed (CPM-Ant's blocks, Gemma 3n's
    LAuReL): `return x + y`, or `x = x + y` ... `return x`, x being its first argument and still the
    input there (DeepSeek's MoE adds its shared experts to a reassigned `hidden_states`), the
    variable y ("" where y is not a plain variable); None for any other block."""
    fn = _forward_fn(cls)
    if fn is None or len(fn.args.args) < 2:
        return None
    first = fn.args.args[1].arg

    def other(node) -> Optional[str]:
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)):
            return None
        sides = [node.left, node.right]
        if not any(isinstance(side, ast.Name) and side.id == first for side in sides):
            return None
        rest = [side for side in sides if not (isinstance(side, ast.Name) and side.id == first)]
        return rest[0].id if rest and isinstance(rest[0], ast.Name) else ""

    assigns = sorted((n for n in ast.walk(fn) if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and any(
        isinstance(t, ast.Name) and t.id == first for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))),
        key=lambda n: n.lineno)
    returns = [(n.lineno, n.value.elts[0] if isinstance(n.value, ast.Tuple) and n.value.elts else n.value)
               for n in ast.walk(fn) if isinstance(n, ast.Return) and n.value is not None]
    for line, r in returns:
        if other(r) is not None and not any(a.lineno < line for a in assigns):
            return other(r)
    if len(assigns) == 1 and isinstance(assigns[0], ast.Assign) and other(assigns[0].value) is not None and \
            any(isinstance(r, ast.Name) and r.id == first for _, r in returns):
        return other(assigns[0].value)
    return None


def _added_module(block: nn.Module, kind: str) -> nn.Module:
    """What a block that adds its input itself adds: the module that last produced the added
    variable (LAuReL's post_laurel_norm), else the output projection."""
    var = added_term(type(block))
    fn = _forward_fn(type(block)) if var else None
    producers = [] if fn is None else [
        n.value.func.attr for n in sorted((n for n in ast.walk(fn) if isinstance(n, ast.Assign)), key=lambda n: n.lineno)
        if isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Attribute)
        and isinstance(n.value.func.value, ast.Name) and n.value.func.value.id == "self"
        and any(isinstance(t, ast.Name) and t.id == var
                for tgt in n.targets for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt]))]
    for attr in reversed(producers):  # the last that the block has (CPM-Ant's dropout may be None)
        if isinstance(getattr(block, attr, None), nn.Module):
            return getattr(block, attr)
    return _output_projection(block, kind)


@functools.cache
def _forward_fn(cls: type) -> Optional[ast.FunctionDef]:
    """The parsed source of a module class's forward (None where there is none to read)."""
    try:
        fn = ast.parse(textwrap.dedent(inspect.getsource(cls.forward))).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return None
    return fn if isinstance(fn, ast.FunctionDef) else None


def _flag(test: ast.AST) -> Optional[tuple[str, bool]]:
    """`if self.x:` -> ("x", True), `if not self.x:` -> ("x", False); else None."""
    negate = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    node = test.operand if negate else test
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr, not negate
    return None


def _summands(node: ast.AST) -> list[ast.AST]:
    """The terms of an addition chain `a + b + c` (one term: not an addition)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _summands(node.left) + _summands(node.right)
    return [node]


def _assignments(body: list, flags: dict[str, bool]) -> Iterator[ast.Assign]:
    """The assignments of a function body in order; an `if self.<flag>:` takes the branch the
    layer's flag selects (Gemma 4's MoE branch where the layer has none), any other both."""
    for node in body:
        if isinstance(node, ast.Assign):
            yield node
        elif isinstance(node, ast.If):
            flag = _flag(node.test)
            if flag is not None and flag[0] in flags:
                yield from _assignments(node.body if flags[flag[0]] == flag[1] else node.orelse, flags)
            else:
                yield from _assignments(node.body, flags)
                yield from _assignments(node.orelse, flags)
        else:
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _assignments(inner, flags)


def post_block_norms(layer: nn.Module) -> dict[str, str]:
    """{block attribute: module attribute} for the module a layer applies last to a block's output
    before adding it to the residual stream: a norm (Gemma's post_attention_layernorm, OLMo 2's,
    GLM-4's post_self_attn_layernorm), a short convolution (Inkling's attn_sconv); read from the
    layer's forward: a `self.<module>(x)` on what a `self.<block>(...)` returned, before the next
    addition, in the branches the layer's own flags take."""
    fn = _forward_fn(type(layer))
    if fn is None:
        return {}
    names = sorted({f[0] for n in ast.walk(fn) if isinstance(n, ast.If) and (f := _flag(n.test)) is not None})
    flags = tuple((n, bool(getattr(layer, n))) for n in names
                  if isinstance(getattr(layer, n, None), (bool, int, float, type(None))))
    return _post_modules(type(layer), flags)


@functools.cache
def _post_modules(cls: type, flags: tuple[tuple[str, bool], ...]) -> dict[str, str]:
    fn = _forward_fn(cls)
    if fn is None:
        return {}
    out: dict[str, str] = {}
    pending: dict[str, str] = {}  # variable -> the block whose output it holds
    blocks = ATTN_NAMES + MIXER_NAMES + MLP_NAMES
    # A block called with the residual (BLOOM's dropout_add inside) returns the stream, not its part:
    # what it adds is its output projection's output.
    for call in ast.walk(fn):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in blocks and \
                any(isinstance(a, ast.Name) and a.id == "residual" for a in [*call.args, *(k.value for k in call.keywords)]):
            out[call.func.attr] = RESIDUAL_INSIDE
    for node in _assignments(fn.body, dict(flags)):
        targets = [t for tgt in node.targets for t in (tgt.elts if isinstance(tgt, ast.Tuple) else [tgt])]
        target = next((t.id for t in targets if isinstance(t, ast.Name)), None)
        call = node.value if isinstance(node.value, ast.Call) else None
        attr = call.func.attr if call is not None and isinstance(call.func, ast.Attribute) and \
            isinstance(call.func.value, ast.Name) and call.func.value.id == "self" else None
        summands = _summands(node.value)
        if len(summands) > 1 and all(isinstance(t, ast.Name) and t.id in pending for t in summands):
            if target:  # branches merged (Gemma 4's dense MLP + experts), not yet added to the stream
                pending[target] = pending[summands[0].id]
        elif any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add) for n in ast.walk(node.value)):
            pending.clear()
        elif attr and attr not in blocks and len(call.args) == 1 and isinstance(call.args[0], ast.Name) \
                and call.args[0].id in pending:
            block = pending.pop(call.args[0].id)  # the last module applied before the addition
            if "drop" not in attr.lower() and out.get(block) != RESIDUAL_INSIDE:  # dropout: the identity
                out[block] = attr
            if target:
                pending[target] = block
        elif (attr in blocks or attr == "experts") and target:
            pending[target] = attr
    shared = {m for m in out.values() if m != RESIDUAL_INSIDE and list(out.values()).count(m) > 1}  # after two blocks
    return {b: m for b, m in out.items() if m not in shared}


def _layer_sites(i: int, layer: nn.Module, blocks: list[Block]) -> list[Site]:
    p = f"layers.{i}"
    sites: list[Site] = []
    for b in blocks:
        if b.kind != "mlp":
            sites.append(Site(b.name, b.kind, i, b.out))
            continue
        if b.parts:  # the layer's own fc1/fc2: down_in is fc2's input
            if isinstance(b.out, nn.Linear) or type(b.out).__name__ == "Conv1D":
                sites.append(Site(f"{b.name}.down_in", "mlp.down_in", i, b.out, capture="input"))
            sites.append(Site(b.name, "mlp", i, b.out))
            continue
        mlp = b.module
        gate_proj, gate_up = _first(mlp, GATE_NAMES), getattr(mlp, "gate_up_proj", None)
        if isinstance(gate_proj, nn.Linear):
            sites.append(Site(f"{b.name}.gate", "mlp.gate", i, gate_proj))
        elif isinstance(gate_up, nn.Linear):
            sites.append(Site(f"{b.name}.gate", "mlp.gate", i, gate_up, half=True))
        down = _first(mlp, DOWN_NAMES)
        if isinstance(down, nn.Module) and not isinstance(down, nn.ModuleList) and not is_fused(mlp):
            sites.append(Site(f"{b.name}.down_in", "mlp.down_in", i, down, capture="input"))
        owner = mlp if hasattr(mlp, "experts") else layer if b.name == f"{p}.mlp" and is_fused(
            getattr(layer, "experts", None)) else None  # Gemma 4 keeps its experts beside the dense MLP
        router = _first(owner, ROUTER_NAMES) if owner is not None else None
        if router is not None:
            sites.append(Site(f"{p}.router" if b.name == f"{p}.mlp" else f"{b.name}.router", "router", i, router,
                              flat=True))
        experts = getattr(owner, "experts", None)
        if is_fused(experts):
            if experts.has_gate:
                sites.append(Site(f"{b.name}.experts.gate", "mlp.experts.gate", i, experts, capture="experts"))
            sites.append(Site(f"{b.name}.experts.down_in", "mlp.experts.down_in", i, experts, capture="experts"))
        sites.append(Site(b.name, "mlp", i, b.out))
    sites.append(Site(f"{p}.residual", "residual", i, layer))
    return sites
