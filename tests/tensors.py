"""Small tensors written by hand, and exact comparison of them, for the quantization tests."""

from __future__ import annotations

import torch

NAN = float("nan")
INF = float("inf")


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality, NaN equal to NaN."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(
        torch.nan_to_num(a), torch.nan_to_num(b)
    )
