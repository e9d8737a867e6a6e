"""The batch loop: length-sorted batches, out-of-memory halving, and the starting batch size.

A batch that runs out of memory half-way is undone through the observers' `state_dict()` /
`load_state_dict()`, its samples are planned again at half the batch size, and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..loading import text_config
from .context import BatchContext, make_context
from .hooks import input_device
from .observers import Observer

CPU_BATCH_TOKENS = 2048


@dataclass(frozen=True)
class Planned:
    """A batch of the plan: its position among the audit's forward passes, and its sample indices."""

    forward: int
    samples: list[int]


def plan_batches(lengths: Sequence[int], indices: Sequence[int], batch_size: int, first: int = 0) -> list[Planned]:
    """Length-sorted (longest first, ties by index) groups of `batch_size` sample indices."""
    order = sorted(indices, key=lambda i: (-lengths[i], i))
    return [Planned(first + n, order[i : i + batch_size]) for n, i in enumerate(range(0, len(order), batch_size))]


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def run_batches(
    model: nn.Module,
    corpus_ids: Sequence[Sequence[int]],
    plan: list[Planned],
    pad_id: int,
    step: Callable[[BatchContext, torch.Tensor], None],
    *,
    adaptive: bool,
    observers: Sequence[Observer],
    on_batch: Callable[[int, int], None],
    on_oom: Callable[[], None] = lambda: None,
) -> int:
    """Run `step(ctx, attention_mask)` over the planned batches. On out-of-memory (when `adaptive`),
    restore every observer's state from before the batch, call `on_oom` (drop half-done work),
    halve the batch size and go on. Returns the batch size that finished."""
    from ..corpus import pad_batch

    lengths = [len(ids) for ids in corpus_ids]
    device = input_device(model)
    pending = list(plan)
    batch_size = max((len(p.samples) for p in plan), default=1)
    while pending:
        item = pending.pop(0)
        batch = pad_batch([corpus_ids[i] for i in item.samples], item.samples, pad_id)
        ctx = make_context(batch.input_ids, batch.attention_mask, batch.sample_index, device, item.forward)
        saved = [o.state_dict() for o in observers] if adaptive else None
        try:
            step(ctx, batch.attention_mask.to(device))
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            if not (adaptive and is_oom(exc) and len(item.samples) > 1):
                raise
            for o, s in zip(observers, saved):
                o.load_state_dict(s)
            on_oom()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch_size = max(1, len(item.samples) // 2)
            rest = item.samples + [i for p in pending for i in p.samples]
            pending = plan_batches(lengths, rest, batch_size, item.forward)
            continue
        on_batch(len(item.samples), int(batch.attention_mask.sum()))
    return batch_size


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
