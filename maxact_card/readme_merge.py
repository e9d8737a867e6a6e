"""Merge the "Activation range" section and the `activation_range:` metadata into a README.md.

Merging never changes a byte the author wrote. The section lives between two marker lines in the
body and the metadata under one top-level key of the YAML front matter; both are found and
replaced as text (the front matter is never re-serialized, so comments, key order, quoting and
unknown fields stay exactly as they were). Whatever is inserted uses the README's own line
endings (LF or CRLF); a UTF-8 byte order mark stays at the start.

The README is read the way the Hub reads it. The front matter is what huggingface_hub's
`REGEX_YAML_BLOCK` finds (the Hub server's own pattern), nothing else. The body is CommonMark:
marker lines inside fenced or indented code blocks (a README that documents these markers) are
the author's text, not the section. A README that cannot be merged without changing what the Hub
shows or reads is refused with a `UsageError` that says what to fix.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from .errors import UsageError

BEGIN_MARKER = "<!-- maxact-card:begin -->"
END_MARKER = "<!-- maxact-card:end -->"
METADATA_KEY = "activation_range"
BOM = "\ufeff"

# huggingface_hub.repocard.REGEX_YAML_BLOCK, "exact same regex as in the Hub server": a '---' line
# at the start (after any whitespace), the YAML, and the first later line that is '---' followed by
# nothing but blanks. A test keeps this copy equal to the installed huggingface_hub's.
HF_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
# The same block opened by '---' plus blanks: the Hub does not read it as front matter.
_BLANK_OPENING = re.compile(r"^(\s*---[ \t]+(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
_KEY = r"""(?:activation_range|"activation_range"|'activation_range')[ \t]*:(?:[ \t]|[\r\n\x85\u2028\u2029]|$)"""
_YAML_LINE = re.compile(r"[^\r\n\x85\u2028\u2029]*(?:\r\n|[\r\n\x85\u2028\u2029])|[^\r\n\x85\u2028\u2029]+$")
_CM_BREAK = re.compile(r"\r\n|\r|\n")  # CommonMark line endings
_PLACEHOLDER = f"{METADATA_KEY}:\n  placeholder: 0\n"
_CODE = ("fence", "code_block")


@dataclass
class _Doc:
    bom: str
    head: Optional[str]  # leading whitespace and the opening '---' line of the front matter, with its break
    yaml: Optional[str]  # the YAML as the Hub parses it: without the line break before the closing '---'
    fm: Optional[str]  # the YAML, ending with the line break before the closing '---'
    close: Optional[str]  # the closing '---' line (no line break when it ends the file)
    body: str
    nl: str
    blank_opening: bool = False  # no front matter, but a '--- ' block that reads as a mapping

    @property
    def body_start(self) -> int:
        return len(self.bom) + sum(len(p or "") for p in (self.head, self.fm, self.close))


def split_lines(text: str) -> list[str]:
    """Split on '\\n' only (a lone '\\r' or U+2028 is not a line break here), keeping the breaks."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _yaml_lines(text: str) -> list[str]:
    """Split front matter where YAML breaks lines (PyYAML: CRLF, CR, LF, NEL, U+2028, U+2029)."""
    return _YAML_LINE.findall(text)


def _yaml_content(line: str) -> str:
    return line.rstrip("\r\n\x85\u2028\u2029")


def _content(line: str) -> str:
    return line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line


def _newline(text: str) -> str:
    i = text.find("\n")
    return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


def _with_newline(text: str, nl: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", nl)


def _split(text: str) -> _Doc:
    bom = BOM if text.startswith(BOM) else ""  # metadata_load reads with utf-8-sig: one BOM goes
    rest = text[len(bom):]
    nl = _newline(rest)
    m = HF_YAML_BLOCK.match(rest)
    if m:
        close = m.group(3)
        cut = 2 if close.startswith("\r\n") else 1
        return _Doc(bom, m.group(1), m.group(2), m.group(2) + close[:cut], close[cut:], rest[m.end():], nl)
    blank = _BLANK_OPENING.match(rest)
    return _Doc(bom, None, None, None, None, rest, nl, blank_opening=bool(blank and _is_mapping(blank.group(2))))


def _is_mapping(text: str) -> bool:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and bool(data)


def _indent(c: str) -> int:
    return len(c) - len(c.lstrip(" \t"))


def _top_indent(fm_lines: list[str]) -> int:
    """Indentation of the top-level mapping: that of its first key (`---\\n  license: mit` is valid)."""
    for line in fm_lines:
        c = _yaml_content(line)
        s = c.lstrip(" ")
        if s.strip() and not s.startswith("#"):
            return len(c) - len(s)
    return 0


def _metadata_spans(fm_lines: list[str], indent: int = 0) -> list[tuple[int, int]]:
    """[start, stop) line ranges of each top-level `activation_range:` key with its continuation lines."""
    key = re.compile(" " * indent + _KEY)
    spans = []
    i = 0
    while i < len(fm_lines):
        if not key.match(fm_lines[i]):
            i += 1
            continue
        stop = j = i + 1
        while j < len(fm_lines):
            c = _yaml_content(fm_lines[j])
            if c.strip() == "":
                j += 1  # blank lines belong to the block only when more of it follows
                continue
            rest = c[indent:]
            if _indent(c) > indent or (_indent(c) == indent and (rest == "-" or rest.startswith("- "))):
                j += 1
                stop = j
                continue
            break
        spans.append((i, stop))
        i = stop
    return spans


def _merge_metadata(doc: _Doc, block: str, at_start: bool = False) -> str:
    """Everything up to and including the front matter, with the metadata block in place: where the
    key was, else at the end of the front matter (`at_start`: at its start)."""
    nl = doc.nl
    block = _with_newline(block, nl)
    if doc.fm is None:
        return doc.bom + "---" + nl + block + "---" + nl
    lines = _yaml_lines(doc.fm)
    indent = _top_indent(lines)
    if indent:
        block = "".join(" " * indent + line if _content(line) else line for line in split_lines(block))
    spans = _metadata_spans(lines, indent)
    if spans:
        (s0, e0), later = spans[0], spans[1:]
        for s, e in reversed(later):  # duplicates of our own key: only the first one stays
            del lines[s:e]
        lines[s0:e0] = [block]
    elif at_start:
        lines.insert(0, block)
    else:
        lines.append(block)
    assert doc.head is not None and doc.close is not None
    return doc.bom + doc.head + "".join(lines) + doc.close


def _same(a: Any, b: Any) -> bool:
    """Equality of parsed YAML, where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _placement(doc: _Doc) -> bool:
    """Where the key goes (True: at the start of the front matter, False: at its end), such that the
    Hub reads the author's keys as before plus ours; raises UsageError when no place works."""
    if doc.blank_opening:
        raise UsageError(
            "README.md starts its metadata with a '---' line followed by spaces or tabs, which the Hub "
            "does not read as metadata; delete the blanks after that '---' and run again"
        )
    if doc.yaml is None:
        return False
    try:
        author = yaml.safe_load(doc.yaml)
    except yaml.YAMLError:
        return False  # not YAML before the merge either: the key is added as text, as before
    if author is not None and not isinstance(author, dict):
        raise UsageError(
            "README.md's metadata block (between the '---' lines at the top) is YAML but not a "
            "mapping of `key: value` lines, so the Hub cannot read it; fix it and run again"
        )
    expected = {k: v for k, v in (author or {}).items() if k != METADATA_KEY}
    expected[METADATA_KEY] = {"placeholder": 0}  # yaml.safe_load(_PLACEHOLDER)[METADATA_KEY]
    # At the end, unless that changes the author's last value (a `|` block scalar ending the
    # front matter gains a line break): then at the start.
    for at_start in (False, True):
        m = HF_YAML_BLOCK.match(_merge_metadata(doc, _PLACEHOLDER, at_start)[len(doc.bom):])
        try:
            if m and _same(yaml.safe_load(m.group(2)), expected):
                return at_start
        except yaml.YAMLError:
            pass
    raise UsageError(
        "README.md's metadata block cannot take an `activation_range:` key without changing how "
        "the Hub reads it; write the block as plain `key: value` lines (block style, one mapping) "
        "and run again"
    )


# -- the body as CommonMark ------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _markdown() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark")
    md.disable(["inline", "text_join"])  # block structure is all the merge needs
    return md


class _Blocks:
    """A CommonMark block parse of `text`: its lines with offsets, and which lines are code."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [m.end() for m in _CM_BREAK.finditer(text)]
        if self.starts[-1] == len(text) and len(self.starts) > 1:
            self.starts.pop()  # a final line break opens no line
        self.tokens = [t for t in _markdown().parse(text) if t.map is not None and t.nesting >= 0]
        self.code = [False] * len(self.starts)
        for t in self.tokens:
            if t.type in _CODE:
                for i in range(t.map[0], min(t.map[1], len(self.code))):
                    self.code[i] = True

    def content(self, i: int) -> str:
        end = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.text)
        return self.text[self.starts[i]:end].rstrip("\r\n")

    def line_at(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def is_marker(self, i: int, marker: str) -> bool:
        return not self.code[i] and self.content(i).strip() == marker

    def opened_before(self, i: int) -> Any:
        """The code or HTML block that covers line i and starts before it, if any."""
        for t in reversed(self.tokens):
            if t.type in _CODE + ("html_block",) and t.map[0] < i < t.map[1]:
                return t
        return None


def _find_section(blocks: _Blocks) -> Optional[tuple[int, int]]:
    """[start, stop) of the marked section: from the begin line's start to the end of the end marker
    (its line break stays outside). Marker lines inside code blocks are not markers."""
    begin = None
    for i, start in enumerate(blocks.starts):
        if begin is None and blocks.is_marker(i, BEGIN_MARKER):
            begin = start
        elif begin is not None and blocks.is_marker(i, END_MARKER):
            return begin, start + len(blocks.content(i))
    if begin is not None:
        raise UsageError(
            f"README.md has a '{BEGIN_MARKER}' line without a matching '{END_MARKER}' after it "
            "(outside code blocks); restore or remove the marker by hand and run again"
        )
    return None


def _misplaced(blocks: _Blocks, span: tuple[int, int]) -> Optional[tuple[Any, int]]:
    """None when the section at `span` is found again there and its end marker stands on its own,
    else (the code or HTML block that runs over a marker, the section's first line)."""
    first, last = blocks.line_at(span[0]), blocks.line_at(span[1] - 1)
    try:
        found = _find_section(blocks)
    except UsageError:
        found = None
    cover = blocks.opened_before(last)
    if found == span and cover is None:
        return None
    return cover or blocks.opened_before(first), first


def _what(token: Any) -> str:
    if token.type == "fence":
        return f"code block ('{token.markup}')"
    return "indented code block" if token.type == "code_block" else "HTML block"


def _check_section(original: str, doc: _Doc, blocks: _Blocks, span: tuple[int, int]) -> None:
    """Refuse a merge whose section would not be found again where it was put, or would be swallowed
    by a code or HTML block around it."""
    bad = _misplaced(blocks, span)
    if bad is None:
        return
    token, first = bad
    if token is None:
        raise UsageError("README.md: the section could not be placed so that it is found again; please report this")
    if token.map[0] >= first:
        raise UsageError(
            f"the section's own {_what(token)} (line {token.map[0] - first + 1} of the section) is not "
            "closed before its end marker; close it in the template"
        )
    line = len(_CM_BREAK.findall(original[: doc.body_start])) + token.map[0] + 1
    raise UsageError(
        f"README.md: the section would land inside the {_what(token)} opened on line {line}; "
        "close that block (or move the section's markers out of it) and run again"
    )


def check_section(section: str) -> None:
    """Raise UsageError when the section's end marker would not stand on its own (a code or HTML
    block of the section left open runs over it)."""
    text = section.rstrip("\r\n")
    bad = _misplaced(_Blocks(text), (0, len(text)))
    if bad is not None:
        token, _ = bad
        where = f" (its {_what(token)} on line {token.map[0] + 1})" if token is not None else ""
        raise UsageError(
            f"the rendered section leaves a block open{where}, so its end marker would be swallowed; "
            "close it in the template"
        )


def merge_readme(readme_text: Optional[str], *, section: str, metadata: str) -> str:
    """Put `section` (from render_section) and `metadata` (from metadata_yaml) into a README.

    A section between the markers is replaced in place, else it is appended once at the end after
    one blank line. An `activation_range:` block in the front matter is replaced in place, else it
    is added just before the closing '---' (just after the opening one when the front matter ends
    with a `|` block scalar, which would gain a line break), indented like the author's top-level
    keys; a README without front matter gets one. Every other byte stays as it was, and merging the result again
    gives the same bytes. Raises UsageError for a README that cannot be merged safely.
    """
    original = readme_text or ""
    doc = _split(original)
    head = _merge_metadata(doc, metadata)
    if head != original[: doc.body_start]:  # the front matter changes: where may the key go?
        if _placement(doc):
            head = _merge_metadata(doc, metadata, at_start=True)
    nl = doc.nl
    body = doc.body
    core = _with_newline(section.rstrip("\r\n"), nl)
    blocks = _Blocks(body)
    span = _find_section(blocks)
    if span is not None:
        new_body = body[: span[0]] + core + body[span[1]:]
        placed = (span[0], span[0] + len(core))
    else:
        # `head` always ends with the closing '---' line (a new front matter ends with a line break).
        sep = ""
        if not (head + body).endswith("\n"):
            sep += nl
        if body and _content(split_lines(body)[-1]).strip() != "":
            sep += nl  # one blank line between the author's last line and the section
        new_body = body + sep + core + nl
        placed = (len(body) + len(sep), len(body) + len(sep) + len(core))
    _check_section(original, doc, blocks if new_body == body else _Blocks(new_body), placed)
    return head + new_body


def check_readme(readme_text: Optional[str]) -> None:
    """Raise the UsageError that merging into this README would raise, before any measurement."""
    merge_readme(readme_text, section=f"{BEGIN_MARKER}\n\n{END_MARKER}\n", metadata=_PLACEHOLDER)


def extract_metadata(readme_text: Optional[str]) -> Optional[dict[str, Any]]:
    """The `activation_range` mapping of a README's front matter, or None when there is none.

    Only that block is parsed, so a card whose other front matter is not valid YAML still reads.
    """
    if not readme_text:
        return None
    doc = _split(readme_text)
    if doc.fm is None:
        return None
    lines = _yaml_lines(doc.fm)
    spans = _metadata_spans(lines, _top_indent(lines))
    if not spans:
        return None
    start, stop = spans[-1]  # YAML keeps the last of duplicate keys
    try:
        data = yaml.safe_load("".join(lines[start:stop]))
    except yaml.YAMLError:
        return None
    value = data.get(METADATA_KEY) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else None


def front_matter(readme_text: Optional[str]) -> dict[str, Any]:
    """The whole front matter of a README as the Hub reads it; {} when there is none or it is not
    a YAML mapping."""
    if not readme_text:
        return {}
    doc = _split(readme_text)
    if doc.yaml is None:
        return {}
    try:
        data = yaml.safe_load(doc.yaml)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
