"""The synthetic fleet: devices, users, executables and running processes.

Everything here is derived from a seeded ``random.Random`` so that a seed gives the same fleet on
every machine. Hashes are derived from the executable's path and version, so the same binary has
the same SHA256 on every device (as it would in a real fleet, and as hunting queries that pivot
on hashes expect).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

OsFamily = Literal["Windows", "macOS", "Linux"]

DOMAIN = "corp.example.com"
NETBIOS = "CORP"
TENANT_SID = "S-1-5-21-3623811015-3361044348-30300820"
WIN_SYSTEM_DIR = "C:\\Windows\\System32"


def _digest(kind: str, *parts: str) -> str:
    data = "\x00".join(parts).encode("utf-8")
    return hashlib.new(kind, data).hexdigest()


def rand_guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class Binary:
    """An executable or library file as Defender describes it."""

    path: str
    version: str | None = None
    company: str | None = None
    product: str | None = None
    description: str | None = None
    size: int = 0
    signer: str = "OsVendor"  # InitiatingProcessSignerType
    signature: str = "Valid"  # InitiatingProcessSignatureStatus
    original_name: str | None = None

    @property
    def name(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]

    @property
    def is_windows(self) -> bool:
        return "\\" in self.path

    @property
    def sha1(self) -> str:
        return _digest("sha1", self.path.lower(), self.version or "")

    @property
    def sha256(self) -> str:
        return _digest("sha256", self.path.lower(), self.version or "")

    @property
    def md5(self) -> str:
        return _digest("md5", self.path.lower(), self.version or "")

    def version_info(self, prefix: str) -> dict[str, Any]:
        """The ``<prefix>VersionInfo*`` columns (PE version resources exist on Windows only)."""
        if not self.is_windows:
            return {}
        return {
            f"{prefix}VersionInfoCompanyName": self.company,
            f"{prefix}VersionInfoProductName": self.product,
            f"{prefix}VersionInfoProductVersion": self.version,
            f"{prefix}VersionInfoInternalFileName": self.original_name or self.name,
            f"{prefix}VersionInfoOriginalFileName": self.original_name or self.name,
            f"{prefix}VersionInfoFileDescription": self.description,
        }


@dataclass(frozen=True)
class Account:
    domain: str | None
    name: str
    sid: str | None = None
    upn: str | None = None
    object_id: str | None = None
    logon_id: int | None = None

    def columns(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}AccountDomain": self.domain,
            f"{prefix}AccountName": self.name,
            f"{prefix}AccountSid": self.sid,
            f"{prefix}AccountUpn": self.upn,
            f"{prefix}AccountObjectId": self.object_id,
        }


@dataclass
class Proc:
    """A process instance; its columns fill both the created-process and initiating-process sides."""

    binary: Binary
    pid: int
    cmdline: str
    created: datetime
    account: Account
    parent: Proc | None = None
    integrity: str | None = None
    elevation: str | None = None
    session_id: int | None = None

    def process_columns(self) -> dict[str, Any]:
        """Columns describing this process as the subject of a DeviceProcessEvents row."""
        b = self.binary
        row: dict[str, Any] = {
            "FileName": b.name,
            "FolderPath": b.path,
            "SHA1": b.sha1,
            "SHA256": b.sha256,
            "MD5": b.md5,
            "FileSize": b.size,
            "ProcessId": self.pid,
            "ProcessCommandLine": self.cmdline,
            "ProcessIntegrityLevel": self.integrity,
            "ProcessTokenElevation": self.elevation,
            "ProcessCreationTime": self.created,
            "LogonId": self.account.logon_id,
            "CreatedProcessSessionId": self.session_id,
            "IsProcessRemoteSession": False,
        }
        row.update(b.version_info("Process"))
        row.update(self.account.columns(""))
        return row

    def initiating_columns(self) -> dict[str, Any]:
        """The InitiatingProcess* columns for an event this process caused."""
        b = self.binary
        p = self.parent
        row: dict[str, Any] = {
            "InitiatingProcessSHA1": b.sha1,
            "InitiatingProcessSHA256": b.sha256,
            "InitiatingProcessMD5": b.md5,
            "InitiatingProcessFileName": b.name,
            "InitiatingProcessFileSize": b.size,
            "InitiatingProcessId": self.pid,
            "InitiatingProcessCommandLine": self.cmdline,
            "InitiatingProcessCreationTime": self.created,
            "InitiatingProcessFolderPath": b.path,
            "InitiatingProcessParentId": p.pid if p else None,
            "InitiatingProcessParentFileName": p.binary.name if p else None,
            "InitiatingProcessParentCreationTime": p.created if p else None,
            "InitiatingProcessIntegrityLevel": self.integrity,
            "InitiatingProcessTokenElevation": self.elevation,
            "InitiatingProcessLogonId": self.account.logon_id,
            "InitiatingProcessSignerType": b.signer,
            "InitiatingProcessSignatureStatus": b.signature,
            "InitiatingProcessSessionId": self.session_id,
            "IsInitiatingProcessRemoteSession": False,
        }
        row.update(b.version_info("InitiatingProcess"))
        row.update(self.account.columns("InitiatingProcess"))
        return row


@dataclass
class User:
    name: str  # sam account name / unix short name
    display: str
    sid: str
    object_id: str

    @property
    def upn(self) -> str:
        return f"{self.name}@{DOMAIN}"


@dataclass
class Adapter:
    name: str
    kind: str  # NetworkAdapterType
    vendor: str
    mac: str
    ip: str
    prefix: int
    gateway: str


@dataclass
class Device:
    index: int
    device_id: str
    name: str  # FQDN
    os: OsFamily
    platform: str  # OSPlatform
    os_version: str
    os_build: int | None
    os_version_info: str | None
    distribution: str | None
    device_type: str  # Workstation / Server
    vendor: str
    model: str
    aad_device_id: str
    public_ip: str
    client_version: str
    machine_group: str
    user: User | None  # primary interactive user (None on servers)
    adapters: list[Adapter]
    boot: datetime
    rng: random.Random
    next_pid: int = 700
    report_id: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)  # long-lived processes by role

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def ip(self) -> str:
        return self.adapters[0].ip

    def new_pid(self) -> int:
        # Pids grow with gaps, as on a busy machine; Windows pids are multiples of 4.
        step = self.rng.randint(1, 40)
        self.next_pid += step * 4 if self.os == "Windows" else step
        if self.next_pid > 60000:
            self.next_pid = 1000
        return self.next_pid

    def new_report_id(self) -> int:
        # One counter per device across tables keeps (DeviceId, Timestamp, ReportId) unique.
        self.report_id += 1
        return self.report_id

    def system_account(self) -> Account:
        if self.os == "Windows":
            return Account("nt authority", "system", "S-1-5-18", logon_id=999)
        return Account(self.short_name, "root", None, logon_id=None)

    def user_account(self, logon_id: int | None = None) -> Account:
        u = self.user
        if u is None:
            return self.system_account()
        if self.os == "Windows":
            return Account(NETBIOS.lower(), u.name, u.sid, u.upn, u.object_id, logon_id)
        return Account(self.short_name, u.name, None, u.upn if self.os == "macOS" else None, None, None)

    def spawn(
        self,
        parent: Proc | None,
        binary: Binary,
        cmdline: str,
        at: datetime,
        account: Account | None = None,
        *,
        integrity: str | None = None,
        elevation: str | None = None,
    ) -> Proc:
        """A new process; on Windows integrity, elevation and session follow the parent."""
        acct = account or (parent.account if parent else self.system_account())
        if self.os == "Windows":
            is_system = acct.sid == "S-1-5-18"
            integrity = integrity or ("System" if is_system else (parent.integrity if parent else "Medium"))
            elevation = elevation or (
                "TokenElevationTypeDefault" if is_system else (parent.elevation if parent else "TokenElevationTypeLimited")
            )
            session = parent.session_id if parent and parent.session_id is not None else 0
        else:
            integrity = elevation = None
            session = None
        return Proc(binary, self.new_pid(), cmdline, at, acct, parent, integrity, elevation, session)


def jitter(rng: random.Random, seconds: float) -> timedelta:
    return timedelta(microseconds=rng.randint(1, max(1, int(seconds * 1_000_000))))
