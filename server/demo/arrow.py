"""Turning generated rows into Arrow tables of a catalog table's exact schema, and into JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from schema.catalog import Table


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a catalog table: its columns in order, with their KQL types' Arrow types."""
    return pa.schema([pa.field(c.name, c.type.arrow) for c in table.columns])


def _cell(value: Any, is_text: bool) -> Any:
    # Dynamic columns and JSON-in-string columns (AdditionalFields, LoggedOnUsers...) are
    # generated as Python structures and stored as JSON text, as Defender exports them.
    if is_text and isinstance(value, dict | list):
        return orjson.dumps(value).decode("utf-8")
    return value


def rows_to_table(table: Table, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts keyed by column name; absent keys are null) as an Arrow table of ``table``'s schema."""
    rows = list(rows)
    schema = arrow_schema(table)
    arrays = []
    for col, fld in zip(table.columns, schema, strict=True):
        is_text = pa.types.is_string(fld.type)
        values = [_cell(r.get(col.name), is_text) for r in rows]
        arrays.append(pa.array(values, type=fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def iso(ts: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, as Defender writes datetimes."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_ready(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the ingest API accepts it: datetimes as ISO 8601 strings, JSON as JSON text.

    JSON goes as text because Defender types AdditionalFields and friends as ``string``: text is
    valid for both string and dynamic columns, a JSON object only for dynamic ones.
    """
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = iso(v)
        elif isinstance(v, timedelta):
            out[k] = str(v)
        elif isinstance(v, dict | list):
            out[k] = orjson.dumps(v).decode("utf-8")
        else:
            out[k] = v
    return out
