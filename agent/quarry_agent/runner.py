"""The running agent: one thread per source, the queue flusher, the sender and the device-action
poller; a clean stop on SIGTERM (sources stop, buffered events are written to the queue)."""

from __future__ import annotations

import errno
import functools
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from quarry_agent import __version__, identity
from quarry_agent.actions import ActionPoller
from quarry_agent.queue import DiskQueue
from quarry_agent.sender import Sender
from quarry_agent.sources import Event, Source
from quarry_agent.sources.eslogger import EsloggerSource
from quarry_agent.sources.heartbeat import HeartbeatSource
from quarry_agent.timefmt import now_iso

log = logging.getLogger("quarry_agent")
LINUX_SOURCES = ("process", "mounts", "files", "heartbeat", "actions")
MACOS_SOURCES = ("eslogger", "heartbeat", "actions")
ALL_SOURCES = ("process", "mounts", "files", "eslogger", "heartbeat", "actions")
# A source that fails with these will not work by retrying (no permission, no kernel support).
FATAL_ERRNOS = {errno.EPERM, errno.EACCES, errno.EPROTONOSUPPORT, errno.ENOSYS, errno.EINVAL, errno.ENOENT}


def default_sources() -> tuple[str, ...]:
    return MACOS_SOURCES if platform.system() == "Darwin" else LINUX_SOURCES


@dataclass
class Config:
    server: str
    key: str
    state_dir: Path
    removable_globs: tuple[str, ...]
    sources: tuple[str, ...] = field(default_factory=default_sources)
    heartbeat_s: float = 300.0
    action_poll_s: float = 10.0
    max_queue_bytes: int = 256 * 1024 * 1024
    batch_events: int = 500
    flush_interval_s: float = 0.5
    device_id: str | None = None
    ca_file: str | None = None
    eslogger: str = "eslogger"
    max_backoff_s: float = 60.0


class Agent:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        # The queue holds every command line the machine ran: readable by the agent's user only.
        os.chmod(cfg.state_dir, 0o700)
        self.stop = threading.Event()
        self.machine_id = identity.machine_id()
        self.device_id = cfg.device_id or identity.device_id(self.machine_id)
        self.device_name = identity.device_name()
        self.domain = self.device_name.split(".")[0]
        self.ids = identity.ReportIds(cfg.state_dir)
        self.queue = DiskQueue(
            cfg.state_dir, cfg.max_queue_bytes, cfg.batch_events, cfg.flush_interval_s
        )
        self.client = httpx.Client(
            base_url=cfg.server.rstrip("/"),
            headers={"Authorization": f"Bearer {cfg.key}", "User-Agent": f"quarry-agent/{__version__}"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            verify=cfg.ca_file or True,
        )
        self.sender = Sender(self.client, self.queue, self.stop, max_backoff_s=cfg.max_backoff_s)
        self.sources: list[Source] = []
        self.loops: list[Callable[[], None]] = []
        self.threads: list[threading.Thread] = []
        self.counters: dict[str, Callable[[], int]] = {}
        self._build()

    def _build(self) -> None:
        wanted = set(self.cfg.sources)
        unknown = wanted - set(ALL_SOURCES)
        if unknown:
            raise ValueError(f"unknown source(s) {sorted(unknown)}; known: {', '.join(ALL_SOURCES)}")
        if wanted & {"process", "mounts", "files"}:
            # Linux-only modules (fanotify symbols are looked up in libc at import): imported
            # only when those sources are asked for, so the agent starts on macOS.
            from quarry_agent.sources import linux

            for src in linux.build(wanted, self.cfg.removable_globs, self.domain, self.counters):
                self.sources.append(src)
        if "eslogger" in wanted:
            self.sources.append(EsloggerSource(self.domain, self.cfg.removable_globs, command=self.cfg.eslogger))
        if "heartbeat" in wanted:
            self.sources.append(HeartbeatSource(self.machine_id, self.stats, self.cfg.heartbeat_s))
        if "actions" in wanted:
            poller = ActionPoller(self, self.cfg.action_poll_s)
            self.loops.append(poller.run)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AgentDroppedEvents": self.queue.dropped,
            "AgentRejectedEvents": self.queue.rejected,
            "AgentQueuedBytes": self.queue.queued_bytes(),
            "AgentSources": [s.name for s in self.sources],
        }
        for name, fn in self.counters.items():
            out[name] = fn()
        return out

    def emit(self, ev: Event) -> None:
        row = dict(ev.row)
        row.setdefault("Timestamp", now_iso())
        row["DeviceId"] = self.device_id
        row["DeviceName"] = self.device_name
        row["ReportId"] = self.ids.take()
        self.queue.put(ev.table, row)

    def _run_source(self, src: Source) -> None:
        while not self.stop.is_set():
            try:
                for ev in src.events(self.stop):
                    self.emit(ev)
                return
            except OSError as e:
                if e.errno in FATAL_ERRNOS:
                    log.error("source %s disabled: %s", src.name, e)
                    return
                log.exception("source %s failed; restarting in 5 s", src.name)
            except Exception:
                log.exception("source %s failed; restarting in 5 s", src.name)
            self.stop.wait(5.0)

    def _flusher(self) -> None:
        while not self.stop.wait(min(0.25, self.cfg.flush_interval_s)):
            self.queue.flush_due()

    def start(self) -> None:
        log.info(
            "quarry-agent %s: device %s (%s), server %s, sources %s",
            __version__, self.device_id, self.device_name, self.cfg.server,
            ", ".join(s.name for s in self.sources) + (", actions" if self.loops else ""),
        )
        targets: list[tuple[str, Callable[[], None]]] = [
            (s.name, functools.partial(self._run_source, s)) for s in self.sources
        ]
        targets += [("flusher", self._flusher), ("sender", self.sender.run)]
        targets += [("actions", loop) for loop in self.loops]
        for name, fn in targets:
            t = threading.Thread(target=fn, name=f"quarry-agent-{name}", daemon=True)
            t.start()
            self.threads.append(t)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop sources and loops, write every buffered event to the disk queue."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.queue.flush()
        self.client.close()
        pending = self.queue.pending()
        log.info(
            "stopped; %d events in %d batches wait in the queue for the next start",
            sum(s.count for s in pending), len(pending),
        )
