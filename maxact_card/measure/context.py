"""What every hook of one forward pass shares: which rows are real tokens, whose, and where.

Built on the host from the padded batch, once per forward pass, then moved to the device with the
batch: hooks never derive anything from it that would make the device wait for the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

# A sortable key for (sample, position): smaller = earlier in the corpus.
POSITION_BITS = 32
NO_KEY = 2**62  # an empty slot's key: later than every real row


@dataclass(frozen=True)
class BatchContext:
    valid: torch.Tensor  # [B, T] bool, False on padding
    sample_index: torch.Tensor  # [B] long: index of each row's sample in the corpus
    input_ids: torch.Tensor  # [B, T] long
    forward: int = 0  # forward passes of the probe before this one (picks the histogram rows)
    _rows: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]

    def on(self, device: torch.device) -> "BatchContext":
        if self.valid.device == device:
            return self
        cached = self._rows.get(("ctx", device))
        if cached is None:
            cached = BatchContext(self.valid.to(device), self.sample_index.to(device), self.input_ids.to(device),
                                  self.forward)
            self._rows[("ctx", device)] = cached
        return cached

    def rows(self) -> "Rows":
        """Per-token-row views of the batch (flattened B*T), computed once."""
        r = self._rows.get("rows")
        if r is None:
            r = Rows.of(self)
            self._rows["rows"] = r
        return r


@dataclass(frozen=True)
class Rows:
    valid: torch.Tensor  # [N] bool
    key: torch.Tensor  # [N] long: sample << 32 | position
    loc: torch.Tensor  # [N, 3] long: sample, position, token id
    hist_mask: torch.Tensor  # [N, 1] int32: 0x7FFF on real rows, 0 on padding (histogram bits)

    @staticmethod
    def of(ctx: BatchContext) -> "Rows":
        B, T = ctx.valid.shape
        pos = torch.arange(T, device=ctx.valid.device).expand(B, T)
        sample = ctx.sample_index[:, None].expand(B, T)
        valid = ctx.valid.reshape(-1)
        key = (sample * (1 << POSITION_BITS) + pos).reshape(-1)
        loc = torch.stack([sample, pos, ctx.input_ids], dim=-1).reshape(-1, 3)
        mask = torch.where(valid, 0x7FFF, 0).to(torch.int32)[:, None]
        return Rows(valid, key, loc, mask)


def make_context(input_ids: torch.Tensor, attention_mask: torch.Tensor, sample_index: torch.Tensor,
                 device: Optional[torch.device], forward: int = 0) -> BatchContext:
    """The context of one padded batch, on `device`."""
    ctx = BatchContext(attention_mask.bool(), sample_index, input_ids, forward)
    return ctx.on(device) if device is not None else ctx
