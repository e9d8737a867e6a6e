"""INT8 / FP8 fake quantization, scale policies, quantization error, dtype headroom and verdicts.

Everything that touches activations works on tensors on any device without host syncs (no
``.item()``, no Python loops over elements, no boolean indexing), so it can run inside forward
hooks, one batch at a time. Only ``result()`` and the verdict functions produce Python floats.

Conventions
-----------
* Fake quantizers compute in float32 and return a tensor of the input dtype.
* Scales are 0-d tensors (or Python floats); a scale that is zero, negative or non-finite is
  "no usable scale" and the quantizer outputs zeros for every finite input (never NaN).
* Non-finite inputs: NaN stays NaN; +-Inf saturates to the largest code (+-qmax * scale).
  The error metrics exclude every element where the input or its quantized value is
  non-finite, and count those elements separately (``nonfinite``).

Format names (used as keys everywhere): ``int8_absmax``, ``int8_p99.9``, ``int8_p99.99``
(``percentile_format(p)``), ``int8_per_token``, ``fp8_e4m3``, ``fp8_e5m2``; the unscaled
dtypes checked for headroom are ``fp16``, ``bf16``, ``fp8_e4m3``, ``fp8_e5m2``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .report import EndToEnd, Headroom, SiteQuantError, Verdict

__all__ = [
    "FP16_MAX",
    "BF16_MAX",
    "FP8_E4M3_MAX",
    "FP8_E5M2_MAX",
    "INT8_QMAX",
    "FORMATS",
    "FP8_FORMATS",
    "DEFAULT_PERCENTILES",
    "percentile_format",
    "format_names",
    "int8_static",
    "int8_per_token",
    "fp8_static",
    "scale_from_absmax",
    "scale_from_clip",
    "Quantizer",
    "site_quantizers",
    "QuantErrorAccumulator",
    "RowSums",
    "NLLAccumulator",
    "end_to_end",
    "headroom",
    "fp16_safe",
    "Thresholds",
    "DEFAULT_THRESHOLDS",
    "VERDICT_LEVELS",
    "verdict_for",
    "dtype_verdict",
    "worst_site",
    "build_verdicts",
    "recommendation",
]

ScaleLike = Union[torch.Tensor, float]

# ---------------------------------------------------------------------------------------------
# Format constants
# ---------------------------------------------------------------------------------------------
FP16_MAX = 65504.0  # (2 - 2**-10) * 2**15
BF16_MAX = (2.0 - 2.0**-7) * 2.0**127  # 3.3895313892515355e38
FP8_E4M3_MAX = 448.0  # e4m3fn: 1.75 * 2**8, no infinities
FP8_E5M2_MAX = 57344.0  # 1.75 * 2**15
INT8_QMAX = 127  # symmetric: codes -127..127 (-128 unused)

# Largest finite value of each numeric format, for headroom (no scaling applied).
FORMATS: dict[str, float] = {
    "fp16": FP16_MAX,
    "bf16": BF16_MAX,
    "fp8_e4m3": FP8_E4M3_MAX,
    "fp8_e5m2": FP8_E5M2_MAX,
}


@dataclass(frozen=True)
class _FP8Spec:
    dtype: torch.dtype
    max: float
    mantissa_bits: int
    min_normal_exp: int


FP8_FORMATS: dict[str, _FP8Spec] = {
    "fp8_e4m3": _FP8Spec(torch.float8_e4m3fn, FP8_E4M3_MAX, 3, -6),
    "fp8_e5m2": _FP8Spec(torch.float8_e5m2, FP8_E5M2_MAX, 2, -14),
}

# Devices whose kernels implement float32 <-> float8 casts; elsewhere the FP8 grid is emulated
# with elementary ops (bit-identical results, see tests).
_NATIVE_FP8_DEVICES = ("cpu", "cuda")

DEFAULT_PERCENTILES: tuple[float, ...] = (99.9, 99.99)


def percentile_format(p: float) -> str:
    """Name of the percentile-clipping INT8 policy: ``percentile_format(99.9) == 'int8_p99.9'``."""
    return f"int8_p{p:g}"


def format_names(percentiles: Iterable[float] = DEFAULT_PERCENTILES) -> tuple[str, ...]:
    """Every fake-quantization format name, in report order."""
    return ("int8_absmax", *(percentile_format(p) for p in percentiles), "int8_per_token", "fp8_e4m3", "fp8_e5m2")


# ---------------------------------------------------------------------------------------------
# Scale policies
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Fake quantizers
# ---------------------------------------------------------------------------------------------
def _int8_grid(xf: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """clamp(round(x / s), -127, 127) * s with s >= 0 broadcastable; s == 0 gives zeros for finite x."""
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return (xf / safe).round_().clamp_(-INT8_QMAX, INT8_QMAX).mul_(s)


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
    spec = _fp8_spec(fmt)
    xf = x.float()
    s = _usable_scale(scale, x)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    y = (xf / safe).clamp_(-spec.max, spec.max)
    if x.device.type in _NATIVE_FP8_DEVICES:
        y = y.to(spec.dtype).to(torch.float32)
    else:
        y = _fp8_round_emulated(y, spec)
    return y.mul_(s).to(x.dtype)


@dataclass(frozen=True, eq=False)
class Quantizer:
    """One fake-quantization policy bound to its calibrated scale: ``xq = q(x)``.

    ``clip_threshold`` is what ``QuantErrorAccumulator.update`` needs: |x| above it is clipped
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
    out.append(Quantizer("int8_absmax", functools.partial(int8_static, scale=s), s * INT8_QMAX))
    for p, v in clip_values.items():
        sp = scale_from_clip(v, INT8_QMAX, absmax=absmax, device=device)
        out.append(Quantizer(percentile_format(p), functools.partial(int8_static, scale=sp), sp * INT8_QMAX))
    out.append(Quantizer("int8_per_token", int8_per_token, None))
    for fmt, spec in FP8_FORMATS.items():
        sf = scale_from_absmax(absmax, spec.max, device=device)
        out.append(Quantizer(fmt, functools.partial(fp8_static, scale=sf, fmt=fmt), sf * spec.max))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Streaming error statistics
# ---------------------------------------------------------------------------------------------
def _acc_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else accumulate in float64.
    return torch.float32 if device.type == "mps" else torch.float64


class QuantErrorAccumulator:
    """Quantization error of one (site, format), accumulated on the device over batches.

    ``update(x, xq, mask, clip_threshold)`` adds one batch; ``result()`` syncs once and returns
    ``sqnr_db``, ``rel_rmse``, ``rel_mae``, ``clip_rate`` (plus ``count`` and ``nonfinite``).
    Every state tensor is a sum, so distributed reduction is SUM for all (``REDUCE_OPS``).
    Elementwise errors are computed in float32 (squares overflow only for |a| > 1.8e19) and
    summed in float64 (float32 on MPS).
    """

    REDUCE_OPS = {
        "sum_err2": "sum",
        "sum_x2": "sum",
        "sum_abs_err": "sum",
        "sum_abs_x": "sum",
        "count": "sum",
        "clipped": "sum",
        "nonfinite": "sum",
    }

    def __init__(self, device: Optional[Union[torch.device, str]] = None) -> None:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        acc = _acc_dtype(dev)
        self.sum_err2 = torch.zeros((), dtype=acc, device=dev)
        self.sum_x2 = torch.zeros((), dtype=acc, device=dev)
        self.sum_abs_err = torch.zeros((), dtype=acc, device=dev)
        self.sum_abs_x = torch.zeros((), dtype=acc, device=dev)
        self.count = torch.zeros((), dtype=torch.int64, device=dev)
        self.clipped = torch.zeros((), dtype=torch.int64, device=dev)
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=dev)

    def _to(self, device: torch.device) -> None:
        acc = _acc_dtype(device)
        for name in self.REDUCE_OPS:
            t = getattr(self, name)
            setattr(self, name, t.to(device=device, dtype=acc if t.is_floating_point() else t.dtype))

    @torch.no_grad()
    def update(
        self,
        x: torch.Tensor,
        xq: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        clip_threshold: Optional[ScaleLike] = None,
        rows: Optional["RowSums"] = None,
    ) -> None:
        """Add a batch: ``x``/``xq`` of shape [..., C] (e.g. [B, T, C]); ``mask`` [...] bool of real
        tokens (``None``: all real); ``clip_threshold`` = ``qmax * scale`` (``None``: never clips).
        ``rows``: ``RowSums.of(x)``, when several formats of one site share it (CPU)."""
        if self.count.device != x.device:
            self._to(x.device)
        if not (x.device.type == "cpu" and self._update_rows(x, xq, mask, clip_threshold, rows)):
            self._update_exact(x, xq, mask, clip_threshold)

    def _update_exact(self, x: torch.Tensor, xq: torch.Tensor, mask: Optional[torch.Tensor],
                      clip_threshold: Optional[ScaleLike]) -> None:
        """Element by element: NaN/Inf counted and excluded; no host sync (any device)."""
        acc = self.sum_x2.dtype
        xf = x.float()
        qf = xq.float()
        finite = torch.isfinite(xf) & torch.isfinite(qf)
        if mask is not None:
            real = mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1).expand_as(xf)
            valid = finite & real
            self.nonfinite += (real & ~finite).sum()
        else:
            valid = finite
            self.nonfinite += (~finite).sum()
        zero = torch.zeros((), dtype=torch.float32, device=x.device)
        xv = torch.where(valid, xf, zero)
        err = torch.where(valid, xf - qf, zero)
        self.sum_err2 += err.square().sum(dtype=acc)
        self.sum_x2 += xv.square().sum(dtype=acc)
        self.sum_abs_err += err.abs().sum(dtype=acc)
        self.sum_abs_x += xv.abs().sum(dtype=acc)
        self.count += valid.sum()
        if clip_threshold is not None:
            thr = torch.as_tensor(clip_threshold, dtype=torch.float32, device=x.device)
            self.clipped += (valid & (xv.abs() > thr)).sum()

    def _update_rows(self, x: torch.Tensor, xq: torch.Tensor, mask: Optional[torch.Tensor],
                     clip_threshold: Optional[ScaleLike], rows: Optional["RowSums"]) -> bool:
        """The CPU fast path, from per-token sums (no mask or where tensor, one error tensor).
        Returns False, having changed nothing, when a real token holds a NaN/Inf in x or xq: the
        exact path then counts and excludes them element by element."""
        rows = rows if rows is not None else RowSums.of(x)
        err = (x.float() - xq.float()).reshape(rows.x.shape)
        e2 = torch.linalg.vector_norm(err, dim=-1)
        e1 = torch.linalg.vector_norm(err, ord=1, dim=-1)
        real = mask.reshape(-1).to(torch.bool) if mask is not None else None
        checks = torch.stack([rows.x2, e2])
        if not bool(torch.isfinite(checks if real is None else checks[:, real]).all()):
            return False
        acc = self.sum_x2.dtype

        def total(v: torch.Tensor) -> torch.Tensor:  # over real tokens (padding may hold NaN)
            v = v.to(acc)
            return (v if real is None else torch.where(real, v, 0)).sum()

        self.sum_err2 += total(e2.to(acc).square())
        self.sum_x2 += total(rows.x2.to(acc).square())
        self.sum_abs_err += total(e1)
        self.sum_abs_x += total(rows.x1)
        C = rows.x.shape[-1]
        self.count += (int(real.sum()) if real is not None else rows.x.shape[0]) * C
        if clip_threshold is not None:
            thr = torch.as_tensor(clip_threshold, dtype=torch.float32)
            over = rows.absmax > thr  # only these tokens can hold a clipped value
            if real is not None:
                over &= real
            if bool(over.any()):
                self.clipped += (rows.x[over].abs() > thr).sum()
        return True

    def result(self) -> dict[str, float]:
        """Plain floats (one host sync).

        ``sqnr_db = 10 log10(sum x^2 / sum err^2)``: ``inf`` when the error is exactly zero
        (also when nothing was counted), ``-inf`` when the signal is zero but the error is not.
        ``rel_rmse = sqrt(sum err^2 / sum x^2)``, ``rel_mae = sum|err| / sum|x|`` (0 for zero
        error, ``inf`` for zero signal with error). ``clip_rate = clipped / count`` (0 if empty).
        Never NaN.
        """
        acc = self.sum_x2.dtype
        vals = torch.stack([getattr(self, n).to(acc) for n in self.REDUCE_OPS]).cpu().tolist()
        se, sx, sae, sax, count, clipped, nonfinite = vals
        if se == 0.0:
            sqnr = math.inf
        elif sx == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(sx / se)
        return {
            "sqnr_db": sqnr,
            "rel_rmse": _ratio(se, sx, math.sqrt),
            "rel_mae": _ratio(sae, sax),
            "clip_rate": clipped / count if count else 0.0,
            "count": int(count),
            "nonfinite": int(nonfinite),
        }

    def to_site_error(self, site: str, layer: Optional[int], format: str) -> SiteQuantError:
        r = self.result()
        return SiteQuantError(
            site=site,
            layer=layer,
            format=format,
            sqnr_db=r["sqnr_db"],
            rel_rmse=r["rel_rmse"],
            rel_mae=r["rel_mae"],
            clip_rate=r["clip_rate"],
        )


@dataclass(frozen=True)
class RowSums:
    """Per-token sums of one activation x [..., C] in float32: what every format's error shares."""

    x: torch.Tensor  # x as float32 [N, C]
    x2: torch.Tensor  # [N] L2 norm
    x1: torch.Tensor  # [N] L1 norm
    absmax: torch.Tensor  # [N] max |x|

    @staticmethod
    def of(x: torch.Tensor) -> "RowSums":
        xf = x.float().reshape(-1, x.shape[-1])
        absmax = torch.maximum(xf.amax(-1), xf.amin(-1).neg())
        return RowSums(xf, torch.linalg.vector_norm(xf, dim=-1), torch.linalg.vector_norm(xf, ord=1, dim=-1), absmax)


def _ratio(num: float, den: float, f: Callable[[float], float] = lambda v: v) -> float:
    if num == 0.0:
        return 0.0
    if den == 0.0:
        return math.inf
    return f(num / den)


class NLLAccumulator:
    """Mean next-token negative log-likelihood over real tokens, accumulated on the device.

    ``update(logits, targets, mask)``: ``logits`` [..., V] already aligned with ``targets``
    [...] (the caller shifts by one), ``mask`` [...] bool of positions that count. Non-finite
    losses at counted positions are kept (a quantized model that produces NaN shows NaN).
    """

    REDUCE_OPS = {"sum_nll": "sum", "count": "sum"}

    def __init__(self, device: Optional[Union[torch.device, str]] = None) -> None:
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.sum_nll = torch.zeros((), dtype=_acc_dtype(dev), device=dev)
        self.count = torch.zeros((), dtype=torch.int64, device=dev)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, mask: Optional[torch.Tensor] = None) -> None:
        if self.count.device != logits.device:
            self.sum_nll = self.sum_nll.to(device=logits.device, dtype=_acc_dtype(logits.device))
            self.count = self.count.to(logits.device)
        if mask is None:
            mask = torch.ones(targets.shape, dtype=torch.bool, device=logits.device)
        mask = mask.to(dtype=torch.bool, device=logits.device)
        safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), safe_targets.reshape(-1), reduction="none")
        nll = torch.where(mask.reshape(-1), nll, torch.zeros_like(nll))
        self.sum_nll += nll.sum(dtype=self.sum_nll.dtype)
        self.count += mask.sum()

    def result(self) -> float:
        """Mean NLL in nats (one host sync); NaN when no position was counted."""
        s, n = torch.stack([self.sum_nll, self.count.to(self.sum_nll.dtype)]).cpu().tolist()
        return s / n if n else math.nan


def _exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def end_to_end(format: str, nll: float, baseline_nll: float) -> EndToEnd:
    """Loss of the model with ``format`` fake quantization against the unquantized baseline."""
    delta = nll - baseline_nll
    return EndToEnd(format=format, nll=float(nll), ppl=_exp(nll), delta_nll=float(delta), ppl_ratio=_exp(delta))


# ---------------------------------------------------------------------------------------------
# Headroom
# ---------------------------------------------------------------------------------------------
def _exceeds(v: float, limit: float) -> bool:
    # NaN/Inf maxima count as exceeding: the format cannot hold them.
    return not (abs(v) <= limit)


def headroom(peak_abs: float, site_absmax: Mapping[str, float]) -> tuple[Headroom, ...]:
    """M against each format of ``FORMATS``: ``ratio = M / max_finite``; ``overflow_sites`` are the
    sites (in the mapping's order) whose max |a| exceeds the format max, or is non-finite.

    For FP8 the comparison is with the *unscaled* format max: an overflow site needs a scale
    (every FP8 deployment uses one; this says how far the raw activations are from fitting).
    """
    return tuple(
        Headroom(
            format=fmt,
            max_finite=limit,
            ratio=float(peak_abs) / limit,
            overflow_sites=tuple(name for name, v in site_absmax.items() if _exceeds(v, limit)),
        )
        for fmt, limit in FORMATS.items()
    )


def fp16_safe(site_absmax: Mapping[str, float]) -> bool:
    """True when no site's max |a| exceeds 65504 (and all are finite)."""
    return not any(_exceeds(v, FP16_MAX) for v in site_absmax.values())


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------
VERDICT_LEVELS = ("ok", "degraded", "unsafe")


@dataclass(frozen=True)
class Thresholds:
    """Every threshold behind a verdict, in one place.

    Per-site SQNR (signal-to-quantization-noise ratio of one site's activations):
      * ok >= 30 dB: noise power <= 0.1% of the signal (relative RMS error <= 3.2%). Well-behaved
        activations under per-tensor INT8 reach ~35-40 dB (a Gaussian clipped at 4.5 sigma gives
        10 log10(12 * 127^2 / 4.5^2) = 39.8 dB), so 30 dB leaves ~1.5 bits of slack (6 dB/bit).
      * degraded >= 20 dB: noise power <= 1% (relative RMS error <= 10%), ~5 effective bits.
      * unsafe below 20 dB: the format destroys most of the site's resolution, typically because a
        few massive activations set the scale and every ordinary value rounds to zero.
    End-to-end next-token loss with every linear input fake-quantized (delta NLL in nats):
      * ok <= 0.01 (perplexity +1%), degraded <= 0.1 (perplexity +10.5%), unsafe above.
    The verdict of a quantized format is the worse of its two verdicts (either may be missing).
    FP16 (no scaling): unsafe if any site's max |a| exceeds 65504 (it becomes Inf) or any
    activation is non-finite; degraded if the largest max exceeds 65504 / 8 = 8188 (less than
    three binades of headroom: longer contexts, other inputs or fp16 intermediate sums in kernels
    can overflow); otherwise ok. BF16 shares FP32's exponent range: ok unless an activation is
    non-finite or exceeds 3.39e38.
    """

    sqnr_ok_db: float = 30.0
    sqnr_degraded_db: float = 20.0
    delta_nll_ok: float = 0.01
    delta_nll_degraded: float = 0.1
    fp16_headroom: float = 8.0

    def __post_init__(self) -> None:
        if not self.sqnr_ok_db >= self.sqnr_degraded_db:
            raise ValueError("sqnr_ok_db must be >= sqnr_degraded_db")
        if not 0 <= self.delta_nll_ok <= self.delta_nll_degraded:
            raise ValueError("need 0 <= delta_nll_ok <= delta_nll_degraded")
        if not self.fp16_headroom >= 1:
            raise ValueError("fp16_headroom must be >= 1")


DEFAULT_THRESHOLDS = Thresholds()


def _worse(a: str, b: str) -> str:
    return a if VERDICT_LEVELS.index(a) >= VERDICT_LEVELS.index(b) else b


def _sqnr_level(sqnr: float, th: Thresholds) -> str:
    # NaN compares False everywhere and lands on unsafe.
    if sqnr >= th.sqnr_ok_db:
        return "ok"
    if sqnr >= th.sqnr_degraded_db:
        return "degraded"
    return "unsafe"


def _nll_level(delta: float, th: Thresholds) -> str:
    if delta <= th.delta_nll_ok:
        return "ok"
    if delta <= th.delta_nll_degraded:
        return "degraded"
    return "unsafe"


def _fmt_db(v: float) -> str:
    return f"{v:.1f} dB" if math.isfinite(v) else ("inf dB" if v > 0 else f"{v} dB")


def verdict_for(
    format: str,
    worst_site_sqnr: Optional[float],
    delta_nll: Optional[float],
    *,
    worst_site: Optional[str] = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Verdict:
    """Verdict of a fake-quantized format: the worse of the per-site SQNR verdict (at its worst
    site) and the end-to-end delta-NLL verdict. Either input may be ``None`` (not measured), not both."""
    th = thresholds
    if worst_site_sqnr is None and delta_nll is None:
        raise ValueError(f"verdict_for({format!r}): need a site SQNR or an end-to-end delta NLL")
    level = "ok"
    parts = []
    if worst_site_sqnr is not None:
        s = float(worst_site_sqnr)
        lv = _sqnr_level(s, th)
        level = _worse(level, lv)
        where = f" at {worst_site}" if worst_site else ""
        bound = {"ok": f">= {th.sqnr_ok_db:g}", "degraded": f"< {th.sqnr_ok_db:g}"}.get(
            lv, f"< {th.sqnr_degraded_db:g}"
        )
        parts.append(f"worst site SQNR {_fmt_db(s)}{where} ({bound} dB)")
    if delta_nll is not None:
        d = float(delta_nll)
        lv = _nll_level(d, th)
        level = _worse(level, lv)
        bound = {"ok": f"<= {th.delta_nll_ok:g}", "degraded": f"> {th.delta_nll_ok:g}"}.get(
            lv, f"> {th.delta_nll_degraded:g}"
        )
        parts.append(f"end-to-end delta NLL {d:+.3f} nats ({bound})")
    return Verdict(format=format, verdict=level, reason="; ".join(parts))


def dtype_verdict(
    format: str,
    peak_abs: float,
    site_absmax: Mapping[str, float],
    nonfinite: int = 0,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> Verdict:
    """Verdict for running the model unscaled in ``'fp16'`` or ``'bf16'`` (see ``Thresholds``).

    ``peak_abs`` is M, ``site_absmax`` every site's max |a| (all kinds), ``nonfinite`` the number
    of non-finite activations seen."""
    if format not in ("fp16", "bf16"):
        raise ValueError(f"dtype_verdict: expected 'fp16' or 'bf16', got {format!r}")
    limit = FORMATS[format]
    if nonfinite:
        return Verdict(format, "unsafe", f"{nonfinite} non-finite activation(s) observed")
    values = dict(site_absmax) if site_absmax else {"M": float(peak_abs)}
    over = [(n, v) for n, v in values.items() if _exceeds(v, limit)]
    if over:
        name, v = max(over, key=lambda nv: math.inf if math.isnan(nv[1]) else abs(nv[1]))
        return Verdict(
            format, "unsafe", f"{len(over)} site(s) exceed {format} max {limit:g}; largest {abs(v):.6g} at {name}"
        )
    top_name, top = max(values.items(), key=lambda nv: abs(nv[1]))
    if abs(float(peak_abs)) > abs(top):
        top_name, top = "M", float(peak_abs)
    top = abs(top)
    if format == "fp16" and top > limit / thresholds.fp16_headroom:
        return Verdict(
            format,
            "degraded",
            f"max |a| {top:.6g} at {top_name} is within {thresholds.fp16_headroom:g}x of fp16 max {limit:g} "
            f"(headroom {limit / top:.2f}x)",
        )
    if not top:
        return Verdict(format, "ok", "all activations are zero")
    return Verdict(format, "ok", f"max |a| {top:.6g} at {top_name}; headroom {limit / top:.3g}x")


def worst_site(sites: Sequence[SiteQuantError], format: str) -> Optional[SiteQuantError]:
    """The site of ``format`` with the lowest SQNR (NaN counts as lowest); None if absent."""
    cand = [s for s in sites if s.format == format]
    if not cand:
        return None
    return min(cand, key=lambda s: -math.inf if math.isnan(s.sqnr_db) else s.sqnr_db)


def build_verdicts(
    sites: Sequence[SiteQuantError],
    end_to_end: Sequence[EndToEnd],
    peak_abs: Optional[float] = None,
    site_absmax: Optional[Mapping[str, float]] = None,
    nonfinite: int = 0,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[Verdict, ...]:
    """Every verdict: fp16 and bf16 (when ``site_absmax`` is given), then each quantized format in
    the order it first appears in ``sites`` / ``end_to_end``."""
    out: list[Verdict] = []
    if site_absmax is not None:
        m = float(peak_abs) if peak_abs is not None else max((abs(v) for v in site_absmax.values()), default=0.0)
        for fmt in ("fp16", "bf16"):
            out.append(dtype_verdict(fmt, m, site_absmax, nonfinite, thresholds=thresholds))
    formats = list(dict.fromkeys([s.format for s in sites] + [e.format for e in end_to_end]))
    e2e = {e.format: e for e in end_to_end}
    for fmt in formats:
        w = worst_site(sites, fmt)
        e = e2e.get(fmt)
        out.append(
            verdict_for(
                fmt,
                w.sqnr_db if w else None,
                e.delta_nll if e else None,
                worst_site=w.site if w else None,
                thresholds=thresholds,
            )
        )
    return tuple(out)


_ADVICE = {
    "int8_per_token": "use per-token activation scales",
    "fp8_e4m3": "use FP8 E4M3 with a per-tensor scale",
    "fp8_e5m2": "use FP8 E5M2 with a per-tensor scale",
    "int8_absmax": "use per-tensor INT8 with absmax scales",
}
_LABEL = {
    "int8_absmax": "per-tensor static INT8",
    "int8_per_token": "per-token INT8",
    "fp8_e4m3": "FP8 E4M3",
    "fp8_e5m2": "FP8 E5M2",
}


def _label(fmt: str) -> str:
    if fmt in _LABEL:
        return _LABEL[fmt]
    if fmt.startswith("int8_p"):
        return f"per-tensor INT8 clipped at p{fmt[len('int8_p'):]}"
    return fmt


def _advice(fmt: str) -> str:
    if fmt in _ADVICE:
        return _ADVICE[fmt]
    if fmt.startswith("int8_p"):
        return f"clip activation scales at the p{fmt[len('int8_p'):]} percentile"
    return f"use {fmt}"


def recommendation(
    verdicts: Sequence[Verdict],
    sites: Sequence[SiteQuantError] = (),
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> str:
    """One line for the deployer: the most important problem and what to do about it.

    Priority: fp16 overflow first, then the first quantized format (report order, so per-tensor
    static INT8 first) that is not ok, with its worst site and the best format that is ok at that
    site; then the other formats that are not ok, and those that are."""
    if not verdicts:
        return "no formats were checked"
    bad = [v for v in verdicts if v.verdict != "ok"]
    good = [v.format for v in verdicts if v.verdict == "ok"]
    if not bad:
        return f"every checked format is ok ({', '.join(good)}): deploy in any of them as measured"
    parts: list[str] = []
    dtype_bad = [v for v in bad if v.format in ("fp16", "bf16")]
    quant_bad = [v for v in bad if v.format not in ("fp16", "bf16")]
    for v in dtype_bad:
        if v.verdict == "unsafe":
            alt = "serve in bf16 or fp32" if v.format == "fp16" else "serve in fp32"
            parts.append(f"{v.format} is unsafe ({v.reason}); {alt}")
        else:
            parts.append(f"{v.format} has little headroom ({v.reason}); prefer bf16")
    if quant_bad:
        v = quant_bad[0]
        w = worst_site(sites, v.format)
        label = _label(v.format)
        if w is not None and not (w.sqnr_db >= thresholds.sqnr_ok_db):
            short = thresholds.sqnr_ok_db - w.sqnr_db
            head = (
                f"{label} loses {short:.1f} dB against the {thresholds.sqnr_ok_db:g} dB target at {w.site} "
                f"({_fmt_db(w.sqnr_db)} SQNR)"
            )
            alts = [
                s for s in sites
                if s.site == w.site and s.format != v.format and s.sqnr_db >= thresholds.sqnr_ok_db
                and s.format in good
            ]
            if alts:
                best = max(alts, key=lambda s: s.sqnr_db)
                head += f"; {_advice(best.format)} ({_fmt_db(best.sqnr_db)} there) or keep that layer in bf16"
            else:
                head += "; keep that layer in bf16"
        else:
            head = f"{label} is {v.verdict} ({v.reason})"
            if good:
                head += f"; prefer {', '.join(f for f in good if f not in ('fp16', 'bf16')) or 'bf16'}"
        parts.append(head)
        others = [u.format for u in quant_bad[1:]]
        if others:
            parts.append(f"also not ok: {', '.join(others)}")
    if good:
        parts.append(f"ok: {', '.join(good)}")
    return "; ".join(parts)
