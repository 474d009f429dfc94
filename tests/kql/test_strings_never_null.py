"""Kusto strings are never null ("The string data type doesn't support null values",
scalar-data-types/null-values). Storage enforces it where rows enter (`Storage.append` stores a
missing string as ""), and `CompileOptions(strings_never_null=True)` lets the compiler drop the
COALESCE(col, '') it otherwise puts on stored string columns. Computed strings, and the columns
an outer join or a union can leave empty, still get it.

The first test runs the real `Storage` (WAL, tail, flush to Parquet) on a temporary directory;
the others run on the fixture database with strings that are all present.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from kql import CompileOptions, compile_kql
from schema import default_catalog
from tests.kql.fixtures import NOW, fixture_connection, normalize
from tests.support.clock import ManualClock
from tests.test_storage_support import TS, open_storage

CATALOG = default_catalog()


def _compile(kql: str, never_null: bool = True) -> str:
    compiled = compile_kql(kql, CATALOG, CompileOptions(now=NOW, strings_never_null=never_null))
    assert compiled.ok and compiled.sql is not None, compiled.diagnostics
    return compiled.sql


def _rows(con: object, kql: str) -> list[tuple[object, ...]]:
    rows = con.cursor().execute(_compile(kql)).fetchall()  # type: ignore[attr-defined]
    return sorted((tuple(normalize(v) for v in r) for r in rows), key=repr)


def test_storage_stores_a_missing_string_as_empty_and_queries_agree(tmp_path: Path) -> None:
    now = datetime(2024, 5, 15, 12, 0, 0)
    batch = pa.table({
        "Timestamp": pa.array([now - timedelta(minutes=m) for m in (1, 2, 3)], TS),
        "DeviceId": pa.array(["d1", "d1", "d2"]),
        "ReportId": pa.array([1, 2, 3], pa.int64()),
        "AccountName": pa.array(["alice", None, ""]),
        "FileName": pa.array(["cmd.exe", "notepad.exe", None]),
        "AdditionalFields": pa.array(['{"k": 1}', None, None]),
    })
    with open_storage(tmp_path, clock=ManualClock(now)) as st:
        st.append("DeviceProcessEvents", batch)
        for stage in ("tail", "parquet"):
            if stage == "parquet":
                st.flush()
            con = st.connect()
            try:
                raw = con.execute(
                    'SELECT count(*) FILTER (WHERE "AccountName" IS NULL), '
                    'count(*) FILTER (WHERE "FileName" IS NULL), '
                    'count(*) FILTER (WHERE "ProcessCommandLine" IS NULL), '
                    'count(*) FILTER (WHERE "AdditionalFields" IS NULL) FROM "DeviceProcessEvents"'
                ).fetchone()
                # strings absent from the batch (ProcessCommandLine) are "" too
                assert raw == (0, 0, 0, 0), stage
                assert _rows(con, "DeviceProcessEvents | summarize n = count() by AccountName") == [
                    ("", 2), ("alice", 1)], stage
                assert _rows(con, "DeviceProcessEvents | where isempty(FileName) | project ReportId") == [(3,)]
                assert _rows(con, 'DeviceProcessEvents | where AccountName !has "alice" | project ReportId') == [
                    (2,), (3,)]
                assert _rows(con, "DeviceProcessEvents | distinct AccountName") == [("",), ("alice",)]
                assert _rows(con, "DeviceProcessEvents | where strlen(FileName) == 0 | count") == [(1,)]
                # JSON held in a string column (AdditionalFields): "" reads as an empty value
                assert _rows(con, "DeviceProcessEvents | project ReportId, k = tostring(AdditionalFields.k)") == [
                    (1, "1"), (2, ""), (3, "")]
            finally:
                con.close()


def test_stored_string_columns_need_no_coalesce() -> None:
    sql = _compile("DeviceProcessEvents | summarize dcount(DeviceId) by FileName | where FileName != ''")
    assert "COALESCE" not in sql.upper()
    # without the flag (data that may hold NULL strings) the key is coalesced
    assert 'COALESCE("FileName", \'\')' in _compile(
        "DeviceProcessEvents | summarize dcount(DeviceId) by FileName", never_null=False)
    # a renamed column and a later stage still know the column is never null
    sql = _compile("DeviceProcessEvents | project F = FileName | take 5 | distinct F")
    assert "COALESCE" not in sql.upper()


def test_computed_and_outer_joined_strings_still_become_empty() -> None:
    con = fixture_connection()
    # the right side of a leftouter join is NULL where nothing matched: still one "" value
    kql = ('DeviceProcessEvents | where ReportId == 1 | project DeviceId '
           '| join kind=leftouter (DeviceInfo | where DeviceId == "none" | project DeviceId, OSPlatform) '
           "on DeviceId | distinct OSPlatform")
    assert _rows(con, kql) == [("",)]
    # a column a union branch does not have is NULL there: "" in summarize keys
    kql = ('union (DeviceProcessEvents | where ReportId == 1 | project A = FileName), (print B = "x") '
           "| summarize n = count() by A")
    assert _rows(con, kql) == [("", 1), ("powershell.exe", 1)]
    # a computed string is coalesced even when its input is a stored column
    kql = ('DeviceProcessEvents | where ReportId == 1 | extend e = extract("(zzz)", 1, FileName) '
           "| summarize n = count() by e")
    assert _rows(con, kql) == [("", 1)]
