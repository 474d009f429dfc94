"""Removable-media mounts on Linux, from /proc/self/mountinfo changes.

The kernel flags /proc/self/mountinfo with POLLPRI whenever the mount table changes; the source
then re-reads it and compares mount ids. A new mount is removable media when

* udev says its block device is on the USB bus (``ID_BUS=usb`` in /run/udev/data/b<major>:<minor>,
  udev's database), or sysfs places the device under a USB controller (machines without udev),
* or its mount point matches one of the ``--removable-mounts`` globs (media udev does not
  report, and tests: a tmpfs under /mnt/x stands in for a stick).

Each new removable mount is a DeviceEvents ``UsbDriveMounted`` row with AdditionalFields as
Defender documents them (DriveLetter = mount point, Volume, ProductName, SerialNumber,
Manufacturer, BusType) plus FileSystem, Device and how it was classified; the file watcher is
told to watch it. Its removal is ``UsbDriveUnmounted``.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quarry_agent.mapping import USB_MOUNTED, USB_UNMOUNTED, dumps
from quarry_agent.sources import Event

log = logging.getLogger("quarry_agent.mounts")
DEFAULT_REMOVABLE_GLOBS = ("/media/*", "/run/media/*/*", "/mnt/*", "/Volumes/*")
UDEV_DATA = Path("/run/udev/data")


@dataclass(frozen=True)
class Mount:
    mount_id: int
    major: int
    minor: int
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> dict[int, Mount]:
    mounts: dict[int, Mount] = {}
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts:
            continue
        sep = parts.index("-")
        major, _, minor = parts[2].partition(":")
        mounts[int(parts[0])] = Mount(
            int(parts[0]), int(major), int(minor), _unescape(parts[4]),
            parts[sep + 1], _unescape(parts[sep + 2]) if len(parts) > sep + 2 else "",
        )
    return mounts


def glob_matches(pattern: str, path: str) -> bool:
    """fnmatch per path segment: ``/mnt/*`` matches /mnt/usb but not /mnt/usb/sub."""
    p_parts = pattern.rstrip("/").split("/")
    parts = path.rstrip("/").split("/")
    return len(p_parts) == len(parts) and all(
        fnmatch.fnmatchcase(seg, pat) for seg, pat in zip(parts, p_parts, strict=True)
    )


def udev_properties(major: int, minor: int) -> dict[str, str]:
    props: dict[str, str] = {}
    try:
        text = (UDEV_DATA / f"b{major}:{minor}").read_text(errors="replace")
    except OSError:
        return props
    for line in text.splitlines():
        if line.startswith("E:"):
            key, _, value = line[2:].partition("=")
            props[key] = value
    return props


def sysfs_is_usb(major: int, minor: int) -> bool:
    try:
        return "/usb" in os.path.realpath(f"/sys/dev/block/{major}:{minor}")
    except OSError:
        return False


class MountSource:
    name = "mounts"

    def __init__(
        self,
        globs: tuple[str, ...] = DEFAULT_REMOVABLE_GLOBS,
        on_mount: Callable[[Mount], None] | None = None,
        on_unmount: Callable[[Mount], None] | None = None,
        mountinfo: str = "/proc/self/mountinfo",
    ) -> None:
        self.globs = globs
        self.on_mount = on_mount
        self.on_unmount = on_unmount
        self.mountinfo = mountinfo
        self.removable: dict[int, tuple[Mount, dict[str, Any]]] = {}

    def classify(self, m: Mount) -> dict[str, Any] | None:
        """AdditionalFields for a removable mount, or None when it is not removable media."""
        props = udev_properties(m.major, m.minor) if m.major else {}
        usb = props.get("ID_BUS") == "usb" or (m.major != 0 and sysfs_is_usb(m.major, m.minor))
        by = "udev" if props.get("ID_BUS") == "usb" else "sysfs" if usb else ""
        if not usb:
            if not any(glob_matches(g, m.mount_point) for g in self.globs):
                return None
            by = "mount point glob"
        return {
            "DriveLetter": m.mount_point,
            "Volume": props.get("ID_FS_LABEL") or m.source,
            "ProductName": props.get("ID_MODEL", ""),
            "SerialNumber": props.get("ID_SERIAL_SHORT", ""),
            "Manufacturer": props.get("ID_VENDOR", ""),
            "BusType": "USB" if usb else "",
            "FileSystem": m.fstype,
            "Device": m.source,
            "DeviceNumber": f"{m.major}:{m.minor}",
            "RemovableBy": by,
        }

    def _row(self, action: str, m: Mount, fields: dict[str, Any]) -> Event:
        return Event(
            "DeviceEvents",
            {"ActionType": action, "FolderPath": m.mount_point, "AdditionalFields": dumps(fields)},
        )

    def _diff(self, current: dict[int, Mount], emit_events: bool) -> Iterator[Event]:
        for mid in [k for k in self.removable if k not in current]:
            m, fields = self.removable.pop(mid)
            log.info("removable media unmounted: %s", m.mount_point)
            if self.on_unmount:
                self.on_unmount(m)
            if emit_events:
                yield self._row(USB_UNMOUNTED, m, fields)
        for mid, m in current.items():
            if mid in self.removable:
                continue
            found = self.classify(m)
            if found is None:
                continue
            self.removable[mid] = (m, found)
            log.info("removable media mounted: %s (%s, %s)", m.mount_point, m.fstype, found["RemovableBy"])
            if self.on_mount:
                self.on_mount(m)
            if emit_events:
                yield self._row(USB_MOUNTED, m, found)

    def events(self, stop: threading.Event) -> Iterator[Event]:
        with open(self.mountinfo) as f:
            # Media mounted before the agent started are watched, but not reported as new.
            yield from self._diff(parse_mountinfo(f.read()), emit_events=False)
            poller = select.poll()
            poller.register(f.fileno(), select.POLLPRI | select.POLLERR)
            while not stop.is_set():
                if not poller.poll(500):
                    continue
                f.seek(0)
                yield from self._diff(parse_mountinfo(f.read()), emit_events=True)
