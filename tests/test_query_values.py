"""Value rendering, Timespan parsing and the export encoders, without a server."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from server.query.export import encode_all
from server.query.timerange import TimeRangeError, parse_timespan
from server.query.values import (
    converter_for,
    dotnet_type,
    kusto_type,
    render_datetime,
    render_timespan,
)

NOW = dt.datetime(2024, 5, 15, 12, 0, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.timedelta(0), "00:00:00"),
        (dt.timedelta(seconds=90), "00:01:30"),
        (dt.timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=500), "1.02:03:04.5000000"),
        (dt.timedelta(hours=-1), "-01:00:00"),
        (-dt.timedelta(days=2, microseconds=1), "-2.00:00:00.0000010"),
        (dt.timedelta(days=400), "400.00:00:00"),
        (dt.timedelta(microseconds=123456), "00:00:00.1234560"),
        (None, None),
    ],
)
def test_timespan_renders_like_kusto(value: dt.timedelta | None, expected: str | None) -> None:
    assert render_timespan(value) == expected


def test_datetime_renders_iso_utc_seven_digits() -> None:
    assert render_datetime(dt.datetime(2020, 2, 5, 1, 10, 26, 264875)) == "2020-02-05T01:10:26.2648750Z"
    assert render_datetime(dt.datetime(2020, 2, 5)) == "2020-02-05T00:00:00.0000000Z"
    aware = dt.datetime(2020, 2, 5, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert render_datetime(aware) == "2020-02-05T01:00:00.0000000Z"
    # .NET's DateTime.MinValue, common in agent data: four-digit years (strftime's %Y gives "1")
    assert render_datetime(dt.datetime(1, 1, 1)) == "0001-01-01T00:00:00.0000000Z"
    assert render_datetime(dt.datetime(999, 12, 31, 23, 59, 59, 1)) == "0999-12-31T23:59:59.0000010Z"


def test_converters() -> None:
    dyn = converter_for("dynamic")
    assert dyn('{"a": [1, 2]}') == {"a": [1, 2]}
    assert dyn("not json") == "not json"
    assert dyn([1, {"x": float("nan")}]) == [1, {"x": None}]
    assert converter_for("real")(float("inf")) is None
    assert converter_for("guid")(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert converter_for("decimal")(Decimal("1.5")) == 1.5
    assert converter_for("decimal", kusto_wire=True)(Decimal("1.50")) == "1.50"
    assert converter_for("long")(7) == 7
    assert dotnet_type("long") == "Int64" and dotnet_type("datetime") == "DateTime"
    assert dotnet_type("timespan") == "TimeSpan" and dotnet_type("dynamic") == "Object"
    assert kusto_type("double") == "real" and kusto_type("bool") == "bool"


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P30D", NOW - dt.timedelta(days=30), None),
        ("PT2H", NOW - dt.timedelta(hours=2), None),
        ("P1DT12H", NOW - dt.timedelta(days=1, hours=12), None),
        ("2024-02-01T08:00:00Z/2024-02-15T08:00:00Z", dt.datetime(2024, 2, 1, 8), dt.datetime(2024, 2, 15, 8)),
        ("P30D/2024-02-15T08:00:00Z", dt.datetime(2024, 1, 16, 8), dt.datetime(2024, 2, 15, 8)),
        ("2024-02-01T08:00:00Z/P30D", dt.datetime(2024, 2, 1, 8), dt.datetime(2024, 3, 2, 8)),
        ("2024-02-01T08:00:00Z", dt.datetime(2024, 2, 1, 8), None),
        ("2024-02-01T10:00:00+02:00", dt.datetime(2024, 2, 1, 8), None),
        ("p7d", NOW - dt.timedelta(days=7), None),
    ],
)
def test_graph_timespan_forms(text: str, start: dt.datetime, end: dt.datetime | None) -> None:
    tr = parse_timespan(text, NOW)
    assert (tr.start, tr.end) == (start, end)


@pytest.mark.parametrize(
    "text",
    ["", "P", "PXD", "PT-1H", "P0D", "yesterday", "12345", "P1D/P2D", "2024-02-15T00:00:00Z/2024-02-01T00:00:00Z",
     "a/b/c", "2024-13-01T00:00:00Z",
     # arithmetic that leaves the datetime range: a clear error, not an OverflowError (a 500)
     "P999999D", "P99999999D", "9999-12-31T00:00:00Z/P2D", "P1D/0001-01-01T12:00:00Z"],
)
def test_bad_timespans(text: str) -> None:
    with pytest.raises(TimeRangeError):
        parse_timespan(text, NOW)


def _batches() -> tuple[list[tuple[str, str]], list[pa.RecordBatch]]:
    cols = [("t", "datetime"), ("s", "string"), ("d", "dynamic"), ("n", "long"), ("b", "bool")]
    schema = pa.schema([("t", pa.timestamp("us")), ("s", pa.string()), ("d", pa.string()),
                        ("n", pa.int64()), ("b", pa.bool_())])
    b1 = pa.record_batch([[dt.datetime(2024, 1, 1, 0, 0, 1)], ['a,"b"\nc'], ['{"k": 1}'], [1], [True]], schema=schema)
    b2 = pa.record_batch([[None], [None], [None], [None], [None]], schema=schema)
    return cols, [b1, b2]


def test_csv_and_ndjson_encoders() -> None:
    import csv

    cols, batches = _batches()
    text = b"".join(encode_all("csv", cols, iter(batches))).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["t", "s", "d", "n", "b"]
    assert rows[1] == ["2024-01-01T00:00:01.0000000Z", 'a,"b"\nc', '{"k": 1}', "1", "true"]
    assert rows[2] == ["", "", "", "", ""]
    lines = b"".join(encode_all("ndjson", cols, iter(batches))).splitlines()
    assert orjson.loads(lines[0]) == {"t": "2024-01-01T00:00:01.0000000Z", "s": 'a,"b"\nc', "d": {"k": 1},
                                      "n": 1, "b": True}
    assert orjson.loads(lines[1]) == dict.fromkeys(["t", "s", "d", "n", "b"])


def test_parquet_encoder_streams_row_groups() -> None:
    cols, batches = _batches()
    chunks = list(encode_all("parquet", cols, iter(batches)))
    assert len(chunks) >= 2  # bytes leave per batch, not all at the end
    table = pq.read_table(io.BytesIO(b"".join(chunks)))
    assert table.num_rows == 2
    assert table.schema.field("t").type == pa.timestamp("us")
    assert table.column("d").to_pylist() == ['{"k": 1}', None]
    empty = pq.read_table(io.BytesIO(b"".join(encode_all("parquet", cols, iter([])))))
    assert empty.num_rows == 0 and empty.column_names == ["t", "s", "d", "n", "b"]
