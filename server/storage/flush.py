"""Flushing: a sealed WAL segment becomes ``w<seq>.parquet`` files per table and date, then the
views move and the segment is deleted (see ``engine``)."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schema.catalog import DATE_PARTITION, INGESTION_TIME_COLUMN
from server.storage.base import ROW_GROUP_ROWS, SEG_COLUMN, log
from server.storage.faults import pause_point
from server.storage.views import StorageViews
from server.storage.wal import Segment, fsync_dir


class StorageFlush(StorageViews):
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
