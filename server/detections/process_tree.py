"""The process tree around an alert's process, from DeviceProcessEvents.

Each DeviceProcessEvents row is one process creation: the created process (ProcessId,
ProcessCreationTime, FileName, ProcessCommandLine) and its creator (InitiatingProcess*), plus the
creator's parent by name and pid (InitiatingProcessParent*). A process is identified on a device
by (pid, creation time), since pids are reused. So:

* ancestors: the creation event of the parent is the row whose ProcessId/ProcessCreationTime are
  the child's InitiatingProcessId/InitiatingProcessCreationTime; repeat upwards. Where the
  creation event is not in retained data, the InitiatingProcessParent* columns still name one
  more ancestor (without command line) and the walk stops;
* children: rows whose InitiatingProcessId/InitiatingProcessCreationTime are the process's own.

All lookups are parameterised SQL on a storage connection, with the date partition bounded.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from server.detections.entities import jsonable
from server.detections.timeutil import parse_iso

MAX_DEPTH = 16
MAX_CHILDREN = 200
_COLS = (
    "Timestamp",
    "DeviceId",
    "DeviceName",
    "ReportId",
    "FileName",
    "FolderPath",
    "SHA1",
    "ProcessId",
    "ProcessCommandLine",
    "ProcessCreationTime",
    "AccountDomain",
    "AccountName",
    "InitiatingProcessId",
    "InitiatingProcessFileName",
    "InitiatingProcessFolderPath",
    "InitiatingProcessCommandLine",
    "InitiatingProcessCreationTime",
    "InitiatingProcessSHA1",
    "InitiatingProcessAccountDomain",
    "InitiatingProcessAccountName",
    "InitiatingProcessParentId",
    "InitiatingProcessParentFileName",
    "InitiatingProcessParentCreationTime",
)
_SELECT = ", ".join(f'"{c}"' for c in _COLS)


def _dt(v: Any) -> datetime | None:
    if isinstance(v, datetime):
        return v
    if isinstance(v, str) and v:
        try:
            return parse_iso(v)
        except ValueError:
            return None
    return None


def _created(row: dict[str, Any], source: str) -> dict[str, Any]:
    """The created process of a DeviceProcessEvents row as a tree node."""
    return {
        "processId": row.get("ProcessId"),
        "fileName": row.get("FileName"),
        "folderPath": row.get("FolderPath"),
        "commandLine": row.get("ProcessCommandLine"),
        "creationTime": jsonable(row.get("ProcessCreationTime") or row.get("Timestamp")),
        "accountName": row.get("AccountName"),
        "sha1": row.get("SHA1"),
        "eventTime": jsonable(row.get("Timestamp")),
        "reportId": row.get("ReportId"),
        "source": source,
    }


def _initiating(row: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "processId": row.get("InitiatingProcessId"),
        "fileName": row.get("InitiatingProcessFileName"),
        "folderPath": row.get("InitiatingProcessFolderPath"),
        "commandLine": row.get("InitiatingProcessCommandLine"),
        "creationTime": jsonable(row.get("InitiatingProcessCreationTime")),
        "accountName": row.get("InitiatingProcessAccountName"),
        "sha1": row.get("InitiatingProcessSHA1"),
        "eventTime": None,
        "reportId": None,
        "source": source,
    }


def _grandparent(row: dict[str, Any]) -> dict[str, Any] | None:
    if not row.get("InitiatingProcessParentFileName") and row.get("InitiatingProcessParentId") is None:
        return None
    return {
        "processId": row.get("InitiatingProcessParentId"),
        "fileName": row.get("InitiatingProcessParentFileName"),
        "folderPath": None,
        "commandLine": None,
        "creationTime": jsonable(row.get("InitiatingProcessParentCreationTime")),
        "accountName": None,
        "sha1": None,
        "eventTime": None,
        "reportId": None,
        "source": "InitiatingProcessParent columns",
    }


class ProcessTreeBuilder:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def _rows(self, where: str, params: list[Any], order: str = '"Timestamp"', limit: int = 1) -> list[dict[str, Any]]:
        sql = f'SELECT {_SELECT} FROM "DeviceProcessEvents" WHERE {where} ORDER BY {order} LIMIT {int(limit)}'
        cur = self.con.execute(sql, params)
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def event(self, device_id: str, report_id: Any, ts: datetime) -> dict[str, Any] | None:
        rows = self._rows(
            '"DeviceId" = ? AND CAST("ReportId" AS VARCHAR) = ? AND "Timestamp" = ? AND "date" = ?',
            [device_id, str(report_id), ts, ts.date()],
        )
        return rows[0] if rows else None

    def creation_of(self, device_id: str, pid: Any, created: datetime | None, before: datetime) -> dict[str, Any] | None:
        """The event that created process (pid, created) on the device."""
        if pid is None:
            return None
        if created is not None:
            lo, hi = created - timedelta(days=1), created + timedelta(days=1)
            rows = self._rows(
                '"DeviceId" = ? AND "ProcessId" = ? AND "ProcessCreationTime" = ? '
                'AND "Timestamp" BETWEEN ? AND ? AND "date" BETWEEN ? AND ?',
                [device_id, pid, created, lo, hi, lo.date(), hi.date()],
            )
            return rows[0] if rows else None
        # No creation time: the latest creation of that pid before the child's event.
        lo = before - timedelta(days=7)
        rows = self._rows(
            '"DeviceId" = ? AND "ProcessId" = ? AND "Timestamp" BETWEEN ? AND ? AND "date" BETWEEN ? AND ?',
            [device_id, pid, lo, before, lo.date(), before.date()],
            order='"Timestamp" DESC',
        )
        return rows[0] if rows else None

    def children_of(self, device_id: str, pid: Any, created: datetime | None, after: datetime) -> list[dict[str, Any]]:
        if pid is None:
            return []
        start = created or after
        hi = start + timedelta(days=7)
        where = '"DeviceId" = ? AND "InitiatingProcessId" = ? AND "Timestamp" BETWEEN ? AND ? AND "date" BETWEEN ? AND ?'
        params: list[Any] = [device_id, pid, start, hi, start.date(), hi.date()]
        if created is not None:
            where += ' AND "InitiatingProcessCreationTime" = ?'
            params.append(created)
        return self._rows(where, params, limit=MAX_CHILDREN)


def build_tree(con: duckdb.DuckDBPyConnection, alert: dict[str, Any]) -> dict[str, Any]:
    """The tree around the alert's process, or a dict with ``process: None`` and a note."""
    evidence = (alert.get("evidence") or [{}])[0]
    device_id = alert.get("device_id") or evidence.get("DeviceId")
    ts = _dt(alert.get("event_time")) or _dt(evidence.get("Timestamp"))
    out: dict[str, Any] = {
        "alertId": alert["id"],
        "deviceId": device_id,
        "deviceName": alert.get("device_name"),
        "process": None,
        "ancestors": [],
        "children": [],
        "path": [],
        "note": None,
    }
    if not device_id or ts is None:
        out["note"] = "the alert has no device or event time to build a process tree from"
        return out
    b = ProcessTreeBuilder(con)
    row = b.event(str(device_id), alert.get("report_id") or evidence.get("ReportId"), ts)
    if row is not None:
        focal = _created(row, "DeviceProcessEvents")
    else:
        # Not a process creation event (file, network... tables): its initiating process is
        # the alert's process; the evidence row holds whichever InitiatingProcess* it returned.
        row = dict(evidence)
        for k in ("Timestamp", "ProcessCreationTime", "InitiatingProcessCreationTime", "InitiatingProcessParentCreationTime"):
            if k in row:
                row[k] = _dt(row[k])
        if row.get("ProcessId") is not None or row.get("ProcessCommandLine"):
            focal = _created(row, "alert evidence")
        elif row.get("InitiatingProcessId") is not None or row.get("InitiatingProcessFileName"):
            focal = _initiating(row, "alert evidence (initiating process)")
            row = b.creation_of(
                str(device_id), row.get("InitiatingProcessId"), _dt(row.get("InitiatingProcessCreationTime")), ts
            ) or {
                "InitiatingProcessId": row.get("InitiatingProcessParentId"),
                "InitiatingProcessFileName": row.get("InitiatingProcessParentFileName"),
                "InitiatingProcessCreationTime": row.get("InitiatingProcessParentCreationTime"),
            }
        else:
            out["note"] = "the alert's event names no process"
            return out
    out["process"] = focal

    ancestors: list[dict[str, Any]] = []
    current = row
    seen: set[tuple[Any, Any]] = set()
    for _ in range(MAX_DEPTH):
        pid, created = current.get("InitiatingProcessId"), _dt(current.get("InitiatingProcessCreationTime"))
        if pid is None and not current.get("InitiatingProcessFileName"):
            break
        if (pid, created) in seen:
            break  # a loop in bad data: stop rather than spin
        seen.add((pid, created))
        parent_event = b.creation_of(str(device_id), pid, created, _dt(current.get("Timestamp")) or ts)
        if parent_event is None:
            ancestors.append(_initiating(current, "InitiatingProcess columns"))
            gp = _grandparent(current)
            if gp is not None:
                ancestors.append(gp)
            break
        node = _created(parent_event, "DeviceProcessEvents")
        # The creation event may lack a command line that the child's row carried.
        if not node["commandLine"] and current.get("InitiatingProcessCommandLine"):
            node["commandLine"] = current.get("InitiatingProcessCommandLine")
        ancestors.append(node)
        current = parent_event
    ancestors.reverse()  # root first
    out["ancestors"] = ancestors

    focal_created = _dt(focal["creationTime"])
    kids = b.children_of(str(device_id), focal["processId"], focal_created, ts)
    out["children"] = [_created(k, "DeviceProcessEvents") for k in kids]
    out["path"] = [a["fileName"] for a in ancestors] + [focal["fileName"]]
    out["tree"] = _nest(ancestors, focal, out["children"])
    return out


def _nest(ancestors: list[dict[str, Any]], focal: dict[str, Any], children: list[dict[str, Any]]) -> dict[str, Any]:
    node: dict[str, Any] = {**focal, "isAlertProcess": True, "children": [{**c, "children": []} for c in children]}
    for a in reversed(ancestors):
        node = {**a, "isAlertProcess": False, "children": [node]}
    return node
