"""The result of an audit: frozen dataclasses, an exact JSON round-trip, and the card's YAML block.

Every float is a plain Python float (never a numpy or torch scalar), every collection a tuple or a
dict with string keys, so `Report.from_json(r.to_json()) == r` holds exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import ReportError
from .files import write_atomic

SCHEMA_VERSION = "1.6"

# Site kinds that count towards M, the paper's headline maximum, in forward order inside a layer.
HEADLINE_KINDS = ("embed", "attn", "mixer", "mlp", "residual", "final_norm")
# Reported separately: not part of the residual stream.
SEPARATE_KINDS = ("mlp.gate", "mlp.down_in", "mlp.experts.gate", "mlp.experts.down_in", "router")
# The quant check's sites that are linear-layer inputs (what W8A8 kernels quantize): these decide
# the verdicts; residual-stream sites are reported beside them.
LINEAR_INPUT_SUFFIXES = (".in", ".down_in")
KIND_ORDER = ("embed", "attn", "mixer", "mlp.gate", "mlp.down_in", "router", "mlp.experts.gate", "mlp.experts.down_in", "mlp",
              "residual", "final_norm")


@dataclass(frozen=True)
class Location:
    """Where one activation value sits: sample index in the corpus, token position, channel."""

    sample: int
    position: int
    token_id: int
    token: str
    channel: int
    sign: int
    expert: Optional[int] = None  # at a per-expert site: the expert (schema 1.5)
    stream: Optional[int] = None  # in a multi-stream residual (hyper-connections): the stream (schema 1.6)


@dataclass(frozen=True)
class TopValue:
    value: float
    location: Location


@dataclass(frozen=True)
class ChannelMax:
    channel: int
    absmax: float
    stream: Optional[int] = None  # schema 1.6


@dataclass(frozen=True)
class SiteStats:
    """Statistics of one probe site over every non-padding token of the corpus."""

    name: str
    kind: str
    layer: Optional[int]
    count: int
    nonfinite: int
    nonfinite_location: Optional[Location]
    max: Optional[float]
    min: Optional[float]
    absmax: Optional[float]
    absmax_location: Optional[Location]
    mean: Optional[float]
    std: Optional[float]
    rms: Optional[float]
    quantiles: dict[str, float]
    top: tuple[TopValue, ...]
    massive: int
    top_channels: tuple[ChannelMax, ...]
    # Per-expert sites (schema 1.5): each expert's max |a| and where (None: no token reached it).
    per_expert: tuple[Optional[TopValue], ...] = ()


@dataclass(frozen=True)
class ExpertLayer:
    """Routing and per-expert extremes of one MoE layer over the corpus (schema 1.5).

    `routed`: (token, expert) assignments of real tokens per expert; `dead`: experts no token was
    routed to; `imbalance`: the largest expert's share of the assignments over the mean share.
    `router`: the module whose output is the router logits (pre-softmax) of the layer.
    `uncalibrated`: experts without a calibration token (quantized with the layer's scale)."""

    layer: int
    experts: int
    router: str
    routed: tuple[int, ...]
    dead: tuple[int, ...]
    imbalance: float
    down_in_absmax: Optional[float]
    down_in_expert: Optional[int]
    uncalibrated: tuple[int, ...] = ()

    @property
    def reached(self) -> int:
        return self.experts - len(self.dead)


@dataclass(frozen=True)
class Peak:
    """M: the largest |activation| over the headline sites, where it first appears. When a headline
    site held NaN/Inf, M is infinite and located at the first non-finite value (in forward order);
    `finite_abs` is then the largest finite |a|, and `nonfinite` counts the non-finite values."""

    value: float
    abs: float
    site: str
    kind: str
    layer: Optional[int]
    sample: int
    position: int
    token: str
    token_id: int
    channel: int
    nonfinite: int = 0  # schema 1.2
    finite_abs: Optional[float] = None  # schema 1.2
    stream: Optional[int] = None  # schema 1.6: the residual stream, where the model has several


@dataclass(frozen=True)
class KindMax:
    kind: str
    absmax: float
    site: str
    layer: Optional[int]


@dataclass(frozen=True)
class Headroom:
    """M (and each site's max) against the largest finite value of a numeric format."""

    format: str
    max_finite: float
    ratio: float
    overflow_sites: tuple[str, ...]


@dataclass(frozen=True)
class ModelRecord:
    id: str
    source: str
    revision: Optional[str]
    architecture: str
    model_type: str
    num_layers: int
    dtype: str
    device: str
    gguf_file: Optional[str]
    # Fingerprint of the weight files of a Hub checkpoint ("sha256:..."), the same for every commit
    # that leaves the weights alone; None for local checkpoints. Added in schema 1.1.
    weights: Optional[str] = None

    @property
    def name(self) -> str:
        """The id: a Hub repo's, or the name a local checkpoint was given (reports before 1.4 held a
        local checkpoint's path: its last part then)."""
        if self.source == "hub" or not (self.id.startswith(("/", ".", "~")) or "\\" in self.id):
            return self.id
        return Path(self.id.rstrip("/")).name or self.id


@dataclass(frozen=True)
class CorpusRecord:
    name: str
    fingerprint: str
    samples: int
    tokens: int
    bos_added: bool
    max_seq_len: int
    seed: int
    domains: dict[str, int]
    # sha256 of the selected documents before tokenization (domain and text, or given ids): the same
    # for every tokenizer, so audits of different models on one corpus compare. Schema 1.4.
    documents: Optional[str] = None


@dataclass(frozen=True)
class Timings:
    load_s: float
    probe_s: float
    quant_s: float
    total_s: float
    tokens_per_s: float


@dataclass(frozen=True)
class SiteQuantError:
    """Error of fake-quantizing one site's activations with one format/policy, on held-out data."""

    site: str
    layer: Optional[int]
    format: str
    sqnr_db: float
    rel_rmse: float
    rel_mae: float
    clip_rate: float


@dataclass(frozen=True)
class EndToEnd:
    """Next-token loss with every linear layer's input fake-quantized in one format."""

    format: str
    nll: float
    ppl: float
    delta_nll: float
    ppl_ratio: float


@dataclass(frozen=True)
class Verdict:
    """``verdict`` is one of ok, degraded, unsafe, or uncertain (the delta-NLL interval straddles a
    threshold). ``interval`` is the bootstrap interval (lo, hi) of the delta NLL behind it, when
    one was computed; JSON holds it as a 2-list or null, and reports without it load with None."""

    format: str
    verdict: str
    reason: str
    interval: Optional[tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.interval is not None:  # a plain (float, float) tuple, so JSON round-trips exactly
            lo, hi = self.interval
            object.__setattr__(self, "interval", (float(lo), float(hi)))


@dataclass(frozen=True)
class BlockSpan:
    """NVFP4 headroom of one linear layer's input over the calibration samples: the largest 16-value
    block amax over the smallest non-zero one. Beyond `limit` (448 / 2**-6 = 28672, what one FP32
    scale with E4M3 block scales holds) a static per-tensor NVFP4 scale flushes the smallest blocks."""

    site: str
    span: float
    beyond: bool


@dataclass(frozen=True)
class QuantReport:
    calib_samples: int
    eval_samples: int
    eval_tokens: int
    baseline_nll: float
    baseline_ppl: float
    sites: tuple[SiteQuantError, ...]
    end_to_end: tuple[EndToEnd, ...]
    verdicts: tuple[Verdict, ...]
    recommendation: str
    nvfp4_spans: tuple[BlockSpan, ...] = ()  # schema 1.3


@dataclass(frozen=True)
class AuditSettings:
    """The options of an audit that change a number, as it resolved them (schema 1.4): two reports
    of the same weights with equal settings and corpus documents are the same measurement."""

    samples: int
    max_seq_len: int
    seed: int
    dtype: str  # as asked (auto: the checkpoint's; the dtype used is model.dtype)
    calib_samples: int  # 0 without the quantization check
    clip_percentiles: tuple[float, ...]
    formats: tuple[str, ...]  # the end-to-end formats; () without the quantization check


@dataclass(frozen=True)
class VerdictChange:
    format: str
    before: str
    after: str
    worse: bool


@dataclass(frozen=True)
class BaselineChange:
    """This audit against a baseline report (schema 1.4). `ratio` is M over the baseline's M;
    `differences` names the settings in which the two differ (empty: comparable)."""

    source: str  # what --baseline named: previous, base-model, a Hub repo, a report file's name
    model: str
    revision: Optional[str]
    weights: Optional[str]
    m: Optional[float]
    ratio: Optional[float]
    fp16_new_sites: tuple[str, ...]
    verdicts: tuple[VerdictChange, ...]
    differences: tuple[str, ...]

    @property
    def comparable(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class Report:
    schema_version: str
    tool_version: str
    created: str
    command: str
    model: ModelRecord
    corpus: CorpusRecord
    peak: Optional[Peak]
    kinds: tuple[KindMax, ...]
    fp16_safe: bool
    headroom: tuple[Headroom, ...]
    sites: tuple[SiteStats, ...]
    timings: Timings
    quant: Optional[QuantReport]
    # Processes of a data-parallel run that measured (torchrun / accelerate launch). Schema 1.2.
    processes: int = 1
    # 95% bootstrap interval of M over the corpus samples (lo, hi); hi is M itself. Schema 1.3.
    peak_interval: Optional[tuple[float, float]] = None
    # Running the model unscaled in fp16 and bf16: ok, degraded or unsafe, whatever else ran. Schema 1.3.
    dtype_verdicts: tuple[Verdict, ...] = ()
    # The options that change a number, and the change against --baseline. Schema 1.4.
    settings: Optional[AuditSettings] = None
    baseline: Optional[BaselineChange] = None
    # One entry per MoE layer with fused experts. Schema 1.5.
    experts: tuple[ExpertLayer, ...] = ()

    def verdict(self, fmt: str) -> Optional[Verdict]:
        """The verdict on `fmt` every output shows: fp16 and bf16 from `dtype_verdicts` (older
        reports: the check's), the other formats from the check; None where none was made."""
        found = [v for v in self.dtype_verdicts if v.format == fmt]
        found += [v for v in (self.quant.verdicts if self.quant else ()) if v.format == fmt]
        return found[0] if found else None

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version is None:
            raise ReportError("not a maxact-card report: no schema_version; pass a maxact_report.json")
        if str(version).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ReportError(
                f"report schema {version} is not readable by this version (schema {SCHEMA_VERSION}); "
                "re-run `maxact-card audit` or upgrade maxact-card"
            )
        try:
            return _from_plain(cls, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"malformed report ({exc}); re-run `maxact-card audit`") from None

    @classmethod
    def from_json(cls, text: str) -> "Report":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReportError(f"report is not valid JSON (line {exc.lineno}); pass a maxact_report.json") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Report":
        p = Path(path)
        if not p.is_file():
            raise ReportError(f"no report at {p}; run `maxact-card audit` first")
        return cls.from_json(p.read_text(encoding="utf-8"))

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_atomic(Path(path), self.to_json().encode("utf-8"))

    # -- lookups -----------------------------------------------------------------------------------
    def site(self, name: str) -> SiteStats:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def kind_max(self, kind: str) -> Optional[KindMax]:
        return next((k for k in self.kinds if k.kind == kind), None)

    def top_layers(self, n: int = 5) -> list[tuple[int, float, str]]:
        """Layers ranked by their largest |a| over headline sites: (layer, absmax, site)."""
        best: dict[int, tuple[float, str]] = {}
        for s in self.sites:
            if s.layer is None or s.kind not in HEADLINE_KINDS or s.absmax is None:
                continue
            if s.layer not in best or s.absmax > best[s.layer][0]:
                best[s.layer] = (s.absmax, s.name)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
        return [(layer, v, name) for layer, (v, name) in ranked[:n]]


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return float(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _from_plain(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_plain(inner[0], value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {tp.__name__}")
        hints = typing.get_type_hints(tp)
        missing = dataclasses.MISSING
        return tp(**{f.name: _from_plain(hints[f.name], value[f.name]) for f in dataclasses.fields(tp)
                     if f.name in value or f.default is missing})  # older minor schemas lack defaulted fields
    if origin is tuple:
        return tuple(_from_plain(args[0], v) for v in value)
    if origin is dict:
        return {str(k): _from_plain(args[1], v) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp!r}")


def yaml_metadata(report: Report) -> dict[str, Any]:
    """The `activation_range:` block for the card's front matter: plain floats and strings only."""
    peak = report.peak
    meta: dict[str, Any] = {
        "schema_version": report.schema_version,
        "tool": "maxact-card",
        "tool_version": report.tool_version,
        **({"revision": report.model.revision} if report.model.revision else {}),
        **({"weights": report.model.weights} if report.model.weights else {}),
        "dtype": report.model.dtype,
        "max_abs_activation": _f(peak.abs) if peak else None,
        **({"nonfinite_activations": peak.nonfinite, "max_abs_finite_activation": _f(peak.finite_abs)}
           if peak and peak.nonfinite else {}),
        "max_activation_site": peak.site if peak else "",
        "max_activation_layer": peak.layer if peak and peak.layer is not None else -1,
        **({"max_abs_activation_interval": [_f(v) for v in report.peak_interval]} if report.peak_interval else {}),
        "fp16_safe": report.fp16_safe,
        **({"fp16_verdict": fp16.verdict} if (fp16 := report.verdict("fp16")) else {}),
        "site_kind_max": {k.kind: _f(k.absmax) for k in report.kinds},
        "corpus": {
            "name": report.corpus.name,
            "fingerprint": report.corpus.fingerprint,
            "samples": report.corpus.samples,
            "tokens": report.corpus.tokens,
        },
    }
    if report.baseline is not None:
        b = report.baseline
        meta["baseline"] = {"model": b.model, "revision": b.revision or "", "max_abs_activation": _f(b.m) if b.m is not None else None,
                            "m_ratio": _f(b.ratio) if b.ratio is not None else None, "comparable": b.comparable}
    if report.quant is not None:
        meta["verdicts"] = {v.format: v.verdict for v in report.quant.verdicts}
        intervals = {v.format: [_f(x) for x in v.interval] for v in report.quant.verdicts if v.interval}
        if intervals:
            meta["delta_nll_intervals"] = intervals
    return meta


def _f(x: float) -> float:
    return float(x)  # YAML writes .inf and .nan
