"""Finding and repairing Parquet files that cannot be read back (``quarry repair``, and
compaction when it meets one).

Quarry validates every batch before the WAL acknowledges it (``Storage._prepare``), so it no
longer writes such files. Older versions could: their NDJSON fast path stored strings that are
not UTF-8, and DuckDB then refused every query touching the column ("Invalid string encoding
found in Parquet file") and every compaction of the partition.

Repairing a file keeps every row it can: row groups that read and validate are copied as they
are; in the others each invalid UTF-8 sequence becomes U+FFFD (as a lenient UTF-8 decoder
does). Only a row group that cannot be decoded at all is left out. The original file is kept,
byte for byte, under ``_quarantine/<Table>/date=.../`` and the repaired rows go to a new file
next to it (a new name, so no cache holds the old one's metadata). See docs/internals.md
("Repairing unreadable files").
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from server.storage.wal import atomic_write, fsync_dir

log = logging.getLogger("quarry.storage.repair")

QUARANTINE = "_quarantine"


@dataclass
class Repaired:
    """What repairing one file did (paths relative to the data directory)."""

    source: str
    quarantined: str
    replacement: str | None  # None when no row could be kept
    rows: int = 0
    fixed_values: int = 0
    lost_row_groups: list[str] = field(default_factory=list)


def _is_text(t: pa.DataType) -> bool:
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _fix_column(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, int]:
    """Invalid UTF-8 sequences of a text column replaced by U+FFFD; returns how many values
    changed. A column that validates is returned as it is."""
    try:
        arr.validate(full=True)
        return arr, 0
    except pa.ArrowInvalid:
        pass
    ext = arr.type if isinstance(arr.type, pa.ExtensionType) else None
    storage = ext.storage_type if ext is not None else arr.type
    chunks = [c.storage if ext is not None else c for c in arr.chunks]
    binary = pa.large_binary() if pa.types.is_large_string(storage) else pa.binary()
    values = pa.chunked_array([c.view(binary) for c in chunks], binary).to_pylist()
    fixed = 0
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        try:
            out.append(v.decode())
        except UnicodeDecodeError:
            out.append(v.decode(errors="replace"))
            fixed += 1
    new = pa.array(out, storage)
    if ext is not None:
        new = pa.ExtensionArray.from_storage(ext, new)
    return pa.chunked_array([new], arr.type), fixed


def fix_table(table: pa.Table) -> tuple[pa.Table, int]:
    """``table`` with invalid UTF-8 in its text columns replaced (see ``_fix_column``)."""
    fixed = 0
    cols = list(table.columns)
    for i, f in enumerate(table.schema):
        if _is_text(f.type):
            cols[i], n = _fix_column(cols[i])
            fixed += n
    return (pa.Table.from_arrays(cols, schema=table.schema), fixed) if fixed else (table, 0)


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read back whole, or None when every row group reads and
    validates (UTF-8 of text columns included)."""
    try:
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i).validate(full=True)
    except (OSError, pa.ArrowException) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def repair_file(path: Path, data_dir: Path) -> Repaired:
    """Replace an unreadable Parquet file by a readable one holding every row that can be
    kept; the original goes to the quarantine folder. The caller updates its file lists."""
    rel = path.relative_to(data_dir)
    dest = data_dir / QUARANTINE / rel
    result = Repaired(str(rel), str(dest.relative_to(data_dir)), None)
    kept: list[pa.Table] = []
    schema: pa.Schema | None = None
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        groups = range(pf.num_row_groups)
    except (OSError, pa.ArrowException) as e:
        result.lost_row_groups.append(f"whole file: {e}")
        groups = range(0)
    for i in groups:
        try:
            rg = pf.read_row_group(i)
        except (OSError, pa.ArrowException) as e:
            result.lost_row_groups.append(f"row group {i}: {e}")
            continue
        rg, n = fix_table(rg)
        result.fixed_values += n
        kept.append(rg)
    # Crash safety reuses compaction's protocol (engine._recover_files): the original is first
    # hard-linked into the quarantine, an intent names the replacement, and renaming the intent
    # to ".done" commits; start-up then deletes the live original (a bare intent: the
    # replacement). Whatever the moment of a crash, each row is live exactly once.
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    os.link(path, dest)
    fsync_dir(dest.parent)
    ddir = path.parent
    if kept and schema is not None:
        cid = uuid.uuid4().hex[:12]
        target = ddir / f"c{cid}.parquet"
        tmp = ddir / f".{target.name}.tmp"
        intent = ddir / f"_compact-{cid}.json"
        atomic_write(intent, orjson.dumps({"target": target.name, "sources": [path.name]}))
        with open(tmp, "wb") as f:
            with pq.ParquetWriter(f, schema, compression="zstd") as writer:
                for rg in kept:
                    writer.write_table(rg)
                    result.rows += rg.num_rows
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        done = intent.with_suffix(".done")
        os.replace(intent, done)
        fsync_dir(ddir)
        path.unlink()
        done.unlink()
        result.replacement = str(target.relative_to(data_dir))
    else:
        path.unlink()
    fsync_dir(ddir)
    log.error(
        "unreadable Parquet file %s moved to %s; %d rows kept in %s (%d values with invalid "
        "UTF-8 replaced by U+FFFD; lost row groups: %s)",
        result.source, result.quarantined, result.rows, result.replacement,
        result.fixed_values, "; ".join(result.lost_row_groups) or "none",
    )
    return result


def table_files(data_dir: Path, tables: list[str]) -> list[Path]:
    """The live Parquet files of ``tables`` (temporary and hidden files excluded)."""
    out: list[Path] = []
    for name in tables:
        tdir = data_dir / name
        if tdir.is_dir():
            out += sorted(p for p in tdir.glob("date=*/*.parquet") if not p.name.startswith("."))
    return out


def repair_data_dir(data_dir: Path, tables: list[str]) -> tuple[int, list[Repaired]]:
    """Check every live Parquet file of ``tables`` and repair the unreadable ones (the server
    must be stopped: the data directory's lock is taken). Returns (files checked, repairs)."""
    lock = data_dir / "_wal" / "LOCK"
    if not lock.parent.is_dir():
        raise FileNotFoundError(f"{data_dir} is not a Quarry data directory (no _wal folder)")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{data_dir} is in use by a running Quarry server; stop it first"
            ) from None
        files = table_files(data_dir, tables)
        repairs = [repair_file(p, data_dir) for p in files if file_problem(p) is not None]
        return len(files), repairs
    finally:
        os.close(fd)  # releases the lock


def redact(text: str, data_dir: Path) -> str:
    """``text`` (an engine's error) without the server's absolute data directory."""
    return text.replace(str(data_dir) + os.sep, "").replace(str(data_dir), "<data>")
