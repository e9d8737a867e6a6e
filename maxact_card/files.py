"""Writing output files: each all at once or not at all, and a set of them together.

A file is written to a temporary file beside its target, flushed to disk, given the target's
mode (or the umask's default for a new file) and renamed over it. A symbolic link is written
through: its target is replaced and the link stays. A set (report, figure, README) is written
to temporary files first; only when all of them are on disk are they renamed into place, so a
full disk or a read-only folder leaves every target as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Mapping

from .errors import OutputError

# advice(path, strerror) -> the one-line error for a path that cannot be written
Advice = Callable[[Path, str], str]


def _default_advice(path: Path, reason: str) -> str:
    return f"cannot write {path} ({reason}); free some space or pass a writable --output-dir"


def write_atomic(path: Path, data: bytes, advice: Advice = _default_advice) -> Path:
    """Write one file atomically; returns `path`."""
    write_all({Path(path): data}, advice)
    return Path(path)


def write_all(files: Mapping[Path, bytes], advice: Advice = _default_advice) -> None:
    """Write every file, or (on any error) none: the targets stay as they were."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            target = _through_links(Path(path))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            except OSError as exc:
                raise OutputError(advice(Path(path), exc.strerror or str(exc))) from None
            staged.append((tmp, target))
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, _mode_for(target))
            except OSError as exc:
                raise OutputError(advice(Path(path), exc.strerror or str(exc))) from None
        for tmp, target in staged:
            os.replace(tmp, target)
        staged.clear()
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def _through_links(path: Path) -> Path:
    """A symbolic link's final target (the link itself stays); other paths as they are."""
    return path.resolve() if path.is_symlink() else path


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
