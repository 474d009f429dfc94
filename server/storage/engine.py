"""The storage engine: WAL, hot tail, Parquet flusher, compaction, retention, reader views.

Data layout under ``settings.data_dir``::

    _wal/000000000042.wal            write-ahead log segments (deleted once in Parquet)
    _wal/LAST_SEGMENT                covers every segment number whose file was deleted
    _reserve                         disk-space ballast, given back when the disk fills (space.py)
    _tmp/                            DuckDB spill space
    _quarantine/                     unreadable Parquet files found at start-up, set aside
    <Table>/date=YYYY-MM-DD/w<seq>.parquet   flushed from WAL segment <seq>
    <Table>/date=YYYY-MM-DD/c<id>.parquet    merged by compaction
    <Table>/date=YYYY-MM-DD/_compact-<id>.json  compaction in progress (sources, target)
    <Table>/date=YYYY-MM-DD/_compact-<id>.done  committed; sources not yet deleted

How the pieces fit:

* The hot tail (rows not yet in Parquet) is kept as Arrow chunks per table and WAL segment,
  each chunk tagged with its segment number (``_seg``). One in-memory DuckDB database per
  ``Storage`` exposes it as a persistent view ``"__tail__<Table>"`` over an Arrow snapshot,
  replaced when a connection is opened after the tail changed (and after merges and flushes),
  not on every append. Inserting into a DuckDB
  table instead was measured at ~40 ms per 1,000 full-width rows, ten times the whole append.
* Every catalog table is a view in ``main``: the live Parquet files (an explicit list, so a
  half-written or superseded file is never read) ``UNION ALL`` the tail rows whose segment is
  newer than the last one flushed for that table (``_seg > W``). The file list and ``W`` change
  in one statement, and the tail drops a segment only after that, so whenever a query binds it
  sees each row exactly once.
* ``append`` conforms the batch, writes it to the WAL, waits for the group fsync, then adds it
  to the tail: it is queryable as soon as ``append`` returns.
* The flusher seals the open segment, writes its rows as ``w<seq>.parquet`` per table and date
  (atomic rename), moves the views, drops the segment from the tail, and only then deletes the
  segment. Replaying a segment after a crash skips any ``w<seq>`` file that already exists,
  which makes the segment -> Parquet handoff idempotent.
* ``connect()`` is a cursor on that database: the database is locked down (no file access
  outside the table directories, no extensions, configuration locked) and the views already
  exist, so a connection costs well under a millisecond.
* Files replaced by compaction or dropped by retention leave the views at once but are deleted
  from disk only after ``query_timeout_s``, so a running query never loses a file under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kql import geoip
from schema.catalog import (
    DATE_PARTITION,
    EXTRA_COLUMN,
    INGESTION_TIME_COLUMN,
    Catalog,
    Table,
)
from server.settings import Settings
from server.storage.faults import pause_point
from server.storage.repair import file_problem, fix_table, redact, repair_file
from server.storage.space import DiskFull, SpaceGuard, is_out_of_space
from server.storage.wal import (
    Segment,
    WriteAheadLog,
    atomic_write,
    encode_record,
    fsync_dir,
    fsync_file,
    list_segments,
    read_segment,
)

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


class Storage:
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

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Recover the data directory, replay the WAL, open a segment, start background work."""
        if self._started:
            return
        self._space.prepare_start()
        for d in (self.data_dir, self._wal_dir, self._tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._wal_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise StorageLocked(
                f"data directory {self.data_dir} is in use by another Quarry process"
                + (f" (pid {holder})" if holder else "")
                + "; stop it first, or query through its API"
            ) from None
        with contextlib.suppress(OSError):  # only informative; a full disk must not stop a start
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        try:
            self._start_locked()
        except BaseException:
            # Leave nothing half-open: a failed start (a corrupt file, a full disk) must not
            # keep the directory locked or the database alive until the process exits.
            if self._db is not None:
                self._db.close()
                self._db = None
            self._wal.close()
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    def _start_locked(self) -> None:
        for name in self.catalog.tables:
            (self.data_dir / name).mkdir(exist_ok=True)
        for p in self._tmp_dir.iterdir():
            if p.is_file():
                p.unlink()
        self._recover_files()
        self._db = self._open_database()
        for name in self.catalog.tables:
            self._publish_tail(name)
        self._rebuild_views(self.catalog.tables)
        last_seq = self._replay()
        self._wal.open_new(at_least=last_seq)
        self._started = True
        self.apply_retention()
        self._thread = threading.Thread(target=self._run, name="quarry-storage", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush what is buffered, stop background work and release the database."""
        if not self._started or self._closed:
            return
        with self._wal.write_lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        with self._maint_lock:
            try:
                self._flush_locked()
            except Exception:  # the WAL still has the rows; the next start replays them
                log.exception("flush on close failed")
            self._run_deferred(force=True)
        self._wal.close()
        with self._ddl_lock:
            for cur in self._cursors:
                with contextlib.suppress(Exception):
                    cur.close()
            self._cursors.clear()
            if self._db is not None:
                self._db.close()
                self._db = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # ------------------------------------------------------------------ append

    def append(self, table: str, batch: pa.Table) -> AppendResult:
        """Store ``batch`` durably; blocks for the WAL fsync (call it from a worker thread)."""
        return self.append_many({table: batch})[table]

    def append_many(self, batches: Mapping[str, pa.Table]) -> dict[str, AppendResult]:
        """Store batches of several tables as one unit: they reach the WAL in one write and are
        refused together (back-pressure, a bad batch), so a refused request stored nothing and
        its retry duplicates nothing."""
        if not self._started:
            raise StorageClosed("storage is not started")
        now = self.clock()
        results: dict[str, AppendResult] = {}
        staged: list[tuple[str, pa.Table]] = []
        frames: list[bytes | pa.Buffer] = []
        for table, batch in batches.items():
            tbl = self.catalog.table(table)
            if tbl is None:
                raise BatchError(f"unknown table {table!r}")
            rows, expired = self._prepare(tbl, batch, now)
            results[table] = AppendResult(rows.num_rows, expired)
            if rows.num_rows:
                staged.append((table, rows))
                # Records are self-delimiting: the frames of all tables go out in one writev,
                # and a failed write is cut back to before the first of them.
                frames += encode_record(table, rows)
        n = sum(rows.num_rows for _, rows in staged)
        if n == 0:
            return results
        self._space.check_append()
        with self._wal.write_lock:
            if self._closed:
                raise StorageClosed("storage is closed")
            bound = self.settings.max_unflushed_rows
            if self._unflushed > 0 and self._unflushed + n > bound:
                self._wake.set()
                raise Backpressure(self._retry_after(), self._unflushed)
            seg = self._wal.current
            assert seg is not None
            try:
                record_no = self._wal.write(frames)
            except OSError as e:
                if not is_out_of_space(e) or self._wal.broken:
                    raise
                # The partial frame was cut off: nothing of this request is stored.
                self._space.mark_full("write-ahead log", e)
                self._wake.set()
                raise DiskFull(
                    "the disk is full: the write-ahead log cannot grow; nothing was stored",
                    self._space.retry_after(),
                ) from e
            seg.rows += n
            seg.inflight += 1
            seg.tables.update(table for table, _ in staged)
            if seg.first_append_monotonic is None:
                seg.first_append_monotonic = time.monotonic()
            self._unflushed += n
        try:
            self._wal.sync(record_no)
            for table, rows in staged:
                self._add_to_tail(table, seg.seq, rows)
        finally:
            with self._inflight_cond:
                seg.inflight -= 1
                self._inflight_cond.notify_all()
        if seg.rows >= self.settings.flush_max_rows:
            self._wake.set()
        return results

    def check_space(self) -> None:
        """Raise DiskFull when an append would be refused for want of disk space (cheap)."""
        self._space.check_append()

    async def append_async(self, table: str, batch: pa.Table) -> AppendResult:
        """``append`` on a worker thread, for async endpoints."""
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.append, table, batch)

    def _retry_after(self) -> float:
        over = self._unflushed - self.settings.max_unflushed_rows // 2
        secs = over / self._flush_rate if self._flush_rate > 0 else 2.0
        return float(min(30, max(1, math.ceil(secs))))

    def _prepare(self, tbl: Table, batch: pa.Table, now: datetime) -> tuple[pa.Table, int]:
        """Conform ``batch`` to the stored schema, drop expired rows, stamp ingestion time."""
        if isinstance(batch, pa.RecordBatch):
            batch = pa.Table.from_batches([batch])
        n = batch.num_rows
        ingest_schema = self._ingest_schema[tbl.name]
        if batch.schema.equals(ingest_schema):
            # Ingest hands over exactly this schema: no per-column work.
            arrays = list(batch.columns)
        else:
            arrays = self._conform(tbl, batch, ingest_schema)
        for i in self._string_columns[tbl.name]:
            nulls = arrays[i].null_count
            if nulls == n:
                # A column the sender left out (half of a table's columns, typically): one
                # shared, immutable array of "" instead of a fill per column and batch.
                arrays[i] = self._empty_strings(n)
            elif nulls:
                arrays[i] = pc.fill_null(arrays[i], "")
        arrays.insert(len(tbl.columns), pa.repeat(pa.scalar(now, _TS), n))
        rows = pa.Table.from_arrays(arrays, schema=self._row_schema[tbl.name])
        try:
            # Full validation includes the UTF-8 of every string: a file holding invalid UTF-8
            # fails every later read of its column, with the rows already acknowledged.
            rows.validate(full=True)
        except pa.ArrowInvalid as e:
            raise BatchError(f"{tbl.name}: the batch cannot be stored: {e}") from None
        self._check_json(tbl, rows)
        expired = 0
        if tbl.has_timestamp and n:
            cutoff = now - timedelta(days=self.settings.retention_days)
            ts = rows["Timestamp"]
            oldest = pc.min(ts).as_py()
            if oldest is not None and oldest < cutoff:  # the common case skips the filter
                keep = pc.or_kleene(pc.is_null(ts), pc.greater_equal(ts, pa.scalar(cutoff, _TS)))
                kept = rows.filter(keep)
                expired = n - kept.num_rows
                rows = kept
        return rows, expired

    def _empty_strings(self, n: int) -> pa.Array:
        arr = self._empty_string_arrays.get(n)
        if arr is None:
            arr = pa.array([""], pa.string()).take(pa.repeat(pa.scalar(0, pa.int32()), n))
            if len(self._empty_string_arrays) >= 8:  # batch sizes vary little; keep a few
                self._empty_string_arrays.clear()
            self._empty_string_arrays[n] = arr
        return arr

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

    def _check_json(self, tbl: Table, rows: pa.Table) -> None:
        """Reject text that is not JSON before it reaches the WAL: afterwards it could only fail
        queries, with the rows already acknowledged."""
        for name in self._json_columns[tbl.name]:
            col = rows[name]
            if col.null_count == len(col):
                continue
            for i, v in enumerate(col.to_pylist()):
                if v is None:
                    continue
                try:
                    orjson.loads(v)
                except orjson.JSONDecodeError:
                    raise BatchError(
                        f"{tbl.name}.{name}: row {i} is not JSON text: {v[:80]!r}"
                    ) from None

    # ------------------------------------------------------------------ hot tail

    def _schema_for(self, tbl: Table) -> pa.Schema:
        """Arrow schema of a stored row: dynamic columns and _extra as Arrow JSON, so DuckDB
        types them JSON both in the tail and in the Parquet files written from it."""
        fields = [
            pa.field(c.name, pa.json_() if c.type.name == "dynamic" else c.type.arrow)
            for c in tbl.columns
        ]
        fields += [pa.field(INGESTION_TIME_COLUMN, _TS), pa.field(EXTRA_COLUMN, pa.json_())]
        return pa.schema(fields)

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

    # ------------------------------------------------------------------ reading

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

    # ------------------------------------------------------------------ start-up recovery

    def _recover_files(self) -> None:
        """Finish or undo interrupted compactions, drop temp files, list the live Parquet."""
        for name in self.catalog.tables:
            tdir = self.data_dir / name
            for ddir in tdir.iterdir():
                day = _parse_date_dir(ddir.name)
                if day is None or not ddir.is_dir():
                    continue
                # A committed merge supersedes its sources; an uncommitted one is undone. The
                # decision rests on the marker alone, never on which files exist: a merged file
                # may itself have been merged again (and deleted) since.
                for done in ddir.glob("_compact-*.done"):
                    for src in orjson.loads(done.read_bytes())["sources"]:
                        (ddir / src).unlink(missing_ok=True)
                    fsync_dir(ddir)
                    done.unlink()
                for intent in ddir.glob("_compact-*.json"):
                    (ddir / orjson.loads(intent.read_bytes())["target"]).unlink(missing_ok=True)
                    fsync_dir(ddir)
                    intent.unlink()
                for tmp in ddir.glob(".*.tmp"):
                    tmp.unlink()
                files = set()
                for p in ddir.glob("*.parquet"):
                    if p.name.startswith("."):
                        continue
                    try:
                        layout = pq.read_metadata(p).schema.to_arrow_schema()
                    except (OSError, pa.ArrowException) as e:
                        # One unreadable file would fail every query of the table: set it
                        # aside, loudly, for an operator to look at.
                        dest = self.data_dir / "_quarantine" / name / ddir.name / p.name
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(p, dest)
                        log.error("unreadable Parquet file %s moved to %s: %s", p, dest, e)
                        continue
                    self._note_layout(name, p, layout)
                    files.add(p)
                if files:
                    self._files[name][day] = files

    def _replay(self) -> int:
        """Flush every WAL segment left by the previous run into Parquet, exactly once.
        Returns the highest segment number seen."""
        last_seq = 0
        flushing = True
        cutoff = self.clock() - timedelta(days=self.settings.retention_days)
        for seq, path in list_segments(self._wal_dir):
            seg = Segment(seq, path, fd=-1)
            replayed = 0
            keep_copy = False
            for table, batch in read_segment(path):
                tbl = self.catalog.table(table)
                try:
                    if tbl is None:
                        raise BatchError(f"table {table} is no longer in the catalog")
                    if not batch.schema.equals(self._row_schema[table]):
                        # Written under an older schema: a column added since is "" (strings)
                        # or null, as for the Parquet files of that time.
                        arrays = self._conform(tbl, batch, self._row_schema[table])
                        for i in self._string_columns[table]:
                            arrays[i] = pc.fill_null(arrays[i], "")
                        batch = pa.Table.from_arrays(arrays, schema=self._row_schema[table])
                    batch, fixed = fix_table(batch)
                    if fixed:
                        # Acknowledged by an older version that did not validate UTF-8: kept,
                        # readable, with U+FFFD for the invalid bytes.
                        log.error("WAL %s: %d %s values with invalid UTF-8 replaced by U+FFFD",
                                  path.name, fixed, table)
                except BatchError as e:
                    # Written by an older schema that no longer fits: never drop acknowledged
                    # rows silently; keep the whole segment for an operator.
                    log.error("WAL %s: %d rows cannot be replayed (%s)", path, batch.num_rows, e)
                    keep_copy = True
                    continue
                if tbl.has_timestamp:
                    ts = batch["Timestamp"]
                    batch = batch.filter(
                        pc.or_kleene(pc.is_null(ts), pc.greater_equal(ts, pa.scalar(cutoff, _TS)))
                    )
                if batch.num_rows:
                    self._add_to_tail(table, seq, batch)
                    seg.tables.add(table)
                    seg.rows += batch.num_rows
                    replayed += batch.num_rows
            if keep_copy:
                dest = self.data_dir / "_quarantine" / "_wal" / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                log.error("WAL segment %s copied to %s before replay", path, dest)
            log.info("replaying WAL segment %s: %d rows", path.name, replayed)
            self._unflushed += seg.rows
            self._sealed.append(seg)
            last_seq = max(last_seq, seq)
            if flushing:
                try:
                    self._flush_segment(seg)
                except Exception as e:
                    if not is_out_of_space(e):
                        raise
                    # No room for Parquet: serve this segment and the later ones from the tail
                    # (segments flush in order) and flush them once there is room.
                    self._space.flush_failed(e)
                    flushing = False
                    log.error("WAL replay: no room to write Parquet; segments from %s on stay "
                              "in the write-ahead log and in memory until there is", path.name)
        return last_seq

    # ------------------------------------------------------------------ flushing

    def flush(self) -> None:
        """Write everything acknowledged so far to Parquet (tests, shutdown, the scheduler)."""
        with self._maint_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        for seg in list(self._sealed):  # a previous flush that failed goes first
            self._flush_segment(seg)
        cur = self._wal.current
        if cur is None or cur.rows == 0:
            return
        sealed = self._wal.rotate()
        self._sealed.append(sealed)
        self._flush_segment(sealed)

    def _flush_due(self) -> bool:
        if self._sealed or (self._space.full and self._unflushed):
            return True
        cur = self._wal.current
        if cur is None or cur.rows == 0:
            return False
        if cur.rows >= self.settings.flush_max_rows:
            return True
        if self._unflushed >= self.settings.max_unflushed_rows // 2:
            return True
        first = cur.first_append_monotonic
        return first is not None and time.monotonic() - first >= self.settings.flush_max_age_s

    def _flush_segment(self, seg: Segment) -> None:
        started = time.monotonic()
        with self._inflight_cond:
            self._inflight_cond.wait_for(lambda: seg.inflight == 0)
        cutoff_day = (self.clock() - timedelta(days=self.settings.retention_days)).date()
        # The segment's number must outlive the segment file (it names the w<seq> files).
        self._wal.record_issued(seg.seq)
        # Files are listed and the flushed-segment marks moved only once every file of the
        # segment is written: a flush that fails half-way (a full disk) must leave the views as
        # they were, or a later view rebuild would show rows of the segment twice (file + tail)
        # or not at all.
        written: list[tuple[str, date, Path]] = []
        for name in sorted(seg.tables):
            tbl = self.catalog.tables[name]
            with self._tail_lock:
                chunks = list(self._tail[name].get(seg.seq, ()))
            if not chunks:
                continue
            data = pa.concat_tables(chunks).drop_columns([SEG_COLUMN])
            day_col = pc.cast(data[INGESTION_TIME_COLUMN], pa.date32())
            if tbl.has_timestamp:
                day_col = pc.coalesce(pc.cast(data["Timestamp"], pa.date32()), day_col)
            order = "Timestamp" if tbl.has_timestamp else INGESTION_TIME_COLUMN
            # Sort the keys only; the rows are gathered in row-group slices as they are
            # written, so the flush holds one row group's copy, not a sorted copy of the whole
            # segment (the tail itself stays until the views have moved).
            keys = pa.table({"day": day_col, "order": data[order]})
            by_day = pc.sort_indices(keys, sort_keys=[("day", "ascending"), ("order", "ascending")])
            # Sorted by day first, each day is one contiguous run of indices. value_counts lists
            # values in order of first appearance, i.e. ascending here; the day is never null
            # (ingestion time is not).
            start = 0
            for run in pc.value_counts(day_col.take(by_day)).to_pylist():
                day, count = run["values"], run["counts"]
                rows = by_day.slice(start, count)
                start += count
                if day < cutoff_day:
                    # Expired while waiting in the WAL; its partition is (being) dropped.
                    log.info("flush: %s rows of %s are past retention, not written", name, day)
                    continue
                ddir = self.data_dir / name / f"{DATE_PARTITION}={day.isoformat()}"
                final = ddir / f"w{seg.seq:012d}.parquet"
                if not final.exists():  # exists: written before a crash, the handoff is done
                    ddir.mkdir(exist_ok=True)
                    tmp = ddir / f".{final.name}.tmp"
                    try:
                        with open(tmp, "wb") as f:
                            with pq.ParquetWriter(f, data.schema, compression="zstd") as writer:
                                for off in range(0, count, ROW_GROUP_ROWS):
                                    writer.write_table(
                                        data.take(rows.slice(off, ROW_GROUP_ROWS)),
                                        row_group_size=ROW_GROUP_ROWS,
                                    )
                            f.flush()
                            os.fsync(f.fileno())
                    except BaseException:
                        # A partial file only takes space (a full disk stays full): drop it.
                        tmp.unlink(missing_ok=True)
                        raise
                    os.replace(tmp, final)
                    fsync_dir(ddir)
                    fsync_dir(ddir.parent)
                    pause_point("flush")
                written.append((name, day, final))
        for name, day, final in written:
            self._files[name].setdefault(day, set()).add(final)
        for name in seg.tables:
            self._flushed_seg[name] = seg.seq
        # Views first (files in, this segment's tail rows filtered out), then the tail forgets
        # the segment: a query binding at any moment in between sees each row once.
        self._rebuild_views(sorted(seg.tables))
        for name in sorted(seg.tables):
            with self._tail_lock:
                self._tail[name].pop(seg.seq, None)
                self._tail_version[name] += 1
                version = self._tail_version[name]
            self._publish_tail(name, version)
        seg.path.unlink(missing_ok=True)
        fsync_dir(self._wal_dir)
        self._sealed.remove(seg)
        with self._wal.write_lock:
            self._unflushed -= seg.rows
        elapsed = time.monotonic() - started
        if seg.rows:
            self._flush_rate = seg.rows / max(elapsed, 1e-3)
            log.info("flushed segment %d: %d rows in %.2f s", seg.seq, seg.rows, elapsed)

    def _maint_cursor(self) -> duckdb.DuckDBPyConnection:
        cur: duckdb.DuckDBPyConnection | None = getattr(self, "_maint_cur", None)
        if cur is None:
            assert self._db is not None
            with self._ddl_lock:
                cur = self._db.cursor()
                self._cursors.append(cur)
            self._maint_cur = cur
        return cur

    # ------------------------------------------------------------------ compaction

    def compact(self) -> int:
        """Merge the small files of each table and date into one; returns files merged away."""
        merged = 0
        with self._maint_lock:
            for name in self.catalog.tables:
                for day in sorted(self._files[name]):
                    small = sorted(
                        p for p in self._files[name][day] if p.stat().st_size < COMPACT_TARGET_BYTES
                    )
                    if len(small) >= 2 and self._room_to_compact(small):
                        self._compact_files(self.catalog.tables[name], day, small)
                        merged += len(small) - 1
        return merged

    def _room_to_compact(self, sources: list[Path]) -> bool:
        """A merge writes a file about the size of its sources before deleting them: skip it
        (until a later cycle) unless that fits above ``min_free_bytes``."""
        need = sum(p.stat().st_size for p in sources) + self._space.min_free
        return not self._space.full and self._space.free() >= need

    def _compact_files(self, tbl: Table, day: date, sources: list[Path]) -> None:
        ddir = sources[0].parent
        cid = uuid.uuid4().hex[:12]
        target = ddir / f"c{cid}.parquet"
        tmp = ddir / f".{target.name}.tmp"
        intent = ddir / f"_compact-{cid}.json"
        # Crash safety: the intent names target and sources; renaming it to ``.done`` after the
        # target is in place is the commit point. At start-up a ``.done`` deletes its sources and
        # a bare intent deletes its target (see _recover_files).
        spec = {"target": target.name, "sources": [p.name for p in sources]}
        try:
            atomic_write(intent, orjson.dumps(spec))
            self._maint_cursor().execute(
                f"COPY (SELECT {self._stored_cols(tbl)} FROM ({self._files_sql(tbl, sources, False)}) "
                f"ORDER BY {self._order_col(tbl)}) TO {_literal(str(tmp))} "
                f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
            )
            fsync_file(tmp)
            os.replace(tmp, target)
            fsync_dir(ddir)
        except BaseException as e:
            # Undo now what start-up recovery would undo (the sources are untouched): a failed
            # merge must not leave its partial output or its intent behind until a restart.
            for p in (tmp, target, intent, intent.with_name(intent.name + ".tmp")):
                p.unlink(missing_ok=True)
            # A source that cannot be read back (written by an earlier version) is repaired and
            # set aside, so that the next cycle merges the rest instead of failing again.
            if isinstance(e, duckdb.Error) and self._repair_files(tbl, day, sources):
                return
            raise
        pause_point("compact")
        done = intent.with_suffix(".done")
        os.replace(intent, done)
        fsync_dir(ddir)
        files = self._files[tbl.name][day]
        files.difference_update(sources)
        files.add(target)
        for p in sources:  # the merged file has the current schema
            self._old_layout.pop(p, None)
        self._rebuild_views([tbl.name])
        self._defer_delete([*sources, done])
        log.info("compacted %d files of %s %s into %s", len(sources), tbl.name, day, target.name)

    def _repair_files(self, tbl: Table, day: date, paths: list[Path]) -> bool:
        """Repair the unreadable files among ``paths`` (server/storage/repair.py): each moves to
        the quarantine and its readable rows to a new file. Returns whether any was."""
        files = self._files[tbl.name].setdefault(day, set())
        repaired = False
        for p in paths:
            problem = file_problem(p)
            if problem is None:
                continue
            log.error("%s cannot be read back (%s); repairing it", p.relative_to(self.data_dir),
                      redact(problem, self.data_dir))
            result = repair_file(p, self.data_dir)
            files.discard(p)
            if result.replacement is not None:
                files.add(self.data_dir / result.replacement)
            repaired = True
        if repaired:
            self._rebuild_views([tbl.name])
        return repaired

    # ------------------------------------------------------------------ retention

    def apply_retention(self) -> int:
        """Drop date partitions entirely older than the retention; returns how many."""
        cutoff_day = (self.clock() - timedelta(days=self.settings.retention_days)).date()
        dropped = 0
        with self._maint_lock:
            for name in self.catalog.tables:
                tdir = self.data_dir / name
                old = [
                    d
                    for d in tdir.iterdir()
                    if (day := _parse_date_dir(d.name)) is not None
                    and day < cutoff_day
                    and d not in self._doomed
                ]
                if not old:
                    continue
                for d in old:
                    self._files[name].pop(_parse_date_dir(d.name), None)  # type: ignore[arg-type]
                self._rebuild_views([name])
                self._defer_delete(old)
                dropped += len(old)
        if dropped:
            log.info("retention: dropped %d partitions older than %s", dropped, cutoff_day)
        return dropped

    def _defer_delete(self, paths: list[Path]) -> None:
        grace = self.settings.query_timeout_s + 5.0
        self._deferred.append((time.monotonic() + grace, paths))
        self._doomed.update(paths)

    def _run_deferred(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for deadline, paths in self._deferred:
            if force or deadline <= now:
                for p in paths:
                    if p.is_dir():
                        first = next(p.glob("*.parquet"), None)
                        if first is not None:
                            first.unlink()
                            pause_point("retention")
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.unlink(missing_ok=True)
                if paths:
                    with contextlib.suppress(FileNotFoundError):  # a dropped partition
                        fsync_dir(paths[0].parent)
                self._doomed.difference_update(paths)
            else:
                keep.append((deadline, paths))
        self._deferred = keep

    # ------------------------------------------------------------------ background work

    def _run(self) -> None:
        s = self.settings
        next_compact = time.monotonic() + s.compaction_interval_s
        next_retention = time.monotonic() + s.retention_interval_s
        while not self._stop.is_set():
            self._wake.wait(timeout=0.25)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._flush_due() and self._space.flush_allowed():
                try:
                    self.flush()
                except Exception as e:
                    # Backed off (and, for want of space, ingest refused): a full disk must not
                    # be refilled with the same partial file every second.
                    self._space.flush_failed(e)
                    log.error("flush failed (%s); retrying in %.0f s or when space is freed",
                              e, self._space.retry_after())
                else:
                    self._space.flush_succeeded()
            try:
                self._space.tick(backlog_waiting=self._unflushed > 0)
                now = time.monotonic()
                if now >= next_compact:
                    next_compact = now + s.compaction_interval_s
                    self.compact()
                if now >= next_retention:
                    next_retention = now + s.retention_interval_s
                    self.apply_retention()
                with self._maint_lock:
                    self._run_deferred()
            except Exception:
                log.exception("storage background work failed; retrying")
                self._stop.wait(1.0)

    # ------------------------------------------------------------------ introspection

    @property
    def unflushed_rows(self) -> int:
        return self._unflushed

    def health(self) -> list[dict[str, Any]]:
        """Why the storage is degraded, one entry per reason (empty when healthy); /healthz."""
        reasons = self._space.health(self._unflushed)
        if self._wal.broken:
            reasons.append({"code": "wal_unusable",
                            "message": "the write-ahead log failed to sync; ingest fails until a "
                            "restart replays what reached the disk"})
        return reasons

    def stats(self) -> dict[str, Any]:
        """Sizes for metrics and health: unflushed rows, Parquet files and bytes per table."""
        tables = {}
        for name, days in self._files.items():
            files = [p for ps in days.values() for p in ps]
            size = 0
            for p in files:
                with contextlib.suppress(FileNotFoundError):
                    size += p.stat().st_size
            tables[name] = {"files": len(files), "bytes": size, "partitions": len(days)}
        return {"unflushed_rows": self._unflushed, "tables": tables}
