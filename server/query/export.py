"""Streaming encoders for ``/api/query/export``: Arrow record batches in, bytes out.

Each encoder turns one batch into the bytes for it, so the response never holds more than one
batch: CSV (header first), NDJSON (one object per row, keyed by column name) and Parquet (one
row group per batch, footer at the end). Values are rendered as in the JSON APIs (datetimes ISO
8601 with Z, dynamic as JSON, timespans as Kusto renders them).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schema.types import kql_type
from server.query.values import converter_for, render_datetime, render_timespan

FORMATS: dict[str, tuple[str, str]] = {
    # format: (media type, file extension)
    "csv": ("text/csv; charset=utf-8", "csv"),
    "ndjson": ("application/x-ndjson", "ndjson"),
    "parquet": ("application/vnd.apache.parquet", "parquet"),
}


def _columns_of(batch: pa.RecordBatch) -> list[list[Any]]:
    return [_pylist(col) for col in batch.columns]


def _pylist(col: pa.Array) -> list[Any]:
    if pa.types.is_interval(col.type):
        return [_interval(v) for v in col.to_pylist()]
    return col.to_pylist()


def _interval(v: Any) -> dt.timedelta | None:
    """DuckDB INTERVAL arrives as Arrow month_day_nano; a KQL timespan has no months, but
    DuckDB arithmetic can produce them: count a month as 30 days, as DuckDB's own epoch() does."""
    if v is None:
        return None
    months, days, nanos = v.months, v.days, v.nanoseconds
    return dt.timedelta(days=months * 30 + days, microseconds=nanos // 1000)


def _csv_cell(kql: str, value: Any) -> Any:
    if value is None:
        return ""
    if kql == "datetime":
        return render_datetime(value)
    if kql == "timespan":
        return render_timespan(value)
    if kql == "dynamic":
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class CsvEncoder:
    def __init__(self, columns: Sequence[tuple[str, str]]) -> None:
        self.columns = list(columns)
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf)

    def _take(self) -> bytes:
        out = self._buf.getvalue().encode("utf-8")
        self._buf.seek(0)
        self._buf.truncate()
        return out

    def header(self) -> bytes:
        self._writer.writerow([name for name, _ in self.columns])
        return self._take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        types = [t for _, t in self.columns]
        cols = _columns_of(batch)
        for row in zip(*cols, strict=True):
            self._writer.writerow([_csv_cell(t, v) for t, v in zip(types, row, strict=True)])
        return self._take()

    def footer(self) -> bytes:
        return b""


class NdjsonEncoder:
    def __init__(self, columns: Sequence[tuple[str, str]]) -> None:
        self.names = [name for name, _ in columns]
        self.convs = [converter_for(t) for _, t in columns]

    def header(self) -> bytes:
        return b""

    def batch(self, batch: pa.RecordBatch) -> bytes:
        cols = _columns_of(batch)
        parts = []
        for row in zip(*cols, strict=True):
            obj = {n: c(v) for n, c, v in zip(self.names, self.convs, row, strict=True)}
            parts.append(orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE))
        return b"".join(parts)

    def footer(self) -> bytes:
        return b""


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are drained after each row group."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._chunks.append(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def drain(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


class ParquetEncoder:
    """Columns typed from the KQL types (schema.types ``.arrow``): datetime timestamp[us],
    timespan duration[us], dynamic JSON text, like the stored Parquet."""

    def __init__(self, columns: Sequence[tuple[str, str]]) -> None:
        self.columns = list(columns)
        self._sink = _Sink()
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def header(self) -> bytes:
        return b""

    def _target(self, batch: pa.RecordBatch) -> pa.Schema:
        fields = []
        for (name, kql), col in zip(self.columns, batch.columns, strict=True):
            try:
                want = kql_type(kql).arrow
            except KeyError:
                want = col.type
            fields.append(pa.field(name, want))
        return pa.schema(fields)

    def _conform(self, batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        arrays = []
        for col, f in zip(batch.columns, schema, strict=True):
            if col.type == f.type:
                arrays.append(col)
            elif pa.types.is_interval(col.type) and pa.types.is_duration(f.type):
                arrays.append(pa.array([_interval(v) for v in col.to_pylist()], type=f.type))
            elif pa.types.is_string(f.type) and not pa.types.is_string(col.type):
                # Nested values (lists, structs) for a dynamic column: store their JSON text.
                arrays.append(
                    pa.array(
                        [None if v is None else orjson.dumps(v, default=str).decode() for v in col.to_pylist()],
                        type=pa.string(),
                    )
                )
            else:
                arrays.append(col.cast(f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def batch(self, batch: pa.RecordBatch) -> bytes:
        if self._schema is None:
            self._schema = self._target(batch)
            self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd")
        assert self._writer is not None
        self._writer.write_batch(self._conform(batch, self._schema))
        return self._sink.drain()

    def footer(self) -> bytes:
        if self._writer is None:
            # An empty result still makes a valid Parquet file with the columns.
            fields = []
            for name, kql in self.columns:
                try:
                    fields.append(pa.field(name, kql_type(kql).arrow))
                except KeyError:
                    fields.append(pa.field(name, pa.string()))
            self._schema = pa.schema(fields)
            self._writer = pq.ParquetWriter(self._sink, self._schema, compression="zstd")
        self._writer.close()
        return self._sink.drain()


Encoder = CsvEncoder | NdjsonEncoder | ParquetEncoder


def encoder_for(fmt: str, columns: Sequence[tuple[str, str]]) -> Encoder:
    if fmt == "csv":
        return CsvEncoder(columns)
    if fmt == "ndjson":
        return NdjsonEncoder(columns)
    if fmt == "parquet":
        return ParquetEncoder(columns)
    raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")


def encode_all(fmt: str, columns: Sequence[tuple[str, str]], batches: Iterator[pa.RecordBatch]) -> Iterator[bytes]:
    """Encode a stream of batches (used by the CLI; the API interleaves this with threads)."""
    enc = encoder_for(fmt, columns)
    head = enc.header()
    if head:
        yield head
    for b in batches:
        out = enc.batch(b)
        if out:
            yield out
    tail = enc.footer()
    if tail:
        yield tail
