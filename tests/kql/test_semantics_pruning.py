"""Partition pruning, checked by behaviour: conditions on Timestamp must keep DuckDB away from
the day partitions they exclude (issue 3, "Fast SQL").

The fixture rows are written as storage writes them (`<Table>/date=YYYY-MM-DD/*.parquet`) and read
through a storage-like view; then the files of the middle days are overwritten with garbage. A
pruned query never opens them and still returns the right rows; an unpruned one fails. (The first
file is left intact: DuckDB reads its schema at bind time.)
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from benchmarks._common import create_storage_views, write_partitioned
from schema import default_catalog
from server.demo import rows_to_table
from tests.kql.fixtures import NOW, PROCESS_ROWS, compile_query

# Days in the fixture: 2024-05-10 (kept), 05-13 and 05-14 (corrupted), 05-15 (kept).
CORRUPTED = ("date=2024-05-13", "date=2024-05-14")


@pytest.fixture(scope="module")
def pruned_db(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    catalog = default_catalog()
    tbl = catalog.tables["DeviceProcessEvents"]
    data_dir: Path = tmp_path_factory.mktemp("parts")
    writer = duckdb.connect()
    files = write_partitioned(writer, tbl, rows_to_table(tbl, PROCESS_ROWS), data_dir, NOW)
    writer.close()
    assert sorted(f.parent.name for f in files) == [
        "date=2024-05-10", "date=2024-05-13", "date=2024-05-14", "date=2024-05-15"]
    con = duckdb.connect()
    create_storage_views(con, catalog, {"DeviceProcessEvents": files})
    for f in files:
        if f.parent.name in CORRUPTED:
            f.write_bytes(b"not parquet")
    return con


def _ids(con: duckdb.DuckDBPyConnection, kql: str) -> list[int]:
    compiled = compile_query(kql)
    assert compiled.ok, compiled.diagnostics
    return sorted(r[0] for r in con.execute(compiled.sql).fetchall())


def test_the_corruption_is_seen_by_an_unpruned_query(pruned_db: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error):
        _ids(pruned_db, "DeviceProcessEvents | where ProcessId > 0 | project ReportId")


@pytest.mark.parametrize(
    ("kql", "expected"),
    [
        ("DeviceProcessEvents | where Timestamp > ago(2h) | project ReportId", [1, 5]),
        ("DeviceProcessEvents | where Timestamp >= datetime(2024-05-15) | project ReportId", [1, 2, 5]),
        ("DeviceProcessEvents | where Timestamp between (datetime(2024-05-15 09:00) .. 3h) | project ReportId", [1, 2, 5]),
        ("DeviceProcessEvents | where Timestamp < datetime(2024-05-11) | project ReportId", [6]),
        ("DeviceProcessEvents | where Timestamp > ago(1h) and FileName =~ 'notepad.exe' | project ReportId", [5]),
        ("let recent = DeviceProcessEvents | where Timestamp > ago(4h);\nrecent | project ReportId", [1, 2, 5]),
    ],
)
def test_time_conditions_skip_excluded_days(
    pruned_db: duckdb.DuckDBPyConnection, kql: str, expected: list[int]
) -> None:
    assert _ids(pruned_db, kql) == expected
