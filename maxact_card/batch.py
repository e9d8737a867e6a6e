"""`maxact-card audit --models FILE`: audit a list of models in turn, each into its own folder.

A model whose folder already holds a report of the same weights and settings is skipped, so an
interrupted run resumes where it stopped; a model that fails is listed at the end and the others
go on. Spreading a list over nodes is a scheduler's job: one FILE per job.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from .card import REPORT_NAME
from .errors import MaxActCardError, ReportError, ThresholdExceeded, UsageError
from .options import AuditOptions
from .report import Report

if TYPE_CHECKING:
    from .hub import Hub


@dataclass(frozen=True)
class Entry:
    """One line of a --models file: a model, optionally a revision."""

    model: str
    revision: Optional[str]
    line: int

    @property
    def name(self) -> str:
        return self.model + (f"@{self.revision}" if self.revision else "")


def read_models(path: Path) -> list[Entry]:
    """`MODEL [REVISION]` per line (shell quoting for paths with spaces); `#` comments and blank
    lines are skipped. Every line is checked before the first audit."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"--models {path}: no such file; pass a text file with one model id or path per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--models {path}: cannot read it ({exc}); pass a UTF-8 text file") from None
    entries = []
    for i, raw in enumerate(text.splitlines(), 1):
        try:
            parts = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise UsageError(f"--models {path}, line {i}: {exc}; quote paths with spaces, e.g. \"./my model\"") from None
        if not parts:
            continue
        if len(parts) > 2:
            raise UsageError(f"--models {path}, line {i}: {len(parts)} words; write `MODEL [REVISION]` (quote a path "
                             "with spaces)")
        entries.append(Entry(parts[0], parts[1] if len(parts) == 2 else None, i))
    if not entries:
        raise UsageError(f"--models {path} lists no model; write one model id or path per line")
    seen: dict[Path, Entry] = {}
    for e in entries:
        out = output_dir(Path("."), e)
        if out in seen:
            raise UsageError(f"--models {path}: lines {seen[out].line} and {e.line} both write to {out.name}; list "
                             "each model and revision once")
        seen[out] = e
    return entries


def output_dir(root: Path, entry: Entry) -> Path:
    """root/maxact-<model name>[@<revision>], as a single audit names its folder."""
    from .pipeline import default_output_dir

    name = default_output_dir(entry.model).name
    if entry.revision:
        name += "@" + re.sub(r"[^A-Za-z0-9._-]+", "-", entry.revision)
    return root / name


def up_to_date(report_path: Path, o: AuditOptions, documents: str, hub: Callable[[], "Hub"]) -> Optional[Report]:
    """The report at `report_path` when it measured the same weights with the same settings on the
    same documents by the same major version of the tool (its settings key is the one this audit would
    write); None when the model must be audited."""
    from .card import settings_key
    from .pipeline import expected_key

    if not report_path.is_file():
        return None
    try:
        report = Report.load(report_path)
    except ReportError:
        return None  # unreadable or of another schema: measured again, and replaced
    if report.settings != o.settings() or report.corpus.documents != documents:
        return None  # what the options tell, before the weights are fingerprinted (a local one is hashed)
    if report.model.weights is None and report.model.revision is None:
        return None  # nothing identifies the weights it measured
    return report if settings_key(report) == expected_key(o, hub, documents)[1] else None


@dataclass
class Outcome:
    entry: Entry
    report: Optional[Report] = None
    skipped: bool = False
    error: Optional[str] = None  # the one-line error of a model that failed
    flagged: Optional[str] = None  # over --fail-above, or a regression: the report is written


def report_path(root: Path, entry: Entry) -> Path:
    return output_dir(root, entry) / REPORT_NAME


def run_models(entries: list[Entry], kw: dict[str, Any], audit_one: Callable[[Entry, Path, Optional[Report]], Report], *,
               echo: Callable[..., None], main: bool = True) -> None:
    """Audit each entry in turn with the options `kw` (the audit command's); a failure is listed and
    the next goes on; ends with the compare table. `audit_one(entry, folder, kept)` audits, or with a
    report kept from an earlier run, publishes and checks it without measuring. UsageError (exit 2) when a model failed,
    ThresholdExceeded (exit 3) when one crossed --fail-above or --fail-on-regression."""
    from .compare import note, render, rows

    root = Path(kw["output_dir"] or ".")
    # Under a launcher a failure may strike one process mid-measurement, leaving the others waiting
    # in a collective: the run stops (the launcher ends every process) and the same command resumes.
    stop = os.environ.get("MAXACT_DEBUG") == "1" or int(os.environ.get("WORLD_SIZE", "1")) > 1
    from .hub import lazy_hub

    hub = lazy_hub(kw["token"], progress=kw["progress"])

    measured = {k: v for k, v in kw.items() if k in AuditOptions.__dataclass_fields__}
    outcomes: list[Outcome] = []
    from .measure import distributed

    with distributed.held():
        _each(entries, root, measured, audit_one, outcomes, hub, stop, echo if main else lambda *a, **k: None)
    if not main:
        return
    done = [o for o in outcomes if o.report is not None]
    if done:
        table = rows([(o.report, o.entry.name) for o in done])  # type: ignore[misc]
        echo("")
        echo(render(table, "text"), nl=False)
        if note(table):
            echo(note(table))
    failed = [o for o in outcomes if o.error]
    flagged = [o for o in outcomes if o.flagged]
    audited = sum(1 for o in done if not o.skipped)
    echo(f"{len(entries)} models: {audited} audited, {len(done) - audited} skipped (up to date), {len(failed)} failed",
         err=True)
    for o in flagged:
        echo(f"  over a threshold: {o.entry.name} (line {o.entry.line}): {o.flagged}", err=True)
    for o in failed:
        echo(f"  failed: {o.entry.name} (line {o.entry.line}): {o.error}", err=True)
    if failed:
        raise UsageError(f"{len(failed)} of {len(entries)} models failed (listed above); run the same command again to "
                         "retry them: the others are skipped")
    if flagged:
        raise ThresholdExceeded(f"{len(flagged)} of {len(entries)} models crossed --fail-above or --fail-on-regression "
                                "(listed above)")


def _each(entries: list[Entry], root: Path, measured: dict[str, Any],
          audit_one: Callable[[Entry, Path, Optional[Report]], Report],
          outcomes: list[Outcome], hub: Callable[[], "Hub"], stop: bool, echo: Callable[..., None]) -> None:
    documents: Optional[str] = None
    for i, entry in enumerate(entries, 1):
        outcome = Outcome(entry)
        outcomes.append(outcome)
        echo(f"[{i}/{len(entries)}] {entry.name}", err=True)
        try:
            o = AuditOptions(**{**measured, "model": entry.model, "revision": entry.revision})
            if documents is None:
                from .pipeline import documents_of

                documents = documents_of(o, hub)
            kept = up_to_date(report_path(root, entry), o, documents, hub)
            if kept is not None:
                echo(f"  skipped: {output_dir(root, entry)} holds a report of the same weights and settings", err=True)
                outcome.skipped = True
            outcome.report = audit_one(entry, output_dir(root, entry), kept)
        except ThresholdExceeded as exc:
            outcome.flagged = str(exc)
            path = report_path(root, entry)
            outcome.report = Report.load(path) if path.is_file() else None
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if stop:
                raise
            outcome.error = str(exc) if isinstance(exc, MaxActCardError) else f"{type(exc).__name__}: {exc}"
            echo(f"  failed: {outcome.error}", err=True)
