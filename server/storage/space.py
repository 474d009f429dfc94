"""Disk space: refuse ingest before the disk is full, survive it when it fills anyway.

Two settings shape it (docs/limits.md):

* ``min_free_bytes``: ingest answers 507 while the data directory's filesystem has less free
  space than this, so that Quarry never fills the disk itself and flushes, compaction and the
  metadata database keep room to work.
* ``disk_reserve_bytes``: a ballast file, ``<data_dir>/_reserve``, allocated while there is
  room. When the disk fills anyway (another program, a smaller volume than planned) Quarry
  deletes it: that gives a start-up room to open the metadata database (SQLite cannot open a
  database in WAL mode on a full disk: it must create its shared-memory file) and a flush room
  to turn the write-ahead log into Parquet. It is allocated again once the disk has room for it
  and ``min_free_bytes`` besides.

When a write fails for want of space (``ENOSPC``/``EDQUOT``) the guard marks the disk full:
appends are refused at once (507 with Retry-After, nothing written) so that freed space goes to
the flush of what was already acknowledged, not to more WAL. Flushes that failed for want of
space are retried with a doubling back-off (1 s up to 30 s), or at once when the free space
grows, so a full disk is not rewritten with the same partial file every second. The mark is
cleared when nothing waits for a flush any more and the free space is back above
``min_free_bytes`` (and the reserve is back, when one is configured).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("quarry.storage.space")

RESERVE_FILE = "_reserve"
_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
_RETRY_MIN_S = 5  # Retry-After of a refused ingest, at least
# A flush that failed for want of space is retried before its back-off ends when at least this
# much space (or the space the failure had, doubled) has appeared since.
_GROWTH_BYTES = 256 * 1024


class DiskFull(Exception):  # noqa: N818 - named for what the client is told
    """Ingest is refused for want of disk space; nothing was written. Retry after
    ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed write for want of space (an OSError, or DuckDB's IOException,
    which carries only the message)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize)


class SpaceGuard:
    """The disk-space state of one data directory. Thread-safe."""

    def __init__(self, data_dir: Path, min_free_bytes: int, reserve_bytes: int) -> None:
        self.data_dir = data_dir
        self.min_free = max(0, int(min_free_bytes))
        self.reserve_bytes = max(0, int(reserve_bytes))
        self._lock = threading.Lock()
        self._full: str | None = None  # why the disk is marked full
        self._full_since = 0.0
        self._free_at_failure = 0
        self._backoff = 0.0
        self._retry_at = 0.0
        self._flush_error: str | None = None
        self._reserve_ok = self.reserve_bytes == 0  # the ballast is in place (or none is wanted)

    @property
    def reserve_path(self) -> Path:
        return self.data_dir / RESERVE_FILE

    def free(self) -> int:
        return free_bytes(self.data_dir)

    # ---------------------------------------------------------------- the reserve

    def release_reserve(self, why: str) -> bool:
        """Delete the ballast file (if any); True if that freed space."""
        try:
            size = self.reserve_path.stat().st_size
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        finally:
            self._reserve_ok = self.reserve_bytes == 0
        log.warning("released the %d-byte disk reserve: %s", size, why)
        return True

    def ensure_reserve(self) -> bool:
        """Allocate the ballast when there is room for it and ``min_free_bytes`` besides.
        True when the reserve is in place (or none is configured)."""
        if self.reserve_bytes == 0:
            return True
        path = self.reserve_path
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size >= self.reserve_bytes:
                self._reserve_ok = True
                return True
        self._reserve_ok = False
        if free_bytes(self.data_dir) < self.reserve_bytes + self.min_free:
            return False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as e:
            # A half-allocated ballast holds space nobody can use: drop it and try later.
            path.unlink(missing_ok=True)
            log.warning("could not allocate the disk reserve: %s", e.strerror)
            return False
        self._reserve_ok = True
        return True

    def prepare_start(self) -> None:
        """At start-up, before anything writes: on a disk below ``min_free_bytes`` give the
        reserve back, so that the metadata database opens and the WAL can be replayed."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if free_bytes(self.data_dir) < max(self.min_free, 1):
            self.release_reserve("the disk is (nearly) full at start-up")
        else:
            self.ensure_reserve()

    # ---------------------------------------------------------------- ingest

    def check_append(self) -> None:
        """Raise DiskFull when ingest must be refused."""
        if self._full is not None:
            raise DiskFull(
                f"the disk is full ({self._full}); ingest resumes by itself once space is freed "
                "and the acknowledged backlog is written",
                self.retry_after(),
            )
        need = self.min_free + (0 if self._reserve_ok else self.reserve_bytes)
        if need:
            free = free_bytes(self.data_dir)
            if free < need:
                raise DiskFull(
                    f"the disk has {free} bytes free, less than {self._need_text()}; ingest "
                    "resumes by itself once space is freed",
                    self.retry_after(),
                )

    def _need_text(self) -> str:
        if self._reserve_ok:
            return f"min_free_bytes ({self.min_free})"
        return (f"min_free_bytes ({self.min_free}) plus room to restore the disk reserve "
                f"({self.reserve_bytes})")

    def retry_after(self) -> float:
        """Seconds a refused client should wait: until the next flush attempt, at least
        ``_RETRY_MIN_S`` (a fleet of agents retrying every second would be a storm of refusals
        while an operator frees space), at most the longest back-off."""
        wait = self._retry_at - time.monotonic()
        return float(min(_BACKOFF_MAX_S, max(_RETRY_MIN_S, math.ceil(wait))))

    def mark_full(self, what: str, exc: BaseException) -> None:
        """A write of ``what`` failed for want of space."""
        reason = f"{what}: {getattr(exc, 'strerror', None) or 'no space left on device'}"
        with self._lock:
            first = self._full is None
            self._full = reason
            if first:
                self._full_since = time.monotonic()
            self._free_at_failure = free_bytes(self.data_dir)
        if first:
            log.error("disk full (%s): ingest is refused until space is freed", reason)
        self.release_reserve("a write failed for want of space")

    # ---------------------------------------------------------------- flushing

    def flush_allowed(self) -> bool:
        """Whether a flush may be tried now (not backing off, or the free space grew)."""
        if self._backoff == 0.0 or time.monotonic() >= self._retry_at:
            return True
        free = free_bytes(self.data_dir)
        return free >= max(self._free_at_failure * 2, self._free_at_failure + _GROWTH_BYTES)

    @property
    def backoff_s(self) -> float:
        """The current flush back-off (0 when the last flush succeeded)."""
        return self._backoff

    def flush_failed(self, exc: BaseException) -> None:
        with self._lock:
            self._backoff = min(_BACKOFF_MAX_S, max(_BACKOFF_START_S, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            self._flush_error = str(getattr(exc, "strerror", None) or type(exc).__name__)
        if is_out_of_space(exc):
            self.mark_full("flush to Parquet", exc)
        else:
            with self._lock:
                self._free_at_failure = free_bytes(self.data_dir)

    def flush_succeeded(self) -> None:
        with self._lock:
            self._backoff = 0.0
            self._retry_at = 0.0
            self._flush_error = None

    def tick(self, backlog_waiting: bool) -> None:
        """Background housekeeping: clear the full mark once nothing waits for a flush and the
        disk has room again; keep the reserve allocated."""
        if self._full is not None and not backlog_waiting:
            free = free_bytes(self.data_dir)
            if free >= self.min_free and free > self._free_at_failure and self.ensure_reserve():
                with self._lock:
                    since = time.monotonic() - self._full_since
                    self._full = None
                log.warning("disk space is back after %.1f s: ingest resumes", since)
        elif self._full is None and self.reserve_bytes:
            self.ensure_reserve()

    # ---------------------------------------------------------------- health

    @property
    def full(self) -> bool:
        return self._full is not None

    def health(self, unflushed_rows: int) -> list[dict[str, Any]]:
        """Reasons the storage is degraded (empty when it is not)."""
        out: list[dict[str, Any]] = []
        free = free_bytes(self.data_dir)
        if self._full is not None:
            out.append({
                "code": "disk_full",
                "message": f"the disk is full ({self._full}); ingest answers 507 until space is "
                f"freed; {unflushed_rows} acknowledged rows wait in the write-ahead log",
                "freeBytes": free,
                "sinceSeconds": round(time.monotonic() - self._full_since, 1),
            })
        elif free < self.min_free + (0 if self._reserve_ok else self.reserve_bytes):
            out.append({
                "code": "low_disk_space",
                "message": f"{free} bytes free, less than {self._need_text()}: ingest answers "
                "507 until space is freed",
                "freeBytes": free,
            })
        if self._flush_error is not None and self._full is None:
            out.append({
                "code": "flush_failing",
                "message": f"writing Parquet fails ({self._flush_error}); retried with back-off, "
                f"{unflushed_rows} acknowledged rows wait in the write-ahead log",
            })
        return out
