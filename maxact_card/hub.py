"""Every byte that crosses the network: the Hugging Face Hub, through `huggingface_hub`.

`Hub` resolves a repo@revision to a commit sha, downloads only what loading a model needs,
fetches single files (dataset files, the README of a revision, a file on a PR branch), and
finds, opens or updates a pull request. Every `huggingface_hub` / HTTP error is mapped in one
place (`Hub._errors`) to a `MaxActCardError` with a one-line message that says what to do next.
The token is never logged and never appears in a message.

The endpoint is `endpoint=`, else HF_ENDPOINT (read by `huggingface_hub` when it is imported).
"""

from __future__ import annotations

import glob
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .weights import fingerprint, index_shards, pick_weights
from .errors import (
    AuthError,
    CorpusError,
    GatedRepoError,
    HubError,
    MaxActCardError,
    ModelNotFoundError,
    NetworkError,
    UsageError,
)

__all__ = ["Hub", "ModelSnapshot", "lazy_hub"]

_LIBRARY = "maxact-card"
_INFO_TIMEOUT = 60.0  # seconds for one repo-info request (the client's default is to wait forever)

# Root-level files that loading a model and its tokenizer may read (weights are chosen separately).
# Remote-code modules (*.py) come along so that an explicit trust_remote_code can work offline;
# they are never executed unless the loader is told to.
_SUPPORT_PATTERNS = (
    "config.json",
    "generation_config.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab*",
    "merges*",
    "*.tiktoken",
    "spiece.model",
    "sentencepiece*.model",
    "chat_template*",
    "*.py",
)

@dataclass(frozen=True)
class ModelSnapshot:
    """A downloaded checkpoint.

    `path` is the local snapshot directory (the Hub cache's `snapshots/<sha>`), holding config,
    tokenizer files and the chosen weights. `weight_format` is "safetensors", "bin" or "gguf";
    for "gguf", `gguf_file` is the file's path relative to `path` (what `from_pretrained(path,
    gguf_file=...)` takes), else None. `weights` fingerprints the weight files by their Hub blob
    ids ("sha256:<hex>"): it stays the same across commits that leave the weights alone (a card
    update, say); None when the Hub does not list blob ids.
    """

    path: Path
    sha: str
    weight_format: str
    weight_files: tuple[str, ...]
    gguf_file: str | None = None
    weights: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        return self.path / self.gguf_file if self.gguf_file else None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection/timeout exception classes of whichever HTTP stack `huggingface_hub` uses."""
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        classes.extend(getattr(mod, name) for name in names if hasattr(mod, name))
    return tuple(classes)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, pattern) for pattern in patterns)


class Hub:
    """The Hub as maxact-card uses it.

    `token`: an explicit token (--token); None lets `huggingface_hub` find one (HF_TOKEN, then
    the cached login). `endpoint`: the Hub URL; None means HF_ENDPOINT or https://huggingface.co.
    """

    def __init__(self, token: str | None = None, endpoint: str | None = None, *, progress: bool = True) -> None:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import disable_progress_bars

        if not progress:
            disable_progress_bars()
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self._token = token or None
        self._api = HfApi(
            endpoint=self.endpoint, token=self._token, library_name=_LIBRARY, library_version=__version__
        )
        self._transport = _transport_errors()

    def __repr__(self) -> str:
        return f"Hub(endpoint={self.endpoint!r})"

    # ---- reading -------------------------------------------------------------------------------

    def resolve_revision(self, repo_id: str, revision: str | None = None, *, repo_type: str = "model") -> str:
        """The commit sha that `revision` (branch, tag, refs/pr/N or sha; None: main) points to."""
        with self._errors(repo_id, revision=revision, repo_type=repo_type):
            info = self._api.repo_info(repo_id, revision=revision, repo_type=repo_type, timeout=_INFO_TIMEOUT)
        if not info.sha:
            raise HubError(f"the Hub at {self.endpoint} did not return a commit for '{repo_id}'; try again")
        return info.sha

    def download_model(self, repo_id: str, sha: str, *, gguf_file: str | None = None) -> ModelSnapshot:
        """Download config, tokenizer files and one set of weights of `repo_id` at `sha`.

        Weights: the root *.safetensors (only the shards its index lists, when there is one), else
        pytorch_model*.bin (same rule), else one *.gguf: `gguf_file` if given, else the only one,
        else the most precise by its quantization tag. Nothing else (README, images, original/
        checkpoints, other formats) is requested. Raises NoWeightsError when there are none.
        """
        info, fmt, weights, chosen_gguf, weights_id = self._weights_plan(repo_id, sha, gguf_file)
        commit = info.sha or sha
        names = sorted(s.rfilename for s in info.siblings or [])
        support = [n for n in names if "/" not in n and _matches(n, _SUPPORT_PATTERNS)]
        wanted = sorted(set(support) | set(weights))
        with self._errors(repo_id, revision=commit):
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                repo_id,
                revision=commit,
                allow_patterns=[glob.escape(n) for n in wanted],
                endpoint=self.endpoint,
                token=self._token,
                library_name=_LIBRARY,
                library_version=__version__,
            )
        return ModelSnapshot(Path(local), commit, fmt, tuple(weights), chosen_gguf, weights_id)

    def weights_fingerprint(self, repo_id: str, sha: str, *, gguf_file: str | None = None) -> str | None:
        """The fingerprint `download_model` would give the weights at `sha`, without downloading them."""
        return self._weights_plan(repo_id, sha, gguf_file)[4]

    def _weights_plan(self, repo_id: str, sha: str, gguf_file: str | None) -> tuple[Any, str, list[str], str | None, str | None]:
        """(repo info, format, weight files, chosen gguf, fingerprint) at `sha`: file metadata only."""
        with self._errors(repo_id, revision=sha):
            info = self._api.model_info(repo_id, revision=sha, timeout=_INFO_TIMEOUT, files_metadata=True)
        commit = info.sha or sha
        siblings = {s.rfilename: s for s in info.siblings or []}
        fmt, weights, chosen = pick_weights(sorted(siblings), lambda name: self._index_shards(repo_id, commit, name),
                                            gguf_file, f"repo '{repo_id}'@{commit[:12]}")
        oids = ((n, siblings[n].lfs.sha256 if siblings[n].lfs is not None else siblings[n].blob_id) for n in weights)
        return info, fmt, weights, chosen, fingerprint(oids)

    def download_dataset_file(self, repo_id: str, path_in_repo: str, revision: str | None = None) -> Path:
        """One file of a dataset repo, from the local cache when it is already there."""
        return self._download(repo_id, path_in_repo, revision, repo_type="dataset")

    def read_text(self, repo_id: str, path_in_repo: str, revision: str) -> str | None:
        """A text file of a model repo at `revision`; None when the file does not exist there."""
        from huggingface_hub.errors import RemoteEntryNotFoundError

        with self._errors(repo_id, revision=revision, path=path_in_repo):
            try:
                local = self._hf_hub_download(repo_id, path_in_repo, revision, "model")
            except RemoteEntryNotFoundError:
                return None
        try:
            return Path(local).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HubError(f"'{path_in_repo}' of '{repo_id}' at '{revision}' is not UTF-8 text") from exc

    def whoami(self) -> str:
        """The user name of the token; AuthError when there is no token or it is invalid."""
        return self._whoami()["name"]

    def check_write(self, repo_id: str) -> str:
        """The user name of a token that may open a pull request on `repo_id`; AuthError, before any
        long work, for no token, an invalid one, or a read-only one (a fine-grained token's rights
        show only when it writes)."""
        info = self._whoami()
        role = (info["auth"].get("accessToken") or {}).get("role") if isinstance(info["auth"], dict) else None
        if role == "read":
            raise AuthError(f"no write access to '{repo_id}' on {self.endpoint}: the token is read-only; pass a token "
                            "with write access (or run with --dry-run to see the change)")
        return info["name"]

    def _whoami(self) -> dict[str, Any]:
        if not self._effective_token():
            raise AuthError(f"no Hub token: pass --token, set HF_TOKEN or run `hf auth login` ({self.endpoint})")
        with self._errors(None):
            info = self._api.whoami()
            return {"name": info["name"], "auth": info.get("auth") or {}}  # another shape: mapped as not the Hub

    # ---- pull requests -----------------------------------------------------------------------

    def find_open_pr(self, repo_id: str, *, author: str, title: str) -> int | None:
        """The number of the newest open PR by `author` titled exactly `title`, or None."""
        with self._errors(repo_id):
            found = [
                d.num
                for d in self._api.get_repo_discussions(
                    repo_id, author=author, discussion_type="pull_request", discussion_status="open"
                )
                if d.is_pull_request and d.status == "open" and d.author == author and d.title == title
            ]
        return max(found, default=None)

    def open_prs(self, repo_id: str, *, title: str) -> list[tuple[int, str]]:
        """(number, author) of every open pull request titled exactly `title`, oldest first."""
        with self._errors(repo_id):
            found = [(d.num, d.author) for d in self._api.get_repo_discussions(
                repo_id, discussion_type="pull_request", discussion_status="open")
                if d.is_pull_request and d.status == "open" and d.title == title]
        return sorted(found)

    def close_pr(self, repo_id: str, pr_num: int, *, comment: str) -> None:
        """Close pull request `pr_num` with a comment saying why."""
        self._require_token(repo_id)
        with self._errors(repo_id, write=True):
            self._api.change_discussion_status(repo_id, pr_num, "closed", comment=comment)

    def pr_head_text(self, repo_id: str, pr_num: int, path_in_repo: str) -> str | None:
        """A file as it stands on refs/pr/`pr_num`; None when it is not there."""
        return self.read_text(repo_id, path_in_repo, f"refs/pr/{pr_num}")

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        message: str,
        description: str,
        parent_sha: str | None = None,
        pr_num: int | None = None,
        create_pr: bool = False,
    ) -> tuple[str, int | None]:
        """Write `files` (path in repo -> bytes) in one commit and return (url, pr_num).

        create_pr=True opens a PR branching from `parent_sha` (the audited commit; None: main's
        head) and returns its URL and number. pr_num=N pushes onto refs/pr/N (`parent_sha` is
        then ignored: the PR head moves on its own). Otherwise the commit goes to main, and
        `parent_sha`, when given, must still be main's head. When every file already has that
        content the client makes no commit and pr_num comes back None.
        """
        if create_pr and pr_num is not None:
            raise UsageError("commit: pass either create_pr=True or pr_num=N, not both")
        if not files:
            raise UsageError("commit: no files to write")
        self._require_token(repo_id)
        from huggingface_hub import CommitOperationAdd

        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        revision = f"refs/pr/{pr_num}" if pr_num is not None else None
        with self._errors(repo_id, revision=revision, write=True):
            info = self._api.create_commit(
                repo_id,
                operations,
                commit_message=message,
                commit_description=description,
                revision=revision,
                create_pr=create_pr,
                parent_commit=parent_sha if pr_num is None else None,
            )
        if pr_num is not None:
            return f"{self._repo_url(repo_id)}/discussions/{pr_num}", pr_num
        if create_pr and info.pr_url:
            return info.pr_url, info.pr_num
        return info.commit_url, None

    # ---- internals -----------------------------------------------------------------------------

    def _repo_url(self, repo_id: str, repo_type: str = "model") -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    def _hf_hub_download(self, repo_id: str, path_in_repo: str, revision: str | None, repo_type: str) -> str:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(
            repo_id,
            path_in_repo,
            repo_type=repo_type,
            revision=revision,
            endpoint=self.endpoint,
            token=self._token,
            library_name=_LIBRARY,
            library_version=__version__,
        )

    def _download(self, repo_id: str, path_in_repo: str, revision: str | None, repo_type: str) -> Path:
        with self._errors(repo_id, revision=revision, repo_type=repo_type, path=path_in_repo):
            return Path(self._hf_hub_download(repo_id, path_in_repo, revision, repo_type))

    def _index_shards(self, repo_id: str, sha: str, index_name: str) -> set[str]:
        return index_shards(self._download(repo_id, index_name, sha, "model").read_text(encoding="utf-8"))

    def _effective_token(self) -> str | None:
        if self._token:
            return self._token
        from huggingface_hub import get_token

        try:
            return get_token()
        except Exception:  # an unusable token source is the same as none here
            return None

    def has_token(self) -> bool:
        return bool(self._effective_token())

    def _require_token(self, repo_id: str) -> None:
        if not self._effective_token():
            raise AuthError(
                f"writing to '{repo_id}' on {self.endpoint} needs a token with write access: pass --token, "
                "set HF_TOKEN or run `hf auth login` (or use --dry-run to see the change)"
            )

    def _scrub(self, text: str) -> str:
        token = self._effective_token()
        return text.replace(token, "***") if token else text

    @contextmanager
    def _errors(
        self,
        repo_id: str | None,
        *,
        revision: str | None = None,
        repo_type: str = "model",
        path: str | None = None,
        write: bool = False,
    ) -> Iterator[None]:
        """Map whatever `huggingface_hub` or the HTTP stack raises to one MaxActCardError."""
        try:
            yield
        except MaxActCardError:
            raise
        except Exception as exc:
            mapped = self._map_error(exc, repo_id, revision=revision, repo_type=repo_type, path=path, write=write)
            if mapped is None:
                raise
            raise mapped from exc

    def _map_error(
        self, exc: Exception, repo_id: str | None, *, revision: str | None, repo_type: str, path: str | None,
        write: bool,
    ) -> MaxActCardError | None:
        from huggingface_hub import errors as hf

        kind = "model" if repo_type == "model" else repo_type
        repo = f"{kind} repo '{repo_id}'"
        missing = CorpusError if repo_type == "dataset" else ModelNotFoundError
        where = self.endpoint
        msg: MaxActCardError | None = None

        if isinstance(exc, hf.GatedRepoError):
            msg = GatedRepoError(
                f"{repo} is gated: accept its terms at {self._repo_url(repo_id or '', repo_type)} "
                "and pass --token or set HF_TOKEN (a token of the account that accepted them)"
            )
        elif isinstance(exc, hf.RevisionNotFoundError):
            msg = missing(
                f"no revision '{revision or 'main'}' in {repo} on {where}: "
                "pass a branch, tag or commit sha that exists"
            )
        elif isinstance(exc, hf.RepositoryNotFoundError):
            msg = missing(f"no {kind} repo '{repo_id}' on {where} (or it is private: pass --token / set HF_TOKEN)")
        elif isinstance(exc, hf.RemoteEntryNotFoundError):
            msg = missing(f"no file '{path}' in {repo} at '{revision or 'main'}' on {where}: check the file name")
        elif isinstance(exc, hf.HFValidationError):
            msg = UsageError(f"'{repo_id}' is not a valid repo id (expected 'namespace/name'): {exc}")
        elif isinstance(exc, hf.LocalTokenNotFoundError):
            msg = AuthError(f"no Hub token: pass --token, set HF_TOKEN or run `hf auth login` ({where})")
        elif isinstance(exc, hf.HfHubHTTPError) and exc.response is not None:
            msg = self._map_status(exc, repo_id, repo, write)
        elif isinstance(exc, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, hf.FileMetadataError)):
            msg = NetworkError(self._unreachable(self._root_cause(exc)))
        elif isinstance(exc, self._transport):
            msg = NetworkError(self._unreachable(exc))
        elif isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)):
            # A 200 that is not the Hub's API: an HTML page, or JSON of another shape.
            msg = NetworkError(f"the server at {where} answered, but not as the Hugging Face Hub does "
                               f"({type(exc).__name__}); check HF_ENDPOINT, and any proxy or captive portal "
                               "between you and the Hub")
        if msg is not None:
            msg.args = (self._scrub(str(msg)),)
        return msg

    def _map_status(self, exc: Any, repo_id: str | None, repo: str, write: bool) -> MaxActCardError:
        status = exc.response.status_code
        where = self.endpoint
        if status == 401:
            if self._effective_token():
                return AuthError(
                    f"the Hub at {where} rejected the token (401): it is invalid or expired; "
                    "pass a valid --token, set HF_TOKEN or run `hf auth login`"
                )
            return AuthError(f"the Hub at {where} needs a token for {repo} (401): pass --token or set HF_TOKEN")
        if status == 403 and write:
            return AuthError(
                f"no write access to '{repo_id}' on {where}: run with --dry-run to see the change, "
                "or open the PR from a fork/with a token that has write access"
            )
        if status == 403:
            return AuthError(f"the Hub at {where} refused access to {repo} (403): use a token that may read it")
        if status == 412:
            return HubError(f"{repo} changed while the commit was prepared (412): run again")
        if status == 429:
            return HubError(f"the Hub at {where} is rate-limiting requests (429): wait a minute and run again")
        if status >= 500 or status == 408:
            return NetworkError(self._unreachable(exc))
        detail = (getattr(exc, "server_message", None) or "").strip().splitlines()
        extra = f": {detail[0]}" if detail else ""
        return HubError(f"the Hub at {where} answered HTTP {status} for {repo}{extra}")

    @staticmethod
    def _root_cause(exc: BaseException) -> BaseException:
        seen = {id(exc)}
        cause = exc
        while True:
            nxt = cause.__cause__ or cause.__context__
            if nxt is None or id(nxt) in seen:
                return cause
            seen.add(id(nxt))
            cause = nxt

    def _unreachable(self, cause: BaseException) -> str:
        response = getattr(cause, "response", None)
        status = getattr(response, "status_code", None) if response is not None else None
        if status is not None:
            reason = f"HTTP {status}"
        else:
            text = str(cause).strip().splitlines()
            reason = type(cause).__name__ + (f": {text[0]}" if text else "")
        return f"cannot reach the Hub at {self.endpoint} ({reason}); check your connection or HF_ENDPOINT"


def lazy_hub(token: str | None, *, progress: bool = True) -> Callable[[], Hub]:
    """A factory of one `Hub`, made at its first call: work that never reaches the Hub never
    imports huggingface_hub."""
    made: list[Hub] = []

    def get() -> Hub:
        if not made:
            made.append(Hub(token=token, progress=progress))
        return made[0]

    return get
