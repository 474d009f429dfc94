"""macOS: Apple's Endpoint Security events through ``eslogger`` (macOS 13+), as JSON lines.

``eslogger exec create rename close mount`` prints one JSON object per event: Apple's
es_message_t (EndpointSecurity/ESMessage.h) with ``time``, ``process`` (the es_process_t that
caused the event: ``audit_token`` {pid, euid, ruid, pidversion...}, ``ppid``, ``executable``
{path}, ``start_time``, ``session_id``...), ``event_type`` and ``event`` {<type>: payload}.
It needs root and Full Disk Access for the program that runs it (docs/agent.md).

Mapping (the same tables and ActionTypes as on Linux):

* exec -> DeviceProcessEvents ProcessCreated. The new image is ``event.exec.target``; its
  creator (InitiatingProcess*) is its parent (``target.ppid``), taken from earlier exec events
  when seen (command line included), else from ``process``, the image exec replaced, which is
  the parent's own image after fork() or posix_spawn().
* create, then close with ``modified: true`` of the same path -> DeviceFileEvents FileCreated;
  close (modified) of any other file -> FileModified; rename -> FileRenamed. Only paths on
  removable media (under a mount point matching the removable globs, /Volumes/* by default, or
  mounted with an external disposition) are reported, as on Linux.
* mount of removable media -> DeviceEvents UsbDriveMounted, enriched with ``diskutil info``
  (MediaName, BusProtocol) where diskutil exists.
"""

from __future__ import annotations

import json
import logging
import os
import plistlib
import pwd
import select
import shlex
import shutil
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from quarry_agent.mapping import (
    FILE_CREATED,
    FILE_MODIFIED,
    FILE_RENAMED,
    USB_MOUNTED,
    Proc,
    dumps,
    file_event,
    process_created,
)
from quarry_agent.procinfo import Hashes
from quarry_agent.sources import Event
from quarry_agent.sources.linux_mounts import DEFAULT_REMOVABLE_GLOBS, glob_matches
from quarry_agent.timefmt import iso

log = logging.getLogger("quarry_agent.eslogger")
ES_EVENTS = ("exec", "create", "rename", "close", "mount")
ES_MOUNT_DISPOSITION_EXTERNAL = 0  # es_mount_disposition_t (ESTypes.h, macOS 13)


def es_time(value: Any) -> str | None:
    """eslogger writes times as ISO 8601 with nanoseconds; ingest takes up to 7 digits."""
    if not isinstance(value, str) or not value:
        return None
    text = value.rstrip("Z")
    head, _, frac = text.partition(".")
    try:
        t = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError:
        return None
    micros = int((frac + "000000")[:6]) if frac.isdigit() else 0
    return iso(t.replace(microsecond=micros))


def _uid_name(uid: int | None) -> str:
    if uid is None:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _path(f: Any) -> str:
    return f.get("path", "") if isinstance(f, dict) else ""


class EsloggerMapper:
    """Turns eslogger JSON objects into rows; keeps the little state the mapping needs (process
    command lines by pid, files created and not yet closed, removable mount points)."""

    def __init__(
        self,
        domain: str,
        globs: tuple[str, ...] = DEFAULT_REMOVABLE_GLOBS,
        user_name: Callable[[int | None], str] = _uid_name,
        diskutil: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self.domain = domain
        self.globs = globs
        self.user_name = user_name
        self.diskutil = diskutil
        self.procs: OrderedDict[int, Proc] = OrderedDict()
        self.created: OrderedDict[str, None] = OrderedDict()
        self.mounts: set[str] = set()

    # --- processes ------------------------------------------------------------------------
    def proc(self, p: dict[str, Any], cmdline: str = "") -> Proc:
        token = p.get("audit_token") or {}
        euid = token.get("euid")
        return Proc(
            pid=token.get("pid"),
            path=_path(p.get("executable")),
            cmdline=cmdline,
            creation_time=es_time(p.get("start_time")),
            user=self.user_name(euid),
            uid=token.get("ruid"),
            euid=euid,
            session=p.get("session_id"),
            pgid=p.get("group_id"),
            ppid=p.get("ppid"),
        )

    def _remember(self, proc: Proc) -> None:
        if proc.pid is None:
            return
        self.procs[proc.pid] = proc
        self.procs.move_to_end(proc.pid)
        while len(self.procs) > 32768:
            self.procs.popitem(last=False)

    def known(self, pid: int | None, fallback: dict[str, Any] | None = None) -> Proc | None:
        if pid is None:
            return None
        if pid in self.procs:
            return self.procs[pid]
        if fallback is not None:
            # The image exec replaced is the parent's image (after fork or posix_spawn), but
            # its start time and pid are the child's: keep only what is the parent's.
            p = self.proc(fallback)
            p.pid, p.creation_time, p.ppid, p.session, p.pgid = pid, None, None, None, None
            self._remember(p)
            return p
        return Proc(pid=pid)

    def on_exec(self, msg: dict[str, Any], ev: dict[str, Any]) -> Event | None:
        target = ev.get("target")
        if not isinstance(target, dict):
            return None
        args = ev.get("args") or []
        cmdline = " ".join(shlex.quote(a) for a in args if isinstance(a, str))
        child = self.proc(target, cmdline)
        parent_pid = target.get("ppid")
        before = msg.get("process") if isinstance(msg.get("process"), dict) else None
        parent = self.known(parent_pid, before)
        grandparent = self.known(parent.ppid) if parent is not None and parent.ppid else None
        self._remember(child)
        row = process_created(child, parent, grandparent, self.domain)
        extra: dict[str, Any] = {}
        if target.get("signing_id"):
            extra["SigningId"] = target["signing_id"]
        if target.get("team_id"):
            extra["TeamId"] = target["team_id"]
        if extra:
            merged = {**(_loads(row.get("AdditionalFields")) or {}), **extra}
            row["AdditionalFields"] = dumps(merged)
        return Event("DeviceProcessEvents", row)

    # --- files ----------------------------------------------------------------------------
    def removable(self, path: str) -> bool:
        parts = path.split("/")
        for i in range(2, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self.mounts or any(glob_matches(g, prefix) for g in self.globs):
                return True
        return False

    def _file(self, action: str, msg: dict[str, Any], path: str, previous: str | None = None) -> Event:
        proc = self.proc(_process(msg))
        if proc.pid is not None and proc.pid in self.procs:  # the exec-time view has the command line
            proc = self.procs[proc.pid]
        parent = self.known(proc.ppid) if proc.ppid else None
        hashes = None
        if action != FILE_RENAMED and os.path.isfile(path):
            hashes = _hash(path)
        return Event("DeviceFileEvents", file_event(action, path, proc, parent, self.domain, hashes, previous))

    @staticmethod
    def _destination(ev: dict[str, Any]) -> str:
        dest = ev.get("destination") or {}
        if "existing_file" in dest:
            return _path(dest["existing_file"])
        new = dest.get("new_path") or {}
        folder, name = _path(new.get("dir")), new.get("filename", "")
        return f"{folder.rstrip('/')}/{name}" if folder and name else ""

    def on_create(self, msg: dict[str, Any], ev: dict[str, Any]) -> Event | None:
        path = self._destination(ev)
        if path and self.removable(path):
            self.created[path] = None  # reported when closed, with its content's hashes
            while len(self.created) > 4096:
                self.created.popitem(last=False)
        return None

    def on_close(self, msg: dict[str, Any], ev: dict[str, Any]) -> Event | None:
        path = _path(ev.get("target"))
        if not ev.get("modified") or not path or not self.removable(path):
            return None
        action = FILE_CREATED if path in self.created else FILE_MODIFIED
        self.created.pop(path, None)
        return self._file(action, msg, path)

    def on_rename(self, msg: dict[str, Any], ev: dict[str, Any]) -> Event | None:
        source = _path(ev.get("source"))
        dest = self._destination(ev)
        if not dest or not (self.removable(dest) or self.removable(source)):
            return None
        return self._file(FILE_RENAMED, msg, dest, previous=source)

    # --- mounts ---------------------------------------------------------------------------
    def on_mount(self, msg: dict[str, Any], ev: dict[str, Any]) -> Event | None:
        st = ev.get("statfs") or {}
        point = st.get("f_mntonname", "")
        external = ev.get("disposition") == ES_MOUNT_DISPOSITION_EXTERNAL
        if not point or not (external or any(glob_matches(g, point) for g in self.globs)):
            return None
        self.mounts.add(point)
        device = st.get("f_mntfromname", "")
        info = self.diskutil(device) if self.diskutil and device else {}
        fields = {
            "DriveLetter": point,
            "Volume": info.get("VolumeName") or point.rsplit("/", 1)[-1],
            "ProductName": info.get("MediaName", ""),
            "SerialNumber": "",
            "Manufacturer": "",
            "BusType": info.get("BusProtocol", ""),
            "FileSystem": st.get("f_fstypename", ""),
            "Device": device,
            "RemovableBy": "external disposition" if external else "mount point glob",
        }
        proc = self.proc(_process(msg))
        row = {
            "ActionType": USB_MOUNTED,
            "FolderPath": point,
            "InitiatingProcessId": proc.pid,
            "InitiatingProcessFileName": proc.file_name,
            "InitiatingProcessFolderPath": proc.path,
            "AdditionalFields": dumps(fields),
        }
        return Event("DeviceEvents", {k: v for k, v in row.items() if v not in (None, "")})

    # --- dispatch -------------------------------------------------------------------------
    def map(self, msg: Any) -> Event | None:
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), dict):
            return None  # not an ES message (a note, a blank line)
        handlers = {"exec": self.on_exec, "create": self.on_create, "close": self.on_close,
                    "rename": self.on_rename, "mount": self.on_mount}
        for kind, payload in msg["event"].items():
            handler = handlers.get(kind)
            if handler is None or not isinstance(payload, dict):
                continue
            out = handler(msg, payload)
            if out is None:
                return None
            when = es_time(msg.get("time"))
            if when:
                out.row.setdefault("Timestamp", when)
            return out
        return None


def _process(msg: dict[str, Any]) -> dict[str, Any]:
    p = msg.get("process")
    return p if isinstance(p, dict) else {}


def _loads(text: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_hashes = Hashes()


def _hash(path: str) -> tuple[str, str, str, int] | None:
    return _hashes.of_path(path)


def diskutil_info(device: str) -> dict[str, Any]:
    exe = shutil.which("diskutil")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "info", "-plist", device], capture_output=True, timeout=10, check=False).stdout
        data = plistlib.loads(out)
    except (OSError, subprocess.SubprocessError, plistlib.InvalidFileException, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class EsloggerSource:
    name = "eslogger"

    def __init__(self, domain: str, globs: tuple[str, ...] = DEFAULT_REMOVABLE_GLOBS, command: str = "eslogger") -> None:
        self.mapper = EsloggerMapper(domain, globs, diskutil=diskutil_info)
        self.command = command
        self.bad_lines = 0

    def events(self, stop: threading.Event) -> Iterator[Event]:
        exe = shutil.which(self.command)
        if exe is None:
            raise OSError(2, f"{self.command} not found: eslogger needs macOS 13 or later")
        proc = subprocess.Popen([exe, *ES_EVENTS, "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        fd = proc.stdout.fileno()
        pending = b""
        try:
            while not stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 20)  # raw reads: a buffered readline hides lines from select
                if not chunk:
                    proc.wait(5)
                    err = proc.stderr.read().decode(errors="replace").strip()
                    # Typically ES_NEW_CLIENT_RESULT_ERR_NOT_PERMITTED: no Full Disk Access.
                    raise OSError(1, f"eslogger exited {proc.returncode}: {err}")
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        self.bad_lines += 1
                        continue
                    ev = self.mapper.map(msg)
                    if ev is not None:
                        yield ev
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
