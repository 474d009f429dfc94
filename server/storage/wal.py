"""Write-ahead log: numbered segment files of framed, checksummed Arrow IPC records.

A record is ``MAGIC | payload length (u32) | crc32(payload) (u32) | payload`` and the payload is
``table name length (u16) | table name | Arrow IPC stream``. Records are only ever appended, so
after a crash the one record that can be torn is the last; a reader stops at the first record
whose frame or checksum does not hold. Such a record was never acknowledged: ``append`` returns
only after the fsync that covers its whole frame.

Group commit: writers append their frame under a short lock and then wait for an fsync that
covers their record. Whoever takes the sync lock first syncs for everyone queued behind it, so
under concurrent load one fsync acknowledges many requests.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

log = logging.getLogger("quarry.storage.wal")

MAGIC = b"QWL1"
_HEADER = struct.Struct("<4sII")
_NAME_LEN = struct.Struct("<H")
SEGMENT_SUFFIX = ".wal"
_SEQ_FILE = "LAST_SEGMENT"
# lz4 IPC body compression: measured here (4 appending threads, full-width rows) it used about
# as much CPU in total as no compression (user time up, kernel time for writing 3.5x the bytes
# down) and keeps the WAL 3.5x smaller; zstd cost ~1.6x the CPU.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either its old or its new content after a crash."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave nothing half-written behind
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def encode_record(table: str, batch: pa.Table) -> list[bytes | pa.Buffer]:
    """The frame of one record as buffers for ``os.writev`` (the Arrow body is not copied)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(batch)
    body = sink.getvalue()
    name = table.encode()
    prefix = _NAME_LEN.pack(len(name)) + name
    crc = zlib.crc32(body, zlib.crc32(prefix))
    return [_HEADER.pack(MAGIC, len(prefix) + body.size, crc), prefix, body]


def read_segment(path: Path) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(table, batch)`` for every whole record; stop at a torn or corrupt one."""
    with open(path, "rb") as f:
        data = f.read()
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < _HEADER.size:
            log.warning("%s: torn record header at byte %d ignored (never acknowledged)", path, pos)
            return
        magic, length, crc = _HEADER.unpack_from(data, pos)
        body_start = pos + _HEADER.size
        payload = data[body_start : body_start + length]
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            log.warning(
                "%s: torn or corrupt record at byte %d; %d trailing bytes ignored",
                path,
                pos,
                end - pos,
            )
            return
        (name_len,) = _NAME_LEN.unpack_from(payload, 0)
        table = payload[_NAME_LEN.size : _NAME_LEN.size + name_len].decode()
        with pa.ipc.open_stream(pa.py_buffer(payload[_NAME_LEN.size + name_len :])) as reader:
            batch = reader.read_all()
        yield table, batch
        pos = body_start + length


def segment_path(wal_dir: Path, seq: int) -> Path:
    return wal_dir / f"{seq:012d}{SEGMENT_SUFFIX}"


def list_segments(wal_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in wal_dir.glob(f"*{SEGMENT_SUFFIX}"):
        stem = p.name[: -len(SEGMENT_SUFFIX)]
        if stem.isdigit():
            out.append((int(stem), p))
    return sorted(out)


@dataclass
class Segment:
    seq: int
    path: Path
    fd: int
    rows: int = 0
    size: int = 0  # bytes of whole frames written
    first_append_monotonic: float | None = None
    inflight: int = 0  # appends written to this segment whose tail insert has not finished
    tables: set[str] = field(default_factory=set)


class WriteAheadLog:
    """The open segment plus the group-commit machinery. Thread-safe.

    Lock order: ``_sync_lock`` before ``_write_lock``. Rotation takes both, so an fsync never
    races a close of the same descriptor.
    """

    def __init__(self, wal_dir: Path) -> None:
        self.dir = wal_dir
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0  # number of the last record written (monotonic over segments)
        self._synced = 0  # number of the last record known durable
        self.current: Segment | None = None
        self._recorded: int | None = None  # LAST_SEGMENT's value, once read
        # Set when a write could not be undone or an fsync failed: after a failed fsync the
        # kernel may have dropped the dirty pages, so nothing more may be acknowledged from this
        # log until a restart replays what really reached the disk.
        self.broken: str | None = None

    @property
    def write_lock(self) -> threading.Lock:
        return self._write_lock

    def _stored_seq(self) -> int:
        if self._recorded is None:
            seq_file = self.dir / _SEQ_FILE
            self._recorded = int(seq_file.read_text()) if seq_file.exists() else 0
        return self._recorded

    def record_issued(self, seq: int) -> None:
        """Make ``LAST_SEGMENT`` at least ``seq``; called before segment ``seq`` is flushed.

        The numbers name the Parquet files flushed from the segments, so one must never be
        reused. A segment file on disk keeps its own number; the counter must cover it only
        once the file is deleted, after its flush. So opening a segment writes no data (it
        works on a full disk) and the counter is written by the flush, which needs room anyway.
        """
        if self._stored_seq() < seq:
            atomic_write(self.dir / _SEQ_FILE, str(seq).encode())
            self._recorded = seq

    def open_new(self, at_least: int = 0) -> Segment:
        """Open a fresh segment. Caller holds no lock (start-up) or both locks (rotation)."""
        existing = max((s for s, _ in list_segments(self.dir)), default=0)
        seq = max(self._stored_seq(), at_least, existing) + 1
        path = segment_path(self.dir, seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fsync_dir(self.dir)
        self.current = Segment(seq, path, fd)
        return self.current

    def write(self, record: list[bytes | pa.Buffer]) -> int:
        """Append a frame (or several frames back to back, written and undone as one) to the
        current segment; caller holds ``write_lock``. Returns its number for ``sync``."""
        if self.broken:
            raise OSError(f"write-ahead log unusable until restart: {self.broken}")
        seg = self.current
        assert seg is not None
        views = [memoryview(b) for b in record]
        try:
            while views:
                n = os.writev(seg.fd, views)
                while views and n >= len(views[0]):  # a short write resumes where it stopped
                    n -= len(views[0])
                    views.pop(0)
                if views and n:
                    views[0] = views[0][n:]
        except OSError as e:
            # A partial frame followed by good ones would hide them from replay: cut it off.
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                self.broken = f"cannot undo a failed write: {e}"
            raise
        seg.size += sum(len(memoryview(b)) for b in record)
        self._written += 1
        return self._written

    def sync(self, record_no: int) -> None:
        """Return once record ``record_no`` is on stable storage (one fsync serves many callers)."""
        if self._synced >= record_no:
            return
        with self._sync_lock:
            if self._synced >= record_no:
                return
            with self._write_lock:
                target = self._written
                seg = self.current
            assert seg is not None
            if self.broken:
                raise OSError(f"write-ahead log unusable until restart: {self.broken}")
            try:
                os.fdatasync(seg.fd)
            except OSError as e:
                self.broken = f"fsync failed: {e}"
                raise
            self._synced = target

    def rotate(self) -> Segment:
        """Seal the current segment (fsync'd, closed) and open the next; returns the sealed one."""
        with self._sync_lock, self._write_lock:
            old = self.current
            assert old is not None
            if self.broken:
                raise OSError(f"write-ahead log unusable until restart: {self.broken}")
            try:
                os.fdatasync(old.fd)
            except OSError as e:
                self.broken = f"fsync failed: {e}"
                raise
            self._synced = self._written
            # The next segment first: if it cannot be opened, the current one stays open and
            # usable (closing it first would leave appends writing to a closed descriptor).
            self.open_new(old.seq)
            os.close(old.fd)
            return old

    def close(self) -> None:
        with self._sync_lock, self._write_lock:
            if self.current is not None:
                os.fdatasync(self.current.fd)
                os.close(self.current.fd)
                self._synced = self._written
                self.current = None
