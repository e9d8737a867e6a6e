"""The table of `maxact-card compare` (and of `audit --models`): one row per report, the first the
reference the others are checked against.

Formats: `text` (aligned, for a terminal), `markdown`, `csv` (raw numbers) and `json`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .comparison import differences, fmt_m, fmt_ratio, fp16_headroom, m_of, short
from .report import Report


@dataclass(frozen=True)
class Row:
    label: str  # where the report was read from
    report: Report
    differences: tuple[str, ...]
    reference: bool

    @property
    def model(self) -> str:
        return self.report.model.name

    @property
    def revision(self) -> str:
        return (self.report.model.revision or "")[:12] or "-"

    @property
    def corpus_fingerprint(self) -> str:
        c = self.report.corpus
        return c.documents or c.fingerprint


def rows(reports: Sequence[tuple[Report, str]]) -> list[Row]:
    """One row per (report, label), each compared with the first."""
    if not reports:
        return []
    ref = reports[0][0]
    return [Row(label, r, () if i == 0 else differences(r, ref), i == 0) for i, (r, label) in enumerate(reports)]


def e2e_formats(table: Sequence[Row]) -> list[str]:
    """The end-to-end formats of every row, in the order they first appear."""
    seen: dict[str, None] = {}
    for row in table:
        for e in row.report.quant.end_to_end if row.report.quant else ():
            seen.setdefault(e.format, None)
    return list(seen)


def _verdict(row: Row, fmt: str) -> str:
    v = row.report.verdict(fmt)
    return v.verdict if v is not None else "-"


def _m_cell(row: Row) -> str:
    p = row.report.peak
    if p is not None and p.nonfinite:
        return "inf (NaN/Inf)"
    return fmt_m(m_of(row.report))


def _fp16_cell(row: Row) -> str:
    """65,504 / M as headroom ("2.39x"), or by how much M overflows fp16 ("over 10.9x")."""
    room = fp16_headroom(m_of(row.report))
    text = fmt_ratio(room) if room is None or room >= 1 else ("over inf" if room == 0 else f"over {fmt_ratio(1 / room)}")
    return f"{text} ({_verdict(row, 'fp16')})"


def _comparable_cell(row: Row) -> str:
    if row.reference:
        return "reference"
    return "yes" if not row.differences else "no: " + "; ".join(row.differences)


def _site(row: Row) -> tuple[str, str]:
    p = row.report.peak
    if p is None:
        return "-", "-"
    return p.site, "-" if p.layer is None else str(p.layer)


def display(table: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) as the text and markdown tables show them."""
    fmts = e2e_formats(table)
    header = ["model", "revision", "M", "site", "layer", "fp16 headroom", *fmts, "tokens", "corpus", "comparable"]
    cells = []
    for row in table:
        c = row.report.corpus
        cells.append([row.model, row.revision, _m_cell(row), *_site(row), _fp16_cell(row),
                      *(_verdict(row, f) for f in fmts), f"{c.tokens:,}", f"{c.name} {short(row.corpus_fingerprint, 8)}",
                      _comparable_cell(row)])
    return header, cells


RIGHT_ALIGNED = {"M", "layer", "fp16 headroom", "tokens"}


def to_text(table: Sequence[Row]) -> str:
    header, cells = display(table)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if h in RIGHT_ALIGNED else v.ljust(w) for v, w, h in zip(values, widths, header)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in cells)]) + "\n"


def to_markdown(table: Sequence[Row]) -> str:
    from .card import md_cell

    header, cells = display(table)
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if h in RIGHT_ALIGNED else "---" for h in header) + "|"]
    for r in cells:
        out.append("| " + " | ".join(md_cell(v) for v in [f"`{r[0]}`", *r[1:]]) + " |")
    return "\n".join(out) + "\n"


def records(table: Sequence[Row]) -> list[dict[str, Any]]:
    """Raw values per row: what csv and json write."""
    fmts = e2e_formats(table)
    out = []
    for row in table:
        r = row.report
        p = r.peak
        out.append({
            "model": row.model,
            "revision": r.model.revision,
            "source": row.label,
            "m": m_of(r),
            "nonfinite": p.nonfinite if p else 0,
            "site": p.site if p else None,
            "layer": p.layer if p else None,
            "fp16_headroom": fp16_headroom(m_of(r)),
            "fp16": _verdict(row, "fp16"),
            "verdicts": {f: _verdict(row, f) for f in fmts},
            "tokens": r.corpus.tokens,
            "corpus": r.corpus.name,
            "corpus_fingerprint": row.corpus_fingerprint,
            "reference": row.reference,
            "comparable": not row.differences,
            "differences": list(row.differences),
        })
    return out


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    return str(v)


def to_csv(table: Sequence[Row]) -> str:
    recs = records(table)
    fmts = e2e_formats(table)
    header = ["model", "revision", "source", "m", "nonfinite", "site", "layer", "fp16_headroom", "fp16", *fmts,
              "tokens", "corpus", "corpus_fingerprint", "reference", "comparable", "differences"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for rec in recs:
        flat = {**rec, **rec["verdicts"], "differences": "; ".join(rec["differences"])}
        w.writerow([_csv_value(flat[h]) for h in header])
    return buf.getvalue()


def to_json(table: Sequence[Row]) -> str:
    return json.dumps({"rows": records(table)}, indent=2, ensure_ascii=False) + "\n"


def render(table: Sequence[Row], fmt: str) -> str:
    return {"text": to_text, "markdown": to_markdown, "csv": to_csv, "json": to_json}[fmt](table)


def note(table: Sequence[Row]) -> Optional[str]:
    """One line under the table when rows do not compare with the reference."""
    off = [r for r in table if r.differences]
    if not off:
        return None
    return (f"{len(off)} of {len(table) - 1} rows were measured otherwise than the reference "
            f"({table[0].model}, the first row): their M and verdicts do not compare with it")
