"""The flows the CLI calls: write the card next to a local model, or open a pull request on the Hub."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

from .card import FIGURE_NAME, REPORT_NAME, extract_metadata, render_pr_description, render_readme, settings_key
from .errors import OutputError, UsageError
from .files import write_all
from .readme_merge import split_lines
from .report import Report

if TYPE_CHECKING:
    from .hub import Hub
    from .options import AuditOptions

PR_TITLE = "Add activation range (maxact-card)"
README_NAME = "README.md"
FILES = (README_NAME, FIGURE_NAME, REPORT_NAME)

__all__ = ["PR_TITLE", "FILES", "PublishResult", "write_card", "render_readme", "open_pr", "readme_diff"]


@dataclass(frozen=True)
class PublishResult:
    """What `open_pr` did: 'opened', 'updated', 'unchanged' or 'dry-run'."""

    action: str
    url: Optional[str]
    pr_num: Optional[int]
    diff: str
    files: tuple[str, ...] = ()


def card_files(report: Report, readme: str) -> dict[str, bytes]:
    """The three files of a card update, as the bytes to write or commit."""
    from .plot import render_png

    return {
        README_NAME: readme.encode("utf-8"),
        FIGURE_NAME: render_png(report),
        REPORT_NAME: report.to_json().encode("utf-8"),
    }


def read_local_readme(model_dir: Path) -> Optional[str]:
    """model_dir/README.md as text (None when there is none); one line when it cannot be read."""
    if model_dir.exists() and not model_dir.is_dir():
        raise OutputError(f"{model_dir} is not a directory; pass the model's folder")
    path = model_dir / README_NAME
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; convert it to UTF-8 and run again") from None
    except OSError as exc:
        raise OutputError(f"cannot read {path} ({exc.strerror}); check its permissions") from None


def check_cards(model: str, *, write_card: bool, hub: Optional["Hub"], revision: Optional[str]) -> None:
    """Before the audit: the README the card will be merged into must be mergeable (read from the
    checkpoint folder, or from the Hub repo at the revision that will be audited)."""
    from .readme_merge import check_readme

    if write_card:
        check_readme(read_local_readme(Path(model)))
    if hub is not None:
        check_readme(hub.read_text(model, README_NAME, hub.resolve_revision(model, revision)))


def write_card(report: Report, model_dir: Path, *, template: Optional[Path] = None) -> Path:
    """Merge the section into model_dir/README.md (created if absent) and write the figure and the
    report beside it, each atomically. Returns the README path."""
    model_dir = Path(model_dir)
    current = read_local_readme(model_dir)
    files = card_files(report, render_readme(report, current, template=template))

    def advice(target: Path, reason: str) -> str:
        return (f"cannot write the card into {model_dir} ({target.name}: {reason}); the card goes next to the "
                "model: free some space or make that folder writable (nothing was changed)")

    # All three or none; the README is renamed last, so it never points at a figure not there yet.
    write_all({model_dir / name: files[name] for name in (FIGURE_NAME, REPORT_NAME, README_NAME)}, advice)
    return model_dir / README_NAME


def readme_diff(old: Optional[str], new: str) -> str:
    """Unified diff of README.md, a/ before and b/ after (line endings kept as they are)."""
    a = split_lines(old or "")
    b = split_lines(new)
    lines = difflib.unified_diff(a, b, fromfile="a/README.md", tofile="b/README.md")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _same_settings(readme: Optional[str], key: str) -> bool:
    meta = extract_metadata(readme)
    return meta is not None and meta.get("settings_key") == key


@dataclass(frozen=True)
class Published:
    """Where a measurement already is: the card at a commit, or an open pull request of this tool."""

    where: str  # the sentence that says so
    revision: str  # where its report can be read
    pr: Optional[int] = None


def already_published(hub: "Hub", repo_id: str, sha: str, key: str, user: Optional[str]) -> Optional[Published]:
    """Where the card at `sha`, or an open pull request of this tool by anyone, already carries the
    activation range with settings key `key`; None when there is something to publish."""
    if _same_settings(hub.read_text(repo_id, README_NAME, sha), key):
        return Published(f"{repo_id}@{sha[:12]} already carries an activation range for these settings", sha)
    for num, author in _same_key_prs(hub, repo_id, key):
        by = "" if author == user else f" (by {author})"
        return Published(f"pull request #{num}{by} on {repo_id} already carries this activation range",
                         f"refs/pr/{num}", num)
    return None


def published_report(hub: "Hub", options: "AuditOptions", user: Optional[str], out_dir: Optional[Path], *,
                     echo: Callable[[str], None]) -> Optional[Report]:
    """Before any weight is downloaded: when the Hub card (or an open pull request of this tool)
    already carries a report of these weights with these settings, that report (saved into `out_dir`
    when given), else None."""
    from .pipeline import expected_key

    sha, key = expected_key(options, lambda: hub)
    done = already_published(hub, options.model, sha, key, user)
    text = hub.read_text(options.model, REPORT_NAME, done.revision) if done else None
    if done is None or text is None:
        return None  # nothing published, or a card edited by hand: measure
    report = Report.from_json(text)
    if out_dir is not None:
        path = report.save(out_dir / REPORT_NAME)
        echo(f"{done.where}; nothing to do before any download (--force audits and publishes again); its report: {path}")
    return report


def _same_key_prs(hub: "Hub", repo_id: str, key: str) -> list[tuple[int, str]]:
    """The open pull requests of this tool whose card carries settings key `key`, oldest first."""
    return [(num, author) for num, author in hub.open_prs(repo_id, title=PR_TITLE)
            if _same_settings(hub.pr_head_text(repo_id, num, README_NAME), key)]


def _settle(hub: "Hub", repo_id: str, num: int, key: str, echo: Callable[[str], None]) -> Optional[int]:
    """After opening pull request `num`: when an older open one carries the same measurement (two
    runs at once), close `num` and return the older one's number; else None. Pull request numbers
    only grow, so of any runs that race, exactly one pull request stays open."""
    older = [n for n, _ in _same_key_prs(hub, repo_id, key) if n < num]
    if not older:
        return None
    hub.close_pr(repo_id, num, comment=f"Closed by maxact-card: #{older[0]}, opened at the same time, carries the "
                                       "same measurement of the same weights.")
    echo(f"pull request #{older[0]} on {repo_id}, opened at the same time, carries the same measurement: closed #{num}")
    return older[0]


def open_pr(
    report: Report,
    hub: "Hub",
    repo_id: str,
    *,
    template: Optional[Path] = None,
    dry_run: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> PublishResult:
    """Open (or update) the pull request that adds the section, the figure and the report.

    The card is based on README.md at the audited commit (report.model.revision). Nothing is
    committed when that card, or an open pull request of this tool by anyone, already carries a
    report with the same settings key (weights, documents, every option that changes a number, tool
    major version), unless `force`; the user's own open pull request with other settings is updated;
    of pull requests opened at the same time for the same measurement, the oldest stays open. `dry_run` prints and returns the README diff and the file list, and commits nothing.
    """
    sha = report.model.revision
    if not sha:
        raise UsageError(
            "the report has no Hub revision (it was measured from a local model); "
            "audit the Hub repo id to open a pull request, or write the card locally"
        )
    key = settings_key(report)
    current = hub.read_text(repo_id, README_NAME, sha)
    # A dry run without a token cannot know the user, so it cannot look for their open PR.
    user = hub.whoami() if not dry_run or hub.has_token() else None
    done = None if force else already_published(hub, repo_id, sha, key, user)
    if done is not None:
        echo(f"{done.where}; nothing to do (--force publishes again)")
        return PublishResult("unchanged", None, done.pr, "", ())
    pr = hub.find_open_pr(repo_id, author=user, title=PR_TITLE) if user else None

    readme = render_readme(report, current, template=template)
    diff = readme_diff(current, readme)
    if dry_run:
        target = f"update pull request #{pr}" if pr is not None else "open a pull request"
        if user is None:
            echo("dry run without a token: your open pull requests were not looked up")
        echo(f"dry run: would {target} on {repo_id} (base {sha[:12]}) with {', '.join(FILES)}")
        echo(diff.rstrip("\n") if diff else "README.md: no change")
        return PublishResult("dry-run", None, pr, diff, FILES)

    files = card_files(report, readme)
    description = render_pr_description(report)
    if pr is not None:
        url, num = hub.commit(
            repo_id, files, message=PR_TITLE, description=description, parent_sha=sha, pr_num=pr
        )
        action = "updated"
    else:
        url, num = hub.commit(
            repo_id, files, message=PR_TITLE, description=description, parent_sha=sha, create_pr=True
        )
        action = "opened"
        kept = _settle(hub, repo_id, num, key, echo) if num is not None else None
        if kept is not None:
            return PublishResult("unchanged", f"{hub.endpoint}/{repo_id}/discussions/{kept}", kept, diff, ())
    num = num if num is not None else pr
    echo(f"{action} pull request{f' #{num}' if num is not None else ''} on {repo_id}: {url}")
    return PublishResult(action, url, num, diff, FILES)
