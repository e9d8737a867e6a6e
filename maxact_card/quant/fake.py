"""Fake quantizers and scale policies: pure tensor code, on any device, without host syncs.

Conventions
-----------
* Fake quantizers compute in float32 and return a tensor of the input dtype.
* Scales are 0-d tensors (or Python floats); a scale that is zero, negative or non-finite is
  "no usable scale" and the quantizer outputs zeros for every finite input (never NaN).
* Non-finite inputs: NaN stays NaN; +-Inf saturates to the largest code (+-qmax * scale).
* Rounding is to nearest, ties to even (``torch.round``, and the FP8 casts), everywhere.

The element grids (INT8, FP8 E4M3/E5M2, FP4 E2M1) are defined here; the format registry that
names the policies built from them is ``formats``; block (microscaling) quantizers are ``blocks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

INT8_QMAX = 127  # symmetric: codes -127..127 (-128 unused)
FP8_E4M3_MAX = 448.0  # e4m3fn: 1.75 * 2**8, no infinities
FP8_E5M2_MAX = 57344.0  # 1.75 * 2**15
E2M1_MAX = 6.0  # FP4 e2m1: 1.5 * 2**2, no infinities, no NaN


@dataclass(frozen=True)
class _ElementSpec:
    """A minifloat element grid: ``dtype`` (None where torch has no elementwise cast), largest
    finite value, mantissa bits and the exponent of the smallest normal (subnormals below it)."""

    dtype: Optional[torch.dtype]
    max: float
    mantissa_bits: int
    min_normal_exp: int

    @property
    def emax(self) -> int:
        """Exponent of the largest binade (OCP MX ``emax_elem``): 8 for E4M3, 15 for E5M2, 2 for E2M1."""
        return math.floor(math.log2(self.max))


FP8_FORMATS: dict[str, _ElementSpec] = {
    "fp8_e4m3": _ElementSpec(torch.float8_e4m3fn, FP8_E4M3_MAX, 3, -6),
    "fp8_e5m2": _ElementSpec(torch.float8_e5m2, FP8_E5M2_MAX, 2, -14),
}
# FP4 E2M1 (OCP MX v1.0): exponent bias 1, normals 1, 1.5, 2, 3, 4, 6; one subnormal 0.5.
E2M1: _ElementSpec = _ElementSpec(None, E2M1_MAX, 1, 0)

# Devices whose kernels implement float32 <-> float8 casts; elsewhere the FP8 grid is emulated
# with elementary ops (bit-identical results, see tests).
_NATIVE_FP8_DEVICES = ("cpu", "cuda")

ScaleLike = Union[torch.Tensor, float]

def scale_from_absmax(absmax: ScaleLike, qmax: float, *, device: Optional[torch.device] = None) -> torch.Tensor:
    """Per-tensor scale that maps ``absmax`` onto the largest code: ``absmax / qmax`` (float32, 0-d).

    ``qmax`` is 127 for INT8, 448 for FP8 E4M3, 57344 for FP8 E5M2. A zero or non-finite absmax
    gives a scale the quantizers treat as unusable (they output zeros).
    """
    a = torch.as_tensor(absmax, dtype=torch.float32, device=device)
    return a / float(qmax)


def scale_from_clip(
    value: ScaleLike, qmax: float, *, absmax: Optional[ScaleLike] = None, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Percentile-clipping scale: ``value / qmax`` where ``value`` is a percentile of |a|.

    The caller supplies the percentile value (the probe's log-histogram quantile). When
    ``absmax`` is given the clip value is capped at it, so an over-estimated quantile never
    widens the range beyond what was observed.
    """
    device = device if device is not None else _device_of(value, absmax)
    v = torch.as_tensor(value, dtype=torch.float32, device=device)
    if absmax is not None:
        v = torch.minimum(v, torch.as_tensor(absmax, dtype=torch.float32, device=device))
    return v / float(qmax)


def _device_of(*values: Optional[ScaleLike]) -> Optional[torch.device]:
    """The device of the first tensor among ``values`` (so scales never leave the device)."""
    return next((v.device for v in values if isinstance(v, torch.Tensor)), None)


def _usable_scale(scale: ScaleLike, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    return torch.where(torch.isfinite(s) & (s > 0), s, torch.zeros_like(s))


@dataclass(frozen=True)
class _Scale:
    """A per-tensor scale prepared once: `s` (0 where unusable) and the divisor `safe` (1 there)."""

    s: torch.Tensor
    safe: torch.Tensor

    @staticmethod
    def of(scale: ScaleLike, device: Optional[torch.device]) -> "_Scale":
        s = torch.as_tensor(scale, dtype=torch.float32, device=device)
        s = torch.where(torch.isfinite(s) & (s > 0), s, torch.zeros_like(s))
        return _Scale(s, torch.where(s > 0, s, torch.ones_like(s)))


def _int8_grid(xf: torch.Tensor, s: torch.Tensor, safe: Optional[torch.Tensor] = None) -> torch.Tensor:
    """clamp(round(x / s), -127, 127) * s with s >= 0 broadcastable; s == 0 gives zeros for finite x."""
    if safe is None:
        safe = torch.where(s > 0, s, torch.ones_like(s))
    return (xf / safe).round_().clamp_(-INT8_QMAX, INT8_QMAX).mul_(s)


def _int8_prepared(x: torch.Tensor, scale: _Scale) -> torch.Tensor:
    return _int8_grid(x.float(), scale.s, scale.safe).to(x.dtype)


def int8_static(x: torch.Tensor, scale: ScaleLike) -> torch.Tensor:
    """Symmetric per-tensor INT8: ``clamp(round(x / scale), -127, 127) * scale``.

    Rounds half to even (``torch.round``). Values beyond ``127 * scale`` clip to it; +-Inf
    saturates the same way; NaN stays NaN. Zero (or non-finite) scale: the output is zero for
    every finite input (an all-zero calibration quantizes everything to 0, never to NaN).
    """
    xf = x.float()
    return _int8_grid(xf, _usable_scale(scale, x)).to(x.dtype)


def int8_per_token(x: torch.Tensor) -> torch.Tensor:
    """Dynamic per-token INT8: each token (the last dim holds the channels) uses its own absmax/127.

    The absmax is taken over the token's finite values, so a NaN/Inf channel does not wipe out
    the rest of its token (NaN stays NaN, Inf saturates to +-absmax). All-zero tokens stay zero.
    Per-token scales never clip.
    """
    xf = x.float()
    finite_abs = torch.where(torch.isfinite(xf), xf.abs(), torch.zeros_like(xf))
    s = finite_abs.amax(dim=-1, keepdim=True) / INT8_QMAX
    return _int8_grid(xf, s).to(x.dtype)


def _fp8_spec(fmt: str) -> _ElementSpec:
    try:
        return FP8_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown FP8 format {fmt!r}; expected one of {', '.join(FP8_FORMATS)}") from None


def _fp8_round_emulated(y: torch.Tensor, spec: _ElementSpec) -> torch.Tensor:
    """Round float32 ``y`` (already within +-max) to the minifloat grid of ``spec`` (FP8 or FP4),
    nearest, ties to even.

    In the binade [2**e, 2**(e+1)) the spacing is 2**(e - mantissa_bits); below the smallest
    normal 2**min_normal_exp the spacing stays 2**(min_normal_exp - mantissa_bits) (subnormals).
    Division and multiplication by a power of two are exact, so the only rounding is torch.round.
    """
    a = y.abs()
    tiny = torch.finfo(torch.float32).tiny
    e = torch.floor(torch.log2(torch.clamp(a, min=tiny)))
    # log2 may be off by one ulp right at a binade edge: fix the exponent exactly.
    e = torch.where(torch.exp2(e) > a, e - 1, e)
    e = torch.where(torch.exp2(e + 1) <= a, e + 1, e)
    e = torch.clamp(e, min=spec.min_normal_exp)
    step = torch.exp2(e - spec.mantissa_bits)
    return torch.round(y / step) * step


def element_round(y: torch.Tensor, spec: _ElementSpec) -> torch.Tensor:
    """Saturate float32 ``y`` to +-``spec.max`` and round it to the element grid, ties to even.

    NaN stays NaN, +-Inf becomes +-max. Uses the hardware cast where the device has one for
    ``spec.dtype`` (FP8 on CPU and CUDA), the exact emulation elsewhere (E2M1 always)."""
    y = y.clamp(-spec.max, spec.max)
    if spec.dtype is not None and y.device.type in _NATIVE_FP8_DEVICES:
        return y.to(spec.dtype).to(torch.float32)
    if spec is E2M1:
        return _e2m1_grid(y)
    return _fp8_round_emulated(y, spec)


def _e2m1_grid(y: torch.Tensor) -> torch.Tensor:
    """E2M1 rounding of float32 ``y`` within +-6 in six ops: the grid's spacing is half the power
    of two of |y|'s binade, and 0.5 below 1 (subnormals). The binade's power of two is y's
    exponent bits alone. ``round(y / step) * step`` with torch's ties-to-even lands on the even
    mantissa at every tie (the multiples of a binade's step alternate mantissas); a value that
    rounds up into the next binade lands on its first point, which both spacings hold."""
    binade = y.view(torch.int32).bitwise_and(0x7F800000).view(torch.float32)  # 2**floor(log2 |y|), 0 below
    step = binade.clamp_(min=1.0).mul_(0.5)
    return (y / step).round_().mul_(step)


def e2m1_round(y: torch.Tensor) -> torch.Tensor:
    """FP4 E2M1 of float32 ``y``: saturating at +-6, grid 0, 0.5, 1, 1.5, 2, 3, 4, 6, ties to even
    (2.5 -> 2, 3.5 -> 4, 5 -> 4, 0.25 -> 0, 0.75 -> 1). NaN stays NaN; +-Inf gives +-6."""
    return element_round(y, E2M1)


def finite_abs(xf: torch.Tensor) -> torch.Tensor:
    """|x| with NaN/Inf replaced by 0: what an amax "over finite values" reduces."""
    return torch.nan_to_num(xf.abs(), nan=0.0, posinf=0.0)


def _fp8_grid(xf: torch.Tensor, s: torch.Tensor, spec: _ElementSpec) -> torch.Tensor:
    """``element_round(x / s) * s`` in float32 with ``s >= 0`` broadcastable; ``s == 0`` gives zeros for
    finite x (NaN stays NaN)."""
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return element_round(xf / safe, spec).mul_(s)


def fp8_static(x: torch.Tensor, scale: ScaleLike, fmt: str) -> torch.Tensor:
    """Per-tensor FP8: ``x / scale`` saturated to +-max of ``fmt``, cast to FP8 and back, ``* scale``.

    ``fmt`` is ``'fp8_e4m3'`` (torch.float8_e4m3fn, max 448) or ``'fp8_e5m2'`` (max 57344).
    Rounding is to nearest, ties to even. Saturation (not Inf/NaN) beyond the max, as the
    usual "satfinite" kernels do; +-Inf saturates too; NaN stays NaN. Zero (or non-finite)
    scale gives zeros for finite inputs. On devices without FP8 casts the grid is emulated.
    """
    return _fp8_prepared(x, _Scale.of(scale, x.device), _fp8_spec(fmt))


def _fp8_prepared(x: torch.Tensor, scale: _Scale, spec: _ElementSpec) -> torch.Tensor:
    return element_round(x.float() / scale.safe, spec).mul_(scale.s).to(x.dtype)


def fp8_per_token(x: torch.Tensor, fmt: str = "fp8_e4m3") -> torch.Tensor:
    """Dynamic per-token FP8: each token (the last dim holds the channels) has the scale
    ``amax_token / max`` (448 for E4M3), the amax over the token's finite values; then
    ``x / scale`` is saturated, cast to FP8 (ties to even) and multiplied back.

    NaN stays NaN, +-Inf saturates to +-amax_token, all-zero tokens stay zero. Never clips.
    """
    spec = _fp8_spec(fmt)
    xf = x.float()
    s = finite_abs(xf).amax(dim=-1, keepdim=True) / spec.max
    return _fp8_grid(xf, s, spec).to(x.dtype)


@dataclass(frozen=True, eq=False)
class Quantizer:
    """One fake-quantization policy bound to its calibrated scale: ``xq = q(x)``.

    ``clip_threshold`` is what ``metrics.error_sums`` needs: |x| above it is clipped
    (``qmax * scale``); ``None`` for dynamic per-token scales, which never clip, and for block
    formats, whose saturation depends on each block (see ``formats.REGISTRY``).
    """

    name: str
    quantize: Callable[[torch.Tensor], torch.Tensor]
    clip_threshold: Optional[torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)
