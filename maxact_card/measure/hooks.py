"""Forward hooks on the probe sites: registered for one forward pass, always removed.

A hook picks the activation out of what its module saw and hands it, with the batch context it
was registered with, to its observer (`fn(x, ctx)`). Nothing else happens inside a hook.

On the CPU the observers run on one worker thread while the forward pass waits: glibc gives each
thread its own malloc arena, so the statistics' small temporaries stay out of the heap the forward
pass takes its activations from. On one heap they split the holes freed activations leave, and a
probed SmolLM2-135M forward held 2.2x the bare forward's peak RSS. When the hooks come off, the
free pages of every arena go back to the OS (glibc's malloc_trim).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ..sites import Site
from .context import BatchContext

Observe = Callable[[torch.Tensor, BatchContext], None]


def activation(site: Site, value, ctx: BatchContext) -> torch.Tensor:
    """The activation tensor [B, T, C] a site's hook sees in `value` (a module output or input)."""
    x = value[site.select] if isinstance(value, (tuple, list)) else value
    if site.half:
        x = x[..., : x.shape[-1] // 2]
    if site.flat or x.dim() == 2:
        B, T = ctx.valid.shape
        x = x.reshape(B, T, -1)
    return x


_STATS_THREAD: list[ThreadPoolExecutor] = []


def _stats_thread() -> ThreadPoolExecutor:
    """The one worker thread CPU statistics run on (created on first use, same torch thread count)."""
    if not _STATS_THREAD:
        _STATS_THREAD.append(ThreadPoolExecutor(1, "maxact-stats", torch.set_num_threads, (torch.get_num_threads(),)))
    return _STATS_THREAD[0]


def _call_in_mode(fn: Observe, x: torch.Tensor, ctx: BatchContext, inference: bool) -> None:
    """Grad mode and inference mode are per thread: the worker takes the caller's."""
    with torch.no_grad(), torch.inference_mode(inference):
        fn(x, ctx)


def _observe(fn: Observe, x: torch.Tensor, ctx: BatchContext) -> None:
    if x.device.type == "mps":
        # MPS has no float64 for the sums; Apple silicon's memory is shared, so the statistics read a
        # host copy and take the CPU path.
        x = x.cpu()
    if x.device.type != "cpu":
        fn(x, ctx)
        return
    _stats_thread().submit(_call_in_mode, fn, x, ctx, torch.is_inference_mode_enabled()).result()


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
            call(fn, activation(site, args[0] if args else kwargs["hidden_states"], ctx), ctx)

        return site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module, args, output):
        call(fn, activation(site, output, ctx), ctx)

    return site.module.register_forward_hook(hook)


@contextlib.contextmanager
def hooked(sites: Sequence[Site], fns: Sequence[Observe], ctx: BatchContext, *,
           statistics: bool = True) -> Iterator[None]:
    """Hooks calling fns[i](activation of sites[i], ctx) during the forward passes inside the block.
    `statistics`: the fns reduce the activation (on the CPU, on the worker thread); else they get
    the tensor itself, where the forward pass has it."""
    handles = []
    call = _observe if statistics else _keep
    try:
        for site, fn in zip(sites, fns):
            handles.append(_register(site, fn, ctx, call))
        yield
    finally:
        for h in handles:
            h.remove()
        if _STATS_THREAD:
            release_heap()


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
