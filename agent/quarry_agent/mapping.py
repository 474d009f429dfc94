"""Process facts -> Defender column names, shared by the Linux and macOS sources.

ActionType values are those of the Defender advanced hunting reference
(/work/shared/reference/action_types.json in the repository): ProcessCreated
(DeviceProcessEvents), FileCreated / FileModified / FileRenamed (DeviceFileEvents),
UsbDriveMounted / UsbDriveUnmounted (DeviceEvents).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROCESS_CREATED = "ProcessCreated"
FILE_CREATED = "FileCreated"
FILE_MODIFIED = "FileModified"
FILE_RENAMED = "FileRenamed"
USB_MOUNTED = "UsbDriveMounted"
USB_UNMOUNTED = "UsbDriveUnmounted"


@dataclass
class Proc:
    """One process as a source saw it (OS-neutral)."""

    pid: int | None = None
    path: str = ""
    name: str = ""
    cmdline: str = ""
    creation_time: str | None = None
    user: str = ""
    uid: int | None = None
    euid: int | None = None
    session: int | None = None
    pgid: int | None = None
    sha1: str = ""
    sha256: str = ""
    md5: str = ""
    size: int | None = None
    ppid: int | None = None
    start_ticks: int | None = None  # Linux: /proc/<pid>/stat starttime, tells a reused pid apart
    unreadable: list[str] = field(default_factory=list)  # what /proc could not tell

    @property
    def file_name(self) -> str:
        if self.path:
            return self.path.rsplit("/", 1)[-1]
        return self.name


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Leave out what is unknown: a missing column is null, never a made-up value."""
    return {k: v for k, v in row.items() if v is not None and v != ""}


def initiating(proc: Proc, parent: Proc | None, domain: str) -> dict[str, Any]:
    row = {
        "InitiatingProcessId": proc.pid,
        "InitiatingProcessFileName": proc.file_name,
        "InitiatingProcessFolderPath": proc.path,
        "InitiatingProcessCommandLine": proc.cmdline,
        "InitiatingProcessCreationTime": proc.creation_time,
        "InitiatingProcessSHA1": proc.sha1,
        "InitiatingProcessSHA256": proc.sha256,
        "InitiatingProcessMD5": proc.md5,
        "InitiatingProcessFileSize": proc.size,
        "InitiatingProcessAccountName": proc.user,
        "InitiatingProcessAccountDomain": domain if proc.user else "",
        "InitiatingProcessSessionId": proc.session,
        "InitiatingProcessParentId": proc.ppid,
    }
    if parent is not None:
        row["InitiatingProcessParentFileName"] = parent.file_name
        row["InitiatingProcessParentCreationTime"] = parent.creation_time
    return row


def posix_fields(prefix: str, proc: Proc) -> dict[str, Any]:
    """Defender for Linux/macOS puts POSIX identities in AdditionalFields with these names."""
    out: dict[str, Any] = {}
    if proc.uid is not None or proc.euid is not None:
        out[f"{prefix}PosixUserId"] = proc.uid
        out[f"{prefix}PosixEffectiveUser"] = {"Name": proc.user, "PosixUserId": proc.euid}
    if proc.session is not None:
        out[f"{prefix}PosixSessionId"] = proc.session
    if proc.pgid is not None:
        out[f"{prefix}PosixProcessGroupId"] = proc.pgid
    return out


def process_created(
    child: Proc, parent: Proc | None, grandparent: Proc | None, domain: str
) -> dict[str, Any]:
    extra: dict[str, Any] = {**posix_fields("Process", child)}
    if parent is not None:
        extra.update(posix_fields("InitiatingProcess", parent))
    unreadable = {"Process": list(child.unreadable)}
    if parent is not None and parent.unreadable:
        unreadable["InitiatingProcess"] = list(parent.unreadable)
    if any(unreadable.values()):
        extra["Unreadable"] = {k: v for k, v in unreadable.items() if v}
        extra["UnreadableReason"] = "the process exited or changed before the agent read /proc"
    row: dict[str, Any] = {
        "ActionType": PROCESS_CREATED,
        "FileName": child.file_name,
        "FolderPath": child.path,
        "SHA1": child.sha1,
        "SHA256": child.sha256,
        "MD5": child.md5,
        "FileSize": child.size,
        "ProcessId": child.pid,
        "ProcessCommandLine": child.cmdline,
        "ProcessCreationTime": child.creation_time,
        "AccountName": child.user,
        "AccountDomain": domain if child.user else "",
        "CreatedProcessSessionId": child.session,
        "AdditionalFields": dumps(extra) if extra else None,
    }
    if parent is not None:
        row.update(initiating(parent, grandparent, domain))
    else:
        row["InitiatingProcessId"] = child.ppid
    return _clean(row)


def file_event(
    action: str,
    path: str,
    proc: Proc | None,
    parent: Proc | None,
    domain: str,
    hashes: tuple[str, str, str, int] | None = None,
    previous_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    folder, _, name = path.rpartition("/")
    row: dict[str, Any] = {
        "ActionType": action,
        "FileName": name,
        "FolderPath": path,  # Defender's FolderPath includes the file name
    }
    if hashes is not None:
        row["SHA1"], row["SHA256"], row["MD5"], row["FileSize"] = hashes
    if previous_path:
        pfolder, _, pname = previous_path.rpartition("/")
        row["PreviousFolderPath"] = pfolder or "/"
        row["PreviousFileName"] = pname
    more = dict(extra or {})
    if proc is not None:
        row.update(initiating(proc, parent, domain))
        more.update(posix_fields("InitiatingProcess", proc))
        if proc.unreadable:
            more["Unreadable"] = {"InitiatingProcess": list(proc.unreadable)}
            more["UnreadableReason"] = "the process exited before the agent read /proc"
    if more:
        row["AdditionalFields"] = dumps(more)
    return _clean(row)
