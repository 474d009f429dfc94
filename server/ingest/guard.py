"""Limits checked on a request body before (or while) it is parsed, and safe echoes of user text.

Each check costs a small fraction of what parsing costs, so a hostile body (a value nested
17,500 levels deep, two million ``{}``, invalid UTF-8, a 10 MB column name) is refused before
any parser that could crash or run long sees it:

* ``check_utf8``: the whole body must be UTF-8 (Arrow's SIMD validator, no copy). JSON requires
  it, and a string that is not UTF-8 written to Parquet would fail every later read. The error
  names the row and the field (found only on the error path).
* ``arrow_may_read``: whether pyarrow's JSON reader may see an NDJSON body. It recurses per
  level and overflows the C stack on deep input, and it segfaults on a first line ``null``; a
  body it cannot clear goes to orjson instead (hard limit of 1,024 levels; ``too_deep`` checks
  each value).
* ``too_deep``: a parsed value nested deeper than ``MAX_DEPTH`` (iterative: no recursion).
* ``clip``: user text as echoed in an error, truncated.
"""

from __future__ import annotations

import codecs
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from server.errors import ApiError

# Levels of arrays and objects one column value may nest: the default maximum depth of .NET's
# System.Text.Json (JsonSerializerOptions.MaxDepth / JsonDocumentOptions.MaxDepth = 64), which
# Defender's own services are built on. orjson serialises at most 254 levels, so any bound
# below that keeps every stored value serialisable again.
MAX_DEPTH = 64
# Kusto identifiers (table and column names) are 1 to 1,024 characters ("Identifier naming
# rules", learn.microsoft.com/kusto/query/schema-entities/entity-names).
MAX_COLUMN_NAME = 1024
CLIP = 200  # characters of user text echoed in an error
_SLICE = 1 << 16

_MARK = "\U000f0000"  # a private-use character: stands for invalid bytes while locating them


def _mark_errors(e: UnicodeError) -> tuple[str, int]:
    assert isinstance(e, UnicodeDecodeError)
    return _MARK, e.end


codecs.register_error("quarry-mark", _mark_errors)


def clip(text: str, limit: int = CLIP) -> str:
    """User text as echoed in an error message: at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests more than ``limit`` arrays/objects. Iterative, so a
    value nested 1,000 levels deep cannot exhaust Python's recursion limit."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        for child in v.values() if isinstance(v, dict) else v:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def arrow_may_read(body: bytes, limit: int = MAX_DEPTH + 1) -> bool:
    """Whether pyarrow's JSON reader may see this NDJSON body: every line (trailing blank ones
    aside) starts with ``{``, and no line holds more than ``limit`` of ``[`` and ``{`` (inside
    strings or not: an over-estimate of its depth).

    The reader recurses once per level and overflows the C stack on deep input, segfaults on a
    first line ``null`` (pyarrow 26; found by tests/test_ingest_fuzz.py) and reads a later
    ``null`` line as a row of nulls. A few vector passes: when every ``[`` and ``{`` but the
    ones opening lines ("excess") are fewer than ``limit``, no line can hold more (the common
    case: agent events have no nested values); otherwise they are counted per line."""
    if not body.startswith(b"{"):
        return False
    a = np.frombuffer(body, np.uint8)
    newlines = openers = line_opens = 0
    after_newline = False
    # In slices that stay in the CPU cache: whole-body temporaries cost 4x more (fresh pages).
    for start in range(0, len(a), _SLICE):
        w = a[start : start + _SLICE]
        newline, brace = w == 0x0A, w == 0x7B
        newlines += int(np.count_nonzero(newline))
        openers += int(np.count_nonzero(brace)) + int(np.count_nonzero(w == 0x5B))
        line_opens += int(np.count_nonzero(brace[1:] & newline[:-1])) + (after_newline and brace[0])
        after_newline = bool(newline[-1])
    trailing = body[len(body.rstrip(b" \t\r\n")) :].count(b"\n")
    if newlines - line_opens != trailing:
        return False  # a line that does not open an object, or a blank line inside
    if openers - (line_opens + 1) < limit:
        return True
    brace = a == 0x7B
    pos = np.flatnonzero(brace | (a == 0x5B))
    per_line = np.bincount(np.searchsorted(np.flatnonzero(a == 0x0A), pos))
    return int(per_line.max()) <= limit


def count_lines(body: bytes) -> int:
    """Lines of an NDJSON body (a final newline does not start another)."""
    n = int(np.count_nonzero(np.frombuffer(body, np.uint8) == 0x0A))
    return n + (1 if body and not body.endswith(b"\n") else 0)


def too_many_rows(n: int, limit: int, what: str = "rows") -> ApiError:
    return ApiError(
        413,
        f"the batch has more than {limit} {what} (at least {n}); the limit is max_batch_rows "
        f"= {limit}: send smaller batches",
        code="too_many_rows",
    )


# -- UTF-8 ------------------------------------------------------------------------------------


def _valid_utf8(body: bytes) -> bool:
    if body.isascii():
        return True
    offsets = pa.py_buffer(np.array([0, len(body)], np.int64))
    arr = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(body)])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def check_utf8(body: bytes, shape: str) -> None:
    """Refuse a body that is not UTF-8 with a 400 naming the row and field of the first invalid
    byte (``shape``: "json", "ndjson" or "streaming", how rows are laid out)."""
    if _valid_utf8(body):
        return
    try:
        body.decode()
    except UnicodeDecodeError as e:
        start = e.start
    else:  # pragma: no cover - Arrow and Python agree on UTF-8
        return
    line = body.count(b"\n", 0, start) + 1
    entry: dict[str, Any] = {"code": "invalid_utf8", "line": line, "offset": start}
    line_start = body.rfind(b"\n", 0, start) + 1
    line_end = body.find(b"\n", start)
    whole = shape == "json" or (shape == "streaming" and body.lstrip()[:1] in (b"{", b"[")
                                and _parses(body))
    text = body if whole else body[line_start : line_end if line_end >= 0 else len(body)]
    path = _marked_path(text)
    if not whole:
        # Rows of an NDJSON body are its non-blank lines.
        path = [_rows_before(body, line_start), *path]  # a streaming line is one record, or a message of them
    row, column, in_key = _row_and_column(path, shape)
    where = f"line {line}"
    if row is not None:
        entry["row"] = row
        where = f"row {row} (line {line})"
    if column is not None:
        entry["column"] = clip(column)
        where += f", {'a column name' if in_key else 'column ' + clip(column)}"
    entry["message"] = f"{where}: text is not valid UTF-8 (byte {start} of the body)"
    raise ApiError(400, f"the body is not valid UTF-8: {entry['message']}", errors=[entry])


def _rows_before(body: bytes, end: int) -> int:
    """Non-blank lines in ``body[:end]`` (``end`` starts a line), as NDJSON rows are numbered.
    Vector passes, no line objects: the body may hold millions of lines. A blank line is an
    empty one or a lone "\\r"."""
    if end == 0:
        return 0
    a = np.frombuffer(body, np.uint8, count=end)
    nl = a == 0x0A
    lines = int(np.count_nonzero(nl))
    empty = int(np.count_nonzero(nl[1:] & nl[:-1])) + int(nl[0])
    empty += int(np.count_nonzero(nl[2:] & (a[1:-1] == 0x0D) & nl[:-2]))
    empty += int(end >= 2 and a[0] == 0x0D and nl[1])
    return lines - empty


def _parses(body: bytes) -> bool:
    try:
        orjson.loads(body.decode(errors="quarry-mark"))
    except orjson.JSONDecodeError:
        return False
    return True


def _marked_path(text: bytes) -> list[Any]:
    """Where the first invalid bytes are in the JSON of ``text``: keys and indices down to the
    string holding them, ending with ``(key,)`` when they are inside a key. [] if unknown."""
    decoded = text.decode(errors="quarry-mark")
    if decoded.count(_MARK) == 0 or _MARK in text.decode(errors="ignore"):
        return []
    try:
        value = orjson.loads(decoded)
    except orjson.JSONDecodeError:
        return []
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if _MARK in v:
                return path
        elif isinstance(v, dict):
            for k in reversed(list(v)):
                stack.append((v[k], [*path, k]))
            for k in v:  # keys before values: a bad key is reported as such
                if _MARK in k:
                    return [*path, (k,)]
        elif isinstance(v, list):
            stack.extend((c, [*path, i]) for i, c in reversed(list(enumerate(v))))
    return []


def _row_and_column(path: list[Any], shape: str) -> tuple[int | None, str | None, bool]:
    """Row index and column name from a path into the body (see ``_marked_path``)."""
    if not path:
        return None, None, False
    row = next((p for p in path if isinstance(p, int)), None)
    if shape == "json" and not isinstance(path[0], int):
        row = 0  # a single object is a batch of one
    keys = [p for p in path if not isinstance(p, int)]
    if shape == "streaming":
        keys = keys[keys.index("properties") + 1 :] if "properties" in keys else keys[-1:]
    if not keys:
        return row, None, False
    first = keys[0]
    if isinstance(first, tuple):
        return row, first[0].replace(_MARK, "\ufffd"), True
    return row, first, False
