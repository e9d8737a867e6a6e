"""An in-memory, Hub-compatible HTTP server for tests.

It speaks the subset of the Hugging Face Hub HTTP API that `huggingface_hub` uses for reading
repos (repo info, tree listing, file resolve with the Hub's headers, LFS redirects to a separate
"CDN" origin), writing them (preupload, ndjson commits, pull requests on ``refs/pr/N``), and
discussions (list, details, comment). The real client is driven over real HTTP.

Usage::

    server = HubServer()
    server.start()                  # or HubServer(port=...); server.url is the endpoint
    state = server.state
    state.add_token("hf_write", user="alice", role="write")
    sha = state.create_repo("alice/tiny", {"config.json": b"{}"})
    ...
    server.stop()

`HubState` is the storage and the Python API tests use to arrange and inspect things; every
method takes the state lock, so it is safe to call while the server is serving.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import itertools
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset"}
URL_PREFIX = {"model": "", "dataset": "datasets/"}
# Suffixes stored with Git LFS (as the Hub's default .gitattributes does): served by redirect.
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth", ".pt", ".ckpt", ".h5", ".onnx", ".msgpack", ".model")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
PR_REF_RE = re.compile(r"^refs/pr/(\d+)$")
DISCUSSIONS_PAGE_SIZE = 50
_API_SUBPATHS = {"revision", "tree", "preupload", "commit", "discussions", "paths-info"}


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def lfs_pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Token:
    user: str
    role: str  # "read" or "write"


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    files: dict[str, bytes]
    message: str
    description: str
    author: str
    date: str


@dataclass
class Discussion:
    num: int
    title: str
    author: str
    is_pull_request: bool
    status: str = "open"
    created_at: str = field(default_factory=now_iso)
    base_sha: str | None = None  # the commit the PR branched from
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool = False
    gated: str | bool = False  # False, "auto" or "manual"
    owner: str = ""
    authorized: set[str] = field(default_factory=set)  # users who accepted the gate
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main", "refs/pr/1", ... -> sha
    discussions: list[Discussion] = field(default_factory=list)
    created_at: str = field(default_factory=now_iso)


class ApiError(Exception):
    """An error answer: status, X-Error-Code and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class HubState:
    """Repos, tokens, request log and fault switch of one server."""

    def __init__(self, url: str = "") -> None:
        self.url = url  # the endpoint, for building expected URLs in tests
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.repos: dict[tuple[str, str], Repo] = {}
            self.tokens: dict[str, Token] = {}
            self.blobs: dict[str, bytes] = {}  # LFS objects by sha256
            self.requests: list[tuple[str, str]] = []  # (method, path with query)
            self.file_requests: Counter[tuple[str, str, str]] = Counter()  # (repo_type, repo_id, path)
            self.cdn_authorization_seen: list[str] = []  # CDN paths requested with an Authorization header
            self.fault: str | None = None
            self.fault_match: str | None = None
            self._counter = itertools.count()

    # ---- arrange -------------------------------------------------------------------------

    def add_token(self, token: str, user: str, role: str = "read") -> None:
        if role not in ("read", "write"):
            raise ValueError("role must be 'read' or 'write'")
        with self.lock:
            self.tokens[token] = Token(user=user, role=role)

    def create_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        repo_type: str = "model",
        private: bool = False,
        gated: str | bool = False,
        owner: str | None = None,
        message: str = "initial commit",
    ) -> str:
        """Create a repo whose `main` holds `files` (one commit); return that commit's sha."""
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                raise ValueError(f"{repo_type} repo {repo_id} exists")
            repo = Repo(
                repo_id=repo_id,
                repo_type=repo_type,
                private=private,
                gated=gated,
                owner=owner or repo_id.split("/")[0],
            )
            self.repos[key] = repo
            return self._new_commit(repo, None, dict(files or {}), message, "", repo.owner, ref="main")

    def add_commit(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        delete: tuple[str, ...] = (),
        ref: str = "main",
        message: str = "update",
        repo_type: str = "model",
    ) -> str:
        """Commit on top of `ref` (a branch, created from main if new, or refs/pr/N)."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            parent = repo.refs.get(ref, repo.refs.get("main"))
            tree = dict(repo.commits[parent].files) if parent else {}
            tree.update(files or {})
            for path in delete:
                tree.pop(path, None)
            return self._new_commit(repo, parent, tree, message, "", repo.owner, ref=ref)

    def grant(self, repo_id: str, user: str, repo_type: str = "model") -> None:
        """Let `user` through the gate (as if they accepted the terms)."""
        with self.lock:
            self.repo(repo_id, repo_type).authorized.add(user)

    def set_fault(self, mode: str | None, match: str | None = None) -> None:
        """Fail requests: "500" answers HTTP 500, "close" drops the connection without an answer,
        "html" answers 200 with an HTML page and "shape" 200 with JSON of another shape (what a
        captive portal or a misconfigured proxy sends).

        `match` limits the fault to request paths containing that string; None clears the fault.
        """
        if mode not in (None, "500", "503", "close", "html", "shape"):
            raise ValueError(f"unknown fault {mode!r}")
        with self.lock:
            self.fault = mode
            self.fault_match = match

    # ---- inspect ---------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self.lock:
            return self.repos[(repo_type, repo_id)]

    def head(self, repo_id: str, ref: str = "main", repo_type: str = "model") -> str:
        with self.lock:
            return self.repo(repo_id, repo_type).refs[ref]

    def commit_info(self, repo_id: str, sha: str, repo_type: str = "model") -> Commit:
        with self.lock:
            return self.repo(repo_id, repo_type).commits[sha]

    def files_at(self, repo_id: str, ref: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The tree at a ref or sha: path -> bytes."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            return dict(repo.commits[self._resolve(repo, ref)].files)

    def pull_requests(self, repo_id: str, repo_type: str = "model") -> list[Discussion]:
        with self.lock:
            return [d for d in self.repo(repo_id, repo_type).discussions if d.is_pull_request]

    def requested_files(self, repo_id: str, repo_type: str = "model") -> set[str]:
        """Paths of `repo_id` that were HEAD/GET through /resolve or fetched from the CDN."""
        with self.lock:
            return {p for (t, r, p) in self.file_requests if (t, r) == (repo_type, repo_id)}

    def request_count(self, method: str | None = None, contains: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    # ---- internals ---------------------------------------------------------------------------

    def _new_commit(
        self, repo: Repo, parent: str | None, files: dict[str, bytes], message: str, description: str,
        author: str, ref: str | None,
    ) -> str:
        digest = hashlib.sha1()
        digest.update(f"{parent}\n{message}\n{description}\n{next(self._counter)}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha(files[path])}\n".encode())
            if is_lfs(path):
                self.blobs[hashlib.sha256(files[path]).hexdigest()] = files[path]
        sha = digest.hexdigest()
        repo.commits[sha] = Commit(sha, parent, files, message, description, author, now_iso())
        if ref is not None:
            repo.refs[ref] = sha
        return sha

    def _resolve(self, repo: Repo, revision: str) -> str:
        rev = revision.removeprefix("refs/heads/")
        if rev in repo.refs:
            return repo.refs[rev]
        if SHA_RE.match(rev) and rev in repo.commits:
            return rev
        if len(rev) >= 7 and re.fullmatch(r"[0-9a-f]+", rev):
            matches = [s for s in repo.commits if s.startswith(rev)]
            if len(matches) == 1:
                return matches[0]
        raise ApiError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _tree_entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    prefix = prefix.strip("/")
    base = prefix + "/" if prefix else ""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(files):
        if not path.startswith(base):
            continue
        rest = path[len(base):]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            folder = base + "/".join(parts[:depth])
            if recursive or depth == 1:
                entries.setdefault(
                    folder,
                    {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0, "path": folder},
                )
            if not recursive:
                break
        if recursive or len(parts) == 1:
            entries[path] = _file_entry(path, files[path])
    if prefix and not entries and prefix not in files:
        raise ApiError(404, f"Entry not found: {prefix}", "EntryNotFound")
    return list(entries.values())


def _file_entry(path: str, data: bytes) -> dict[str, Any]:
    if is_lfs(path):
        pointer = lfs_pointer(data)
        return {
            "type": "file",
            "oid": git_blob_sha(pointer),
            "size": len(data),
            "path": path,
            "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)},
        }
    return {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}


def _unified_diff(old: dict[str, bytes], new: dict[str, bytes]) -> str:
    chunks = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        a_lines = (a or b"").decode("utf-8", "replace").splitlines(keepends=True)
        b_lines = (b or b"").decode("utf-8", "replace").splitlines(keepends=True)
        chunks.append(f"diff --git a/{path} b/{path}\n")
        chunks.extend(
            difflib.unified_diff(
                a_lines, b_lines, "/dev/null" if a is None else f"a/{path}", "/dev/null" if b is None else f"b/{path}"
            )
        )
    return "".join(chunks)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ---- plumbing --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    @property
    def state(self) -> HubState:
        return self.server.state

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        with self.state.lock:
            self.state.requests.append((method, self.path))
            fault, match = self.state.fault, self.state.fault_match
        if fault and (match is None or match in self.path):
            if fault == "close":
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            if fault == "html":
                self._send(200, b"<html><body>Sign in to the network</body></html>", method=method,
                           content_type="text/html; charset=utf-8")
                return
            if fault == "shape":
                self._send(200, json.dumps(["not", "the", "Hub"]).encode(), method=method)
                return
            message = "Internal Error - We're working hard to fix this as soon as possible!"
            self._send_error(ApiError(int(fault), message), method)
            return
        try:
            if self.server.is_cdn:
                self._cdn(method)
            else:
                self._route(method)
        except ApiError as err:
            self._send_error(err, method)

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "GET",
        content_type: str = "application/json; charset=utf-8",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _send_error(self, err: ApiError, method: str) -> None:
        headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode(), **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers, method)

    # ---- auth ----------------------------------------------------------------------------------

    def _token(self) -> Token | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        value = auth.removeprefix("Bearer ").strip()
        token = self.state.tokens.get(value)
        if token is None:
            raise ApiError(401, "Invalid credentials in Authorization header")
        return token

    def _repo(self, repo_type: str, repo_id: str, token: Token | None) -> Repo:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and (token is None or token.user != repo.owner)):
            status = 401 if token is None else 404
            raise ApiError(status, "Repository not found", "RepoNotFound")
        return repo

    def _check_gate(self, repo: Repo, token: Token | None, path: str) -> None:
        if not repo.gated or path in ("README.md", ".gitattributes"):
            return
        if token is not None and (token.user == repo.owner or token.user in repo.authorized):
            return
        url = f"{self.server.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"
        if token is None:
            message = (
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            raise ApiError(401, message, "GatedRepo")
        message = (
            f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
            f"Visit {url} to ask for access."
        )
        raise ApiError(403, message, "GatedRepo")

    def _check_write(self, repo: Repo, token: Token | None, ref: str | None, create_pr: bool) -> None:
        if token is None:
            raise ApiError(401, "You must be authenticated to write to this repo")
        if token.role != "write":
            raise ApiError(403, "You don't have the rights to write with this token (read-only token)")
        if create_pr or token.user == repo.owner:
            return
        match = PR_REF_RE.match(ref or "")
        if match:
            pr = self._discussion(repo, int(match.group(1)))
            if pr.author == token.user:
                return
        raise ApiError(403, f"You don't have the rights to create a commit on {ref} of {repo.repo_id}")

    # ---- routing -------------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        seg = self.segments
        if seg[:2] == ["api", "whoami-v2"] and method == "GET":
            return self._whoami()
        if seg[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._send_json({"errors": [], "warnings": []})
        if len(seg) >= 3 and seg[0] == "api" and seg[1] in REPO_TYPES:
            repo_type = REPO_TYPES[seg[1]]
            rest = seg[2:]
            with self.state.lock:  # "ns/name" if that repo exists, else a namespace-less id like "gpt2"
                two = len(rest) >= 2 and (
                    (repo_type, "/".join(rest[:2])) in self.state.repos
                    or ((repo_type, rest[0]) not in self.state.repos and rest[1] not in _API_SUBPATHS)
                )
            repo_id, rest = ("/".join(rest[:2]), rest[2:]) if two else (rest[0], rest[1:])
            return self._api(method, repo_type, repo_id, rest)
        # /[datasets/]{repo_id}/resolve/{rev}/{path}
        repo_type = "model"
        if seg and seg[0] == "datasets":
            repo_type, seg = "dataset", seg[1:]
        for idx in (1, 2):
            if len(seg) > idx + 2 and seg[idx] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve_file(method, repo_type, "/".join(seg[:idx]), seg[idx + 1], "/".join(seg[idx + 2:]))
        raise ApiError(404, "Sorry, we can't find the page you are looking for.")

    def _api(self, method: str, repo_type: str, repo_id: str, rest: list[str]) -> None:
        with self.state.lock:
            token = self._token()
            repo = self._repo(repo_type, repo_id, token)
            if method == "GET" and not rest:
                return self._info(repo, "main")
            if method == "GET" and rest[0] == "revision" and len(rest) >= 2:
                return self._info(repo, "/".join(rest[1:]))
            if method == "GET" and rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo, rest[1], "/".join(rest[2:]))
            if method == "POST" and rest[0] == "preupload" and len(rest) >= 2:
                return self._preupload(repo, token, "/".join(rest[1:]))
            if method == "POST" and rest[0] == "commit" and len(rest) >= 2:
                return self._commit(repo, token, "/".join(rest[1:]))
            if rest[0] == "discussions":
                if method == "GET" and len(rest) == 1:
                    return self._list_discussions(repo)
                if method == "GET" and len(rest) == 2:
                    return self._discussion_details(repo, int(rest[1]))
                if method == "POST" and len(rest) == 3 and rest[2] == "comment":
                    return self._comment(repo, token, int(rest[1]))
                if method == "POST" and len(rest) == 3 and rest[2] == "status":
                    return self._status(repo, token, int(rest[1]))
        raise ApiError(404, "Sorry, we can't find the page you are looking for.")

    # ---- endpoints -----------------------------------------------------------------------------

    def _whoami(self) -> None:
        token = self._token()
        if token is None:
            raise ApiError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(token.user.encode()).hexdigest()[:24],
                "name": token.user,
                "fullname": token.user.title(),
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": token.role}},
            }
        )

    def _info(self, repo: Repo, revision: str) -> None:
        sha = self.state._resolve(repo, revision)
        commit = repo.commits[sha]
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, data in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = _file_entry(path, data)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sibling["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        data: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.owner,
            "sha": sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            data["modelId"] = repo.repo_id
        self._send_json(data)

    def _tree(self, repo: Repo, revision: str, path: str) -> None:
        sha = self.state._resolve(repo, revision)
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        self._send_json(_tree_entries(repo.commits[sha].files, path, recursive))

    def _resolve_file(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        token = self._token()
        with self.state.lock:
            repo = self._repo(repo_type, repo_id, token)
            self.state.file_requests[(repo_type, repo_id, path)] += 1
            sha = self.state._resolve(repo, revision)
            files = repo.commits[sha].files
            if path not in files:
                raise ApiError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            self._check_gate(repo, token, path)
            data = files[path]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if is_lfs(path):
            sha256 = hashlib.sha256(data).hexdigest()
            cdn = self.server.cdn_url
            location = f"{cdn}/repos/{URL_PREFIX[repo_type]}{repo_id}/{sha256}/{quote(path)}"
            headers.update(
                {
                    "ETag": f'"{git_blob_sha(lfs_pointer(data))}"',
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "Location": location,
                }
            )
            body = f"Found. Redirecting to {location}".encode()
            return self._send(302, body, headers, method, content_type="text/plain; charset=utf-8")
        headers["ETag"] = f'"{git_blob_sha(data)}"'
        self._send_ranged(method, data, headers)

    def _send_ranged(self, method: str, data: bytes, headers: dict[str, str]) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            part = data[start:end + 1]
            headers = {**headers, "Content-Range": f"bytes {start}-{start + len(part) - 1}/{len(data)}"}
            return self._send(206, part, headers, method, content_type="application/octet-stream")
        self._send(200, data, headers, method, content_type="application/octet-stream")

    def _cdn(self, method: str) -> None:
        # /repos/[datasets/]{repo_id}/{sha256}/{path}
        seg = self.segments
        if not seg or seg[0] != "repos" or method not in ("GET", "HEAD"):
            raise ApiError(404, "NoSuchKey")
        seg = seg[1:]
        repo_type = "model"
        if seg[0] == "datasets":
            repo_type, seg = "dataset", seg[1:]
        idx = next((i for i, s in enumerate(seg) if re.fullmatch(r"[0-9a-f]{64}", s)), None)
        if idx is None:
            raise ApiError(404, "NoSuchKey")
        repo_id, sha256, path = "/".join(seg[:idx]), seg[idx], "/".join(seg[idx + 1:])
        with self.state.lock:
            self.state.file_requests[(repo_type, repo_id, path)] += 1
            if self.headers.get("Authorization"):
                self.state.cdn_authorization_seen.append(self.path)
            data = self.state.blobs.get(sha256)
        if data is None:
            raise ApiError(404, "NoSuchKey")
        self._send_ranged(method, data, {"ETag": f'"{sha256}"'})

    def _preupload(self, repo: Repo, token: Token | None, revision: str) -> None:
        create_pr = self.query.get("create_pr") == "1"
        self._check_write(repo, token, revision, create_pr)
        try:
            sha = self.state._resolve(repo, revision)
            current = repo.commits[sha].files
        except ApiError:
            current = {}
        payload = json.loads(self.body or b"{}")
        files = []
        for item in payload.get("files", []):
            path = item["path"]
            info: dict[str, Any] = {"path": path, "uploadMode": "regular", "shouldIgnore": False}
            if path in current:
                info["oid"] = git_blob_sha(current[path])
            files.append(info)
        self._send_json({"files": files, "commitOid": repo.refs.get("main")})

    def _commit(self, repo: Repo, token: Token | None, revision: str) -> None:
        create_pr = self.query.get("create_pr") == "1"
        self._check_write(repo, token, revision, create_pr)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise ApiError(400, "The first line must be the header")
        header = lines[0]["value"]
        parent_commit = header.get("parentCommit")
        ref = revision.removeprefix("refs/heads/")
        pr_match = PR_REF_RE.match(ref)
        if parent_commit is not None and parent_commit not in repo.commits:
            raise ApiError(400, f"Invalid parentCommit: {parent_commit}")
        if create_pr:
            base = parent_commit or self.state._resolve(repo, ref)
        else:
            if ref not in repo.refs:  # branches are not created by commits here
                raise ApiError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            base = repo.refs[ref]
            if parent_commit is not None and parent_commit != base:
                raise ApiError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(repo.commits[base].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                content = value["content"]
                base64_encoded = value.get("encoding") == "base64"
                tree[value["path"]] = base64.b64decode(content) if base64_encoded else content.encode()
            elif key == "deletedFile":
                if value["path"] not in tree:
                    raise ApiError(404, "A file with this name doesn't exist", "EntryNotFound")
                del tree[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {p: d for p, d in tree.items() if not p.startswith(prefix)}
            elif key == "lfsFile":
                data = self.state.blobs.get(value["oid"])
                if data is None:
                    raise ApiError(400, f"LFS object {value['oid']} was never uploaded")
                tree[value["path"]] = data
            else:
                raise ApiError(400, f"Unknown commit operation {key!r}")
        author = token.user if token else "anonymous"
        summary, description = header.get("summary", ""), header.get("description", "")
        prefix = f"{self.server.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"
        result: dict[str, Any] = {"success": True}
        if create_pr:
            num = len(repo.discussions) + 1
            pr = Discussion(num=num, title=summary, author=author, is_pull_request=True, base_sha=base)
            pr.events.append(self._comment_event(author, description or summary))
            repo.discussions.append(pr)
            ref = f"refs/pr/{num}"
            result["pullRequestUrl"] = f"{prefix}/discussions/{num}"
        sha = self.state._new_commit(repo, base, tree, summary, description, author, ref=ref)
        pr_match = PR_REF_RE.match(ref)
        if pr_match:
            pr = self._discussion(repo, int(pr_match.group(1)))
            pr.events.append(
                {"id": sha[:24], "type": "commit", "createdAt": now_iso(), "author": {"name": author},
                 "data": {"subject": summary, "oid": sha}}
            )
        result.update(commitUrl=f"{prefix}/commit/{sha}", commitOid=sha)
        self._send_json(result)

    def _discussion(self, repo: Repo, num: int) -> Discussion:
        for discussion in repo.discussions:
            if discussion.num == num:
                return discussion
        raise ApiError(404, "Discussion not found")

    def _discussion_json(self, repo: Repo, d: Discussion) -> dict[str, Any]:
        return {
            "num": d.num,
            "title": d.title,
            "status": d.status,
            "isPullRequest": d.is_pull_request,
            "createdAt": d.created_at,
            "author": {"name": d.author},
            "repo": {"name": repo.repo_id, "type": repo.repo_type},
            "numComments": sum(1 for e in d.events if e["type"] == "comment"),
        }

    def _list_discussions(self, repo: Repo) -> None:
        kind = self.query.get("type", "all")
        status = self.query.get("status", "all")
        author = self.query.get("author")
        selected = [
            d for d in reversed(repo.discussions)
            if (kind == "all" or (kind == "pull_request") == d.is_pull_request)
            and (status == "all" or d.status == status)
            and (author is None or d.author == author)
        ]
        start = int(self.query.get("p", "0")) * DISCUSSIONS_PAGE_SIZE
        page = selected[start:start + DISCUSSIONS_PAGE_SIZE]
        self._send_json(
            {
                "discussions": [self._discussion_json(repo, d) for d in page],
                "count": len(selected),
                "start": start,
                "numClosedDiscussions": sum(1 for d in repo.discussions if d.status == "closed"),
            }
        )

    def _discussion_details(self, repo: Repo, num: int) -> None:
        d = self._discussion(repo, num)
        data = self._discussion_json(repo, d)
        data["events"] = d.events
        if d.is_pull_request:
            head = repo.refs[f"refs/pr/{d.num}"]
            base_files = repo.commits[d.base_sha].files if d.base_sha else {}
            head_files = repo.commits[head].files
            main_files = repo.commits[repo.refs["main"]].files
            changed = {p for p in set(base_files) | set(head_files) if base_files.get(p) != head_files.get(p)}
            conflicts = sorted(
                p for p in changed
                if main_files.get(p) != base_files.get(p) and main_files.get(p) != head_files.get(p)
            )
            data["changes"] = {"base": "refs/heads/main", "mergeCommitId": None}
            data["filesWithConflicts"] = conflicts
            if self.query.get("diff") == "1":
                data["diff"] = _unified_diff(base_files, head_files)
        self._send_json(data)

    def _comment_event(self, author: str, text: str) -> dict[str, Any]:
        return {
            "id": hashlib.sha1(f"{author}{text}{now_iso()}".encode()).hexdigest()[:24],
            "type": "comment",
            "createdAt": now_iso(),
            "author": {"name": author},
            "data": {"edited": False, "hidden": False, "latest": {"raw": text, "html": text}},
        }

    def _comment(self, repo: Repo, token: Token | None, num: int) -> None:
        if token is None:
            raise ApiError(401, "You must be authenticated to comment")
        if token.role != "write":
            raise ApiError(403, "You don't have the rights to comment with this token (read-only token)")
        d = self._discussion(repo, num)
        event = self._comment_event(token.user, json.loads(self.body or b"{}").get("comment", ""))
        d.events.append(event)
        self._send_json({"newMessage": event})


    def _status(self, repo: Repo, token: Token | None, num: int) -> None:
        """Open or close a discussion: its author, or a user with write access to the repo."""
        if token is None:
            raise ApiError(401, "You must be authenticated to change the status")
        d = self._discussion(repo, num)
        if token.role != "write" and token.user != d.author:
            raise ApiError(403, "You don't have the rights to change the status of this discussion")
        body = json.loads(self.body or b"{}")
        d.status = body["status"]
        if body.get("comment"):
            d.events.append(self._comment_event(token.user, body["comment"]))
        event = {"id": hashlib.sha1(f"{num}{d.status}{now_iso()}".encode()).hexdigest()[:24], "type": "status-change",
                 "createdAt": now_iso(), "author": {"name": token.user}, "data": {"status": d.status}}
        d.events.append(event)
        self._send_json({"newStatus": event})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: HubState, is_cdn: bool) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.is_cdn = is_cdn
        self.url = f"http://{address[0]}:{self.server_address[1]}"
        self.cdn_url = ""


def _cdn_host(hub_host: str) -> str:
    """Another loopback address for the CDN where the system has one (Linux: all of 127/8), so that
    the CDN is another host, as on the Hub: clients that follow same-host redirects for file
    metadata (huggingface_hub 1.x) must stop at the Hub's redirect, which carries X-Repo-Commit."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return hub_host


class HubServer:
    """The Hub API on 127.0.0.1:`port` (0: any free port) plus a CDN origin for LFS files."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.state = HubState()
        self._hub = _Server((host, port), self.state, is_cdn=False)
        self._cdn = _Server((_cdn_host(host), 0), self.state, is_cdn=True)
        self._hub.cdn_url = self._cdn.url
        self.state.url = self._hub.url
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return self._hub.url

    @property
    def cdn_url(self) -> str:
        return self._cdn.url

    def start(self) -> HubServer:
        for srv in (self._hub, self._cdn):
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._cdn):
            srv.shutdown()
            srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_dir(path: str | Path) -> dict[str, bytes]:
    """Every file under `path` as {relative posix path: bytes} (for `HubState.create_repo`)."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
