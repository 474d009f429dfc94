"""Who this device is (DeviceId, DeviceName) and the ReportId of each event.

DeviceId is 40 hex digits like Defender's: SHA-1 of an app-specific string and the machine id
(/etc/machine-id on Linux, IOPlatformUUID on macOS). systemd asks applications not to expose the
raw machine id (machine-id(5)), so it is hashed; it stays stable across reboots and reinstalls of
the agent.

ReportId is a long unique per event per device: a counter kept in the state directory, started at
the time in microseconds when the directory is new (so a reinstall does not reuse ids). Blocks of
ids are reserved on disk (fsync'd) before any id of the block is used, so a crash or restart
never gives out an id twice; at worst the rest of a block is skipped.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import threading
import time
from pathlib import Path

ID_BLOCK = 100_000


def machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
                capture_output=True, text=True, timeout=10, check=False,
            ).stdout
        except OSError:
            out = ""
        for line in out.splitlines():
            if "IOPlatformUUID" in line:
                return line.split("=", 1)[1].strip().strip('"')
    # No machine id (a minimal container): fall back to the host name, which is stable enough
    # for one machine but not unique across clones. docs/agent.md says so.
    return "hostname:" + socket.gethostname()


def device_id(mid: str | None = None) -> str:
    return hashlib.sha1(b"quarry-agent device id\0" + (mid or machine_id()).encode()).hexdigest()


def device_name() -> str:
    """The fully qualified host name when the resolver knows one, as Defender reports it."""
    name = socket.gethostname()
    if "." not in name:
        try:
            fqdn = socket.getfqdn(name)
        except OSError:
            fqdn = name
        if fqdn and not fqdn.startswith("localhost"):
            name = fqdn
    return name.lower()


class ReportIds:
    """Thread-safe allocator of ReportIds, persisted in ``<state>/reportid``."""

    def __init__(self, state_dir: Path, block: int = ID_BLOCK) -> None:
        self.path = state_dir / "reportid"
        self.block = block
        self.lock = threading.Lock()
        try:
            self.next = int(self.path.read_text().strip())
        except (OSError, ValueError):
            # A new (or unreadable) state directory starts at the time in microseconds: ids
            # given out before a reinstall are below it (blocks advance far slower than 1 id/us).
            self.next = time.time_ns() // 1000
        self.limit = self.next  # nothing reserved yet

    def _reserve(self) -> None:
        limit = self.next + self.block
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(str(limit))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.limit = limit

    def take(self) -> int:
        with self.lock:
            if self.next >= self.limit:
                self._reserve()
            value = self.next
            self.next += 1
            return value
