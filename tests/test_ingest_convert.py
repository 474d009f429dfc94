"""Ingest conversion without HTTP: body decoding, parsing, validation, Arrow building."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest

from schema import default_catalog
from schema.catalog import EXTRA_COLUMN, Table
from server.errors import ApiError
from server.ingest.body import decode_body
from server.ingest.convert import (
    BatchRejected,
    convert_ndjson,
    convert_records,
    ingest_schema,
    parse_datetimes,
)
from server.ingest.parse import parse_records, parse_streaming

CAT = default_catalog()


def table(name: str) -> Table:
    t = CAT.table(name)
    assert t is not None
    return t


DPE = table("DeviceProcessEvents")


def ev(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Timestamp": "2024-05-01T12:00:00.1234567Z",
        "DeviceId": "dev1",
        "DeviceName": "host1",
        "ActionType": "ProcessCreated",
        "FileName": "cmd.exe",
        "ProcessId": 42,
        "ReportId": 7,
    }
    base.update(kw)
    return base


def ndjson(rows: list[Any]) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-04-14T18:49:17.7849324Z", datetime(2021, 4, 14, 18, 49, 17, 784932)),
        ("2021-04-14T18:49:17Z", datetime(2021, 4, 14, 18, 49, 17)),
        ("2021-04-14T18:49:17.5+02:00", datetime(2021, 4, 14, 16, 49, 17, 500000)),
        ("2021-04-14T18:49:17.123-0530", datetime(2021, 4, 15, 0, 19, 17, 123000)),
        ("2021-04-14 18:49:17.123456", datetime(2021, 4, 14, 18, 49, 17, 123456)),  # no zone: UTC
        ("2021-04-14T18:49", datetime(2021, 4, 14, 18, 49)),
        ("2021-04-14", datetime(2021, 4, 14)),
        ("", None),
        (None, None),
    ],
)
def test_datetimes_valid(text: str | None, expected: datetime | None) -> None:
    arr, bad = parse_datetimes(pa.array([text], pa.string()))
    assert bad == []
    assert arr.type == pa.timestamp("us")
    assert arr.to_pylist() == [expected]


def test_datetimes_mixed_batch_and_ranges() -> None:
    # One array through each path: all zoned (nanosecond cast), years outside the nanosecond
    # range, zone-less mixed with zoned, and truncation (not rounding) of the 7th digit.
    cases = {
        ("2021-04-14T18:49:17.9999999Z", "2021-04-14T18:49:17+01:00"): [
            datetime(2021, 4, 14, 18, 49, 17, 999999), datetime(2021, 4, 14, 17, 49, 17)],
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z"): [
            datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)],
        ("2021-04-14T18:49:17Z", "2021-04-14 18:49:17", "2021-04-14"): [
            datetime(2021, 4, 14, 18, 49, 17), datetime(2021, 4, 14, 18, 49, 17),
            datetime(2021, 4, 14)],
        # Nulls among zoned values (the one-regex path) stay null; "" sends the array through
        # the general path, where it is null too.
        ("2021-04-14T18:49:17Z", None, "2021-04-14 18:49:17+00:00"): [
            datetime(2021, 4, 14, 18, 49, 17), None, datetime(2021, 4, 14, 18, 49, 17)],
        ("2021-04-14T18:49:17Z", ""): [datetime(2021, 4, 14, 18, 49, 17), None],
        (None, None): [None, None],
    }
    for texts, expected in cases.items():
        arr, bad = parse_datetimes(pa.array(list(texts), pa.string()))
        assert bad == [] and arr.to_pylist() == expected
    arr, bad = parse_datetimes(pa.array(["2021-04-14T00:00:00Z", "2021-13-14T00:00:00Z"]))
    assert bad == [1] and arr.to_pylist() == [datetime(2021, 4, 14), None]


@pytest.mark.parametrize(
    "text",
    ["yesterday", "2021-13-01T00:00:00Z", "2021-02-30T00:00:00Z", "2021-04-14T25:00:00Z",
     "2021-04-14T18:49:17.12345678Z", "14/04/2021", "2021-04-14T18:49:17 Z", "1618426157",
     # Well-formed, but the offset moves them outside datetime's range (years 1 to 9999).
     "9999-12-31T23:00:00-14:00", "0001-01-01T00:00:00+01:00", "0000-06-01T00:00:00Z"],
)
def test_datetimes_invalid(text: str) -> None:
    arr, bad = parse_datetimes(pa.array(["2021-04-14T00:00:00Z", text], pa.string()))
    assert bad == [1]
    assert arr.to_pylist() == [datetime(2021, 4, 14), None]


def test_fast_path_matches_python_path() -> None:
    rows = [ev(ReportId=i, ProcessId=i * 3, FileSize=None if i % 3 else i,
               AdditionalFields=None, InitiatingProcessFileName="" if i % 2 else "x")
            for i in range(50)]
    fast = convert_ndjson(DPE, ndjson(rows))
    assert fast is not None
    slow = convert_records(DPE, rows, allow_unknown=False)
    assert fast.table.schema == ingest_schema(DPE)
    assert fast.table.equals(slow.table.cast(fast.table.schema))
    assert fast.table.column("ReportId").to_pylist() == list(range(50))
    assert fast.table.column("InitiatingProcessFileName").to_pylist()[:2] == ["x", ""]


def test_iso_looking_strings_stay_strings() -> None:
    # pyarrow's JSON inference turns all-ISO string columns into timestamps; a string column
    # must still get the exact text back.
    rows = [ev(FileName="2021-04-14T10:00:00Z", ProcessCommandLine="2021-04-14") for _ in range(3)]
    conv = convert_ndjson(DPE, ndjson(rows)) or convert_records(DPE, rows, allow_unknown=False)
    assert conv.table.column("FileName").to_pylist() == ["2021-04-14T10:00:00Z"] * 3
    assert conv.table.column("ProcessCommandLine").to_pylist() == ["2021-04-14"] * 3


BAD_ROWS: list[tuple[dict[str, Any], str, str]] = [
    (ev(ProcessId="42"), "wrong_type", "ProcessId"),  # numbers must be JSON numbers
    (ev(ProcessId=1.5), "wrong_type", "ProcessId"),
    (ev(ProcessId=True), "wrong_type", "ProcessId"),
    (ev(ProcessId=2**63), "wrong_type", "ProcessId"),  # out of long range
    (ev(FileName=3), "wrong_type", "FileName"),
    (ev(Timestamp="not a date"), "invalid_datetime", "Timestamp"),
    (ev(ProcessCreationTime=12345), "wrong_type", "ProcessCreationTime"),
    (ev(Timestamp=None), "missing_required", "Timestamp"),
    (ev(DeviceId=""), "missing_required", "DeviceId"),
    ({k: v for k, v in ev().items() if k != "DeviceId"}, "missing_required", "DeviceId"),
    (ev(Filename="cmd.exe"), "unknown_column", "Filename"),
]


@pytest.mark.parametrize(("row", "code", "column"), BAD_ROWS)
def test_bad_rows_are_named(row: dict[str, Any], code: str, column: str) -> None:
    rows = [ev(), row, ev()]
    assert convert_ndjson(DPE, ndjson(rows)) is None  # the fast path never accepts bad input
    with pytest.raises(BatchRejected) as exc:
        convert_records(DPE, rows, allow_unknown=False)
    entries = exc.value.entries
    assert list(entries) == [1]
    entry = entries[1]
    assert entry["code"] == code
    assert entry["column"] == column
    assert entry["row"] == 1
    if code == "unknown_column":
        assert entry["hints"][0] == "FileName"
    else:
        assert entry["expected"] == DPE.column(column).type.name  # type: ignore[union-attr]


def test_int_and_real_columns() -> None:
    net = CAT.table("DeviceNetworkEvents")
    assert net is not None
    base = {"Timestamp": "2024-05-01T00:00:00Z", "DeviceId": "d"}
    conv = convert_records(net, [{**base, "RemotePort": 443}], allow_unknown=False)
    assert conv.table.column("RemotePort").type == pa.int32()
    for bad in (2**31, -(2**31) - 1, 80.5, "443"):
        assert convert_ndjson(net, ndjson([{**base, "RemotePort": bad}])) is None
        with pytest.raises(BatchRejected) as exc:
            convert_records(net, [{**base, "RemotePort": bad}], allow_unknown=False)
        assert exc.value.entries[0]["expected"] == "int"
    tvm = CAT.table("DeviceTvmSecureConfigurationAssessment")
    assert tvm is not None
    ok = {"Timestamp": "2024-05-01T00:00:00Z", "DeviceId": "d"}
    conv = convert_records(tvm, [{**ok, "ConfigurationImpact": 3}, {**ok, "ConfigurationImpact": 2.5}],
                           allow_unknown=False)
    assert conv.table.column("ConfigurationImpact").to_pylist() == [3.0, 2.5]
    with pytest.raises(BatchRejected):
        convert_records(tvm, [{**ok, "ConfigurationImpact": True}], allow_unknown=False)
    # A JSON integer beyond int64 (orjson gives 2**63 as an int) is still a number for a real
    # column; one beyond float is not.
    big = orjson.loads(b'{"ConfigurationImpact": 9223372036854775808}')
    conv = convert_records(tvm, [{**ok, **big}], allow_unknown=False)
    assert conv.table.column("ConfigurationImpact").to_pylist() == [float(2**63)]
    with pytest.raises(BatchRejected) as exc:
        convert_records(tvm, [ok, {**ok, "ConfigurationImpact": 10**400}], allow_unknown=False)
    assert exc.value.entries[1]["column"] == "ConfigurationImpact"


def test_empty_string_means_null_except_strings() -> None:
    conv = convert_records(DPE, [ev(ProcessId="", FileName="")], allow_unknown=False)
    row = conv.table.to_pylist()[0]
    assert row["ProcessId"] is None
    assert row["FileName"] == ""


def test_string_column_takes_json_values_as_text() -> None:
    conv = convert_records(DPE, [ev(AdditionalFields={"a": [1, 2]})], allow_unknown=False)
    assert orjson.loads(conv.table.column("AdditionalFields")[0].as_py()) == {"a": [1, 2]}


def test_dynamic_values() -> None:
    t = CAT.table("DeviceTvmSoftwareVulnerabilities")
    assert t is not None and t.column("CveTags").type.name == "dynamic"  # type: ignore[union-attr]
    rows = [{"CveTags": v} for v in (["a", "b"], '["a","b"]', "plain text", "", None, 5, {"k": 1})]
    conv = convert_records(t, rows, allow_unknown=False)
    got = conv.table.column("CveTags").to_pylist()
    assert got[0] == '["a","b"]' and orjson.loads(got[1]) == ["a", "b"]
    assert orjson.loads(got[2]) == "plain text"
    assert got[3] is None and got[4] is None
    assert orjson.loads(got[5]) == 5 and orjson.loads(got[6]) == {"k": 1}


def test_unknown_columns_fold_into_extra_when_allowed() -> None:
    rows = [ev(MachineGroup="Servers", NewColumn2030={"x": 1}), ev()]
    conv = convert_records(DPE, rows, allow_unknown=True)
    assert conv.unknown_columns == ["MachineGroup", "NewColumn2030"]
    extra = conv.table.column(EXTRA_COLUMN).to_pylist()
    assert orjson.loads(extra[0]) == {"MachineGroup": "Servers", "NewColumn2030": {"x": 1}}
    assert extra[1] is None


def test_sql_looking_values_are_data() -> None:
    evil = "x'); DROP TABLE t; --"
    conv = convert_records(DPE, [ev(ProcessCommandLine=evil)], allow_unknown=False)
    assert conv.table.column("ProcessCommandLine").to_pylist() == [evil]


def test_non_object_rows_refused() -> None:
    with pytest.raises(BatchRejected) as exc:
        convert_records(DPE, [ev(), [1, 2]], allow_unknown=False)
    assert exc.value.entries[1]["code"] == "invalid_row"


# -- bodies ---------------------------------------------------------------------------------


def test_gzip_roundtrip_and_multi_member() -> None:
    data = ndjson([ev(ReportId=i) for i in range(100)])
    assert decode_body(gzip.compress(data), "gzip", len(data)) == data
    two = gzip.compress(data[:500]) + gzip.compress(data[500:])
    assert decode_body(two, "gzip", len(data)) == data
    assert decode_body(zlib.compress(data), "deflate", len(data)) == data


def gzip_bomb(mib: int, byte: bytes = b"\0") -> bytes:
    """``mib`` MiB of one byte, gzip'd, built without holding the inflated data in memory."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = byte * (1 << 20)
    return b"".join(c.compress(chunk) for _ in range(mib)) + c.flush()


def test_gzip_bomb_is_refused_with_bounded_memory() -> None:
    bomb = gzip_bomb(128)  # 128 MiB of zeros in ~130 KiB
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ApiError) as exc:
            decode_body(bomb, "gzip", 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.status == 413
    assert peak < 16 << 20


def test_body_over_limit_uncompressed() -> None:
    with pytest.raises(ApiError) as exc:
        decode_body(b"x" * 101, None, 100)
    assert exc.value.status == 413


@pytest.mark.parametrize(
    ("raw", "encoding", "status"),
    [
        (b"definitely not gzip", "gzip", 400),
        (gzip.compress(b'{"a": 1}')[:-12], "gzip", 400),  # truncated
        (b"{}", "br", 415),
    ],
)
def test_bad_encodings(raw: bytes, encoding: str, status: int) -> None:
    with pytest.raises(ApiError) as exc:
        decode_body(raw, encoding, 1 << 20)
    assert exc.value.status == status


def test_malformed_json_names_the_line() -> None:
    with pytest.raises(ApiError) as exc:
        parse_records(b'{"a": 1}\n{"a": 2}\n{"a": \n', ndjson=True)
    assert exc.value.status == 400
    assert exc.value.errors[0]["line"] == 3
    with pytest.raises(ApiError) as exc:
        parse_records(b'{"a": 1}\n{"a": 2}\n', ndjson=False)
    assert "x-ndjson" in exc.value.error
    with pytest.raises(ApiError):
        parse_records(b'"just a string"', ndjson=False)


def test_streaming_shapes_are_grouped_by_table() -> None:
    rec = {"time": "2021-04-14T18:50:42.1532345Z", "tenantId": "t", "operationName": "Publish",
           "category": "AdvancedHunting-DeviceProcessEvents", "properties": ev()}
    net = {**rec, "category": "AdvancedHunting-DeviceNetworkEvents"}
    known = set(CAT.tables)
    hub = parse_streaming(orjson.dumps({"records": [rec, net, rec]}), known)
    blob = parse_streaming(ndjson([rec, net, rec]), known)
    for b in (hub, blob):
        assert b.indices == {"DeviceProcessEvents": [0, 2], "DeviceNetworkEvents": [1]}
        assert b.total == 3 and not b.errors
    other = parse_streaming(ndjson([{**rec, "category": "AdvancedHunting-EmailEvents"}, 5]), known)
    assert other.unknown_tables == {"EmailEvents": 1}
    assert other.errors[0]["row"] == 1
