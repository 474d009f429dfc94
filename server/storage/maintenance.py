"""Background maintenance: compaction of small files, retention, deferred deletion, and the
storage thread's loop (see ``engine``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import duckdb
import orjson

from schema.catalog import Table
from server.storage.base import COMPACT_TARGET_BYTES, ROW_GROUP_ROWS, _literal, _parse_date_dir, log
from server.storage.faults import pause_point
from server.storage.recovery import StorageRecovery
from server.storage.repair import file_problem, redact, repair_file
from server.storage.wal import atomic_write, fsync_dir, fsync_file


class StorageMaintenance(StorageRecovery):
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
                              e, self._space.backoff_s)
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
