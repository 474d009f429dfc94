"""Data written under an older schema stays readable after the schema moves: columns added since
read as "" (strings) or null, a column whose type changed reads as its new type, in the hot
tail, the WAL, Parquet files and after compaction merged old and new files."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kql import CompileOptions, compile_kql
from schema.catalog import Catalog, Column, default_catalog
from schema.types import kql_type
from server.storage import Storage
from server.storage.wal import encode_record, segment_path
from tests.support.clock import ManualClock
from tests.test_storage_support import TABLE, process_batch, settings_for

NOW = datetime(2025, 3, 10, 12, 0, 0)
ADDED = ("ProcessUniqueId", "InitiatingProcessUniqueId")  # new in the refreshed schema
RETYPED = "ProcessId"  # long now; the old schema below has it as string


def old_catalog() -> Catalog:
    """The current catalog with DeviceProcessEvents as an older schema had it."""
    cat = default_catalog()
    tbl = cat.tables[TABLE]
    cols = tuple(
        Column(c.name, kql_type("string"), c.description) if c.name == RETYPED else c
        for c in tbl.columns
        if c.name not in ADDED
    )
    return Catalog({**cat.tables, TABLE: dataclasses.replace(tbl, columns=cols, _by_name={})})


def rows(st: Storage) -> list[tuple[object, ...]]:
    con = st.connect()
    try:
        cols = ", ".join(f'"{c}"' for c in ("ReportId", *ADDED, RETYPED))
        return con.execute(f'SELECT {cols} FROM "{TABLE}" ORDER BY ReportId').fetchall()
    finally:
        con.close()


def test_old_and_new_files_are_read_together(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    ts = [NOW - timedelta(hours=1)] * 2
    old = old_catalog()
    assert old.tables[TABLE].column("ProcessUniqueId") is None
    with_pid = process_batch([1, 2], ts).append_column(RETYPED, pa.array(["42", "not a number"]))
    st = Storage(settings_for(tmp_path), old, clock=clock)
    st.start()
    st.append(TABLE, with_pid)
    st.flush()
    st.append(TABLE, process_batch([3], ts[:1]).append_column(RETYPED, pa.array(["43"])))
    st.close()  # flushes: two files written with the old schema
    # A WAL segment left by the old version (a crash before its flush) is replayed too.
    prepared, _ = Storage(settings_for(tmp_path / "scratch"), old, clock=clock)._prepare(
        old.tables[TABLE], process_batch([4], ts[:1]).append_column(RETYPED, pa.array(["44"])), NOW
    )
    segment_path(tmp_path / "_wal", 900).write_bytes(
        b"".join(bytes(b) for b in encode_record(TABLE, prepared))
    )

    new = default_catalog()
    st = Storage(settings_for(tmp_path), new, clock=clock)
    st.start()
    try:
        fresh = process_batch([10], ts[:1]).append_column(RETYPED, pa.array([7], pa.int64()))
        fresh = fresh.append_column("ProcessUniqueId", pa.array(["u10"]))
        st.append(TABLE, fresh)  # in the hot tail
        want = [(1, "", "", 42), (2, "", "", None), (3, "", "", 43), (4, "", "", 44),
                (10, "u10", "", 7)]
        assert rows(st) == want
        con = st.connect()
        types = {r[0]: r[1] for r in con.execute(f'DESCRIBE "{TABLE}"').fetchall()}
        assert types[RETYPED] == "BIGINT" and types["ProcessUniqueId"] == "VARCHAR"
        # KQL over the mixed files: the new column filters, the retyped one does arithmetic.
        compiled = compile_kql(
            f'{TABLE} | where ProcessUniqueId == "" | summarize s = sum({RETYPED} + 1)',
            new, CompileOptions(now=NOW, strings_never_null=True),
        )
        assert compiled.ok, compiled.diagnostics
        assert con.execute(compiled.sql).fetchall() == [(43 + 44 + 45,)]
        con.close()

        st.flush()
        assert rows(st) == want
        assert st.compact() >= 1
        assert rows(st) == want
        files = [p for ps in st._files[TABLE].values() for p in ps]
        assert len(files) == 1  # old and new merged into one file of the current schema
        assert files[0].name.startswith("c")
        merged = pq.read_schema(files[0])
        assert merged.field(RETYPED).type == pa.int64()
        assert "ProcessUniqueId" in merged.names
    finally:
        st.close()
    # And after a restart, which finds the merged file on disk.
    st = Storage(settings_for(tmp_path), new, clock=clock)
    st.start()
    try:
        assert rows(st) == want
    finally:
        st.close()
