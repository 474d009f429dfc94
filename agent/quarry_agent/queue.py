"""The disk-backed event queue between the sources and the sender.

Events are buffered per table in memory and written as one gzip'd NDJSON segment per batch
(``<state>/queue/<seq>.<Table>.<count>.ndjson.gz``: written to a temporary name, fsync'd, renamed,
directory fsync'd), when a table's buffer reaches ``batch_events`` or every ``flush_interval_s``,
and on shutdown. A segment leaves the queue only when the server answered 200 for it (the sender
calls ``ack``), so delivery is at least once: the only events a crash can lose are those still in
memory (at most ``flush_interval_s`` worth); a SIGTERM flushes them first.

Disk use is bounded by ``max_bytes``: a batch that would push the queue over it is dropped, with
a warning naming the table and the number of events, and counted in ``dropped`` (persisted, and
sent in every DeviceInfo heartbeat). Old events are kept rather than new ones: what was captured
before a flood stays evidence, and the flood itself shows in the drop counter.

Sent segments move to ``<state>/recent/`` (bounded by ``recent_bytes``, oldest removed first):
the investigation package action bundles them as the device's recent events.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("quarry_agent.queue")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dumps(row: dict[str, Any]) -> bytes:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        seq, table, count = path.name.split(".")[:3]
        self.seq = int(seq)
        self.table = table
        self.count = int(count)

    def read(self) -> bytes:
        return self.path.read_bytes()


class DiskQueue:
    def __init__(
        self,
        state_dir: Path,
        max_bytes: int = 256 * 1024 * 1024,
        batch_events: int = 500,
        flush_interval_s: float = 0.5,
        recent_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.dir = state_dir / "queue"
        self.recent_dir = state_dir / "recent"
        self.rejected_dir = state_dir / "rejected"
        for d in (self.dir, self.recent_dir, self.rejected_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.counters_path = state_dir / "counters.json"
        self.max_bytes = max_bytes
        self.batch_events = batch_events
        self.flush_interval_s = flush_interval_s
        self.recent_bytes = recent_bytes
        self.lock = threading.Lock()
        self.ready = threading.Condition(self.lock)  # the sender waits here for segments
        self.buffers: dict[str, list[bytes]] = {}
        self.last_flush = time.monotonic()
        for tmp in self.dir.glob("*.tmp"):  # half-written by a crash: never acknowledged
            tmp.unlink()
        existing = self._listing()
        # Numbered after every segment still on disk, sent and refused ones included, so a
        # segment never takes the name of one kept in recent/ or rejected/.
        kept = [Segment(p).seq for d in (self.recent_dir, self.rejected_dir) for p in d.glob("*.ndjson.gz")
                if p.name.split(".")[0].isdigit()]
        self.seq = max([s.seq for s in existing] + kept, default=0) + 1
        self.bytes = sum(s.path.stat().st_size for s in existing)
        counters = self._load_counters()
        self.dropped = int(counters.get("dropped", 0))
        self.rejected = int(counters.get("rejected", 0))

    # --- counters -------------------------------------------------------------------------
    def _load_counters(self) -> dict[str, Any]:
        try:
            data = json.loads(self.counters_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_counters(self) -> None:
        tmp = self.counters_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"dropped": self.dropped, "rejected": self.rejected}))
        os.replace(tmp, self.counters_path)

    # --- producer side --------------------------------------------------------------------
    def put(self, table: str, row: dict[str, Any]) -> None:
        line = _dumps(row)
        with self.lock:
            buf = self.buffers.setdefault(table, [])
            buf.append(line)
            if len(buf) >= self.batch_events:
                self._flush_table(table)

    def flush_due(self) -> None:
        """Called periodically: write buffers older than the flush interval."""
        with self.lock:
            if time.monotonic() - self.last_flush >= self.flush_interval_s:
                self._flush_all()

    def flush(self) -> None:
        with self.lock:
            self._flush_all()

    def _flush_all(self) -> None:
        for table in list(self.buffers):
            self._flush_table(table)
        self.last_flush = time.monotonic()

    def _flush_table(self, table: str) -> None:
        lines = self.buffers.pop(table, [])
        if not lines:
            return
        body = gzip.compress(b"".join(lines), compresslevel=6)
        if self.bytes + len(body) > self.max_bytes:
            self.dropped += len(lines)
            self._save_counters()
            log.warning(
                "queue full (%d of %d bytes on disk, server unreachable or slow): dropped %d %s"
                " events; %d dropped in all (sent as AgentDroppedEvents in DeviceInfo)",
                self.bytes, self.max_bytes, len(lines), table, self.dropped,
            )
            return
        name = f"{self.seq:016d}.{table}.{len(lines)}.ndjson.gz"
        self.seq += 1
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        _fsync_dir(self.dir)
        self.bytes += len(body)
        self.ready.notify_all()

    # --- consumer side --------------------------------------------------------------------
    def _listing(self) -> list[Segment]:
        out = []
        for p in self.dir.glob("*.ndjson.gz"):
            try:
                out.append(Segment(p))
            except ValueError:
                log.warning("ignoring a file that is not a queue segment: %s", p)
        out.sort(key=lambda s: s.seq)
        return out

    def pending(self) -> list[Segment]:
        with self.lock:
            return self._listing()

    def wait(self, timeout: float) -> None:
        with self.ready:
            if not any(True for _ in self.dir.glob("*.ndjson.gz")):
                self.ready.wait(timeout)

    def ack(self, seg: Segment) -> None:
        """The server stored the segment: keep it only as a recent event for investigations."""
        with self.lock:
            size = seg.path.stat().st_size
            os.replace(seg.path, self.recent_dir / seg.path.name)
            self.bytes -= size
        self._prune(self.recent_dir, self.recent_bytes)

    def reject(self, seg: Segment, reason: str) -> None:
        """The server refused the batch as invalid (4xx): retrying cannot help. Kept aside in
        ``rejected/`` for a developer, counted and logged; never silently lost."""
        with self.lock:
            size = seg.path.stat().st_size
            os.replace(seg.path, self.rejected_dir / seg.path.name)
            self.bytes -= size
            self.rejected += seg.count
            self._save_counters()
        log.error(
            "server refused %d %s events (kept in %s): %s",
            seg.count, seg.table, self.rejected_dir, reason,
        )
        self._prune(self.rejected_dir, self.recent_bytes)

    @staticmethod
    def _prune(directory: Path, limit: int) -> None:
        files = sorted(directory.glob("*.ndjson.gz"))
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        for f, size in zip(files, sizes, strict=True):
            if total <= limit:
                break
            f.unlink(missing_ok=True)
            total -= size

    def queued_bytes(self) -> int:
        with self.lock:
            return self.bytes
