"""Numeric formats: their largest values, the fake-quantization format names, labels and advice.

Format names (used as keys everywhere): ``int8_absmax``, ``int8_p99.9``, ``int8_p99.99``
(``percentile_format(p)``), ``int8_per_token``, ``fp8_e4m3``, ``fp8_e5m2``; the unscaled
dtypes checked for headroom are ``fp16``, ``bf16``, ``fp8_e4m3``, ``fp8_e5m2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

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


def e2e_formats(percentiles: Sequence[float]) -> tuple[str, ...]:
    """W16A8 end-to-end formats: static INT8 for each scale policy, per-token INT8, FP8 E4M3."""
    return ("int8_absmax", *(percentile_format(p) for p in percentiles), "int8_per_token", "fp8_e4m3")


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


def label(fmt: str) -> str:
    if fmt in _LABEL:
        return _LABEL[fmt]
    if fmt.startswith("int8_p"):
        return f"per-tensor INT8 clipped at p{fmt[len('int8_p'):]}"
    return fmt


def advice(fmt: str) -> str:
    if fmt in _ADVICE:
        return _ADVICE[fmt]
    if fmt.startswith("int8_p"):
        return f"clip activation scales at the p{fmt[len('int8_p'):]} percentile"
    return f"use {fmt}"

