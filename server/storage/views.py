"""The read side of the storage engine: the hot tail as Arrow snapshots and the DuckDB views
(Parquet files ``UNION ALL`` tail rows) that every connection reads (see ``engine``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from kql import geoip
from schema.catalog import DATE_PARTITION, INGESTION_TIME_COLUMN, Table
from server.storage.base import (
    _JSON,
    SEG_COLUMN,
    TAIL_MERGE_CHUNKS,
    TAIL_MERGE_ROWS,
    TAIL_PREFIX,
    StorageBase,
    StorageClosed,
    _ident,
    _literal,
)


class StorageViews(StorageBase):
    def _add_to_tail(self, table: str, seq: int, rows: pa.Table) -> None:
        schema = self._stored_schema[table]
        cols = list(rows.columns)
        # Only the JSON columns change type (their positions are fixed per table: comparing
        # every field's type with a fresh pa.json_() was a fifth of a small append's time).
        for i in self._tail_json_idx[table]:
            cols[i] = pa.chunked_array(
                [pa.ExtensionArray.from_storage(_JSON, c) for c in cols[i].chunks], _JSON
            )
        chunk = pa.Table.from_arrays(cols, schema=schema).append_column(
            SEG_COLUMN, pa.repeat(pa.scalar(seq, pa.int64()), rows.num_rows)
        )
        with self._tail_lock:
            chunks = self._tail[table].setdefault(seq, [])
            chunks.append(chunk)
            self._tail_version[table] += 1
            run = chunks[-TAIL_MERGE_CHUNKS:]
            merge = len(run) == TAIL_MERGE_CHUNKS and all(
                c.num_rows < TAIL_MERGE_ROWS for c in run
            )
        # No view replacement here: ``connect()`` publishes the tail of every table that changed
        # since its last publication, so a connection opened after ``append`` returned sees the
        # rows. Replacing the view on every append cost ~1 ms of binding each (a tenth of the
        # whole append), mostly for appends no query looked at before the next one.
        if merge:
            self._merge_tail_chunks(table, seq, run)

    def _merge_tail_chunks(self, table: str, seq: int, run: list[pa.Table]) -> None:
        """Replace a run of small tail chunks by one contiguous table: DuckDB scanned 300
        chunks of 1,000 rows 2.5x slower than the same rows in big chunks."""
        merged = pa.concat_tables(run).combine_chunks()
        with self._tail_lock:
            chunks = self._tail[table].get(seq)
            if chunks is None:
                return  # flushed meanwhile
            for i, c in enumerate(chunks):
                if c is run[0]:
                    if len(chunks) >= i + len(run) and all(
                        a is b for a, b in zip(chunks[i : i + len(run)], run, strict=True)
                    ):
                        chunks[i : i + len(run)] = [merged]
                        self._tail_version[table] += 1
                    break
            else:
                return
            version = self._tail_version[table]
        # A published snapshot may still hold the small chunks: republish so that they are freed
        # now rather than at the next query (once per merge, not per append).
        self._publish_tail(table, version)

    def _publish_tail(self, table: str, version: int = 0) -> None:
        """Point ``"__tail__<table>"`` at the current tail snapshot (if nobody did since
        ``version``): one view replacement serves every append that finished before it."""
        with self._ddl_lock:
            if self._published[table] >= version and version:
                return
            with self._tail_lock:
                chunks = [c for seg in sorted(self._tail[table]) for c in self._tail[table][seg]]
                current = self._tail_version[table]
            if chunks:
                snapshot = pa.concat_tables(chunks)
            else:
                schema = self._stored_schema[table].append(pa.field(SEG_COLUMN, pa.int64()))
                snapshot = schema.empty_table()
            assert self._db is not None
            self._db.from_arrow(snapshot).create_view(TAIL_PREFIX + table, replace=True)
            self._published[table] = current

    def _publish_changed_tails(self) -> None:
        """Publish the tail of every table appended to since its last publication."""
        for name, version in list(self._tail_version.items()):
            if self._published[name] < version:
                self._publish_tail(name, version)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh connection where each catalog table is a view over Parquet plus tail. Every
        append that returned before this call is visible to it."""
        if self._db is None:
            raise StorageClosed("storage is closed" if self._closed else "storage is not started")
        self._publish_changed_tails()
        with self._ddl_lock:
            if self._db is None:
                raise StorageClosed("storage is closed")
            return self._db.cursor()

    def snapshot(self, table: str, days: tuple[date, date | None] | None = None) -> tuple[list[Path], pa.Table]:
        """The Parquet files of ``table`` (of the days in ``days``, inclusive, when given) and
        its tail rows not yet in them, read as one consistent state: what another engine (Spark)
        needs to answer over exactly the rows a DuckDB connection sees. Every append that
        returned before this call is included."""
        if self._db is None:
            raise StorageClosed("storage is closed" if self._closed else "storage is not started")
        self._publish_changed_tails()
        tbl = self.catalog.tables[table]
        with self._ddl_lock:
            if self._db is None:
                raise StorageClosed("storage is closed")
            lo, hi = days if days is not None else (None, None)
            files = sorted(p for day, ps in self._files[table].items()
                           if (lo is None or day >= lo) and (hi is None or day <= hi) for p in ps)
            tail = self._db.cursor().sql(
                f"SELECT {self._stored_cols(tbl)}, {self._date_expr(tbl)} AS {_ident(DATE_PARTITION)} "
                f"FROM {_ident(TAIL_PREFIX + table)} "
                f"WHERE {_ident(SEG_COLUMN)} > {int(self._flushed_seg[table])}"
            ).to_arrow_table()
        return files, tail

    def _open_database(self) -> duckdb.DuckDBPyConnection:
        s = self.settings
        db = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "memory_limit": s.query_memory_limit,
            },
        )
        db.execute("SET GLOBAL TimeZone = 'UTC'")
        geoip.register(db)  # geo_info_from_ip_address(): a lookup in the operator's database
        db.execute("SET GLOBAL parquet_metadata_cache = true")
        db.execute(f"SET GLOBAL temp_directory = {_literal(str(self._tmp_dir))}")
        # Only the table directories (reads, and our own COPY ... TO) and the spill directory.
        allowed = [str(self.data_dir / t) + os.sep for t in self.catalog.tables]
        allowed.append(str(self._tmp_dir) + os.sep)
        db.execute("SET GLOBAL allowed_directories = $1", [allowed])
        db.execute("SET GLOBAL enable_external_access = false")
        db.execute("SET GLOBAL lock_configuration = true")
        return db

    def _view_sql(self, tbl: Table) -> str:
        cols = self._stored_cols(tbl)
        parts = []
        files = sorted(p for ps in self._files[tbl.name].values() for p in ps)
        if files:
            parts.append(self._files_sql(tbl, files, True))
        parts.append(
            f"SELECT {cols}, {self._date_expr(tbl)} AS {_ident(DATE_PARTITION)} "
            f"FROM {_ident(TAIL_PREFIX + tbl.name)} "
            f"WHERE {_ident(SEG_COLUMN)} > {int(self._flushed_seg[tbl.name])}"
        )
        return f"CREATE OR REPLACE VIEW main.{_ident(tbl.name)} AS " + " UNION ALL ".join(parts)

    def _note_layout(self, table: str, path: Path, layout: pa.Schema) -> None:
        """Remember the schema of a file found on disk if it is not the current one."""
        if layout.equals(self._stored_schema[table]):
            self._old_layout.pop(path, None)
        else:
            self._old_layout[path] = layout

    def _files_sql(self, tbl: Table, files: list[Path], with_date: bool) -> str:
        """A SELECT of the stored columns over ``files``: one ``read_parquet`` per schema the
        files were written with, each adapted to the current schema and joined by UNION ALL.
        Reading files of different schemas in one ``read_parquet`` fails (DuckDB binds the
        first file's columns), and ``union_by_name`` would read every file's footer per query
        and widen types instead of converting them to the current ones."""
        groups: dict[str, tuple[pa.Schema | None, list[Path]]] = {}
        for p in files:
            layout = self._old_layout.get(p)
            key = "" if layout is None else layout.to_string(show_schema_metadata=False)
            groups.setdefault(key, (layout, []))[1].append(p)
        date_col = f", {_ident(DATE_PARTITION)}" if with_date else ""
        hive = f", hive_partitioning = true, hive_types = {{'{DATE_PARTITION}': 'DATE'}}"
        parts = []
        for layout, paths in groups.values():
            lits = ", ".join(_literal(str(p)) for p in paths)
            cols = self._stored_cols(tbl) if layout is None else self._adapted_cols(tbl, layout)
            parts.append(
                f"SELECT {cols}{date_col} FROM read_parquet([{lits}]"
                f"{hive if with_date else ''})"
            )
        return " UNION ALL ".join(parts)

    def _adapted_cols(self, tbl: Table, layout: pa.Schema) -> str:
        """The stored columns read from a file of an older schema: a column the file lacks is
        "" (strings) or null; a column whose type changed is converted (TRY_CAST: a value that
        does not convert is null rather than failing every query of the table)."""
        out = []
        current = self._stored_schema[tbl.name]
        for f in current:
            sql_type = self._duckdb_type(tbl, f.name)
            stringy = sql_type == "VARCHAR"
            if f.name not in layout.names:
                expr = "''" if stringy else f"CAST(NULL AS {sql_type})"
            elif layout.field(f.name).type.equals(f.type):
                expr = _ident(f.name)
            else:
                expr = f"TRY_CAST({_ident(f.name)} AS {sql_type})"
                if stringy:
                    expr = f"COALESCE({expr}, '')"
            out.append(f"{expr} AS {_ident(f.name)}")
        return ", ".join(out)

    @staticmethod
    def _duckdb_type(tbl: Table, name: str) -> str:
        col = tbl.column(name)
        if col is not None:
            return col.type.duckdb
        return "TIMESTAMP" if name == INGESTION_TIME_COLUMN else "JSON"

    def _rebuild_views(self, tables: Iterable[str]) -> None:
        """Point the views of ``tables`` at the current file lists and flushed segments."""
        assert self._db is not None
        with self._ddl_lock:
            db = self._db
            db.execute("BEGIN TRANSACTION")
            try:
                for name in tables:
                    db.execute(self._view_sql(self.catalog.tables[name]))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
