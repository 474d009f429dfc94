"""Fast bulk DeviceProcessEvents for benchmarks: millions of full-schema rows in seconds.

Rows are assembled column-wise: a small table of process-chain templates (child, parent and
grandparent executables with their command lines and version resources) and a table of devices
are expanded with Arrow ``take`` over index arrays drawn by numpy, so no Python code runs per row.
The chains are the same ones the realistic generator uses, so value distributions (FileName,
FolderPath, command lines, hashes) look like the demo's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schema.catalog import default_catalog
from server.demo import software as sw
from server.demo.arrow import arrow_schema
from server.demo.fleet import FIRST_NAMES
from server.demo.model import DOMAIN, NETBIOS, TENANT_SID, Binary

TABLE = "DeviceProcessEvents"

# (os, child, child command line, parent, parent command line, grandparent, runs as system)
W, M, L = sw.WINDOWS, sw.MAC, sw.LINUX
CHAINS: list[tuple[str, Binary, str, Binary, str, Binary, bool]] = [
    ("Windows", W["chrome"], '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --type=renderer --field-trial-handle=',
     W["chrome"], '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --profile-directory=Default', W["explorer"], False),
    ("Windows", W["chrome"], '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --profile-directory=Default --tab=',
     W["explorer"], "C:\\Windows\\Explorer.EXE", W["userinit"], False),
    ("Windows", W["msedge"], '"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe" --type=utility --id=',
     W["msedge"], '"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe"', W["explorer"], False),
    ("Windows", W["outlook"], '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE" /recycle /id:',
     W["explorer"], "C:\\Windows\\Explorer.EXE", W["userinit"], False),
    ("Windows", W["cmd"], '"C:\\Windows\\system32\\cmd.exe" /c echo ', W["explorer"], "C:\\Windows\\Explorer.EXE", W["userinit"], False),
    ("Windows", W["conhost"], "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1 -id ", W["cmd"],
     '"C:\\Windows\\system32\\cmd.exe"', W["explorer"], False),
    ("Windows", W["whoami"], "whoami.exe /user /fo csv /id ", W["cmd"], '"C:\\Windows\\system32\\cmd.exe"', W["explorer"], False),
    ("Windows", W["ipconfig"], "ipconfig.exe /all /id ", W["cmd"], '"C:\\Windows\\system32\\cmd.exe"', W["explorer"], False),
    ("Windows", W["powershell"], "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\Scripts\\inventory.ps1 -Run ",
     W["cmd"], '"C:\\Windows\\system32\\cmd.exe"', W["explorer"], False),
    ("Windows", W["taskhostw"], "taskhostw.exe Install $(Arg0) /task ", W["svchost"],
     "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule", W["services"], True),
    ("Windows", W["wmiprvse"], "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding -id ", W["svchost"],
     "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p", W["services"], True),
    ("Windows", W["mpcmdrun"], f'"{W["mpcmdrun"].path}" SignatureUpdate -ScheduleJob -RestrictPrivileges -Reinvoke ',
     W["msmpeng"], f'"{W["msmpeng"].path}"', W["services"], True),
    ("Windows", W["searchprot"], '"C:\\Windows\\system32\\SearchProtocolHost.exe" Global\\UsGthrFltPipeMssGthrPipe',
     W["svchost"], "C:\\Windows\\system32\\svchost.exe -k netsvcs -p", W["services"], True),
    ("Windows", W["rundll32"], "rundll32.exe C:\\Windows\\system32\\shell32.dll,SHCreateLocalServerRunDll {",
     W["svchost"], "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p", W["services"], False),
    ("macOS", M["zsh"], "-zsh ", M["terminal"], M["terminal"].path, M["launchd"], False),
    ("macOS", M["git"], "git status --porcelain ", M["zsh"], "-zsh", M["terminal"], False),
    ("macOS", M["ls"], "ls -la /Users/", M["zsh"], "-zsh", M["terminal"], False),
    ("macOS", M["curl"], "curl -sSL https://api.github.com/repos/", M["zsh"], "-zsh", M["terminal"], False),
    ("macOS", M["cp"], "cp Desktop/notes.txt Documents/notes-", M["zsh"], "-zsh", M["terminal"], False),
    ("macOS", M["mdworker"], M["mdworker"].path + " -s mdworker -c MDSImporterWorker -m com.apple.mdworker.shared ",
     M["launchd"], "/sbin/launchd", M["launchd"], True),
    ("macOS", M["chrome"], f"{M['chrome'].path} --type=renderer --seatbelt-client=", M["chrome"], M["chrome"].path,
     M["launchd"], False),
    ("Linux", L["sh"], "/bin/sh -c cd / && run-parts --report /etc/cron.hourly #", L["cron"], "/usr/sbin/cron -f -P",
     L["systemd"], True),
    ("Linux", L["runparts"], "run-parts --report /etc/cron.hourly --arg=", L["sh"], "/bin/sh -c cd / && run-parts --report /etc/cron.hourly",
     L["cron"], True),
    ("Linux", L["bash"], "-bash ", L["sshd"], "sshd: admin [priv]", L["sshd"], False),
    ("Linux", L["ps"], "ps aux --sort=-%cpu #", L["bash"], "-bash", L["sshd"], False),
    ("Linux", L["docker"], "docker ps --filter id=", L["bash"], "-bash", L["sshd"], False),
    ("Linux", L["python3"], "/usr/bin/python3 /opt/app/worker.py --job ", L["systemd"], "/sbin/init splash", L["systemd"], True),
    ("Linux", L["curl"], "curl -fsS http://127.0.0.1:8080/health?probe=", L["sh"], "/bin/sh -c /opt/app/healthcheck.sh",
     L["cron"], True),
]
OSES = ("Windows", "macOS", "Linux")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _template_table() -> pa.Table:
    cols: dict[str, list[Any]] = {}

    def put(name: str, value: Any) -> None:
        cols.setdefault(name, []).append(value)

    for os, child, cmd, parent, pcmd, grand, system in CHAINS:
        put("_os", os)
        put("_system", system)
        put("_cmd", cmd)
        for k, v in {"FileName": child.name, "FolderPath": child.path, "SHA1": child.sha1, "SHA256": child.sha256,
                     "MD5": child.md5, "FileSize": child.size}.items():
            put(k, v)
        for prefix, b in (("Process", child), ("InitiatingProcess", parent)):
            for suffix in ("CompanyName", "ProductName", "ProductVersion", "InternalFileName", "OriginalFileName",
                           "FileDescription"):
                put(f"{prefix}VersionInfo{suffix}", b.version_info(prefix).get(f"{prefix}VersionInfo{suffix}"))
        for k, v in {"InitiatingProcessSHA1": parent.sha1, "InitiatingProcessSHA256": parent.sha256,
                     "InitiatingProcessMD5": parent.md5, "InitiatingProcessFileName": parent.name,
                     "InitiatingProcessFileSize": parent.size, "InitiatingProcessCommandLine": pcmd,
                     "InitiatingProcessFolderPath": parent.path, "InitiatingProcessParentFileName": grand.name,
                     "InitiatingProcessSignerType": parent.signer,
                     "InitiatingProcessSignatureStatus": parent.signature}.items():
            put(k, v)
    return pa.table(cols)


def _device_table(devices: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng([seed, 1])
    os_idx = rng.choice(3, size=devices, p=[0.55, 0.25, 0.20])
    ids: list[str] = []
    names: list[str] = []
    domains: list[str] = []
    users: list[str] = []
    sids: list[str | None] = []
    upns: list[str | None] = []
    oids: list[str | None] = []
    for i in range(devices):
        os = OSES[int(os_idx[i])]
        user = f"{FIRST_NAMES[i % len(FIRST_NAMES)]}{i // len(FIRST_NAMES) or ''}"
        prefix = {"Windows": "lt", "macOS": "mbp", "Linux": "srv"}[os]
        name = f"{prefix}-{user}-{i:04d}.{DOMAIN}"
        ids.append(Binary(f"bulk-device:{seed}:{i}").sha1)
        names.append(name)
        if os == "Windows":
            domains.append(NETBIOS.lower())
            sids.append(f"{TENANT_SID}-{5000 + i}")
            oids.append(f"{i:08x}-0000-4000-8000-{seed % 10**12:012d}")
        else:
            domains.append(name.split(".")[0])
            sids.append(None)
            oids.append(None)
        users.append("admin" if os == "Linux" else user)
        upns.append(f"{user}@{DOMAIN}" if os != "Linux" else None)
    return pa.table({"DeviceId": ids, "DeviceName": names, "_domain": domains, "_user": users, "_sid": sids,
                     "_upn": upns, "_oid": oids}), os_idx


def iter_bulk_process_events(
    n_rows: int,
    start: datetime,
    end: datetime,
    seed: int = 0,
    devices: int = 200,
    batch_rows: int = 250_000,
) -> Iterator[pa.Table]:
    """The same kind of rows as ``bulk_process_events`` in batches of at most ``batch_rows``.

    Batches cover consecutive time slices, so together they are sorted by Timestamp, and their
    ReportIds continue from batch to batch; memory stays bounded by one batch.
    """
    if batch_rows < 1:
        raise ValueError(f"iter_bulk_process_events: batch_rows must be >= 1, got {batch_rows}")
    start_us, end_us = _micros(start), _micros(end)
    n_batches = max(1, -(-n_rows // batch_rows))
    done = 0
    for i in range(n_batches):
        rows = min(batch_rows, n_rows - done)
        lo = start_us + (end_us - start_us) * i // n_batches
        hi = start_us + (end_us - start_us) * (i + 1) // n_batches
        yield bulk_process_events(rows, _EPOCH + timedelta(microseconds=lo), _EPOCH + timedelta(microseconds=hi),
                                  seed, devices, _batch=i, _first_report_id=done + 1)
        done += rows


def bulk_process_events(
    n_rows: int,
    start: datetime,
    end: datetime,
    seed: int = 0,
    devices: int = 200,
    *,
    _batch: int = 0,
    _first_report_id: int = 1,
) -> pa.Table:
    """``n_rows`` DeviceProcessEvents rows with the full schema, Timestamps sorted in [start, end).

    Deterministic for a seed. (DeviceId, Timestamp, ReportId) is unique: ReportId counts rows.
    About 1.2 kB per row in memory: use ``iter_bulk_process_events`` for millions of rows.
    """
    if n_rows < 0:
        raise ValueError(f"bulk_process_events: n_rows must be >= 0, got {n_rows}")
    if devices < 1:
        raise ValueError(f"bulk_process_events: devices must be >= 1, got {devices}")
    start_us, end_us = _micros(start), _micros(end)
    if end_us <= start_us:
        raise ValueError(f"bulk_process_events: end ({end}) must be after start ({start})")
    table = default_catalog().tables[TABLE]
    schema = arrow_schema(table)
    rng = np.random.default_rng([seed, 0, _batch])
    tmpl = _template_table()
    devt, dev_os = _device_table(devices, seed)

    d_idx = rng.integers(0, devices, n_rows)
    # Each device only runs chains of its own OS.
    tmpl_os = np.array([OSES.index(o) for o in tmpl.column("_os").to_pylist()])
    per_os = [np.flatnonzero(tmpl_os == k) for k in range(3)]
    row_os = dev_os[d_idx]
    t_idx = np.empty(n_rows, dtype=np.int64)
    for k in range(3):
        mask = row_os == k
        t_idx[mask] = per_os[k][rng.integers(0, len(per_os[k]), int(mask.sum()))]

    ts = np.sort(rng.integers(start_us, end_us, n_rows))
    proc_ct = ts - rng.integers(0, 5_000, n_rows)  # Defender logs creation a few ms after it happens
    parent_ct = proc_ct - rng.integers(1_000_000, 3 * 86_400_000_000, n_rows)
    grand_ct = parent_ct - rng.integers(1_000, 86_400_000_000, n_rows)
    win = row_os == 0
    pid_mult = np.where(win, 4, 1)
    pid = rng.integers(250, 15_000, n_rows) * pid_mult
    ppid = rng.integers(250, 15_000, n_rows) * pid_mult
    gpid = rng.integers(4, 15_000, n_rows) * pid_mult
    arg = rng.integers(0, 1_000_000, n_rows)

    T = tmpl.take(pa.array(t_idx))
    D = devt.take(pa.array(d_idx))
    system = T.column("_system")

    def acct(sys_value: str | None, user_col: str) -> pa.ChunkedArray:
        return pc.if_else(system, pa.scalar(sys_value, pa.string()), D.column(user_col))

    win_arr = pa.array(win)
    sys_name = pc.if_else(win_arr, pa.scalar("system"), pa.scalar("root"))
    acct_name = pc.if_else(system, sys_name, D.column("_user"))
    acct_domain = pc.if_else(pc.and_(system, win_arr), pa.scalar("nt authority"), D.column("_domain"))
    acct_sid = pc.if_else(system, pc.if_else(win_arr, pa.scalar("S-1-5-18"), pa.scalar(None, pa.string())),
                          D.column("_sid"))
    logon = pa.array(np.where(win, np.where(system.to_numpy(), 999, 100_000 + d_idx * 7), 0)).cast(pa.int64())
    logon = pc.if_else(win_arr, logon, pa.scalar(None, pa.int64()))
    integrity = pc.if_else(win_arr, pc.if_else(system, pa.scalar("System"), pa.scalar("Medium")),
                           pa.scalar(None, pa.string()))
    elevation = pc.if_else(win_arr, pc.if_else(system, pa.scalar("TokenElevationTypeDefault"),
                                               pa.scalar("TokenElevationTypeLimited")), pa.scalar(None, pa.string()))
    session = pc.if_else(win_arr, pc.if_else(system, pa.scalar(0, pa.int64()), pa.scalar(1, pa.int64())),
                         pa.scalar(None, pa.int64()))
    cmdline = pc.binary_join_element_wise(T.column("_cmd"), pc.cast(pa.array(arg), pa.string()), "")
    us = pa.timestamp("us")
    generated: dict[str, Any] = {
        "Timestamp": pa.array(ts, us),
        "DeviceId": D.column("DeviceId"),
        "DeviceName": D.column("DeviceName"),
        "ActionType": pa.array(np.full(n_rows, "ProcessCreated", dtype=object), pa.string()),
        "ProcessId": pa.array(pid, pa.int64()),
        "ProcessCommandLine": cmdline,
        "ProcessIntegrityLevel": integrity,
        "ProcessTokenElevation": elevation,
        "ProcessCreationTime": pa.array(proc_ct, us),
        "AccountDomain": acct_domain,
        "AccountName": acct_name,
        "AccountSid": acct_sid,
        "AccountUpn": acct(None, "_upn"),
        "AccountObjectId": acct(None, "_oid"),
        "LogonId": logon,
        "InitiatingProcessAccountDomain": acct_domain,
        "InitiatingProcessAccountName": acct_name,
        "InitiatingProcessAccountSid": acct_sid,
        "InitiatingProcessAccountUpn": acct(None, "_upn"),
        "InitiatingProcessAccountObjectId": acct(None, "_oid"),
        "InitiatingProcessLogonId": logon,
        "InitiatingProcessIntegrityLevel": integrity,
        "InitiatingProcessTokenElevation": elevation,
        "InitiatingProcessId": pa.array(ppid, pa.int64()),
        "InitiatingProcessCreationTime": pa.array(parent_ct, us),
        "InitiatingProcessParentId": pa.array(gpid, pa.int64()),
        "InitiatingProcessParentCreationTime": pa.array(grand_ct, us),
        "ReportId": pa.array(np.arange(_first_report_id, _first_report_id + n_rows), pa.int64()),
        "InitiatingProcessSessionId": session,
        "IsInitiatingProcessRemoteSession": pa.array(np.zeros(n_rows, dtype=bool)),
        "CreatedProcessSessionId": session,
        "IsProcessRemoteSession": pa.array(np.zeros(n_rows, dtype=bool)),
    }
    arrays = []
    for fld in schema:
        if fld.name in generated:
            col = generated[fld.name]
        elif fld.name in T.column_names:
            col = T.column(fld.name)
        else:
            col = pa.nulls(n_rows, fld.type)
        arrays.append(col.cast(fld.type) if col.type != fld.type else col)
    return pa.Table.from_arrays(arrays, schema=schema)


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    # Integer arithmetic: float seconds lose microseconds for current dates.
    return (ts - _EPOCH) // timedelta(microseconds=1)
