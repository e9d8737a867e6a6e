"""The text an audit runs on: the built-in corpus, local files, Hub dataset files.

Stages, each deterministic for a given seed:

* :func:`load_documents` turns a corpus spec (``builtin``, a ``.jsonl``/``.txt`` path or
  ``hf://datasets/OWNER/NAME/FILE``) into :class:`Document` objects;
* :func:`select` draws ``n`` of them, stratified by domain;
* :func:`tokenize` turns them into a :class:`TokenizedCorpus` (with a fingerprint of the ids);
* :meth:`TokenizedCorpus.split` separates calibration samples from evaluation samples;
* :func:`pad_batch` builds one right-padded batch (`measure.batches` plans them).

This module never touches the network: Hub files arrive through the ``fetch_dataset_file``
callable the caller passes in.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import CorpusError, UsageError
from .report import CorpusRecord

if TYPE_CHECKING:
    import torch

BUILTIN_NAME = "builtin-v1"
DEFAULT_DOMAIN = "default"
SPEC_FORMS = (
    "'builtin', a local .jsonl file (one JSON object per line with 'text' or 'input_ids'), "
    "a local .txt file (documents separated by blank lines), "
    "or hf://datasets/OWNER/NAME[@REVISION]/PATH.jsonl|.txt"
)
_HF_PREFIX = "hf://datasets/"
_HF_RE = re.compile(r"^hf://datasets/([A-Za-z0-9][\w.\-]*)/([\w.\-]+?)(?:@([\w.\-]+))?/(.+)$")
_JSONL_HINT = "each line must be a JSON object with 'text' or 'input_ids'"
# Text beyond this many characters per allowed token cannot reach the first max_seq_len tokens
# of any practical tokenizer; cutting it keeps a stray huge document from costing seconds.
_CHARS_PER_TOKEN_BOUND = 64


# ---------------------------------------------------------------------------------------------
# Documents and loading


@dataclass(frozen=True)
class Document:
    """One document: either raw ``text`` or pre-tokenized ``input_ids``, and its domain."""

    text: str | None
    input_ids: tuple[int, ...] | None
    domain: str

    def __post_init__(self) -> None:
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("a Document has exactly one of text and input_ids")


# fetch_dataset_file(repo_id, path_in_repo, revision or None) -> (local path, commit sha)
FetchDatasetFile = Callable[[str, str, Optional[str]], tuple[Path, str]]


def load_documents(spec: str, *, fetch_dataset_file: FetchDatasetFile | None = None) -> tuple[str, list[Document]]:
    """Read the corpus named by ``spec``; return ``(corpus name, documents)``.

    ``spec`` is ``'builtin'`` (or its full name ``'builtin-v1'``), a path to a ``.jsonl`` or ``.txt`` file, or
    ``hf://datasets/OWNER/NAME[@REVISION]/path/in/repo.jsonl`` (or ``.txt``). For a Hub file,
    ``fetch_dataset_file`` downloads it and says which commit it came from.
    The name is ``'builtin-v1'``, the local file's name, or the ``hf://`` string pinned to that
    commit (``hf://datasets/OWNER/NAME@SHA/path``), so that the report says exactly what was read.
    """
    if spec in ("builtin", BUILTIN_NAME):
        from .corpus_data import builtin_texts

        return BUILTIN_NAME, [Document(text=t, input_ids=None, domain=d) for d, t in builtin_texts()]
    if spec.startswith("hf://"):
        repo_id, revision, path_in_repo = parse_hf_spec(spec)
        if fetch_dataset_file is None:
            raise UsageError(f"corpus {spec} is a Hub file, but no way to download it was given")
        local, sha = fetch_dataset_file(repo_id, path_in_repo, revision)
        docs = _read_file(Path(local), display=spec, suffix=Path(path_in_repo).suffix.lower())
        return f"{_HF_PREFIX}{repo_id}@{sha}/{path_in_repo}", docs
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".txt"):
        raise CorpusError(f"unsupported corpus {spec!r}; pass {SPEC_FORMS}", path=spec)
    if not path.is_file():
        raise CorpusError(
            f"corpus file not found: {spec}; pass an existing file, or --corpus builtin", path=spec
        )
    return path.name, _read_file(path, display=path.name, suffix=suffix)


def parse_hf_spec(spec: str) -> tuple[str, Optional[str], str]:
    """Split ``hf://datasets/OWNER/NAME[@REVISION]/path/in/repo.jsonl`` into
    ``('OWNER/NAME', 'REVISION' or None, 'path/in/repo.jsonl')``."""
    m = _HF_RE.match(spec)
    expected = "expected hf://datasets/OWNER/NAME[@REVISION]/path/in/repo.jsonl (or .txt)"
    if not m or not spec.startswith(_HF_PREFIX):
        raise CorpusError(f"malformed Hub corpus {spec!r}; {expected}", path=spec)
    owner, name, revision, path_in_repo = m.groups()
    parts = path_in_repo.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise CorpusError(f"malformed Hub corpus {spec!r}; {expected}", path=spec)
    if Path(path_in_repo).suffix.lower() not in (".jsonl", ".txt"):
        raise CorpusError(f"unsupported Hub corpus file {spec!r}; {expected}", path=spec)
    return f"{owner}/{name}", revision, path_in_repo


def _read_file(path: Path, *, display: str, suffix: str) -> list[Document]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(
            f"corpus file not found: {path}; pass an existing file, or --corpus builtin", path=str(path)
        ) from None
    except OSError as e:
        raise CorpusError(f"cannot read corpus {display}: {e.strerror or e}", path=str(path)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(
            f"{display} line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8",
            path=str(path),
            line=line,
        ) from None
    docs = _parse_jsonl(content, display, str(path)) if suffix == ".jsonl" else _parse_txt(content)
    if not docs:
        form = "JSON lines" if suffix == ".jsonl" else "text separated by blank lines"
        raise CorpusError(f"corpus {display} is empty; it needs at least one document ({form})", path=str(path))
    return docs


def _parse_txt(content: str) -> list[Document]:
    docs: list[Document] = []
    block: list[str] = []
    for line in content.split("\n"):
        line = line.rstrip("\r")
        if line.strip():
            block.append(line)
        elif block:
            docs.append(Document(text="\n".join(block), input_ids=None, domain=DEFAULT_DOMAIN))
            block = []
    if block:
        docs.append(Document(text="\n".join(block), input_ids=None, domain=DEFAULT_DOMAIN))
    return docs


def _parse_jsonl(content: str, display: str, path: str) -> list[Document]:
    docs: list[Document] = []
    # split on \n only: JSON strings may not hold raw newlines, and \r\n files still parse.
    for lineno, raw in enumerate(content.split("\n"), start=1):
        if not raw.strip():
            continue

        def bad(problem: str) -> CorpusError:
            return CorpusError(f"{display} line {lineno}: {problem}; {_JSONL_HINT}", path=path, line=lineno)

        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise bad(f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise bad(f"a JSON {_json_type(obj)}, not an object")
        has_text, has_ids = "text" in obj, "input_ids" in obj
        if has_text and has_ids:
            raise bad("has both 'text' and 'input_ids' (keep one)")
        if not has_text and not has_ids:
            keys = ", ".join(repr(k) for k in list(obj)[:5]) or "none"
            raise bad(f"no 'text' or 'input_ids' field (keys: {keys})")
        domain = obj.get("domain", DEFAULT_DOMAIN)
        if not isinstance(domain, str) or not domain:
            raise bad(f"'domain' must be a non-empty string, got {_json_type(domain)}")
        if has_text:
            text = obj["text"]
            if not isinstance(text, str):
                raise bad(f"'text' must be a string, got {_json_type(text)}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise bad(f"'text' holds an unpaired surrogate (\\u{ord(text[e.start]):04x}) at character {e.start}, "
                          "which is not Unicode text") from None
            docs.append(Document(text=text, input_ids=None, domain=domain))
        else:
            ids = obj["input_ids"]
            if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in ids
            ):
                raise bad("'input_ids' must be a list of non-negative integers")
            docs.append(Document(text=None, input_ids=tuple(ids), domain=domain))
    return docs


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# ---------------------------------------------------------------------------------------------
# Stratified selection


def _quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder shares of ``n`` proportional to ``sizes`` (domain -> size), keys sorted.

    Ties in the remainder go to the larger domain, then to the name that sorts first. When
    ``n`` is at least the number of domains every domain gets one, taken from the domain that is
    furthest above its exact share.
    """
    names = sorted(sizes)
    total = sum(sizes.values())
    if n >= total:
        return {d: sizes[d] for d in names}
    exact = {d: Fraction(n * sizes[d], total) for d in names}
    quota = {d: int(exact[d]) for d in names}
    left = n - sum(quota.values())
    by_remainder = sorted(names, key=lambda d: (-(exact[d] - quota[d]), -sizes[d], d))
    for d in by_remainder[:left]:
        quota[d] += 1
    if n >= len(names):
        for d in names:
            if quota[d] == 0:
                # take one from the domain furthest above its exact share among those holding two or
                # more (one always exists: n >= number of domains and this one holds none)
                donor = min(
                    (x for x in names if quota[x] >= 2), key=lambda x: (exact[x] - quota[x], -sizes[x], x)
                )
                quota[donor] -= 1
                quota[d] = 1
    return quota


def _interleave(groups: dict[str, list[int]]) -> list[int]:
    """Merge per-domain lists so that every prefix is close to proportional (keys sorted)."""
    keyed = []
    for rank, d in enumerate(sorted(groups)):
        items = groups[d]
        for i, item in enumerate(items):
            keyed.append((Fraction(2 * i + 1, 2 * len(items)), rank, item))
    keyed.sort()
    return [item for _, _, item in keyed]


def select(documents: list[Document], n: int, seed: int) -> list[Document]:
    """Pick ``n`` documents, stratified by domain, deterministically for ``seed``.

    Each domain gets a share proportional to its size (largest remainder), at least one when
    ``n`` is at least the number of domains. Within a domain the order is a
    ``random.Random(seed)`` shuffle of the input order; the result interleaves the domains so that
    any prefix stays roughly proportional. ``n`` beyond the number of documents returns all of
    them, in the same kind of order.
    """
    if n < 0:
        raise UsageError(f"the number of samples must be >= 0, got {n}")
    by_domain: dict[str, list[int]] = {}
    for i, doc in enumerate(documents):
        by_domain.setdefault(doc.domain, []).append(i)
    quota = _quotas({d: len(v) for d, v in by_domain.items()}, n)
    chosen: dict[str, list[int]] = {}
    for d in sorted(by_domain):
        order = list(by_domain[d])
        random.Random(seed).shuffle(order)
        if quota[d]:
            chosen[d] = order[: quota[d]]
    return [documents[i] for i in _interleave(chosen)]


# ---------------------------------------------------------------------------------------------
# Tokenized corpus


@dataclass(frozen=True)
class TokenizedCorpus:
    """The token ids an audit feeds the model, one tuple per sample, and where they came from."""

    name: str
    input_ids: tuple[tuple[int, ...], ...]
    domains: tuple[str, ...]
    bos_added: bool
    max_seq_len: int
    seed: int
    documents: Optional[str] = None  # documents_fingerprint of the selection (None for a subset of it)

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.domains):
            raise ValueError("input_ids and domains must have the same length")

    def __len__(self) -> int:
        return len(self.input_ids)

    @cached_property
    def fingerprint(self) -> str:
        """``sha256:`` + hex digest of the ids: per sample a little-endian uint32 length, then int32 ids."""
        h = hashlib.sha256()
        h.update(struct.pack("<I", len(self.input_ids)))
        for ids in self.input_ids:
            h.update(struct.pack(f"<I{len(ids)}i", len(ids), *ids))
        return "sha256:" + h.hexdigest()

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)

    def domain_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in sorted(self.domains):
            counts[d] = counts.get(d, 0) + 1
        return counts

    def record(self) -> CorpusRecord:
        return CorpusRecord(
            name=self.name,
            fingerprint=self.fingerprint,
            samples=len(self.input_ids),
            tokens=self.tokens,
            bos_added=self.bos_added,
            max_seq_len=self.max_seq_len,
            seed=self.seed,
            domains=self.domain_counts(),
            documents=self.documents,
        )

    def subset(self, indices: Sequence[int]) -> TokenizedCorpus:
        """The samples at ``indices``, in that order, with the same name, seed and settings."""
        return TokenizedCorpus(
            name=self.name,
            input_ids=tuple(self.input_ids[i] for i in indices),
            domains=tuple(self.domains[i] for i in indices),
            bos_added=self.bos_added,
            max_seq_len=self.max_seq_len,
            seed=self.seed,
        )

    def split(self, calib: int) -> tuple[TokenizedCorpus, TokenizedCorpus]:
        """``(calibration, evaluation)``: ``min(calib, len)`` samples stratified by domain, and the rest.

        Within each domain the calibration part takes the earliest samples; both parts keep the
        corpus order. Together they hold every sample exactly once.
        """
        take, rest = self.split_indices(calib)
        return self.subset(take), self.subset(rest)

    def split_indices(self, calib: int) -> tuple[list[int], list[int]]:
        """The sample indices of :meth:`split`'s two parts."""
        if calib < 0:
            raise UsageError(f"the number of calibration samples must be >= 0, got {calib}")
        by_domain: dict[str, list[int]] = {}
        for i, d in enumerate(self.domains):
            by_domain.setdefault(d, []).append(i)
        quota = _quotas({d: len(v) for d, v in by_domain.items()}, calib)
        take = sorted(i for d, idx in by_domain.items() for i in idx[: quota[d]])
        taken = set(take)
        return take, [i for i in range(len(self.input_ids)) if i not in taken]


def documents_fingerprint(documents: Sequence[Document]) -> str:
    """``sha256:`` + hex digest of the documents in order (domain, then text or ids), before any
    tokenizer: equal for two audits that fed two models the same selection of the same corpus."""
    h = hashlib.sha256()
    h.update(struct.pack("<I", len(documents)))
    for doc in documents:
        data = doc.text.encode("utf-8") if doc.text is not None else struct.pack(f"<{len(doc.input_ids)}i", *doc.input_ids)  # type: ignore[arg-type]
        domain = doc.domain.encode("utf-8")
        h.update(struct.pack("<BII", doc.text is not None, len(domain), len(data)) + domain + data)
    return "sha256:" + h.hexdigest()


def tokenize(documents: list[Document], tokenizer: Any, max_seq_len: int, *, name: str, seed: int) -> TokenizedCorpus:
    """Tokenize with the tokenizer's own defaults (``add_special_tokens=True``), truncate to ``max_seq_len``.

    BOS is therefore present exactly when the model's tokenizer adds it; ``bos_added`` says
    whether every text sample starts with ``tokenizer.bos_token_id`` (with no text documents,
    whether every pre-tokenized sample does; False when the tokenizer has no BOS). Pre-tokenized
    documents are used as given, truncated. Documents whose text is empty or only whitespace,
    and samples left with no tokens, are dropped.
    """
    if max_seq_len <= 0:
        raise UsageError(f"--max-seq-len must be a positive integer, got {max_seq_len}")
    limit = max_seq_len * _CHARS_PER_TOKEN_BOUND
    texts = [d.text[:limit] for d in documents if d.text is not None and d.text.strip()]
    encoded = iter(_encode(tokenizer, texts) if texts else [])
    samples: list[tuple[int, ...]] = []
    domains: list[str] = []
    from_text: list[bool] = []
    dropped = 0
    for doc in documents:
        if doc.text is not None:
            if not doc.text.strip():
                dropped += 1
                continue
            ids = tuple(int(i) for i in next(encoded)[:max_seq_len])
        else:
            ids = tuple(doc.input_ids[:max_seq_len])  # type: ignore[index]
        if not ids:
            dropped += 1
            continue
        samples.append(ids)
        domains.append(doc.domain)
        from_text.append(doc.text is not None)
    if not samples:
        raise CorpusError(
            f"corpus is empty after tokenization: all {len(documents)} documents of {name} gave no tokens; "
            "pass a corpus with non-empty text"
        )
    bos = getattr(tokenizer, "bos_token_id", None)
    checked = [s for s, t in zip(samples, from_text) if t] or samples
    bos_added = bos is not None and all(s[0] == bos for s in checked)
    return TokenizedCorpus(
        name=name,
        input_ids=tuple(samples),
        domains=tuple(domains),
        bos_added=bool(bos_added),
        max_seq_len=max_seq_len,
        seed=seed,
        documents=documents_fingerprint(documents),
    )


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Ids of each text with the tokenizer's special tokens, without length warnings."""
    try:
        out = tokenizer(texts, add_special_tokens=True, verbose=False)
    except TypeError:  # a tokenizer-like object without the verbose keyword
        out = tokenizer(texts, add_special_tokens=True)
    ids = out["input_ids"] if not isinstance(out, list) else out
    return [list(x) for x in ids]


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass(frozen=True, eq=False)
class Batch:
    """Right-padded rows of a :class:`TokenizedCorpus` and the corpus index of each row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    sample_index: torch.Tensor


def pad_batch(rows: Sequence[Sequence[int]], indices: Sequence[int], pad_id: int) -> Batch:
    """One batch from ``rows`` (token ids) whose corpus indices are ``indices``, right-padded with
    ``pad_id`` to the longest row."""
    import torch

    if len(rows) != len(indices) or not rows:
        raise ValueError("pad_batch needs one index per row and at least one row")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, sample in enumerate(rows):
        n = len(sample)
        if n:
            ids[r, :n] = torch.as_tensor(list(sample), dtype=torch.long)
            mask[r, :n] = 1
    return Batch(input_ids=ids, attention_mask=mask, sample_index=torch.tensor(list(indices), dtype=torch.long))


def check_count(documents: list[Document], samples: int, name: str) -> None:
    """A corpus file with fewer documents than --samples is a mistake worth one line, before the audit."""
    if len(documents) < samples:
        hint = " (in a .txt file, a blank line separates documents)" if name.endswith(".txt") else ""
        raise CorpusError(f"corpus {name} holds {len(documents)} document(s), fewer than --samples {samples}"
                          f"{hint}; add documents or lower --samples")


def check_vocabulary(corpus: TokenizedCorpus, vocab_size: int) -> None:
    """Every token id must index the model's embedding table."""
    for i, ids in enumerate(corpus.input_ids):
        top = max(ids)
        if top >= vocab_size:
            raise CorpusError(f"corpus {corpus.name}: sample {i} holds token id {top}, outside the model's "
                              f"vocabulary of {vocab_size} ids; tokenize the corpus with this model's tokenizer")
