"""A progress bar for long forward-pass loops: samples done, tokens/s, ETA (on stderr)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(total: int, desc: str, *, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """Yields `advance(samples, tokens)`."""
    if not enabled:
        yield lambda n, t: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True, leave=False)
    tokens = 0

    def advance(n: int, t: int) -> None:
        nonlocal tokens
        tokens += t
        bar.update(n)
        elapsed = bar.format_dict.get("elapsed") or 0
        if elapsed > 0:
            bar.set_postfix_str(f"{tokens / elapsed:,.0f} tok/s", refresh=False)

    try:
        yield advance
    finally:
        bar.close()
