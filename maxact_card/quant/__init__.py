"""Quantization arithmetic: formats, fake quantizers, error and loss metrics, headroom and verdicts.

Pure tensor code: no hooks, no model. The observers that feed it live in `maxact_card.measure`.
"""

from .fake import (
    Quantizer,
    ScaleLike,
    fp8_static,
    int8_per_token,
    int8_static,
    scale_from_absmax,
    scale_from_clip,
    site_quantizers,
)
from .formats import (
    BF16_MAX,
    DEFAULT_PERCENTILES,
    FORMATS,
    FP8_E4M3_MAX,
    FP8_E5M2_MAX,
    FP8_FORMATS,
    FP16_MAX,
    INT8_QMAX,
    e2e_formats,
    format_names,
    percentile_format,
)
from .metrics import ERROR_SUMS, RowSums, end_to_end, error_metrics, error_sums, mean_nll, nll_sums
from .verdicts import (
    DEFAULT_THRESHOLDS,
    VERDICT_LEVELS,
    Thresholds,
    build_verdicts,
    dtype_verdict,
    fp16_safe,
    headroom,
    recommendation,
    verdict_for,
    worst_site,
)

__all__ = [
    "BF16_MAX", "DEFAULT_PERCENTILES", "DEFAULT_THRESHOLDS", "ERROR_SUMS", "FORMATS", "FP8_E4M3_MAX",
    "FP8_E5M2_MAX", "FP8_FORMATS", "FP16_MAX", "INT8_QMAX", "Quantizer", "RowSums", "ScaleLike", "Thresholds",
    "VERDICT_LEVELS", "build_verdicts", "dtype_verdict", "e2e_formats", "end_to_end", "error_metrics",
    "error_sums", "format_names", "fp16_safe", "fp8_static", "headroom", "int8_per_token", "int8_static",
    "mean_nll", "nll_sums", "percentile_format", "recommendation", "scale_from_absmax", "scale_from_clip",
    "site_quantizers", "verdict_for", "worst_site",
]
