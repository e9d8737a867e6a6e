"""Block-scaled fake quantizers: FP8 with 1x128 tiles, OCP microscaling (MXFP8, MXFP4) and NVFP4.

Pure tensor code without host syncs (no ``.item()``, no data-dependent shapes), so each runs
inside a forward hook on any device; float32 arithmetic, the input dtype out.

Blocks are runs of consecutive values along the last dim (the channels) of one token. When the
channel count is not a multiple of the block size the last block is shorter: it is padded with
zeros, which change no amax, so its scale comes from its own values alone, and the padding is
dropped from the output.

Shared conventions (as in ``fake``): each block's amax is taken over its finite values; NaN stays
NaN; +-Inf saturates to the block's largest code; a block whose amax is zero (or whose scale is
unusable) gives zeros, never NaN. Rounding is to nearest, ties to even.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .fake import (
    E2M1,
    E2M1_MAX,
    FP8_E4M3_MAX,
    FP8_FORMATS,
    ScaleLike,
    _ElementSpec,
    _fp8_grid,
    _Scale,
    element_round,
    finite_abs,
)

MX_BLOCK = 32
NVFP4_BLOCK = 16
FP8_TILE = 128
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127  # OCP MX shared scale: 2**-127 .. 2**127
MX_ELEMENTS: dict[str, _ElementSpec] = {"fp8_e4m3": FP8_FORMATS["fp8_e4m3"], "fp8_e5m2": FP8_FORMATS["fp8_e5m2"],
                                        "e2m1": E2M1}
FP8_E4M3_MIN_NORMAL = 2.0**-6
# The largest span of block amaxes (largest / smallest non-zero) that one FP32 global scale with
# E4M3 block scales holds while every block scale stays a normal E4M3 number (3 mantissa bits):
# 448 / 2**-6. Blocks below that span get subnormal block scales, then zero.
NVFP4_SPAN_LIMIT = FP8_E4M3_MAX / FP8_E4M3_MIN_NORMAL  # 28672.0


def _blocks(xf: torch.Tensor, block: int) -> torch.Tensor:
    """[..., C] -> [..., ceil(C / block), block], the last block zero-padded."""
    c = xf.shape[-1]
    pad = -c % block
    if pad:
        xf = F.pad(xf, (0, pad))
    return xf.reshape(*xf.shape[:-1], (c + pad) // block, block)


def _unblock(yb: torch.Tensor, c: int) -> torch.Tensor:
    """Inverse of ``_blocks``: [..., nb, block] -> [..., c]."""
    return yb.reshape(*yb.shape[:-2], -1)[..., :c]


def _block_amax(xb: torch.Tensor) -> torch.Tensor:
    return finite_abs(xb).amax(dim=-1, keepdim=True)


def fp8_block(x: torch.Tensor, block: int = FP8_TILE, fmt: str = "fp8_e4m3") -> torch.Tensor:
    """Dynamic FP8 with one scale per token and per ``block`` consecutive channels (DeepSeek-V3's
    1x128 activation tiles): ``scale = tile amax / 448`` (FP32, not rounded), ``x / scale``
    saturated to +-448 and cast to E4M3 (ties to even), times ``scale``."""
    spec = FP8_FORMATS[fmt]
    xb = _blocks(x.float(), block)
    return _unblock(_fp8_grid(xb, _block_amax(xb) / spec.max, spec), x.shape[-1]).to(x.dtype)


def mx_scale(amax: torch.Tensor, spec: _ElementSpec) -> torch.Tensor:
    """OCP MX v1.0 shared scale of blocks with max |value| ``amax`` (> 0):
    ``X = 2**(floor(log2(amax)) - emax_elem)``, the exponent clamped to the E8M0 range
    [-127, 127] (emax_elem: 8 for E4M3, 2 for E2M1)."""
    # floor(log2(amax)) is the float32 exponent field less 127 (amax >= 0, so no sign bit). A
    # subnormal or zero amax reads as 2**-127 there: below E8M0's range either way, so clamped alike.
    e = amax.float().view(torch.int32).bitwise_right_shift(23) - (127 + spec.emax)
    return torch.exp2(e.clamp_(E8M0_MIN_EXP, E8M0_MAX_EXP))  # float32 out


def mx_quantize(x: torch.Tensor, element: str, block: int = MX_BLOCK) -> torch.Tensor:
    """OCP Microscaling (MX v1.0, 2023) fake quantization along the last dim.

    Each block of ``block`` (32) consecutive values shares the power-of-two scale of
    ``mx_scale``; each element is ``value / X`` rounded to nearest even on the element grid
    (``element``: ``'fp8_e4m3'``, ``'fp8_e5m2'`` or ``'e2m1'``) and saturated to the element's
    largest finite value (448, 57344, 6): with ``X`` from the floor of log2(amax), the block's
    largest values can exceed it (up to 2x for E2M1, 512/448 for E4M3) and clip to it. The
    output is ``element * X``. A block of zeros gives zeros.
    """
    spec = MX_ELEMENTS[element]
    xb = _blocks(x.float(), block)
    # A block without a finite non-zero value has amax 0 and, as the spec's floor(log2(0)) clamps,
    # the smallest scale 2**-127: its zeros stay zeros, an Inf saturates to max * 2**-127.
    xs = mx_scale(_block_amax(xb), spec)
    # Division by a power of two is exact, so the only rounding is the element's.
    y = element_round(xb / xs, spec).mul_(xs)
    return _unblock(y, x.shape[-1]).to(x.dtype)


def mxfp8_e4m3(x: torch.Tensor) -> torch.Tensor:
    """MXFP8 (E4M3 elements, 32-value blocks, E8M0 scales): ``mx_quantize(x, 'fp8_e4m3')``."""
    return mx_quantize(x, "fp8_e4m3")


def mxfp4_e2m1(x: torch.Tensor) -> torch.Tensor:
    """MXFP4 (E2M1 elements, 32-value blocks, E8M0 scales): ``mx_quantize(x, 'e2m1')``."""
    return mx_quantize(x, "e2m1")


def nvfp4_global_scale(absmax: ScaleLike, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """NVFP4's static per-tensor FP32 scale from calibration: ``absmax / (448 * 6)``, so that the
    calibration absmax maps onto the largest block scale (448) times the largest element (6)."""
    return torch.as_tensor(absmax, dtype=torch.float32, device=device) / (FP8_E4M3_MAX * E2M1_MAX)


def _nvfp4_prepared(x: torch.Tensor, g: _Scale, block: int = NVFP4_BLOCK,
                    g6: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`g6`: 6 * g.safe, prepared once per site (`formats` does) to spare an op per call."""
    xb = _blocks(x.float(), block)
    # Block scale in E4M3: amax / (6 g), saturated at 448, rounded to nearest even.
    sb = element_round(_block_amax(xb) / (g6 if g6 is not None else g.safe * E2M1_MAX), FP8_FORMATS["fp8_e4m3"])
    s = sb * g.s  # the block's FP32 scale; 0 where sb rounds to 0 or the global scale is unusable
    # Such a block divides by the smallest normal float instead: its elements saturate, then x 0.
    y = element_round(xb / s.clamp(min=torch.finfo(torch.float32).tiny), E2M1).mul_(s)
    return _unblock(y, x.shape[-1]).to(x.dtype)


def nvfp4(x: torch.Tensor, global_scale: ScaleLike, block: int = NVFP4_BLOCK) -> torch.Tensor:
    """NVIDIA NVFP4 fake quantization along the last dim.

    * ``global_scale`` g: per-tensor FP32 (static, ``nvfp4_global_scale(calibration absmax)``);
      zero or non-finite gives zeros.
    * Each block of 16 consecutive values has an FP8 E4M3 block scale
      ``sb = E4M3(block amax / (6 g))``, rounded to nearest even and saturated at 448 (a block
      whose amax exceeds the calibration absmax saturates). A block scale that rounds to 0 gives
      zeros for the block.
    * Elements: ``x / (sb * g)`` (FP32) saturated to +-6 and rounded to E2M1, ties to even. A
      block scale rounded down (by up to 1/16) saturates the block's largest values at 6.
    * Dequantized value: ``element * (sb * g)`` (the block's FP32 scale, one rounding).
    """
    return _nvfp4_prepared(x, _Scale.of(global_scale, x.device), block)


def block_amax_range(x: torch.Tensor, block: int = NVFP4_BLOCK,
                     mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest block amax and the smallest non-zero block amax of ``x`` [..., C] (blocks of
    ``block`` consecutive channels, amax over finite values; ``mask`` [...] bool drops padding
    tokens) as two 0-d float32 tensors, without host sync. The smallest is +inf when no block is
    non-zero. Mergeable across batches: max of the maxima, min of the minima."""
    amax = _block_amax(_blocks(x.float(), block)).squeeze(-1)
    if mask is not None:
        amax = torch.where(mask.to(device=amax.device, dtype=torch.bool).unsqueeze(-1), amax, torch.zeros_like(amax))
    top = amax.amax() if amax.numel() else torch.zeros((), device=amax.device)
    low = torch.where(amax > 0, amax, torch.full_like(amax, float("inf")))
    low = low.amin() if low.numel() else torch.full((), float("inf"), device=amax.device)
    return top, low


def block_span(max_amax: torch.Tensor, min_nonzero_amax: torch.Tensor) -> torch.Tensor:
    """``max / min`` of merged ``block_amax_range`` values; 0 when no block is non-zero."""
    return torch.where(torch.isfinite(min_nonzero_amax), max_amax / min_nonzero_amax, torch.zeros_like(max_amax))


def nvfp4_block_span(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Span of the 16-value block amaxes of ``x``: largest over smallest non-zero (0-d tensor).
    Above ``NVFP4_SPAN_LIMIT`` (28672) one FP32 scale cannot give every block a normal E4M3 scale."""
    return block_span(*block_amax_range(x, NVFP4_BLOCK, mask))
