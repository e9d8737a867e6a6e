"""Saved reports, wherever they are: a report file, a folder holding one, a Hub repo whose card
carries one, and the baselines `audit --baseline` names (`previous`, `base-model`).

Hub reads go through `maxact_card.hub.Hub` and are pinned to a commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from .card import REPORT_NAME
from .errors import ModelNotFoundError, ReportError, UsageError
from .readme_merge import extract_metadata, front_matter
from .report import Report

if TYPE_CHECKING:
    from .hub import Hub

README = "README.md"
BASELINE_KEYWORDS = ("previous", "base-model")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[^\s@]+)?$")


@dataclass(frozen=True)
class Loaded:
    """A report and what it was read from (a file name, or repo@sha: never a local directory)."""

    report: Report
    label: str


def load(spec: str, hub: Callable[[], "Hub"]) -> Loaded:
    """SPEC: a maxact_report.json, a folder holding one, or a Hub repo id (`owner/name[@revision]`)
    whose card carries a report (read at the commit the revision points to, main by default)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_file(path / REPORT_NAME, spec)
    if path.is_file():
        return _from_file(path, spec)
    if _REPO.match(spec) and not spec.endswith(".json"):
        repo, _, revision = spec.partition("@")
        try:
            return from_hub(hub(), repo, revision or None)
        except ModelNotFoundError as exc:  # a mistyped local folder reads like a repo id too
            raise ReportError(f"no report at {spec}: no such file or folder here, and {exc}") from None
    raise ReportError(f"no report at {spec}: pass a {REPORT_NAME}, a folder holding one, or a Hub repo id "
                      "(owner/name[@revision]) whose card carries one")


def _from_file(path: Path, spec: str) -> Loaded:
    if not path.is_file():
        raise ReportError(f"{spec} holds no {REPORT_NAME}; pass the output folder of `maxact-card audit` or the "
                          "report file")
    try:
        report = Report.load(path)
    except ReportError as exc:
        raise ReportError(f"{spec}: {exc}") from None
    return Loaded(report, path.name if path.name != REPORT_NAME else f"{path.parent.name or '.'}/{path.name}")


def from_hub(hub: "Hub", repo: str, revision: Optional[str]) -> Loaded:
    """The report a Hub repo's card carries at `revision` (None: main), pinned to that commit."""
    sha = hub.resolve_revision(repo, revision)
    text = hub.read_text(repo, REPORT_NAME, sha)
    where = f"{repo}@{sha[:12]}"
    if text is None:
        raise ReportError(f"the card of {where} carries no maxact-card report (no {REPORT_NAME}); audit it with "
                          f"`maxact-card audit {repo}` and publish it with --open-pr, or pass a report file")
    try:
        report = Report.from_json(text)
    except ReportError as exc:
        raise ReportError(f"{REPORT_NAME} of {where}: {exc}") from None
    return Loaded(report, where)


# -- baselines -------------------------------------------------------------------------------------
def check_baseline_spec(spec: str, model: str, local: bool) -> None:
    """Refuse a --baseline that cannot apply to `model`, before anything is read."""
    if spec in BASELINE_KEYWORDS and local and not Path(model).expanduser().is_dir():
        raise UsageError(f"--baseline {spec} reads the model's card: {model} is a single file with no card; pass a "
                         "report file or a Hub repo instead")


def baseline(spec: str, model: str, revision: Optional[str], local: bool, hub: Callable[[], "Hub"]) -> Optional[Loaded]:
    """The report --baseline names for an audit of `model`:

    * `previous`: the report the model's current card carries (a Hub repo's main branch, or the
      README.md and maxact_report.json of a local checkpoint folder); None when the card carries
      no activation range yet (a first audit has nothing to compare with);
    * `base-model`: the report on the card of the model the card names as `base_model`;
    * anything else: a report file, a folder holding one, or a Hub repo (see `load`).
    """
    check_baseline_spec(spec, model, local)
    if spec == "previous":
        return _previous(model, local, hub)
    if spec == "base-model":
        base = _base_model(model, revision, local, hub)
        return from_hub(hub(), base, None)
    return load(spec, hub)


def _previous(model: str, local: bool, hub: Callable[[], "Hub"]) -> Optional[Loaded]:
    if local:
        folder = Path(model).expanduser()
        readme, where = _read_local(folder / README), folder.name
        found: Optional[Loaded] = _from_file(folder / REPORT_NAME, model) if (folder / REPORT_NAME).is_file() else None
    else:
        h = hub()
        sha = h.resolve_revision(model, None)
        readme, where = h.read_text(model, README, sha), f"{model}@{sha[:12]}"
        found = None
        if extract_metadata(readme) is not None:
            found = from_hub(h, model, sha)
    meta = extract_metadata(readme)
    if meta is None:
        return None
    if found is None:
        raise ReportError(f"--baseline previous: the card of {where} has an activation range but no {REPORT_NAME} "
                          "beside it; pass a report file")
    recorded = meta.get("revision") or None
    if recorded != found.report.model.revision:
        raise ReportError(f"--baseline previous: the card of {where} records revision {recorded or 'none'}, its "
                          f"{REPORT_NAME} revision {found.report.model.revision or 'none'}; pass a report file")
    return Loaded(found.report, f"previous card, {where}")


def _base_model(model: str, revision: Optional[str], local: bool, hub: Callable[[], "Hub"]) -> str:
    if local:
        folder = Path(model).expanduser()
        readme, where = _read_local(folder / README), folder.name
    else:
        h = hub()
        sha = h.resolve_revision(model, revision)
        readme, where = h.read_text(model, README, sha), f"{model}@{sha[:12]}"
    base = front_matter(readme).get("base_model")
    names = [base] if isinstance(base, str) else [b for b in base if isinstance(b, str)] if isinstance(base, list) else []
    if not names:
        raise ReportError(f"--baseline base-model: the card of {where} names no base_model; pass the base model's "
                          "repo id or report instead")
    if len(names) > 1:
        raise ReportError(f"--baseline base-model: the card of {where} names {len(names)} base models "
                          f"({', '.join(names)}); pass one of them as --baseline")
    return names[0]


def _read_local(path: Path) -> Optional[str]:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path.name} ({exc}); fix the file or pass a report as --baseline") from None
