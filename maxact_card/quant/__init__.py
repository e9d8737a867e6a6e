"""Quantization arithmetic: formats, fake quantizers, error and loss metrics, headroom and verdicts.

Pure tensor code: no hooks, no model. The observers that feed it live in `maxact_card.measure`.
"""

from .blocks import (
    NVFP4_SPAN_LIMIT,
    block_amax_range,
    block_span,
    fp8_block,
    mx_quantize,
    mxfp4_e2m1,
    mxfp8_e4m3,
    nvfp4,
    nvfp4_block_span,
    nvfp4_global_scale,
)
from .fake import (
    E2M1_MAX,
    Quantizer,
    ScaleLike,
    e2m1_round,
    fp8_per_token,
    fp8_static,
    int8_per_token,
    int8_static,
    scale_from_absmax,
    scale_from_clip,
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
    REGISTRY,
    Format,
    advice,
    e2e_formats,
    find_format,
    format_names,
    label,
    percentile_format,
    registered_formats,
    resolve_formats,
    site_quantizers,
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
    "BF16_MAX", "DEFAULT_PERCENTILES", "DEFAULT_THRESHOLDS", "E2M1_MAX", "ERROR_SUMS", "FORMATS", "FP16_MAX",
    "FP8_E4M3_MAX", "FP8_E5M2_MAX", "FP8_FORMATS", "Format", "INT8_QMAX", "NVFP4_SPAN_LIMIT", "Quantizer",
    "REGISTRY", "RowSums", "ScaleLike", "Thresholds", "VERDICT_LEVELS", "advice", "block_amax_range",
    "block_span", "build_verdicts", "dtype_verdict", "e2e_formats", "e2m1_round", "end_to_end",
    "error_metrics", "error_sums", "find_format", "format_names", "fp16_safe", "fp8_block", "fp8_per_token",
    "fp8_static", "headroom", "int8_per_token", "int8_static", "label", "mean_nll", "mx_quantize",
    "mxfp4_e2m1", "mxfp8_e4m3", "nll_sums", "nvfp4", "nvfp4_block_span", "nvfp4_global_scale",
    "percentile_format", "recommendation", "registered_formats", "resolve_formats", "scale_from_absmax",
    "scale_from_clip", "site_quantizers", "verdict_for", "worst_site",
]
