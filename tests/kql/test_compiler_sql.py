"""The SQL itself: partition pruning, no system columns, nothing pasted, dialect table, folding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kql import CompileOptions, compile_kql
from kql.functions import AGGREGATES, DIALECTS, SCALARS
from kql.testing import fixture_connection, run_kql
from schema import default_catalog
from schema.catalog import DATE_PARTITION, EXTRA_COLUMN, INGESTION_TIME_COLUMN

CAT = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)


def sql(kql: str) -> str:
    result = compile_kql(kql, CAT, CompileOptions(now=NOW))
    assert result.ok and result.sql, result.diagnostics
    return result.sql


@pytest.mark.parametrize("cond,expected", [
    ("Timestamp > ago(2h)", "\"date\" >= CAST('2024-05-15' AS DATE)"),
    ("Timestamp >= datetime(2024-05-01)", "\"date\" >= CAST('2024-05-01' AS DATE)"),
    ("Timestamp < datetime(2024-05-03 10:00)", "\"date\" <= CAST('2024-05-03' AS DATE)"),
    ("ago(1d) < Timestamp", "\"date\" >= CAST('2024-05-14' AS DATE)"),
    ("Timestamp between (ago(3d) .. ago(1d))", "\"date\" <= CAST('2024-05-14' AS DATE)"),
    ("FileName == 'x' and Timestamp > now() - 1d", "\"date\" >= CAST('2024-05-14' AS DATE)"),
    ("TimeGenerated > ago(1h)", "\"date\" >= CAST('2024-05-15' AS DATE)"),
])
def test_time_conditions_add_partition_conditions(cond: str, expected: str) -> None:
    assert expected in sql(f"DeviceProcessEvents | where {cond}")


def test_let_bound_times_prune_too() -> None:
    assert "\"date\" >= CAST('2024-05-08' AS DATE)" in sql(
        "let start = ago(7d); DeviceProcessEvents | where Timestamp > start")


def test_no_pruning_where_it_would_be_wrong() -> None:
    # an `or` may keep rows outside the range; a derived Timestamp is not the partition key
    assert '"date"' not in sql("DeviceProcessEvents | where Timestamp > ago(1d) or FileName == 'x'")
    assert '"date"' not in sql("DeviceProcessEvents | extend Timestamp = Timestamp + 1d | where Timestamp > ago(1d)")
    assert '"date"' not in sql("DeviceTvmSoftwareInventory | take 1")


def test_pruning_reads_only_matching_partitions(tmp_path: Path) -> None:
    """Hive-partitioned Parquet as storage lays it out: the filter on date skips files."""
    table = CAT.table("DeviceProcessEvents")
    assert table is not None
    for day in range(1, 31):
        when = dt.datetime(2024, 4, 16) + dt.timedelta(days=day)
        folder = tmp_path / "DeviceProcessEvents" / f"date={when.date().isoformat()}"
        folder.mkdir(parents=True)
        cols = {c.name: pa.array([None] * 2, type=c.type.arrow) for c in table.columns}
        cols["Timestamp"] = pa.array([when, when + dt.timedelta(hours=12)], type=pa.timestamp("us"))
        cols["ReportId"] = pa.array([day * 10, day * 10 + 1], type=pa.int64())
        cols[INGESTION_TIME_COLUMN] = pa.array([when, when], type=pa.timestamp("us"))
        cols[EXTRA_COLUMN] = pa.array([None, None], type=pa.string())
        pq.write_table(pa.table(cols), folder / "part.parquet")
    con = duckdb.connect()
    con.execute(f"""CREATE VIEW "DeviceProcessEvents" AS SELECT * FROM read_parquet(
        '{tmp_path}/DeviceProcessEvents/*/*.parquet', hive_partitioning = true)""")
    q = sql("DeviceProcessEvents | where Timestamp > ago(1d) | project ReportId")
    assert sorted(r[0] for r in con.execute(q).fetchall()) == [290, 291, 300, 301]  # after 05-14 12:00
    plan = "\n".join(str(r[1]) for r in con.execute("EXPLAIN " + q).fetchall())
    assert "File Filters" in plan or "date" in plan


def test_output_never_has_system_or_partition_columns() -> None:
    con = fixture_connection({}, CAT)
    for kql in ("DeviceProcessEvents", "DeviceProcessEvents | where Timestamp > ago(1d)",
                "DeviceProcessEvents | summarize arg_max(Timestamp, *) by DeviceId", "union Device*Events"):
        result = run_kql(con, kql, CAT, NOW)
        names = {d[0] for d in con.execute(result.compiled.sql).description}
        assert not names & {INGESTION_TIME_COLUMN, EXTRA_COLUMN, DATE_PARTITION}
    table = CAT.table("DeviceProcessEvents")
    assert table is not None
    result = run_kql(con, "DeviceProcessEvents | take 1", CAT, NOW)
    assert result.compiled.columns == [(c.name, c.type.name) for c in table.columns]


@pytest.mark.parametrize("value", [
    "x'; DROP TABLE \"_rows_DeviceProcessEvents\"; --",
    "a\\' OR 1=1 --",
    "%_\\",
])
def test_values_are_literals_never_sql(value: str) -> None:
    con = fixture_connection({"DeviceProcessEvents": [dict(ReportId=1, Timestamp=NOW, FileName=value)]}, CAT)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    for op in ("==", "contains", "startswith", "has", "=~"):
        got = run_kql(con, f'DeviceProcessEvents | where FileName {op} "{escaped}" | project ReportId', CAT, NOW)
        assert got.rows == [(1,)], (op, got.compiled.sql)
    assert con.execute('SELECT count(*) FROM "DeviceProcessEvents"').fetchone() == (1,)


def test_names_are_quoted_identifiers() -> None:
    text = sql("DeviceProcessEvents | project ['weird \"name'] = FileName, Select = 1")
    assert '"weird ""name"' in text and '"Select"' in text


def test_filters_fold_into_one_select() -> None:
    text = sql("DeviceProcessEvents | where FileName =~ 'cmd.exe' | extend L = strlen(ProcessCommandLine) "
               "| where L > 10 | project DeviceName, L")
    assert text.count("SELECT") == 1  # DuckDB sees one block and pushes filters into the scan


def test_has_uses_a_cheap_prefilter_then_the_term_check() -> None:
    text = sql("DeviceProcessEvents | where ProcessCommandLine has 'mimikatz'")
    assert "ILIKE '%mimikatz%'" in text and "REGEXP_MATCHES" in text
    assert "LOWER(" not in sql("DeviceProcessEvents | where FileName contains 'cmd'")


def test_every_function_has_a_duckdb_builder() -> None:
    missing = [name for name in SCALARS if name not in DIALECTS["duckdb"]]
    assert missing == []
    assert {"count", "dcount", "arg_max", "make_set", "percentile"} <= set(AGGREGATES)


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dialect"):
        compile_kql("DeviceProcessEvents", CAT, CompileOptions(dialect="oracle"))


def test_ago_is_a_literal_from_options_now() -> None:
    assert "CAST('2024-05-15 10:00:00' AS TIMESTAMP)" in sql("DeviceProcessEvents | where Timestamp > ago(2h)")
    assert compile_kql("DeviceProcessEvents | take 1", CAT).ok  # default now: compile time

