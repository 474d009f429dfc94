"""Bytes to records: a JSON array of objects, NDJSON, or a Defender streaming export.

Parse errors name the line and column (NDJSON: the line of the record), so a client can find the
bad record in a batch of thousands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server.errors import ApiError
from server.ingest.guard import clip, count_lines, too_deep, too_many_rows

_BOM = b"\xef\xbb\xbf"
STREAMING_PREFIX = "AdvancedHunting-"


def _malformed(message: str, **where: Any) -> ApiError:
    # orjson's own nesting limit (1,024 levels); shallower values are checked against
    # MAX_DEPTH once parsed. Either way the client gets code too_deep.
    code = "too_deep" if "depth limit exceeded" in message else "malformed_json"
    entry = {"code": code, "message": message, **where}
    return ApiError(400, f"malformed JSON: {message}", errors=[entry])


def _strip_bom(body: bytes) -> bytes:
    return body[len(_BOM) :] if body.startswith(_BOM) else body


def parse_ndjson(body: bytes, max_rows: int | None = None) -> tuple[list[Any], list[int]]:
    """One JSON value per line; blank lines are skipped. Returns the values and their 1-based
    line numbers. More than ``max_rows`` lines are refused before any is parsed."""
    if max_rows is not None and (n := count_lines(body)) > max_rows:
        raise too_many_rows(n, max_rows, "lines")
    values: list[Any] = []
    lines: list[int] = []
    for n, line in enumerate(_strip_bom(body).split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            values.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            raise _malformed(f"line {n}, column {e.colno}: {e.msg}", line=n, column=e.colno) from e
        lines.append(n)
    return values, lines


def parse_json(body: bytes) -> Any:
    body = _strip_bom(body)
    if not body.strip():
        raise _malformed("the body is empty; send a JSON array of objects")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        hint = ""
        if e.lineno > 1 and b"\n" in body.strip() and body.lstrip()[:1] == b"{":
            hint = " (for one object per line send Content-Type: application/x-ndjson)"
        raise _malformed(
            f"line {e.lineno}, column {e.colno}: {e.msg}{hint}", line=e.lineno, column=e.colno
        ) from e


def is_ndjson(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("application/x-ndjson", "application/ndjson", "application/jsonl",
                     "application/x-jsonlines", "application/jsonlines")


def parse_records(body: bytes, ndjson: bool, max_rows: int | None = None
                  ) -> tuple[list[Any], list[int] | None]:
    """Records of a per-table ingest body: the values, and for NDJSON their line numbers.
    A JSON body is an array of objects (a single object counts as a batch of one). More than
    ``max_rows`` records are refused before any is converted."""
    if ndjson:
        return parse_ndjson(body, max_rows)
    value = parse_json(body)
    if isinstance(value, dict):
        return [value], None
    if not isinstance(value, list):
        raise _malformed(
            f"expected a JSON array of objects, got {_json_kind(value)}"
        )
    if max_rows is not None and len(value) > max_rows:
        raise too_many_rows(len(value), max_rows)
    return value, None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


@dataclass
class StreamingBatch:
    """Streaming records grouped by table: properties objects and their record indices."""

    rows: dict[str, list[Any]] = field(default_factory=dict)
    indices: dict[str, list[int]] = field(default_factory=dict)
    unknown_tables: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def _streaming_records(body: bytes, max_rows: int | None) -> list[Any]:
    """Event Hub sends ``{"records": [...]}``; Storage blobs hold one record per line (a line may
    also be a whole Event Hub message). A bare record or an array of records is accepted too."""
    stripped = _strip_bom(body).strip()
    if not stripped:
        raise _malformed("the body is empty; send {\"records\": [...]} or one record per line")
    try:
        whole = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        values, _ = parse_ndjson(body, max_rows)
    else:
        values = whole if isinstance(whole, list) else [whole]
    records: list[Any] = []
    for v in values:
        if isinstance(v, dict) and "records" in v and "category" not in v:
            inner = v["records"]
            if not isinstance(inner, list):
                raise _malformed(f"\"records\" must be an array, got {_json_kind(inner)}")
            records.extend(inner)
        else:
            records.append(v)
        if max_rows is not None and len(records) > max_rows:
            raise too_many_rows(len(records), max_rows, "records")
    return records


def parse_streaming(body: bytes, known_tables: set[str], max_rows: int | None = None
                    ) -> StreamingBatch:
    """Group streaming records by table (``category`` = "AdvancedHunting-<Table>") and take each
    record's ``properties``. Envelope fields (time, tenantId, operationName) describe the export,
    not the event, and are not stored."""
    batch = StreamingBatch()
    for i, rec in enumerate(_streaming_records(body, max_rows)):
        batch.total += 1
        if not isinstance(rec, dict):
            batch.errors.append(_record_error(i, f"expected a JSON object, got {_json_kind(rec)}"))
            continue
        category = rec.get("category")
        props = rec.get("properties")
        if not isinstance(category, str) or not category.startswith(STREAMING_PREFIX):
            batch.errors.append(_record_error(
                i, f"\"category\" must be a string \"{STREAMING_PREFIX}<Table>\", got "
                f"{_shown(category)}",
                column="category"))
            continue
        if not isinstance(props, dict):
            batch.errors.append(_record_error(
                i, f"\"properties\" must be a JSON object, got {_json_kind(props)}",
                column="properties"))
            continue
        table = clip(category[len(STREAMING_PREFIX) :])
        if table not in known_tables:
            batch.unknown_tables[table] = batch.unknown_tables.get(table, 0) + 1
            continue
        batch.rows.setdefault(table, []).append(props)
        batch.indices.setdefault(table, []).append(i)
    return batch


def _shown(value: Any) -> str:
    """A value as echoed in an error: JSON, clipped; a value too deep to serialise is named."""
    if too_deep(value):
        return f"{_json_kind(value)} nested too deep"
    return clip(orjson.dumps(value).decode())


def _record_error(row: int, message: str, column: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": "invalid_record", "message": f"record {row}: {message}",
                             "row": row}
    if column is not None:
        entry["column"] = column
    return entry
