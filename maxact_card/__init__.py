"""maxact-card: measure the maximum activations of an open LLM and publish them on its model card."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "audit"]

if TYPE_CHECKING:
    from .report import Report


def audit(model: str, **options: Any) -> "Report":
    """Measure `model` (Hub repo id, local directory or .gguf file) and return the Report.

    Keyword options are the fields of :class:`maxact_card.options.AuditOptions`
    (samples, max_seq_len, dtype, device, corpus, ...); the CLI calls the same function.
    """
    from .pipeline import run_audit
    from .options import AuditOptions

    return run_audit(AuditOptions(model=model, **options))
