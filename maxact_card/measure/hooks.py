"""Forward hooks on the probe sites: registered for one forward pass, always removed.

A hook picks the activation out of what its module saw and hands it, with the batch context it
was registered with, to its observer (`fn(x, ctx)`). Nothing else happens inside a hook.

The observers run in the hook, on the forward pass's own thread, on every device. On the CPU a
worker thread for them cost time (its OpenMP team contends with the forward's for the cores) and
memory (benchmarks in the README). After each forward pass the free pages of the heap go back to
the OS (glibc's malloc_trim).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ..sites import Site
from .context import BatchContext

Observe = Callable[[torch.Tensor, BatchContext], None]


def activation(site: Site, value, ctx: BatchContext) -> Optional[torch.Tensor]:
    """The activation tensor [B, T, C] a site's hook sees in `value` (a module output or input);
    None for a call on something else than the batch's tokens (Zaya runs its delayed value
    projection once more on a zero state [B, 1, C])."""
    x = value[site.select] if isinstance(value, (tuple, list)) else value
    if site.half:
        x = x[..., : x.shape[-1] // 2]
    B, T = ctx.valid.shape
    if site.flat or x.dim() == 2 or (x.dim() > 3 and math.prod(x.shape[1:-2]) == 1):
        return x.reshape(B, T, -1)  # flattened tokens, or [B, 1, T, C] (the latent MLA's kv_b_proj reads)
    if x.dim() > 3 and tuple(x.shape[:2]) == (B, T):
        # [B, T, streams, C] (hyper-connections' residual streams), [B, T, groups, C] (a grouped
        # projection's input): all of a token's values in its row
        return x.reshape(B, T, -1)
    if x.dim() == 4 and tuple(x.shape[1:3]) == (B, T):  # [streams, B, T, C]: Gemma 3n's AltUp streams
        return x.permute(1, 2, 0, 3).reshape(B, T, -1)
    if x.dim() == 3 and x.shape[0] == B and x.shape[1] > T:
        return x[:, -T:]  # tokens the model puts before the input (CPM-Ant's prompt): the input's positions
    return x if tuple(x.shape[:2]) == (B, T) else None


def _observe(fn: Observe, x: torch.Tensor, ctx: BatchContext) -> None:
    if x.device.type == "mps":
        # MPS has no float64 for the sums; Apple silicon's memory is shared, so the statistics read a
        # host copy and take the CPU path.
        x = x.cpu()
    fn(x, ctx)


def _keep(fn: Observe, x: torch.Tensor, ctx: BatchContext) -> None:
    fn(x, ctx)


@functools.cache
def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_heap() -> None:
    """Return the free pages of the malloc heaps to the OS, where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _register(site: Site, fn: Observe, ctx: BatchContext, call: Callable) -> torch.utils.hooks.RemovableHandle:
    if site.capture == "input":

        def pre_hook(module, args, kwargs):
            x = activation(site, args[0] if args else kwargs["hidden_states"], ctx)
            if x is not None:
                call(fn, x, ctx)

        return site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module, args, output):
        x = activation(site, output, ctx)
        if x is not None:
            call(fn, x, ctx)

    return site.module.register_forward_hook(hook)


@contextlib.contextmanager
def hooked(sites: Sequence[Site], fns: Sequence[Observe], ctx: BatchContext, *,
           statistics: bool = True) -> Iterator[None]:
    """Hooks calling fns[i](activation of sites[i], ctx) during the forward passes inside the block.
    `statistics`: the fns reduce the activation (on Apple silicon, a host copy of it); else they
    get the tensor itself, where the forward pass has it."""
    handles = []
    call = _observe if statistics else _keep
    try:
        for site, fn in zip(sites, fns):
            handles.append(_register(site, fn, ctx, call))
        yield
    finally:
        for h in handles:
            h.remove()


def forward(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, logits: bool = False):
    """One forward pass as the probe runs it: no KV cache; logits only when asked for."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if not logits:
        kwargs["logits_to_keep"] = 1
    return model(**kwargs)


def input_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device
