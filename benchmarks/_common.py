"""Shared pieces of the compiler benchmarks: datasets laid out as storage lays them out.

Two shapes, both matching docs/internals.md "Storage":
- in memory: every catalog table as a DuckDB table with the schema columns, `_ingestion_time`,
  `_extra` and `date` (the corpus benchmark: many small queries, correctness not speed);
- on disk: `<data>/<Table>/date=YYYY-MM-DD/*.parquet`, zstd, sorted by Timestamp, read through a
  view `read_parquet([...], hive_partitioning=true) UNION ALL <empty tail>` exactly like
  `Storage._view_sql` builds it (the speed benchmark: what analysts' queries really hit).
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from schema.catalog import DATE_PARTITION, EXTRA_COLUMN, INGESTION_TIME_COLUMN, Catalog, Table

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
T = TypeVar("T")


def qi(name: str) -> str:
    """A quoted DuckDB identifier (names here come from the catalog)."""
    return '"' + name.replace('"', '""') + '"'


def ql(text: str) -> str:
    """A DuckDB string literal (paths we created ourselves)."""
    return "'" + text.replace("'", "''") + "'"


def _schema_cols(tbl: Table) -> str:
    return ", ".join(f"{qi(c.name)} {c.type.duckdb}" for c in tbl.columns)


def _date_expr(tbl: Table) -> str:
    ing = f"CAST({qi(INGESTION_TIME_COLUMN)} AS DATE)"
    if tbl.has_timestamp:
        return f'COALESCE(CAST("Timestamp" AS DATE), {ing})'
    return ing


def _select_with_system_columns(tbl: Table, source: str, ingestion_fallback: dt.datetime) -> str:
    """SELECT the schema columns of `source` (an Arrow scan) plus `_ingestion_time` and `_extra`."""
    cols = ", ".join(
        f"CAST({qi(c.name)} AS {c.type.duckdb}) AS {qi(c.name)}" for c in tbl.columns
    )
    fallback = f"TIMESTAMP '{ingestion_fallback.isoformat(sep=' ')}'"
    ing = (
        f'COALESCE("Timestamp" + INTERVAL 30 SECOND, {fallback})' if tbl.has_timestamp else fallback
    )
    return (
        f"SELECT {cols}, {ing} AS {qi(INGESTION_TIME_COLUMN)}, "
        f"CAST(NULL AS JSON) AS {qi(EXTRA_COLUMN)} FROM {source}"
    )


def as_stored(tbl: Table, data: pa.Table) -> pa.Table:
    """`data` as `Storage.append` stores it: a missing string (KQL string/guid) is "" (Kusto
    strings are never null), so queries compile with `strings_never_null=True`."""
    for col in tbl.columns:
        if col.type.name in ("string", "guid") and col.name in data.column_names:
            j = data.column_names.index(col.name)
            arr = data.column(j)
            if arr.null_count:
                data = data.set_column(j, col.name, pc.fill_null(arr, ""))
    return data


def load_in_memory(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    tables: dict[str, pa.Table],
    ingestion_fallback: dt.datetime,
) -> dict[str, int]:
    """Create every catalog table in `con` (storage's column layout) and load `tables` into it."""
    counts: dict[str, int] = {}
    for tbl in catalog.tables.values():
        con.execute(
            f"CREATE TABLE {qi(tbl.name)} ({_schema_cols(tbl)}, "
            f"{qi(INGESTION_TIME_COLUMN)} TIMESTAMP, {qi(EXTRA_COLUMN)} JSON, "
            f"{qi(DATE_PARTITION)} DATE)"
        )
        data = tables.get(tbl.name)
        if data is None or data.num_rows == 0:
            counts[tbl.name] = 0
            continue
        data = as_stored(tbl, data)
        con.register("_bench_src", data)
        try:
            con.execute(
                f"INSERT INTO {qi(tbl.name)} SELECT *, {_date_expr(tbl)} FROM ("
                + _select_with_system_columns(tbl, "_bench_src", ingestion_fallback)
                + ")"
            )
        finally:
            con.unregister("_bench_src")
        counts[tbl.name] = data.num_rows
    return counts


def write_partitioned(
    con: duckdb.DuckDBPyConnection,
    tbl: Table,
    data: pa.Table,
    data_dir: Path,
    ingestion_fallback: dt.datetime,
    files_per_day: int = 1,
) -> list[Path]:
    """Write `data` as storage does: one directory per UTC day, zstd Parquet sorted by Timestamp.

    `files_per_day` > 1 splits a day into several files (as un-compacted flushes would be).
    """
    con.register("_bench_src", as_stored(tbl, data))
    written: list[Path] = []
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _bench_stage AS "
            + _select_with_system_columns(tbl, "_bench_src", ingestion_fallback)
        )
        date_expr = _date_expr(tbl)
        days = [r[0] for r in con.execute(
            f"SELECT DISTINCT {date_expr} AS d FROM _bench_stage ORDER BY d").fetchall()]
        stored = ", ".join(qi(n) for n in [*tbl.column_names, INGESTION_TIME_COLUMN, EXTRA_COLUMN])
        order = qi("Timestamp" if tbl.has_timestamp else INGESTION_TIME_COLUMN)
        for day in days:
            ddir = data_dir / tbl.name / f"{DATE_PARTITION}={day.isoformat()}"
            ddir.mkdir(parents=True, exist_ok=True)
            for part in range(files_per_day):
                target = ddir / f"w{part:012d}.parquet"
                bucket = (
                    f" AND hash({qi('ReportId') if tbl.column('ReportId') else order}) % {files_per_day} = {part}"
                    if files_per_day > 1 else ""
                )
                con.execute(
                    f"COPY (SELECT {stored} FROM _bench_stage WHERE {date_expr} = DATE '{day.isoformat()}'"
                    f"{bucket} ORDER BY {order}) TO {ql(str(target))} (FORMAT parquet, COMPRESSION zstd)"
                )
                written.append(target)
    finally:
        con.execute("DROP TABLE IF EXISTS _bench_stage")
        con.unregister("_bench_src")
    return written


def create_storage_views(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, files: dict[str, list[Path]]
) -> None:
    """Views named as the catalog tables over `files`, plus an empty tail, like storage's views."""
    con.execute("CREATE SCHEMA IF NOT EXISTS tail")
    for tbl in catalog.tables.values():
        con.execute(
            f"CREATE OR REPLACE TABLE tail.{qi(tbl.name)} ({_schema_cols(tbl)}, "
            f"{qi(INGESTION_TIME_COLUMN)} TIMESTAMP, {qi(EXTRA_COLUMN)} JSON)"
        )
        stored = ", ".join(qi(n) for n in [*tbl.column_names, INGESTION_TIME_COLUMN, EXTRA_COLUMN])
        parts = []
        paths = sorted(files.get(tbl.name, []))
        if paths:
            lits = ", ".join(ql(str(p)) for p in paths)
            parts.append(
                f"SELECT {stored}, {qi(DATE_PARTITION)} FROM read_parquet([{lits}], "
                f"hive_partitioning = true, hive_types = {{'{DATE_PARTITION}': 'DATE'}})"
            )
        parts.append(
            f"SELECT {stored}, {_date_expr(tbl)} AS {qi(DATE_PARTITION)} FROM tail.{qi(tbl.name)}"
        )
        con.execute(f"CREATE OR REPLACE VIEW main.{qi(tbl.name)} AS " + " UNION ALL ".join(parts))


class QueryTimeout(Exception):
    pass


@contextmanager
def interrupt_after(con: duckdb.DuckDBPyConnection, seconds: float) -> Iterator[threading.Event]:
    """Interrupt the running statement on `con` after `seconds` (DuckDB has no statement timeout)."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value
