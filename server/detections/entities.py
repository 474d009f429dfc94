"""Entities of a matched row (device, account, file, process, ip), in the Defender alert
evidence shape, and the keys incidents correlate on."""

from __future__ import annotations

import decimal
import math
from datetime import date, datetime, time, timedelta
from typing import Any

from server.detections.timeutil import iso

# Built-in service accounts appear on every machine: sharing one says nothing about two alerts.
_NOISY_ACCOUNTS = {"s-1-5-18", "s-1-5-19", "s-1-5-20", "system", "local service", "network service"}


def jsonable(value: Any) -> Any:
    """A DuckDB result value as JSON: datetimes as ISO UTC, timespans as seconds."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _pick(row: dict[str, Any], *names: str) -> Any:
    for n in names:
        v = row.get(n)
        if v not in (None, ""):
            return v
    return None


def extract_entities(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Entities named by a result row. Only columns the query returned are used (as Defender's
    entity mapping: "only columns the query returns can be chosen")."""
    out: list[dict[str, Any]] = []
    if _pick(row, "DeviceId", "DeviceName"):
        out.append(
            {"entityType": "device", "deviceId": row.get("DeviceId"), "deviceName": row.get("DeviceName")}
        )
    for prefix in ("", "InitiatingProcess"):
        name = _pick(row, f"{prefix}AccountName")
        sid = _pick(row, f"{prefix}AccountSid")
        upn = _pick(row, f"{prefix}AccountUpn")
        if name or sid or upn:
            out.append(
                {
                    "entityType": "account",
                    "accountName": name,
                    "domainName": row.get(f"{prefix}AccountDomain"),
                    "userSid": sid,
                    "userPrincipalName": upn,
                    "aadUserId": row.get(f"{prefix}AccountObjectId"),
                }
            )
            break
    if _pick(row, "SHA1", "SHA256", "FolderPath") and "ProcessCommandLine" not in row:
        out.append(
            {
                "entityType": "file",
                "fileName": row.get("FileName"),
                "filePath": row.get("FolderPath"),
                "sha1": row.get("SHA1"),
                "sha256": row.get("SHA256"),
            }
        )
    if _pick(row, "ProcessCommandLine", "ProcessId"):
        out.append(
            {
                "entityType": "process",
                "fileName": row.get("FileName"),
                "filePath": row.get("FolderPath"),
                "sha1": row.get("SHA1"),
                "processId": row.get("ProcessId"),
                "processCommandLine": row.get("ProcessCommandLine"),
                "processCreationTime": jsonable(row.get("ProcessCreationTime")),
                "parentProcessId": row.get("InitiatingProcessId"),
                "parentProcessFileName": row.get("InitiatingProcessFileName"),
                "parentProcessCreationTime": jsonable(row.get("InitiatingProcessCreationTime")),
            }
        )
    elif _pick(row, "InitiatingProcessCommandLine", "InitiatingProcessId"):
        out.append(
            {
                "entityType": "process",
                "fileName": row.get("InitiatingProcessFileName"),
                "filePath": row.get("InitiatingProcessFolderPath"),
                "sha1": row.get("InitiatingProcessSHA1"),
                "processId": row.get("InitiatingProcessId"),
                "processCommandLine": row.get("InitiatingProcessCommandLine"),
                "processCreationTime": jsonable(row.get("InitiatingProcessCreationTime")),
                "parentProcessId": row.get("InitiatingProcessParentId"),
                "parentProcessFileName": row.get("InitiatingProcessParentFileName"),
                "parentProcessCreationTime": jsonable(row.get("InitiatingProcessParentCreationTime")),
            }
        )
    for col in ("RemoteIP", "LocalIP"):
        if row.get(col):
            out.append({"entityType": "ip", "ipAddress": row.get(col)})
            break
    return [{k: jsonable(v) for k, v in e.items()} for e in out]


def correlation_keys(entities: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, value) pairs: two alerts sharing one belong together (within the window)."""
    keys: set[tuple[str, str]] = set()
    for e in entities:
        t = e.get("entityType")
        if t == "device" and e.get("deviceId"):
            keys.add(("device", str(e["deviceId"])))
        elif t == "account":
            ident = e.get("userSid") or e.get("userPrincipalName") or (
                f"{e.get('domainName') or ''}\\{e.get('accountName')}" if e.get("accountName") else None
            )
            if ident and str(ident).lower() not in _NOISY_ACCOUNTS and str(
                e.get("accountName") or ""
            ).lower() not in _NOISY_ACCOUNTS:
                keys.add(("account", str(ident).lower()))
        elif t == "file":
            if e.get("sha1"):
                keys.add(("file", "sha1:" + str(e["sha1"]).lower()))
            elif e.get("sha256"):
                keys.add(("file", "sha256:" + str(e["sha256"]).lower()))
        elif t == "ip" and e.get("ipAddress"):
            keys.add(("ip", str(e["ipAddress"])))
    return keys


def evidence_summary(row: dict[str, Any]) -> str:
    """One line for emails and lists: what happened, where, by what."""
    parts: list[str] = []
    if row.get("ActionType"):
        parts.append(str(row["ActionType"]))
    if row.get("ProcessCommandLine"):
        parts.append(f"command line: {row['ProcessCommandLine']}")
    elif row.get("FileName"):
        parts.append(f"file: {row.get('FolderPath') or row['FileName']}")
    if row.get("InitiatingProcessFileName"):
        parts.append(f"by {row['InitiatingProcessFileName']}")
    acct = row.get("AccountName") or row.get("InitiatingProcessAccountName")
    if acct:
        parts.append(f"user {acct}")
    if row.get("RemoteIP"):
        parts.append(f"remote {row['RemoteIP']}")
    text = "; ".join(parts) if parts else ", ".join(f"{k}={row[k]}" for k in list(row)[:6])
    return text[:500]
