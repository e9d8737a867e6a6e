"""The one configuration object of an audit. The CLI fills it; `maxact_card.audit(**options)` too.

Precedence: values given on the command line (or as keyword arguments) > defaults here.
`None` means "unset": the component that owns the option chooses (for example the output
directory defaults to one named after the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from .errors import UsageError

if TYPE_CHECKING:
    from .report import AuditSettings

DTYPES = ("auto", "bfloat16", "float16", "float32")
CALIB_SAMPLES = 128  # the most calibration samples taken by default


@dataclass(frozen=True)
class AuditOptions:
    model: str
    revision: Optional[str] = None
    token: Optional[str] = field(default=None, repr=False)
    gguf_file: Optional[str] = None
    dtype: str = "auto"
    device: str = "auto"
    device_map: Optional[str] = None
    trust_remote_code: bool = False
    allow_missing_weights: bool = False
    corpus: str = "builtin"
    samples: int = 256
    max_seq_len: int = 512
    seed: int = 0
    batch_size: str = "auto"
    output_dir: Optional[str] = None
    quant_check: bool = True
    calib_samples: Optional[int] = None  # None (auto): half of `samples`, at most CALIB_SAMPLES
    clip_percentiles: tuple[float, ...] = (99.9, 99.99)
    formats: Optional[tuple[str, ...]] = None  # end-to-end formats; None: the default set
    baseline: Optional[str] = None  # previous, base-model, a report file or folder, or a Hub repo
    model_name: Optional[str] = None  # the name of a local checkpoint in the report and the card
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("samples", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.calib_samples is not None and self.calib_samples < 0:
            raise UsageError(f"--calib-samples must be >= 0, got {self.calib_samples}")
        if self.quant_check:
            if self.calib_samples == 0:
                raise UsageError("--calib-samples 0 leaves nothing to calibrate the INT8/FP8 scales on; "
                                 "pass a positive number, or --no-quant-check")
            if self.samples < 2:
                raise UsageError(f"the INT8/FP8 check needs at least 2 samples (one to calibrate, one to "
                                 f"evaluate), got --samples {self.samples}; raise --samples or pass --no-quant-check")
            if self.calib_samples is not None and self.calib_samples >= self.samples:
                raise UsageError(f"--calib-samples {self.calib_samples} leaves no samples to evaluate on with "
                                 f"--samples {self.samples}; lower --calib-samples below {self.samples} "
                                 "or raise --samples")
        if not self.clip_percentiles:
            raise UsageError("--clip-percentiles needs at least one percentile, e.g. 99.9,99.99")
        if len(set(self.clip_percentiles)) != len(self.clip_percentiles):
            raise UsageError(f"--clip-percentiles lists a percentile twice "
                             f"({','.join(f'{p:g}' for p in self.clip_percentiles)}); give each once")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.batch_size != "auto" and not (str(self.batch_size).isdigit() and int(self.batch_size) > 0):
            raise UsageError(f"--batch-size must be 'auto' or a positive integer, got {self.batch_size!r}")
        if self.device_map not in (None, "auto"):
            raise UsageError(f"--device-map accepts only 'auto', got {self.device_map!r}")
        for p in self.clip_percentiles:
            if not 50.0 < p < 100.0:  # NaN fails too
                raise UsageError(f"--clip-percentiles must lie between 50 and 100, got {p}")
        if self.model_name is not None:
            from .loading import looks_like_path, looks_local

            if not looks_local(self.model):
                raise UsageError(f"--model-name names a local checkpoint; {self.model} is a Hub repo, named by its "
                                 "id: drop --model-name")
            if not self.model_name.strip() or looks_like_path(self.model_name) or any(c.isspace() for c in self.model_name):
                raise UsageError(f"--model-name must be a name such as my-org/my-model, not {self.model_name!r}")
        if self.formats is not None:
            from .quant.formats import resolve_formats

            if not self.quant_check:
                raise UsageError("--formats chooses the formats of the quantization check; drop --no-quant-check")
            try:
                resolve_formats(self.formats, self.clip_percentiles)  # an unknown name: refused before the audit
            except UsageError as exc:
                raise UsageError(f"--formats: {exc}") from None

    @property
    def e2e_formats(self) -> tuple[str, ...]:
        """The formats the end-to-end check runs: as given (in that order), else the default set."""
        from .quant.formats import e2e_formats, resolve_formats

        if self.formats is None:
            return e2e_formats(self.clip_percentiles)
        return resolve_formats(self.formats, self.clip_percentiles)

    def settings(self) -> "AuditSettings":
        """The options that change a number, resolved as the audit uses them."""
        from .report import AuditSettings

        return AuditSettings(
            samples=self.samples, max_seq_len=self.max_seq_len, seed=self.seed, dtype=self.dtype,
            calib_samples=self.calib if self.quant_check else 0, clip_percentiles=tuple(self.clip_percentiles),
            formats=self.e2e_formats if self.quant_check else ())

    @property
    def calib(self) -> int:
        """Calibration samples of the INT8/FP8 check: as given, else half of --samples, at most 128."""
        return self.calib_samples if self.calib_samples is not None else min(CALIB_SAMPLES, self.samples // 2)
