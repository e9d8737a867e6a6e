"""The experts seam: an implementation in transformers' experts registry that computes what the
model's own computes and lets the audit see inside each expert.

transformers 5 keeps an MoE layer's experts as fused 3-D weights and dispatches their forward
through `transformers.integrations.moe.ALL_EXPERTS_FUNCTIONS` by `config._experts_implementation`.
`experts_seam(model)` registers `maxact_card` there and selects it for the audit's forward passes
(the model's own choice is restored afterwards). It runs the operations of transformers'
`grouped_mm` implementation in the same order (bit for bit equal to `eager` in float32 on the CPU,
the same result dtype everywhere), with taps between them:

* `gate_up_in(x, expert_g, token_g)`: each expert's gate/up input rows (may return a replacement);
* `gate(x, expert_g, token_g)`: the pre-activation gate rows;
* `down_in(x, expert_g, token_g)`: each expert's down-projection input rows (may return a replacement).

`token_g` indexes the MoE block's flattened tokens (row b * T + t of the batch; where the module
repeats each token's row once per route, row // routes). Nothing in here
reads a value back to the host.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ..sites import is_fused

IMPLEMENTATION = "maxact_card"


# experts module -> the taps of the forward passes running now
_ACTIVE: dict[nn.Module, list] = {}
# The path inside the seam: None by device (eager's loop on the CPU), True grouped_mm's everywhere.
_ACCELERATOR: list[Optional[bool]] = [None]


def gate_columns(module: nn.Module, proj: torch.Tensor) -> torch.Tensor:
    """The gate half of a fused gate/up projection's output: the first half (concatenated
    layout) or every other column (interleaved, as gpt-oss stores it)."""
    if getattr(module, "is_concatenated", True):
        return proj[..., : proj.shape[-1] // 2]
    return proj[..., ::2]


def _apply(taps: list, name: str, x: torch.Tensor, expert_g: torch.Tensor, token_g: torch.Tensor) -> torch.Tensor:
    for t in taps:
        out = getattr(t, name)(x, expert_g, token_g)
        if out is not None:
            x = out
    return x


def _eager_linear(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    if module.is_transposed:
        out = x @ weight
        return out + bias if bias is not None else out
    return nn.functional.linear(x, weight, bias)


def _eager_path(self: nn.Module, hidden_states, top_k_index, top_k_weights, taps, rep: int = 1) -> torch.Tensor:
    """transformers' `eager` experts loop (one linear per expert that got tokens, the tokens of an
    expert in (slot, token) order, accumulated with index_add_ in expert order), with the taps. On
    the CPU, where reading the token counts back costs nothing."""
    num_tokens = hidden_states.size(0)
    flat = top_k_index.t().reshape(-1)  # row r = slot r // N, token r % N: torch.where's order
    expert_g, order = torch.sort(flat, stable=True)
    token_g, slot_g = order % num_tokens, order // num_tokens
    selected = hidden_states[token_g]
    if taps:
        selected = _apply(taps, "gate_up_in", selected, expert_g, token_g // rep)
    counts = torch.bincount(expert_g, minlength=self.num_experts).tolist()
    outs, gates = [], []
    start = 0
    for e, n in enumerate(counts):
        if not n:
            start += n
            continue
        x = selected[start : start + n]
        if self.has_gate:
            proj = _eager_linear(self, x, self.gate_up_proj[e], self.gate_up_proj_bias[e] if self.has_bias else None)
            gates.append(proj)
        else:
            proj = _eager_linear(self, x, self.up_proj[e], self.up_proj_bias[e] if self.has_bias else None)
        outs.append((e, start, n, proj))
        start += n
    if taps and gates:
        gate = gate_columns(self, torch.cat(gates))
        for t in taps:
            t.gate(gate, expert_g, token_g // rep)
    inner = [self._apply_gate(p) if self.has_gate else self.act_fn(p) for _, _, _, p in outs]
    if taps and inner:
        mid = _apply(taps, "down_in", torch.cat(inner), expert_g, token_g // rep)
        inner = list(mid.split([n for _, _, n, _ in outs]))
    final = torch.zeros_like(hidden_states)
    for (e, start, n, _), h in zip(outs, inner):
        out = _eager_linear(self, h, self.down_proj[e], self.down_proj_bias[e] if self.has_bias else None)
        if self.has_post_expert_norm:
            out = self.post_expert_norm(out)
        out = out * top_k_weights[token_g[start : start + n], slot_g[start : start + n], None]
        final.index_add_(0, token_g[start : start + n], out.to(final.dtype))
    return final


def _grouped_path(self: nn.Module, hidden_states, top_k_index, top_k_weights, taps, rep: int = 1) -> torch.Tensor:
    """transformers' `grouped_mm` experts forward, op for op, with the taps: no host sync."""
    from transformers.integrations import moe

    device = hidden_states.device
    num_top_k = top_k_index.size(-1)
    num_tokens = hidden_states.size(0)
    hidden_dim = hidden_states.size(-1)
    sample_weights = top_k_weights.reshape(-1)
    expert_ids_g, perm = torch.sort(top_k_index.reshape(-1))
    token_g = perm // num_top_k
    selected = hidden_states[token_g]
    sample_weights_g = sample_weights[perm]
    histc_input = expert_ids_g.float() if device.type in ("cpu", "mps") else expert_ids_g.int()
    tokens_per_expert = torch.histc(histc_input, bins=self.num_experts, min=0, max=self.num_experts - 1)
    offsets = torch.cumsum(tokens_per_expert, dim=0, dtype=torch.int32)
    if taps:
        selected = _apply(taps, "gate_up_in", selected, expert_ids_g, token_g // rep)
    weights = self.gate_up_proj if self.has_gate else self.up_proj
    biases = None
    if self.has_bias:
        biases = (self.gate_up_proj_bias if self.has_gate else self.up_proj_bias)[expert_ids_g]
    proj = moe._grouped_linear(selected, weights, offsets, bias=biases, is_transposed=self.is_transposed)
    if self.has_gate:
        if taps:
            gate = gate_columns(self, proj)
            for t in taps:
                t.gate(gate, expert_ids_g, token_g // rep)
        proj = self._apply_gate(proj)
    else:
        proj = self.act_fn(proj)
    if taps:
        proj = _apply(taps, "down_in", proj, expert_ids_g, token_g // rep)
    biases = self.down_proj_bias[expert_ids_g] if self.has_bias else None
    proj = moe._grouped_linear(proj, self.down_proj, offsets, bias=biases, is_transposed=self.is_transposed)
    if self.has_post_expert_norm:
        proj = self.post_expert_norm(proj)
    weighted = proj * sample_weights_g.unsqueeze(-1)
    inv_perm = torch.empty_like(perm)
    inv_perm[perm] = torch.arange(perm.size(0), device=device)
    weighted = weighted[inv_perm]
    return weighted.view(num_tokens, num_top_k, hidden_dim).sum(dim=1).to(hidden_states.dtype)


def experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """The registered implementation: `eager`'s loop on the CPU, `grouped_mm`'s ops elsewhere."""
    from transformers.integrations import moe

    if getattr(self, "_is_expert_parallel", False):  # expert parallelism's sentinels are grouped_mm's own
        return moe.grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    taps = _ACTIVE.get(self)
    grouped = _ACCELERATOR[0] if _ACCELERATOR[0] is not None else hidden_states.device.type != "cpu"
    path = _grouped_path if grouped else _eager_path
    return path(self, hidden_states, top_k_index, top_k_weights, taps, _rows_per_token(taps, hidden_states))


def _rows_per_token(taps: Optional[list], hidden_states: torch.Tensor) -> int:
    """1, or r where the module hands each token over as r consecutive rows (Ergo gives each of a
    token's k routes its own row, repeat_interleave'd): the taps then get row // r as the token."""
    ctx = next((t.ctx for t in taps or () if getattr(t, "ctx", None) is not None), None)
    if ctx is None:
        return 1
    tokens, rows = ctx.valid.numel(), hidden_states.shape[0]
    return rows // tokens if rows != tokens and rows % tokens == 0 else 1


def register() -> None:
    """Put the implementation into transformers' experts registry (once)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, experts_forward)


def _configs(model: nn.Module) -> list:
    """Every config an experts module of `model` dispatches on (the text config of a multimodal model too)."""
    seen: dict[int, object] = {}
    for m in model.modules():
        if is_fused(m) and getattr(m, "config", None) is not None:
            seen.setdefault(id(m.config), m.config)
    return list(seen.values())


@contextlib.contextmanager
def experts_seam(model: nn.Module, accelerator: Optional[bool] = None) -> Iterator[None]:
    """Inside the block, every fused experts module of `model` runs `experts_forward`
    (`accelerator=True`: the accelerator path on the CPU too, as the engine's tests force it)."""
    configs = _configs(model)
    if not configs:
        yield
        return
    register()
    before = [c._experts_implementation for c in configs]
    saved = _ACCELERATOR[0]
    try:
        _ACCELERATOR[0] = accelerator
        for c in configs:
            c._experts_implementation = IMPLEMENTATION
        yield
    finally:
        _ACCELERATOR[0] = saved
        for c, b in zip(configs, before):
            c._experts_implementation = b


@contextlib.contextmanager
def tapped(modules: Sequence[nn.Module], taps: Sequence["Observing"]) -> Iterator[None]:
    """taps[i] sees inside modules[i] during the forward passes run in the block."""
    try:
        for m, t in zip(modules, taps):
            _ACTIVE.setdefault(m, []).append(t)
        yield
    finally:
        for m, t in zip(modules, taps):
            lst = _ACTIVE.get(m, [])
            if t in lst:
                lst.remove(t)
            if not lst:
                _ACTIVE.pop(m, None)


class Observing:
    """A tap: subclasses override what they read; `gate_up_in` and `down_in` may return a
    replacement for the rows (the quantized forwards do)."""

    def gate_up_in(self, x, expert_g, token_g) -> Optional[torch.Tensor]:
        return None

    def gate(self, x, expert_g, token_g) -> None:
        pass

    def down_in(self, x, expert_g, token_g) -> Optional[torch.Tensor]:
        return None

