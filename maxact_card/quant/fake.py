"""Fake quantizers and scale policies: pure tensor code, on any device, without host syncs.

Conventions
-----------
* Fake quantizers compute in float32 and return a tensor of the input dtype.
* Scales are 0-d tensors (or Python floats); a scale that is zero, negative or non-finite is
  "no usable scale" and the quantizer outputs zeros for every finite input (never NaN).
* Non-finite inputs: NaN stays NaN; +-Inf saturates to the largest code (+-qmax * scale).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import torch

from .formats import FP8_FORMATS, INT8_QMAX, _FP8Spec, _NATIVE_FP8_DEVICES, percentile_format

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


def _fp8_spec(fmt: str) -> _FP8Spec:
    try:
        return FP8_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown FP8 format {fmt!r}; expected one of {', '.join(FP8_FORMATS)}") from None


def _fp8_round_emulated(y: torch.Tensor, spec: _FP8Spec) -> torch.Tensor:
    """Round float32 ``y`` (already within +-max) to the FP8 grid, nearest, ties to even.

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


def fp8_static(x: torch.Tensor, scale: ScaleLike, fmt: str) -> torch.Tensor:
    """Per-tensor FP8: ``x / scale`` saturated to +-max of ``fmt``, cast to FP8 and back, ``* scale``.

    ``fmt`` is ``'fp8_e4m3'`` (torch.float8_e4m3fn, max 448) or ``'fp8_e5m2'`` (max 57344).
    Rounding is to nearest, ties to even. Saturation (not Inf/NaN) beyond the max, as the
    usual "satfinite" kernels do; +-Inf saturates too; NaN stays NaN. Zero (or non-finite)
    scale gives zeros for finite inputs. On devices without FP8 casts the grid is emulated.
    """
    return _fp8_prepared(x, _Scale.of(scale, x.device), _fp8_spec(fmt))


def _fp8_prepared(x: torch.Tensor, scale: _Scale, spec: _FP8Spec) -> torch.Tensor:
    y = (x.float() / scale.safe).clamp_(-spec.max, spec.max)
    if x.device.type in _NATIVE_FP8_DEVICES:
        y = y.to(spec.dtype).to(torch.float32)
    else:
        y = _fp8_round_emulated(y, spec)
    return y.mul_(scale.s).to(x.dtype)


@dataclass(frozen=True, eq=False)
class Quantizer:
    """One fake-quantization policy bound to its calibrated scale: ``xq = q(x)``.

    ``clip_threshold`` is what ``metrics.error_sums`` needs: |x| above it is clipped
    (``qmax * scale``); ``None`` for dynamic per-token scales, which never clip.
    """

    name: str
    quantize: Callable[[torch.Tensor], torch.Tensor]
    clip_threshold: Optional[torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)


def site_quantizers(
    absmax: ScaleLike,
    clip_values: Mapping[float, ScaleLike],
    *,
    device: Optional[torch.device] = None,
) -> tuple[Quantizer, ...]:
    """Every policy for one site, from its calibration statistics.

    ``absmax`` is the site's calibration max |a|; ``clip_values`` maps a percentile (99.9) to
    the value of |a| at that percentile. Returns, in order: ``int8_absmax``, one
    ``int8_p{p:g}`` per percentile, ``int8_per_token``, ``fp8_e4m3``, ``fp8_e5m2`` (both FP8
    use the absmax scale, i.e. calibration absmax maps onto the format max). Scales live on
    ``device`` (default: the device of ``absmax`` when it is a tensor): pass the activations'
    device so no scale is copied host-to-device inside a hook.
    """
    device = device if device is not None else _device_of(absmax)
    out = []
    s = scale_from_absmax(absmax, INT8_QMAX, device=device)
    out.append(Quantizer("int8_absmax", functools.partial(_int8_prepared, scale=_Scale.of(s, device)), s * INT8_QMAX))
    for p, v in clip_values.items():
        sp = scale_from_clip(v, INT8_QMAX, absmax=absmax, device=device)
        out.append(Quantizer(percentile_format(p), functools.partial(_int8_prepared, scale=_Scale.of(sp, device)),
                             sp * INT8_QMAX))
    out.append(Quantizer("int8_per_token", int8_per_token, None))
    for fmt, spec in FP8_FORMATS.items():
        sf = scale_from_absmax(absmax, spec.max, device=device)
        out.append(Quantizer(fmt, functools.partial(_fp8_prepared, scale=_Scale.of(sf, device), spec=spec),
                             sf * spec.max))
    return tuple(out)

