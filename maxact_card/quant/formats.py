"""Numeric formats: their largest values, and the registry of fake-quantization formats.

``REGISTRY`` holds one ``Format`` per activation format, in report order; everything else here
(names, labels, advice, the end-to-end set, each site's quantizers) is derived from it, so adding
a format means adding its entry (and its tests). ``int8_p{p}`` is a family: one format per clip
percentile (``percentile_format(p)``: ``int8_p99.9``, ``int8_p99.99``).

The unscaled dtypes checked for headroom (``FORMATS``) are ``fp16``, ``bf16``, ``fp8_e4m3``,
``fp8_e5m2``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import torch

from ..errors import UsageError
from . import blocks
from .fake import (
    E2M1_MAX,
    FP8_E4M3_MAX,
    FP8_E5M2_MAX,
    FP8_FORMATS,
    INT8_QMAX,
    Quantizer,
    ScaleLike,
    _device_of,
    _fp8_prepared,
    _int8_prepared,
    _Scale,
    fp8_per_token,
    int8_per_token,
    scale_from_absmax,
    scale_from_clip,
)

FP16_MAX = 65504.0  # (2 - 2**-10) * 2**15
BF16_MAX = (2.0 - 2.0**-7) * 2.0**127  # 3.3895313892515355e38

# Largest finite value of each numeric format, for headroom (no scaling applied).
FORMATS: dict[str, float] = {
    "fp16": FP16_MAX,
    "bf16": BF16_MAX,
    "fp8_e4m3": FP8_E4M3_MAX,
    "fp8_e5m2": FP8_E5M2_MAX,
}

DEFAULT_PERCENTILES: tuple[float, ...] = (99.9, 99.99)

# What a format's builder returns: the fake quantizer and its clip threshold (None: not a
# per-tensor threshold; see Format).
Built = tuple[Callable[[torch.Tensor], torch.Tensor], Optional[torch.Tensor]]
Builder = Callable[[torch.Tensor, Optional[torch.Tensor], Optional[torch.device]], Built]


@dataclass(frozen=True)
class Format:
    """One activation fake-quantization format.

    ``build(absmax, clip_value, device)`` gets the site's calibration max |a| (0-d float32 on
    ``device``) and, for the percentile family, the value of |a| at the percentile (else None).
    ``clip_threshold`` of the quantizer it makes: ``qmax * scale`` for per-tensor static scales;
    None for dynamic (per-token, per-block) formats, which never clip at a per-tensor value, and
    for block formats (MX, NVFP4), whose saturation happens inside a block and depends on it.
    ``family``: the entry stands for one format per clip percentile; its ``name``, ``label`` and
    ``advice`` hold ``{p}``, filled by ``at(p)``.
    """

    name: str
    element: str  # "int8", "fp8_e4m3", "fp8_e5m2", "e2m1"
    granularity: str  # "tensor", "token", "token x 128 channels", "32-value blocks", "16-value blocks"
    scale_rule: str
    static: bool  # True: the scale needs calibration; False: computed from each tensor (dynamic)
    max_element: float  # largest finite element value
    label: str
    advice: str
    default_e2e: bool
    deployed: str
    spec: str
    build: Builder = dataclasses.field(repr=False, compare=False)
    family: bool = False

    def at(self, p: Union[float, str]) -> "Format":
        """The member of a percentile family for percentile ``p`` (99.9 or '99.9')."""
        text = p if isinstance(p, str) else f"{p:g}"
        return dataclasses.replace(self, name=self.name.format(p=text), label=self.label.format(p=text),
                                   advice=self.advice.format(p=text), family=False)

    def make(self, absmax: ScaleLike, clip_value: Optional[ScaleLike] = None, *,
             device: Optional[torch.device] = None) -> Quantizer:
        """The quantizer of this format for one site, from its calibration statistics."""
        device = device if device is not None else _device_of(absmax, clip_value)
        a = torch.as_tensor(absmax, dtype=torch.float32, device=device)
        c = None if clip_value is None else torch.as_tensor(clip_value, dtype=torch.float32, device=device)
        fn, clip = self.build(a, c, device)
        return Quantizer(self.name, fn, clip)


# -- builders -------------------------------------------------------------------------------------
def _int8_absmax(absmax, clip, device) -> Built:
    s = scale_from_absmax(absmax, INT8_QMAX, device=device)
    return functools.partial(_int8_prepared, scale=_Scale.of(s, device)), s * INT8_QMAX


def _int8_clipped(absmax, clip, device) -> Built:
    s = scale_from_clip(clip, INT8_QMAX, absmax=absmax, device=device)
    return functools.partial(_int8_prepared, scale=_Scale.of(s, device)), s * INT8_QMAX


def _fp8_tensor(fmt: str) -> Builder:
    spec = FP8_FORMATS[fmt]

    def build(absmax, clip, device) -> Built:
        s = scale_from_absmax(absmax, spec.max, device=device)
        return functools.partial(_fp8_prepared, scale=_Scale.of(s, device), spec=spec), s * spec.max

    return build


def _dynamic(fn: Callable[[torch.Tensor], torch.Tensor]) -> Builder:
    return lambda absmax, clip, device: (fn, None)


def _nvfp4(absmax, clip, device) -> Built:
    g = _Scale.of(blocks.nvfp4_global_scale(absmax, device=device), device)
    return functools.partial(blocks._nvfp4_prepared, g=g, g6=g.safe * blocks.E2M1_MAX), None


_OFP8 = "OCP 8-bit Floating Point Specification (OFP8) rev 1.0, 2023"
_MX = "OCP Microscaling Formats (MX) v1.0, 2023"

# In report order. int8_absmax, the per-tensor static INT8 of the paper's case, comes first.
REGISTRY: tuple[Format, ...] = (
    Format(
        name="int8_absmax", element="int8", granularity="tensor",
        scale_rule="calibration max|a| / 127", static=True, max_element=float(INT8_QMAX),
        label="per-tensor static INT8", advice="use per-tensor INT8 with absmax scales", default_e2e=True,
        deployed="static W8A8 INT8 (SmoothQuant-style kernels, TensorRT-LLM, vLLM static INT8)",
        spec="symmetric INT8, codes -127..127, round half to even",
        build=_int8_absmax,
    ),
    Format(
        name="int8_p{p}", element="int8", granularity="tensor",
        scale_rule="calibration p-th percentile of |a| (at most max|a|) / 127", static=True,
        max_element=float(INT8_QMAX), label="per-tensor INT8 clipped at p{p}",
        advice="clip activation scales at the p{p} percentile", default_e2e=False,
        deployed="percentile calibration of static INT8 (TensorRT, NVIDIA Model Optimizer)",
        spec="Wu et al., Integer Quantization for Deep Learning Inference, 2020 (percentile calibration)",
        build=_int8_clipped, family=True,
    ),
    Format(
        name="int8_per_token", element="int8", granularity="token",
        scale_rule="token max|a| / 127, at run time", static=False, max_element=float(INT8_QMAX),
        label="per-token INT8", advice="use per-token activation scales", default_e2e=True,
        deployed="vLLM dynamic per-token INT8 (llm-compressor W8A8 scheme)",
        spec="ZeroQuant (Yao et al., 2022) token-wise dynamic quantization",
        build=_dynamic(int8_per_token),
    ),
    Format(
        name="fp8_e4m3", element="fp8_e4m3", granularity="tensor",
        scale_rule="calibration max|a| / 448", static=True, max_element=FP8_E4M3_MAX,
        label="per-tensor static FP8 E4M3", advice="use FP8 E4M3 with a per-tensor scale", default_e2e=True,
        deployed="vLLM FP8 static scheme (llm-compressor FP8 with static activation scales), TensorRT-LLM FP8",
        spec=_OFP8,
        build=_fp8_tensor("fp8_e4m3"),
    ),
    Format(
        name="fp8_e5m2", element="fp8_e5m2", granularity="tensor",
        scale_rule="calibration max|a| / 57344", static=True, max_element=FP8_E5M2_MAX,
        label="per-tensor static FP8 E5M2", advice="use FP8 E5M2 with a per-tensor scale", default_e2e=False,
        deployed="rare for inference activations (E5M2 is the usual FP8 gradient format in training)",
        spec=_OFP8,
        build=_fp8_tensor("fp8_e5m2"),
    ),
    Format(
        name="fp8_e4m3_per_token", element="fp8_e4m3", granularity="token",
        scale_rule="token max|a| / 448, at run time", static=False, max_element=FP8_E4M3_MAX,
        label="per-token FP8 E4M3", advice="use FP8 E4M3 with per-token dynamic scales", default_e2e=True,
        deployed="vLLM FP8 dynamic scheme, llm-compressor FP8_DYNAMIC",
        spec=_OFP8,
        build=_dynamic(fp8_per_token),
    ),
    Format(
        name="fp8_e4m3_block128", element="fp8_e4m3", granularity="token x 128 channels",
        scale_rule="1x128 tile max|a| / 448, at run time", static=False, max_element=FP8_E4M3_MAX,
        label="1x128-block FP8 E4M3", advice="use FP8 E4M3 with 1x128 block scales", default_e2e=False,
        deployed="DeepSeek-V3 FP8 (block-wise FP8 GEMMs in vLLM, SGLang, DeepGEMM)",
        spec="DeepSeek-V3 Technical Report (arXiv:2412.19437), 2024: fine-grained 1x128 activation tiles",
        build=_dynamic(blocks.fp8_block),
    ),
    Format(
        name="mxfp8_e4m3", element="fp8_e4m3", granularity="32-value blocks",
        scale_rule="E8M0 2^(floor(log2 block max|a|) - 8), at run time", static=False,
        max_element=FP8_E4M3_MAX, label="MXFP8 E4M3", advice="use MXFP8 (E4M3, 32-value blocks)",
        default_e2e=False,
        deployed="NVIDIA Blackwell MXFP8 (Transformer Engine MXFP8 recipe)",
        spec=_MX,
        build=_dynamic(blocks.mxfp8_e4m3),
    ),
    Format(
        name="nvfp4", element="e2m1", granularity="16-value blocks",
        scale_rule="E4M3 block max|a| / (6 g), FP32 g = calibration max|a| / 2688", static=True,
        max_element=E2M1_MAX, label="NVFP4", advice="use NVFP4 (E2M1, 16-value E4M3-scaled blocks)",
        default_e2e=True,
        deployed="NVIDIA Blackwell NVFP4 (TensorRT Model Optimizer, vLLM and llm-compressor NVFP4 scheme)",
        spec="NVIDIA NVFP4: E2M1 elements, E4M3 scale per 16 values, FP32 per-tensor scale (Blackwell, 2025)",
        build=_nvfp4,
    ),
    Format(
        name="mxfp4_e2m1", element="e2m1", granularity="32-value blocks",
        scale_rule="E8M0 2^(floor(log2 block max|a|) - 2), at run time", static=False,
        max_element=E2M1_MAX, label="MXFP4 E2M1", advice="use MXFP4 (E2M1, 32-value blocks)",
        default_e2e=True,
        deployed="OCP MX hardware (NVIDIA Blackwell, AMD MI355X), AMD Quark MXFP4",
        spec=_MX,
        build=_dynamic(blocks.mxfp4_e2m1),
    ),
)


def percentile_format(p: float) -> str:
    """Name of the percentile-clipping INT8 policy: ``percentile_format(99.9) == 'int8_p99.9'``."""
    return f"int8_p{p:g}"


def registered_formats(percentiles: Iterable[float] = DEFAULT_PERCENTILES) -> tuple[Format, ...]:
    """Every format, in report order, the percentile family expanded once per percentile."""
    ps = tuple(percentiles)
    return tuple(m for f in REGISTRY for m in ((f.at(p) for p in ps) if f.family else (f,)))


def find_format(name: str) -> Optional[Format]:
    """The format called ``name`` (any percentile for a family: ``int8_p99.5``); None if unknown."""
    for f in REGISTRY:
        if not f.family:
            if f.name == name:
                return f
            continue
        prefix, _, suffix = f.name.partition("{p}")
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            p = name[len(prefix): len(name) - len(suffix)]
            try:
                float(p)
            except ValueError:
                continue
            return f.at(p)
    return None


def format_names(percentiles: Iterable[float] = DEFAULT_PERCENTILES) -> tuple[str, ...]:
    """Every fake-quantization format name, in report order."""
    return tuple(f.name for f in registered_formats(percentiles))


def e2e_formats(percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> tuple[str, ...]:
    """The default end-to-end (W16A{8,4}) formats: those marked ``default_e2e``, in report order:
    ``int8_absmax`` (the paper's case), ``int8_per_token``, ``fp8_e4m3`` (static),
    ``fp8_e4m3_per_token``, ``nvfp4``, ``mxfp4_e2m1``."""
    return tuple(f.name for f in registered_formats(percentiles) if f.default_e2e)


def resolve_formats(names: Sequence[str], percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> tuple[str, ...]:
    """Validate user-given end-to-end format names: each must be one of ``format_names(percentiles)``.
    Returns them in the given order, without duplicates; an unknown one raises ``UsageError``."""
    valid = format_names(percentiles)
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        if name not in valid:
            raise UsageError(f"unknown quantization format {raw!r}; valid formats: {', '.join(valid)}")
        if name not in out:
            out.append(name)
    return tuple(out)


def label(fmt: str) -> str:
    """Short human name of a format: ``'per-token FP8 E4M3'``; the name itself if unknown."""
    f = find_format(fmt)
    return f.label if f is not None else fmt


def advice(fmt: str) -> str:
    """What to deploy to get a format: ``'use FP8 E4M3 with per-token dynamic scales'``."""
    f = find_format(fmt)
    return f.advice if f is not None else f"use {fmt}"


def site_quantizers(
    absmax: ScaleLike,
    clip_values: Mapping[float, ScaleLike],
    *,
    device: Optional[torch.device] = None,
) -> tuple[Quantizer, ...]:
    """Every registered format's quantizer for one site, from its calibration statistics, in
    registry (report) order.

    ``absmax`` is the site's calibration max |a|; ``clip_values`` maps a percentile (99.9) to
    the value of |a| at that percentile: one ``int8_p{p:g}`` per entry, after ``int8_absmax``.
    Static per-tensor FP8 maps the calibration absmax onto the format max; NVFP4's global scale
    comes from it too. Scales live on ``device`` (default: the device of ``absmax`` when it is a
    tensor): pass the activations' device so no scale is copied host-to-device inside a hook.
    """
    device = device if device is not None else _device_of(absmax)
    out = []
    for f in REGISTRY:
        if f.family:
            out.extend(f.at(p).make(absmax, v, device=device) for p, v in clip_values.items())
        else:
            out.append(f.make(absmax, device=device))
    return tuple(out)
