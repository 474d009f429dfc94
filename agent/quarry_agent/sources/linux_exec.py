"""Process creation on Linux from the kernel's process-events connector.

The connector (netlink family NETLINK_CONNECTOR, group CN_IDX_PROC) multicasts a
PROC_EVENT_EXEC message for every execve() on the machine (root only; only in the initial
network namespace). The message carries just the pid: command line, executable, parent, user
and session are read from /proc at once. A process that exits first is still reported, with
what could not be read named in AdditionalFields.Unreadable.

If the agent falls behind, the kernel drops messages and recv() fails with ENOBUFS: the loss is
counted (``missed_overruns``) and logged, never hidden.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

from quarry_agent.mapping import Proc, process_created
from quarry_agent.procinfo import ProcessTable, hash_into, open_exe, read_process
from quarry_agent.sources import Event
from quarry_agent.timefmt import iso_ts

log = logging.getLogger("quarry_agent.exec")

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_EXEC = 0x00000002
NLMSG_DONE = 3
_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns (CLOCK_MONOTONIC)
_EXEC = struct.Struct("=II")  # process_pid, process_tgid
READER_NICE = -10


def _control(sock: socket.socket, op: int) -> None:
    payload = struct.pack("=I", op)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, os.getpid()) + cn)


def open_connector() -> socket.socket:
    """A subscribed proc-connector socket. Raises OSError (EPERM when not root, EPROTONOSUPPORT
    without the connector)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    try:
        # A burst of execs must not overrun the socket while /proc is being read.
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 * 1024 * 1024)  # SO_RCVBUFFORCE (root)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind((0, CN_IDX_PROC))
    _control(sock, PROC_CN_MCAST_LISTEN)
    return sock


def parse_execs(data: bytes) -> Iterator[tuple[int, int]]:
    """(tgid, timestamp_ns) of each PROC_EVENT_EXEC in one datagram."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, off)[0]
        if length < _NLMSGHDR.size:
            break
        ev = off + _NLMSGHDR.size + _CN_MSG.size
        if ev + _EVENT_HEAD.size + _EXEC.size <= off + length:
            what, _cpu, ts = _EVENT_HEAD.unpack_from(data, ev)
            if what == PROC_EVENT_EXEC:
                _pid, tgid = _EXEC.unpack_from(data, ev + _EVENT_HEAD.size)
                yield tgid, ts
        off += (length + 3) & ~3


class ProcConnectorSource:
    """Two threads: the reader takes each exec off the socket and reads /proc at once (a short
    process such as ``cp`` lives for about a millisecond), keeping an open descriptor on the
    executable; ``events`` then hashes, looks up the parents and builds the row at its pace."""

    name = "process"

    def __init__(self, table: ProcessTable, domain: str, backlog: int = 100_000) -> None:
        self.table = table
        self.domain = domain
        self.execs = 0
        self.missed_overruns = 0
        self.missed_backlog = 0
        self.pending: queue.Queue[tuple[Proc, int | None, int] | None] = queue.Queue(backlog)

    def capture(self, tgid: int, ts_ns: int) -> None:
        info = read_process(tgid)
        fd = open_exe(tgid) if info.path else None
        self.table.remember(info)
        try:
            self.pending.put_nowait((info, fd, ts_ns))
        except queue.Full:
            if fd is not None:
                os.close(fd)
            self.missed_backlog += 1
            if self.missed_backlog % 1000 == 1:
                log.warning("process events dropped: %d waiting to be processed", self.pending.qsize())

    def event_for(self, info: Proc, fd: int | None, ts_ns: int | None = None) -> Event:
        if fd is not None:
            hash_into(info, self.table.hashes, fd)
        parent = grandparent = None
        if info.ppid:
            parent = self.table.get(info.ppid)
            if parent.ppid:
                grandparent = self.table.get(parent.ppid)
        row = process_created(info, parent, grandparent, self.domain)
        if ts_ns is not None:
            # The kernel stamps the event with CLOCK_MONOTONIC: convert to wall time so a row
            # built late still says when the exec happened.
            row["Timestamp"] = iso_ts(time.time() - (time.monotonic_ns() - ts_ns) / 1e9)
        return Event("DeviceProcessEvents", row)

    def _reader(self, sock: socket.socket, stop: threading.Event) -> None:
        # On a busy machine the scheduler, not Python, decides how soon /proc is read: this
        # thread alone runs at a raised priority (nice -10; root only, best effort).
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICE)
        try:
            while not stop.is_set():
                ready, _, _ = select.select([sock], [], [], 0.5)
                if not ready:
                    continue
                try:
                    data = sock.recv(65536)
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        self.missed_overruns += 1
                        log.warning(
                            "process events lost: the kernel's connector queue overran (%d times so far)",
                            self.missed_overruns,
                        )
                        continue
                    raise
                for tgid, ts in parse_execs(data):
                    self.execs += 1
                    self.capture(tgid, ts)
        finally:
            self.pending.put(None)

    def events(self, stop: threading.Event) -> Iterator[Event]:
        sock = open_connector()
        reader = threading.Thread(target=self._reader, args=(sock, stop), name="quarry-agent-exec-reader", daemon=True)
        reader.start()
        try:
            while True:
                item = self.pending.get()
                if item is None:
                    break
                yield self.event_for(*item)
        finally:
            reader.join(5.0)
            with contextlib.suppress(OSError):
                _control(sock, PROC_CN_MCAST_IGNORE)
            sock.close()
