"""The storage engine's shared state: settings, schemas, the hot tail's and the file lists'
data structures, and the helpers every part uses (see ``engine`` for how the parts fit)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from schema.catalog import DATE_PARTITION, EXTRA_COLUMN, INGESTION_TIME_COLUMN, Catalog, Table
from server.settings import Settings
from server.storage.space import SpaceGuard
from server.storage.wal import Segment, WriteAheadLog

log = logging.getLogger("quarry.storage")

Clock = Callable[[], datetime]

TAIL_PREFIX = "__tail__"
SEG_COLUMN = "_seg"
# The tail merges every run of this many small Arrow chunks (appends) into one contiguous chunk.
TAIL_MERGE_CHUNKS = 32
TAIL_MERGE_ROWS = 16_384
ROW_GROUP_ROWS = 100_000  # small enough for Timestamp min/max to prune inside a file
# Compaction merges the files of a date smaller than this into one; bigger files are left alone
# so that an old, large file is not rewritten every time a few late events arrive.
COMPACT_TARGET_BYTES = 256 * 1024 * 1024
_TS = pa.timestamp("us")
_JSON = pa.json_()


def utc_now() -> datetime:
    """The default clock: naive UTC, microseconds, like every stored datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    expired: int


class Backpressure(Exception):  # noqa: N818 - the contract's name
    """The unflushed backlog is over ``settings.max_unflushed_rows``: retry later."""

    def __init__(self, retry_after_s: float, unflushed_rows: int = 0) -> None:
        super().__init__(
            f"storage is behind: {unflushed_rows} rows not yet written to Parquet; "
            f"retry after {retry_after_s:g} s"
        )
        self.retry_after_s = retry_after_s
        self.unflushed_rows = unflushed_rows


class BatchError(ValueError):
    """A batch handed to ``append`` does not fit its table (a caller bug, not bad user input:
    ingest validates first). Says which column and row."""


class StorageClosed(RuntimeError):
    pass


class StorageLocked(RuntimeError):
    """Another process (or Storage) has this data directory open: two would both replay and
    delete the same WAL segments."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parse_date_dir(name: str) -> date | None:
    prefix = DATE_PARTITION + "="
    if not name.startswith(prefix):
        return None
    try:
        return date.fromisoformat(name[len(prefix) :])
    except ValueError:
        return None


class StorageBase:
    """State shared by the parts of ``Storage`` (each part is a class in this chain:
    base -> views -> flush -> recovery -> maintenance -> engine)."""

    def __init__(self, settings: Settings, catalog: Catalog, clock: Clock | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.clock: Clock = clock or utc_now
        self.data_dir = Path(settings.data_dir).resolve()
        self._wal_dir = self.data_dir / "_wal"
        self._tmp_dir = self.data_dir / "_tmp"
        self._wal = WriteAheadLog(self._wal_dir)
        self._space = SpaceGuard(self.data_dir, settings.min_free_bytes, settings.disk_reserve_bytes)
        # Appends bump `inflight` under the WAL write lock; the flusher waits here for it to drain.
        self._inflight_cond = threading.Condition(self._wal.write_lock)
        self._maint_lock = threading.RLock()  # flush / compact / retention, one at a time
        self._ddl_lock = threading.Lock()  # the root connection: DDL and cursor creation
        self._files: dict[str, dict[date, set[Path]]] = {t: {} for t in catalog.tables}
        # Files written under an older schema (columns added, removed or retyped since): their
        # Arrow schema, so reads adapt them to the current one. Files of the current schema are
        # not listed here.
        self._old_layout: dict[Path, pa.Schema] = {}
        self._sealed: list[Segment] = []
        # Hot tail: table -> segment -> Arrow chunks (with _seg), guarded by _tail_lock.
        self._tail: dict[str, dict[int, list[pa.Table]]] = {t: {} for t in catalog.tables}
        self._tail_lock = threading.Lock()
        self._tail_version: dict[str, int] = dict.fromkeys(catalog.tables, 0)
        self._published: dict[str, int] = dict.fromkeys(catalog.tables, 0)
        self._flushed_seg: dict[str, int] = dict.fromkeys(catalog.tables, 0)  # W per table
        self._stored_schema = {t.name: self._schema_for(t) for t in catalog.tables.values()}
        self._tail_json_idx = {
            name: [i for i, f in enumerate(schema) if f.type == _JSON]
            for name, schema in self._stored_schema.items()
        }
        # What ingest hands over (schema columns, then _extra) and what the WAL holds (the same
        # with _ingestion_time before _extra); dynamic columns as plain JSON text.
        self._ingest_schema: dict[str, pa.Schema] = {}
        self._row_schema: dict[str, pa.Schema] = {}
        self._json_columns: dict[str, list[str]] = {}
        self._string_columns: dict[str, list[int]] = {}
        self._empty_string_arrays: dict[int, pa.Array] = {}
        for t in catalog.tables.values():
            fields = [pa.field(c.name, c.type.arrow) for c in t.columns]
            self._ingest_schema[t.name] = pa.schema([*fields, pa.field(EXTRA_COLUMN, pa.string())])
            self._row_schema[t.name] = pa.schema(
                [*fields, pa.field(INGESTION_TIME_COLUMN, _TS), pa.field(EXTRA_COLUMN, pa.string())]
            )
            dyn = [c.name for c in t.columns if c.type.name == "dynamic"]
            self._json_columns[t.name] = [*dyn, EXTRA_COLUMN]
            # Kusto strings are never null ("The string data type doesn't support null
            # values"): a missing string is stored as "", so queries need no COALESCE on it.
            self._string_columns[t.name] = [
                i for i, c in enumerate(t.columns) if c.type.name in ("string", "guid")
            ]
        self._unflushed = 0
        self._deferred: list[tuple[float, list[Path]]] = []
        self._doomed: set[Path] = set()  # paths in _deferred
        self._flush_rate = 0.0  # rows/s of the last flush, for Retry-After estimates
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._db: duckdb.DuckDBPyConnection | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._lock_fd = -1

    def _conform(self, tbl: Table, batch: pa.Table, ingest_schema: pa.Schema) -> list[Any]:
        """Columns of ``ingest_schema`` from a batch that has a subset of them, in any order and
        castable types (missing columns are null)."""
        present = set(batch.column_names)
        unknown = [c for c in batch.column_names if c not in ingest_schema.names]
        if unknown:
            raise BatchError(f"{tbl.name}: columns not in the schema: {', '.join(unknown)}")
        if len(present) != batch.num_columns:
            raise BatchError(f"{tbl.name}: duplicate column names in the batch")
        return [
            self._cast(tbl.name, f.name, batch[f.name], f.type)
            if f.name in present
            else pa.nulls(batch.num_rows, f.type)
            for f in ingest_schema
        ]

    @staticmethod
    def _cast(table: str, column: str, arr: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
        if isinstance(arr.type, pa.ExtensionType):
            arr = pa.chunked_array([c.storage for c in arr.chunks], arr.type.storage_type)
        if arr.type == target:
            return arr
        try:
            if pa.types.is_timestamp(target) and pa.types.is_timestamp(arr.type):
                # Defender writes 100 ns ticks; we keep microseconds. Tz-aware values are UTC
                # instants, so dropping the zone keeps the UTC wall time.
                opts = pc.CastOptions(target, allow_time_truncate=True)
                return pc.cast(arr, options=opts)
            return pc.cast(arr, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise BatchError(f"{table}.{column}: cannot store {arr.type} as {target}: {e}") from e

    def _schema_for(self, tbl: Table) -> pa.Schema:
        """Arrow schema of a stored row: dynamic columns and _extra as Arrow JSON, so DuckDB
        types them JSON both in the tail and in the Parquet files written from it."""
        fields = [
            pa.field(c.name, pa.json_() if c.type.name == "dynamic" else c.type.arrow)
            for c in tbl.columns
        ]
        fields += [pa.field(INGESTION_TIME_COLUMN, _TS), pa.field(EXTRA_COLUMN, pa.json_())]
        return pa.schema(fields)

    def _date_expr(self, tbl: Table) -> str:
        ing = f"CAST({_ident(INGESTION_TIME_COLUMN)} AS DATE)"
        if tbl.has_timestamp:
            return f'COALESCE(CAST("Timestamp" AS DATE), {ing})'
        return ing

    def _order_col(self, tbl: Table) -> str:
        return _ident("Timestamp" if tbl.has_timestamp else INGESTION_TIME_COLUMN)

    def _stored_cols(self, tbl: Table) -> str:
        names = [*tbl.column_names, INGESTION_TIME_COLUMN, EXTRA_COLUMN]
        return ", ".join(_ident(n) for n in names)
