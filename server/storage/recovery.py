"""Start-up recovery: finish or undo interrupted compactions, list the live Parquet files, and
replay the write-ahead log exactly once (see ``engine``)."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from server.storage.base import _TS, BatchError, _parse_date_dir, log
from server.storage.flush import StorageFlush
from server.storage.repair import fix_table
from server.storage.space import is_out_of_space
from server.storage.wal import Segment, fsync_dir, list_segments, read_segment


class StorageRecovery(StorageFlush):
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
