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

The parts, one class each, chained by inheritance into ``Storage``: ``base`` (shared state and
helpers), ``views`` (the tail and the reader views), ``flush`` (segment -> Parquet),
``recovery`` (start-up: interrupted compactions, WAL replay), ``maintenance`` (compaction,
retention, deferred deletion, the background loop) and this module (life cycle, append, health).
Disk space is ``space``, the WAL's file format ``wal``, repair of unreadable files ``repair``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schema.catalog import Table
from server.storage.base import (
    _TS,
    AppendResult,
    Backpressure,
    BatchError,
    StorageClosed,
    StorageLocked,
    log,
)
from server.storage.maintenance import StorageMaintenance
from server.storage.space import DiskFull, is_out_of_space
from server.storage.wal import encode_record


class Storage(StorageMaintenance):
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
