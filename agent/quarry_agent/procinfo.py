"""What /proc says about a process, read once, at the moment the event arrives.

A process can exit (or exec again) before the agent reads it. Every field that could not be
read is named in ``unreadable`` and the row says so in AdditionalFields (``Unreadable``), rather
than leaving an analyst to guess why a command line is empty.

``ProcessTable`` keeps what was read at exec time, by pid, so a later event of a process that
has since exited (a file written by a short ``cp``) still names it. A cached entry is trusted
only while the live process (if any) has the same start time: pids are reused.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shlex
import threading
from collections import OrderedDict
from pathlib import Path

from quarry_agent.mapping import Proc
from quarry_agent.timefmt import iso_ts

MAX_CMDLINE = 32 * 1024
MAX_HASH_BYTES = 64 * 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


BOOT_TIME = _boot_time()


def creation_time(start_ticks: int | None) -> str | None:
    if start_ticks is None or not BOOT_TIME:
        return None
    return iso_ts(BOOT_TIME + start_ticks / CLK_TCK)


_users: dict[int, str] = {}


def user_name(uid: int | None) -> str:
    if uid is None:
        return ""
    name = _users.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        _users[uid] = name
    return name


def read_stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """(comm, ppid, pgid, session, start_ticks) from /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    lpar, rpar = raw.find("("), raw.rfind(")")
    fields = raw[rpar + 2 :].split()
    return raw[lpar + 1 : rpar], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])


class Hashes:
    """SHA-1, SHA-256 and MD5 of executables, cached by (device, inode, mtime, size)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.cache: OrderedDict[tuple[int, int, int, int], tuple[str, str, str]] = OrderedDict()
        self.max_entries = max_entries
        self.lock = threading.Lock()
        self.computed = 0

    def of_fd(self, fd: int) -> tuple[str, str, str, int] | None:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                return (*hit, st.st_size)
        if st.st_size > MAX_HASH_BYTES:
            return None
        s1, s256, m5 = hashlib.sha1(), hashlib.sha256(), hashlib.md5()
        while chunk := os.read(fd, 1 << 20):
            s1.update(chunk)
            s256.update(chunk)
            m5.update(chunk)
        value = (s1.hexdigest(), s256.hexdigest(), m5.hexdigest())
        with self.lock:
            self.computed += 1
            self.cache[key] = value
            if len(self.cache) > self.max_entries:
                self.cache.popitem(last=False)
        return (*value, st.st_size)

    def of_path(self, path: str) -> tuple[str, str, str, int] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return self.of_fd(fd)
        except OSError:
            return None
        finally:
            os.close(fd)


def read_process(pid: int, hashes: Hashes | None = None) -> Proc:
    info = Proc(pid=pid)
    stat = read_stat(pid)
    if stat is None:
        info.unreadable.append("stat")
    else:
        info.name, info.ppid, info.pgid, info.session, info.start_ticks = stat
        info.creation_time = creation_time(info.start_ticks)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()[:MAX_CMDLINE].split(b"\0")
        if argv and argv[-1] == b"":
            argv.pop()
        if argv:
            info.cmdline = " ".join(shlex.quote(a.decode(errors="replace")) for a in argv)
        else:  # a zombie: exited, not yet reaped, its memory (and argv) already gone
            info.unreadable.append("cmdline")
    except OSError:
        info.unreadable.append("cmdline")
    try:
        info.path = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        info.unreadable.append("exe")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                ids = line.split()
                info.uid, info.euid = int(ids[1]), int(ids[2])
                info.user = user_name(info.euid)
                break
    except OSError:
        info.unreadable.append("status")
    if hashes is not None and info.path:
        fd = open_exe(pid)
        if fd is None:
            info.unreadable.append("hash")
        else:
            hash_into(info, hashes, fd)
    return info


def open_exe(pid: int) -> int | None:
    """A descriptor on the process's executable: it stays valid after the process exits, so
    the file can be hashed later, off the hot path."""
    try:
        return os.open(f"/proc/{pid}/exe", os.O_RDONLY)
    except OSError:
        return None


def hash_into(info: Proc, hashes: Hashes, fd: int) -> None:
    """Fill the info's hashes from ``fd`` (closed here)."""
    try:
        got = hashes.of_fd(fd)
    except OSError:
        got = None
        info.unreadable.append("hash")
    finally:
        os.close(fd)
    if got is not None:
        info.sha1, info.sha256, info.md5, info.size = got


class ProcessTable:
    """Recently seen processes by pid (bounded; oldest forgotten first)."""

    def __init__(self, hashes: Hashes, max_entries: int = 32768) -> None:
        self.hashes = hashes
        self.entries: OrderedDict[int, Proc] = OrderedDict()
        self.max_entries = max_entries
        self.lock = threading.Lock()
        self.added = threading.Condition(self.lock)

    def remember(self, info: Proc) -> None:
        if info.pid is None:
            return
        with self.lock:
            self.entries[info.pid] = info
            self.entries.move_to_end(info.pid)
            if len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
            self.added.notify_all()

    def cached(self, pid: int) -> Proc | None:
        with self.lock:
            return self.entries.get(pid)

    def get(self, pid: int, wait_s: float = 0.0) -> Proc:
        """The process as best known: the cached exec-time view while it is still the same
        process (or gone), otherwise a fresh read; waits up to ``wait_s`` for the exec source
        to record a process that already exited."""
        live = read_stat(pid)
        cached = self.cached(pid)
        if cached is not None and (live is None or live[4] == cached.start_ticks):
            return cached
        if live is not None:
            info = read_process(pid, self.hashes)
            if not info.unreadable:
                self.remember(info)
            return info
        if wait_s > 0:
            with self.added:
                self.added.wait_for(lambda: pid in self.entries, timeout=wait_s)
            cached = self.cached(pid)
            if cached is not None:
                return cached
        return read_process(pid, self.hashes)
