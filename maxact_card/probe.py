"""Attach the statistics hooks to every probe site and run the forward passes.

Hooks are registered inside a context manager and always removed, even on error. Each hook is a
few lines: pick the tensor, hand it to its accumulator with the batch context.

On the CPU a hook's statistics run on one worker thread while the forward pass waits: glibc gives
each thread its own malloc arena, so the statistics' small temporaries stay out of the heap the
forward pass takes its activations from. On one heap they split the holes freed activations leave,
and a probed SmolLM2-135M forward held 2.2x the bare forward's peak RSS (README, "Performance").
When the hooks come off, after each forward pass, the free pages of every arena go back to the OS
(glibc's malloc_trim), so that what one pass left behind does not add to the next one's peak.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from .loading import text_config
from .report import HEADLINE_KINDS, KIND_ORDER, KindMax, Peak, SiteStats
from .sites import ModelSites, Site
from .stats import BatchContext, SiteAccumulator


def activation(site: Site, value, batch: BatchContext) -> torch.Tensor:
    """The activation tensor [B, T, C] a site's hook sees in `value` (a module output or input)."""
    x = value[site.select] if isinstance(value, (tuple, list)) else value
    if site.half:
        x = x[..., : x.shape[-1] // 2]
    if site.flat or x.dim() == 2:
        B, T = batch.valid.shape
        x = x.reshape(B, T, -1)
    return x


_STATS_THREAD: list[ThreadPoolExecutor] = []


def _stats_thread() -> ThreadPoolExecutor:
    """The one worker thread CPU statistics run on (created on first use, same torch thread count)."""
    if not _STATS_THREAD:
        _STATS_THREAD.append(ThreadPoolExecutor(1, "maxact-stats", torch.set_num_threads, (torch.get_num_threads(),)))
    return _STATS_THREAD[0]


def _observe(fn: Callable[[torch.Tensor], None], x: torch.Tensor) -> None:
    if x.device.type == "mps":
        # MPS has no float64 for the sums; Apple silicon's memory is shared, so the statistics read a
        # host copy and take the CPU path.
        x = x.cpu()
    if x.device.type != "cpu":
        fn(x)
        return
    _stats_thread().submit(_call_in_mode, fn, x, torch.is_inference_mode_enabled()).result()


def _keep(fn: Callable[[torch.Tensor], None], x: torch.Tensor) -> None:
    fn(x)


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


def _call_in_mode(fn: Callable[[torch.Tensor], None], x: torch.Tensor, inference: bool) -> None:
    """Grad mode and inference mode are per thread: the worker takes the caller's."""
    with torch.no_grad(), torch.inference_mode(inference):
        fn(x)


def _register(site: Site, fn: Callable[[torch.Tensor], None], state: Any, call: Callable) -> torch.utils.hooks.RemovableHandle:
    if site.capture == "input":

        def pre_hook(module, args, kwargs):
            call(fn, activation(site, args[0] if args else kwargs["hidden_states"], state.ctx))

        return site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module, args, output):
        call(fn, activation(site, output, state.ctx))

    return site.module.register_forward_hook(hook)


@contextlib.contextmanager
def hooked(sites: Sequence[Site], fns: Sequence[Callable[[torch.Tensor], None]], state: Any, *,
           statistics: bool = True) -> Iterator[None]:
    """Hooks calling fns[i] with sites[i]'s activation; `state.ctx` is the batch in flight. Always removed.
    `statistics`: the fns reduce the activation (on the CPU, on the worker thread); else they get
    the tensor itself, where the forward pass has it."""
    handles = []
    call = _observe if statistics else _keep
    try:
        for site, fn in zip(sites, fns):
            handles.append(_register(site, fn, state, call))
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


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


class Probe:
    """Statistics for every site of `model_sites`; the batch loop sets `ctx` before each forward."""

    def __init__(self, model_sites: ModelSites, *, hist_stride: int = 1) -> None:
        self.sites = model_sites.sites
        self.accs = [SiteAccumulator(channel_absmax=s.kind == "residual", hist_stride=hist_stride) for s in self.sites]
        self.ctx: Optional[BatchContext] = None

    def hooks(self) -> contextlib.AbstractContextManager[None]:
        fns = [lambda x, acc=acc: acc.update(x, self.ctx) for acc in self.accs]
        return hooked(self.sites, fns, self)

    def results(self, decode: Callable[[int], str]) -> tuple[SiteStats, ...]:
        return tuple(acc.result(s.name, s.kind, s.layer, decode) for s, acc in zip(self.sites, self.accs))


def snapshot(objs: Sequence[object]) -> list[dict]:
    """Copies of the accumulators' state, to undo a batch that ran out of memory half-way."""
    return [copy.deepcopy(o.__dict__) for o in objs]


def restore(objs: Sequence[object], snap: list[dict]) -> None:
    for o, d in zip(objs, snap):
        o.__dict__.clear()
        o.__dict__.update(d)
def peak_of(sites: Sequence[SiteStats]) -> Optional[Peak]:
    """M over the headline sites; among equal values the earliest site in forward order."""
    best: Optional[SiteStats] = None
    for s in sites:
        if s.kind in HEADLINE_KINDS and s.absmax is not None and (best is None or s.absmax > best.absmax):
            best = s
    if best is None or best.absmax_location is None:
        return None
    loc = best.absmax_location
    return Peak(
        value=loc.sign * best.absmax,
        abs=best.absmax,
        site=best.name,
        kind=best.kind,
        layer=best.layer,
        sample=loc.sample,
        position=loc.position,
        token=loc.token,
        token_id=loc.token_id,
        channel=loc.channel,
    )


def kind_maxima(sites: Sequence[SiteStats]) -> tuple[KindMax, ...]:
    best: dict[str, SiteStats] = {}
    for s in sites:
        if s.absmax is not None and (s.kind not in best or s.absmax > best[s.kind].absmax):
            best[s.kind] = s
    return tuple(KindMax(k, best[k].absmax, best[k].name, best[k].layer) for k in KIND_ORDER if k in best)


BatchPlan = list[list[int]]


def plan_batches(lengths: Sequence[int], indices: Sequence[int], batch_size: int) -> BatchPlan:
    """Length-sorted (longest first, ties by index) groups of `batch_size` sample indices."""
    order = sorted(indices, key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def run_batches(
    model: nn.Module,
    corpus_ids: Sequence[Sequence[int]],
    indices: Sequence[int],
    batch_size: int,
    pad_id: int,
    step: Callable[[BatchContext, torch.Tensor], None],
    *,
    adaptive: bool,
    stateful: Sequence[object],
    on_batch: Callable[[int, int], None],
) -> int:
    """Run `step(ctx, attention_mask)` over the samples in length-sorted batches. On out-of-memory
    (when `adaptive`), undo the partial batch in `stateful`, halve the batch size and go on.
    Returns the batch size that finished."""
    from .corpus import pad_batch

    lengths = [len(ids) for ids in corpus_ids]
    device = input_device(model)
    pending = plan_batches(lengths, indices, batch_size)
    while pending:
        group = pending.pop(0)
        batch = pad_batch([corpus_ids[i] for i in group], group, pad_id)
        ctx = BatchContext(
            valid=batch.attention_mask.bool().to(device),
            sample_index=batch.sample_index.to(device),
            input_ids=batch.input_ids.to(device),
        )
        saved = snapshot(stateful) if adaptive else None
        try:
            step(ctx, batch.attention_mask.to(device))
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not (adaptive and is_oom(exc) and batch_size > 1):
                raise
            restore(stateful, saved)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            pending = plan_batches(lengths, group + [i for g in pending for i in g], batch_size)
            continue
        on_batch(len(group), int(batch.attention_mask.sum()))
    return batch_size


CPU_BATCH_TOKENS = 2048


def estimate_batch_size(model: nn.Module, max_seq_len: int, with_logits: bool) -> int:
    """A starting batch size from free memory and the model's widths; OOM halving corrects it."""
    cfg = getattr(model, "config", None)
    text = text_config(cfg)
    hidden = getattr(text, "hidden_size", 4096) or 4096
    inter = getattr(text, "intermediate_size", 4 * hidden) or 4 * hidden
    heads = getattr(text, "num_attention_heads", 32) or 32
    vocab = getattr(text, "vocab_size", 32000) if with_logits else 0
    elem = next(model.parameters()).element_size()
    per_seq = max_seq_len * (8 * hidden + 4 * inter + vocab) * max(elem, 4) + heads * max_seq_len**2 * elem
    device = input_device(model)
    cap = 64
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * 0.5
    else:
        budget = _available_ram() * 0.25
        # On a CPU, throughput peaks near 2k tokens a batch (SmolLM2-135M, float32, 2 cores: 440,
        # 534, 623, 620, 529 tok/s at 512, 1k, 2k, 4k, 8k tokens); larger batches only hold more
        # memory and leave the progress bar still for longer.
        cap = max(1, CPU_BATCH_TOKENS // max_seq_len)
    return int(max(1, min(cap, budget // max(per_seq, 1))))


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
