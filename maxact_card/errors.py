"""One exception hierarchy. Each error carries the next step for the user in its message.

Subclasses also derive the matching builtin so library callers can catch what they expect.
The CLI maps every `MaxActCardError` to one line on stderr and the exit code below.
"""

from __future__ import annotations


class MaxActCardError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""

    exit_code = 2


class UsageError(MaxActCardError, ValueError):
    """An option value that cannot work (non-positive sizes, unknown dtype, ...)."""


class ModelNotFoundError(MaxActCardError, FileNotFoundError):
    """No model at that path or repo id."""


class GatedRepoError(MaxActCardError, PermissionError):
    """The repo needs accepted terms or a token."""


class AuthError(MaxActCardError, PermissionError):
    """Token missing, invalid, or without the rights the action needs."""


class NoWeightsError(MaxActCardError, FileNotFoundError):
    """The checkpoint has a config but no weight files."""


class ModelLoadError(MaxActCardError, OSError):
    """The checkpoint's files are there but transformers cannot load them."""


class RemoteCodeError(MaxActCardError, PermissionError):
    """The checkpoint needs trust_remote_code and the user did not pass it."""


class UnsupportedArchitectureError(MaxActCardError, ValueError):
    """Decoder layers or probe sites could not be found."""


class CorpusError(MaxActCardError, ValueError):
    """A corpus file that cannot be read or parsed, or an empty corpus."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class OutputError(MaxActCardError, OSError):
    """An output path that cannot be written."""


class NetworkError(MaxActCardError, ConnectionError):
    """The Hub could not be reached."""


class HubError(MaxActCardError, RuntimeError):
    """The Hub answered with an error the user can act on."""


class ReportError(MaxActCardError, ValueError):
    """A report file that cannot be read."""


class ThresholdExceeded(MaxActCardError):
    """M exceeded --fail-above (exit code 3)."""

    exit_code = 3


class DistributedError(MaxActCardError, RuntimeError):
    """The processes of a data-parallel run disagree, or one of them stopped."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
