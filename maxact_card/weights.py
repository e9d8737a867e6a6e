"""Which files of a checkpoint are its weights, and their fingerprint.

One rule for a Hub repo and a local folder: root *.safetensors (only the shards its index lists,
when there is one), else pytorch_model*.bin (same rule), else one *.gguf (the one asked for, else
the only one, else the most precise by its quantization tag). The fingerprint is sha256 over
"name content-id" lines of those files, where the content id is the file's sha256 (what the Hub
calls an LFS object id): a folder uploaded as it is gets the fingerprint the Hub gives it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

from .errors import NoWeightsError, OutputError

# GGUF quantization tags from highest to lowest precision: with several .gguf files and no
# choice made, the most precise one is the best stand-in for the original activations.
GGUF_PREFERENCE = (
    "f32", "bf16", "f16", "q8_0", "q8_k", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0",
    "q4_k_m", "q4_k_s", "q4_1", "q4_0", "iq4_xs", "iq4_nl", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
)
_CHUNK = 16 << 20


def gguf_rank(name: str) -> tuple[int, str]:
    stem = Path(name).name.lower().removesuffix(".gguf")
    tags = set(re.split(r"[-_.]", stem)) | {m for m in re.findall(r"(?:iq|q)\d_[a-z0-9]+(?:_[a-z])?", stem)}
    for rank, tag in enumerate(GGUF_PREFERENCE):
        if tag in tags:
            return rank, name
    return len(GGUF_PREFERENCE), name


def pick_weights(names: list[str], read_index: Callable[[str], set[str]], gguf_file: Optional[str],
                 where: str) -> tuple[str, list[str], Optional[str]]:
    """(format, weight files, chosen gguf) among `names` (paths relative to the checkpoint root).

    `read_index(name)` gives the shard names an index file lists (empty when unreadable); `where`
    names the checkpoint in errors.
    """
    root = [n for n in names if "/" not in n]
    for fmt, suffix, index_name, single in (
        ("safetensors", ".safetensors", "model.safetensors.index.json", "model.safetensors"),
        ("bin", ".bin", "pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if fmt == "safetensors":
            candidates = [n for n in root if n.endswith(suffix)]
        else:
            candidates = [n for n in root if n.startswith("pytorch_model") and n.endswith(suffix)]
        if not candidates:
            continue
        if index_name in root:
            shards = read_index(index_name)
            if shards and shards <= set(candidates):
                return fmt, [index_name, *sorted(shards)], None
        if single in root:
            return fmt, [single], None
        return fmt, candidates, None
    ggufs = [n for n in names if n.endswith(".gguf")]
    if gguf_file is not None:
        if gguf_file not in ggufs:
            listed = ", ".join(ggufs[:10]) or "none"
            raise NoWeightsError(f"{where} has no file '{gguf_file}'; its .gguf files: {listed}")
        return "gguf", [gguf_file], gguf_file
    if ggufs:
        chosen = min(ggufs, key=gguf_rank)
        return "gguf", [chosen], chosen
    listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise NoWeightsError(
        f"{where} has no weight files (*.safetensors, *.bin, *.gguf) in its root "
        f"(it holds: {listed or 'nothing'}); pass a checkpoint that has transformers weights"
    )


def index_shards(text: str) -> set[str]:
    """The shard file names an index (model.safetensors.index.json) lists; empty when unreadable."""
    try:
        weight_map = json.loads(text).get("weight_map", {})
    except (ValueError, AttributeError):
        return set()
    return {str(v) for v in weight_map.values()} if isinstance(weight_map, dict) else set()


def fingerprint(files: Iterable[tuple[str, Optional[str]]]) -> Optional[str]:
    """sha256 over sorted "name content-id" lines; None when a content id is missing."""
    lines = []
    for name, oid in sorted(files):
        if not oid:
            return None
        lines.append(f"{name} {oid}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise OutputError(f"cannot read {path.name} to fingerprint the weights ({exc.strerror}); "
                          "check the checkpoint's files") from None
    return h.hexdigest()


def local_fingerprint(folder: Path, gguf_file: Optional[str] = None) -> Optional[str]:
    """The weights fingerprint of a local checkpoint folder (or of one .gguf file in it), equal to
    the one the Hub gives the same files uploaded at the folder's root. Reads every weight file;
    None when the folder holds none of the kinds the Hub rule picks."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())

    def read_index(name: str) -> set[str]:
        try:
            return index_shards((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return set()

    if gguf_file is not None:
        files = [gguf_file]
    else:
        try:
            _, files, _ = pick_weights(names, read_index, None, str(folder.name))
        except NoWeightsError:
            return None
    return fingerprint((n, file_sha256(folder / n)) for n in files)
