"""Whether right padding leaves the real tokens alone: the check that lets samples share a batch.

Batches pad their shorter samples on the right and pass the attention mask. A model that ignores
the mask, or attends both ways (CPM-Ant derives its own mask from the ids, for left padding, and
lets every token see every other), changes a real token's activations with the padding beside it,
so its statistics would depend on the batch size. Before the audit the shortest sample runs once
beside the longest and once alone; the base model's outputs for its tokens must agree to float
rounding, else every sample runs alone. (Where two samples do not fit in memory, none will share a
batch anyway.)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .batches import is_oom
from .head import OutputHead
from .hooks import forward, input_device


def pads_cleanly(model: nn.Module, corpus_ids: Sequence[Sequence[int]], pad_id: int) -> bool:
    """True when padding does not change the real tokens' hidden states (or no batch is padded)."""
    from ..corpus import pad_batch

    lengths = [len(ids) for ids in corpus_ids]
    if len(set(lengths)) < 2:
        return True  # samples of one length are never padded
    short, long = lengths.index(min(lengths)), lengths.index(max(lengths))
    head, device = OutputHead(model), input_device(model)
    with torch.inference_mode(), head.keep():
        batch = pad_batch([corpus_ids[long], corpus_ids[short]], [long, short], pad_id)
        try:
            forward(model, batch.input_ids.to(device), batch.attention_mask.to(device))
        except Exception as exc:  # noqa: BLE001 - out of memory: every batch will hold one sample
            if not is_oom(exc):
                raise
            head.drop()
            return True
        padded = head.hidden[1, : lengths[short]].float()
        alone = torch.tensor([list(corpus_ids[short])], device=device)
        forward(model, alone, torch.ones_like(alone))
        own = head.hidden[0].float()
    head.drop()
    padded, own = (torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0) for x in (padded.to(own.device), own))
    tol = 1e-3 if next(model.parameters()).dtype == torch.float32 else 5e-2  # float rounding of other kernels
    return float((padded - own).norm()) <= tol * max(float(own.norm()), 1e-30)
