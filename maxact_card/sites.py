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

from dataclasses import dataclass
from typing import Optional

from torch import nn

import torch

from .errors import UnsupportedArchitectureError

# Module attribute names, in the order they are tried. The first that exists wins.
ATTN_NAMES = ("self_attn", "linear_attn", "attn", "attention", "mixer", "self_attention")
MLP_NAMES = ("mlp", "block_sparse_moe", "feed_forward", "moe", "ffn")
# Inside an MoE block (one with `experts`), the router; dense MLPs name their projection gate_proj.
ROUTER_NAMES = ("gate", "router")
NORM_NAMES = ("norm", "final_layernorm", "final_norm", "ln_f")


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


@dataclass(frozen=True)
class ModelSites:
    sites: tuple[Site, ...]
    num_layers: int
    layers: tuple[nn.Module, ...]
    # MoE layers with fused experts: (layer, the module giving its router logits, "mlp.gate (Class)").
    routers: tuple[tuple[int, str], ...] = ()

    @property
    def hooked(self) -> tuple[Site, ...]:
        """The sites forward hooks read (all but the per-expert ones)."""
        return tuple(s for s in self.sites if s.capture != "experts")

    @property
    def expert_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if s.capture == "experts")


def find_decoder(model: nn.Module) -> nn.Module:
    """The text decoder (for vision-language models, the language model backbone)."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError):
            decoder = None
        if isinstance(decoder, nn.Module) and isinstance(getattr(decoder, "layers", None), nn.ModuleList):
            return decoder
    for name in ("model", "language_model", "transformer"):
        inner = getattr(model, name, None)
        if isinstance(inner, nn.Module) and inner is not model:
            if isinstance(getattr(inner, "layers", None), nn.ModuleList):
                return inner
            nested = getattr(inner, "language_model", None)
            if isinstance(nested, nn.Module) and isinstance(getattr(nested, "layers", None), nn.ModuleList):
                return nested
    if isinstance(getattr(model, "layers", None), nn.ModuleList):
        return model
    found = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.ModuleList)})
    top = ", ".join(n for n, _ in model.named_children())
    raise UnsupportedArchitectureError(
        f"cannot find the decoder layers of {type(model).__name__}: no `layers` ModuleList under "
        f"get_decoder()/model/language_model (top-level modules: {top or 'none'}; "
        f"module lists found: {', '.join(found) or 'none'}); please open an issue with the model id"
    )


def _first(module: nn.Module, names: tuple[str, ...]) -> Optional[nn.Module]:
    for n in names:
        m = getattr(module, n, None)
        if isinstance(m, nn.Module):
            return m
    return None


def _layer_sites(i: int, layer: nn.Module) -> list[Site]:
    p = f"layers.{i}"
    sites: list[Site] = []
    attn = _first(layer, ATTN_NAMES)
    mlp = _first(layer, MLP_NAMES)
    if attn is None or mlp is None:
        children = ", ".join(n for n, _ in layer.named_children())
        raise UnsupportedArchitectureError(
            f"decoder layer {i} ({type(layer).__name__}) has no attention or MLP block "
            f"(found: {children}); please open an issue with the model id"
        )
    # Sandwich norms (Gemma 2/3): what is added to the residual stream is the post-norm output.
    sandwich = hasattr(layer, "pre_feedforward_layernorm") and hasattr(layer, "post_feedforward_layernorm")
    attn_out = layer.post_attention_layernorm if sandwich else attn
    mlp_out = layer.post_feedforward_layernorm if sandwich else mlp
    sites.append(Site(f"{p}.attn", "attn", i, attn_out))

    gate_proj = getattr(mlp, "gate_proj", None)
    gate_up = getattr(mlp, "gate_up_proj", None)
    if isinstance(gate_proj, nn.Linear):
        sites.append(Site(f"{p}.mlp.gate", "mlp.gate", i, gate_proj))
    elif isinstance(gate_up, nn.Linear):
        sites.append(Site(f"{p}.mlp.gate", "mlp.gate", i, gate_up, half=True))
    down = getattr(mlp, "down_proj", None)
    if isinstance(down, nn.Linear):
        sites.append(Site(f"{p}.mlp.down_in", "mlp.down_in", i, down, capture="input"))
    router = _first(mlp, ROUTER_NAMES) if hasattr(mlp, "experts") else None
    if router is not None:
        sites.append(Site(f"{p}.router", "router", i, router, flat=True))
    experts = getattr(mlp, "experts", None)
    if is_fused(experts):
        if experts.has_gate:
            sites.append(Site(f"{p}.mlp.experts.gate", "mlp.experts.gate", i, experts, capture="experts"))
        sites.append(Site(f"{p}.mlp.experts.down_in", "mlp.experts.down_in", i, experts, capture="experts"))
    sites.append(Site(f"{p}.mlp", "mlp", i, mlp_out))
    sites.append(Site(f"{p}.residual", "residual", i, layer))
    return sites


def find_sites(model: nn.Module) -> ModelSites:
    decoder = find_decoder(model)
    layers = tuple(decoder.layers)
    if not layers:
        raise UnsupportedArchitectureError(f"{type(decoder).__name__} has an empty `layers` list")
    sites: list[Site] = [Site("embed", "embed", None, layers[0], capture="input")]
    for i, layer in enumerate(layers):
        sites.extend(_layer_sites(i, layer))
    norm = _first(decoder, NORM_NAMES)
    if norm is not None:
        sites.append(Site("final_norm", "final_norm", None, norm))
    return ModelSites(tuple(sites), len(layers), layers, _routers(layers, sites))


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
