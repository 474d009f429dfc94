"""The device action queue and its audit log.

Actions are requested by an admin (``POST /api/devices/{id}/actions``) or by a detection rule
(``queue_action(..., rule_id=...)``), fetched by the device's agent
(``GET /api/devices/{id}/actions/pending``) and closed by the agent's report
(``POST /api/devices/{id}/actions/{actionId}/result``). Each step writes an audit entry in the
same transaction as the state change, so the audit log cannot disagree with the queue.

Statuses follow Defender's machine actions: Pending -> InProgress (the agent fetched it) ->
Succeeded | Failed; Pending or InProgress -> Cancelled. Delivery is at least once: the pending
list keeps returning an InProgress action until its result arrives, so an agent that crashed
after fetching gets it again (agents de-duplicate by action id).

Requesting an action of a type that is already Pending or InProgress on the device returns the
open action instead of queueing a second one (an alert storm must not queue a hundred isolations),
and records a ``merged`` audit entry so the request is still on record.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

from server.errors import FieldError
from server.metadata import MetadataDB, where_clause

ACTION_TYPES: tuple[str, ...] = (
    "isolate",
    # Defender's "release from isolation" (machine action type Unisolate).
    "unisolate",
    "collectInvestigationPackage",
    "runAntivirusScan",
    "initiateInvestigation",
)
OPEN_STATUSES = ("Pending", "InProgress")
RESULT_STATUSES = ("Succeeded", "Failed")
MAX_COMMENT = 4000
MAX_DETAILS_BYTES = 64 * 1024


class ActionError(FieldError):
    """A bad action request; ``status`` is the HTTP status the API should answer with."""

    default_code = "invalid_action"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _to_api(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "machineId": row["device_id"],
        "status": row["status"],
        "requestor": row["requestor"],
        "requestorComment": row["requestor_comment"],
        "ruleId": row["rule_id"],
        "resultComment": row["result_comment"],
        "resultDetails": json.loads(row["result_details"]) if row["result_details"] else None,
        "creationDateTimeUtc": row["created_at"],
        "lastUpdateDateTimeUtc": row["updated_at"],
        "deliveredDateTimeUtc": row["delivered_at"],
        "completedDateTimeUtc": row["completed_at"],
    }


def _audit(
    conn: sqlite3.Connection,
    action_id: str,
    device_id: str,
    event: str,
    actor: str,
    detail: dict[str, Any],
    at: str,
) -> None:
    conn.execute(
        "INSERT INTO device_action_audit (action_id, device_id, event, actor, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
        (action_id, device_id, event, actor, json.dumps(detail, sort_keys=True), at),
    )


def _check_device_id(device_id: Any) -> str:
    if not isinstance(device_id, str) or not device_id.strip() or len(device_id) > 256:
        raise ActionError(
            "device id must be a non-empty string of at most 256 characters", "deviceId"
        )
    if any(ord(c) < 32 for c in device_id):
        raise ActionError("device id contains control characters", "deviceId")
    return device_id


def _action_row(conn: sqlite3.Connection, device_id: str, action_id: str) -> sqlite3.Row:
    """The action's row, or a 404 when this device has no such action."""
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM device_actions WHERE id = ? AND device_id = ?", (action_id, device_id)
    ).fetchone()
    if row is None:
        raise ActionError(
            f"no action {action_id!r} on device {device_id!r}", "actionId", "not_found", 404
        )
    return row


def queue_action(
    metadata: MetadataDB,
    device_id: str,
    action: str,
    requested_by: str,
    comment: str,
    rule_id: str | int | None = None,
) -> dict[str, Any]:
    """Queue ``action`` for the device and return it (Defender machineAction field names).

    If the same action type is already open on the device, the open action is returned with
    ``"merged": true`` and no new action is queued. Raises ActionError on bad input.
    """
    _check_device_id(device_id)
    if action not in ACTION_TYPES:
        raise ActionError(
            f"unknown action {action!r}; expected one of {', '.join(ACTION_TYPES)}", "type"
        )
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise ActionError("requestedBy must be a non-empty string", "requestedBy")
    if not isinstance(comment, str):
        raise ActionError("comment must be a string", "comment")
    if len(comment) > MAX_COMMENT:
        raise ActionError(f"comment is longer than {MAX_COMMENT} characters", "comment")
    rule = None if rule_id is None else str(rule_id)
    now = _now()
    with metadata.tx() as conn:
        open_rows = conn.execute(
            "SELECT * FROM device_actions WHERE device_id = ? AND type = ? AND status IN ('Pending', 'InProgress')"
            " ORDER BY created_at LIMIT 1",
            (device_id, action),
        ).fetchall()
        if open_rows:
            existing = open_rows[0]
            _audit(
                conn,
                existing["id"],
                device_id,
                "merged",
                requested_by,
                {"comment": comment, "ruleId": rule, "type": action},
                now,
            )
            out = _to_api(existing)
            out["merged"] = True
            return out
        action_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO device_actions (id, device_id, type, status, requestor, requestor_comment, rule_id,"
            " created_at, updated_at) VALUES (?, ?, ?, 'Pending', ?, ?, ?, ?, ?)",
            (action_id, device_id, action, requested_by, comment, rule, now, now),
        )
        _audit(
            conn,
            action_id,
            device_id,
            "requested",
            requested_by,
            {"comment": comment, "ruleId": rule, "type": action},
            now,
        )
        row = conn.execute("SELECT * FROM device_actions WHERE id = ?", (action_id,)).fetchone()
    out = _to_api(row)
    out["merged"] = False
    return out


def get_action(metadata: MetadataDB, device_id: str, action_id: str) -> dict[str, Any] | None:
    rows = metadata.query(
        "SELECT * FROM device_actions WHERE id = ? AND device_id = ?", (action_id, device_id)
    )
    return _to_api(rows[0]) if rows else None


def list_actions(
    metadata: MetadataDB, device_id: str | None = None, status: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    cond, params = where_clause([("device_id = ?", device_id), ("status = ?", status)])
    sql = f"SELECT * FROM device_actions{cond} ORDER BY created_at DESC, id LIMIT ?"
    return [_to_api(r) for r in metadata.query(sql, (*params, limit))]


def fetch_pending(metadata: MetadataDB, device_id: str, actor: str) -> list[dict[str, Any]]:
    """The device's open actions, oldest first; Pending ones become InProgress (audited)."""
    _check_device_id(device_id)
    now = _now()
    with metadata.tx() as conn:
        rows = conn.execute(
            "SELECT * FROM device_actions WHERE device_id = ? AND status IN ('Pending', 'InProgress')"
            " ORDER BY created_at, id",
            (device_id,),
        ).fetchall()
        for r in rows:
            if r["status"] == "Pending":
                conn.execute(
                    "UPDATE device_actions SET status = 'InProgress', delivered_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, r["id"]),
                )
                _audit(conn, r["id"], device_id, "delivered", actor, {}, now)
        ids = [r["id"] for r in rows]
        fresh = [
            conn.execute("SELECT * FROM device_actions WHERE id = ?", (i,)).fetchone() for i in ids
        ]
    return [_to_api(r) for r in fresh]


def report_result(
    metadata: MetadataDB,
    device_id: str,
    action_id: str,
    status: str,
    actor: str,
    comment: str = "",
    details: Any = None,
) -> dict[str, Any]:
    """Close an open action with the agent's result. 404 for an unknown action on this device,
    409 when it is already closed (a late duplicate report must not rewrite history)."""
    _check_device_id(device_id)
    if status not in RESULT_STATUSES:
        raise ActionError(
            f"status must be one of {', '.join(RESULT_STATUSES)}, got {status!r}", "status"
        )
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise ActionError(
            f"comment must be a string of at most {MAX_COMMENT} characters", "comment"
        )
    details_text = None if details is None else json.dumps(details, sort_keys=True)
    if details_text is not None and len(details_text) > MAX_DETAILS_BYTES:
        raise ActionError(f"details are larger than {MAX_DETAILS_BYTES} bytes", "details")
    now = _now()
    rejected: ActionError | None = None
    with metadata.tx() as conn:
        row = _action_row(conn, device_id, action_id)
        if row["status"] not in OPEN_STATUSES:
            # Committed (not rolled back with an exception): a late or conflicting report is
            # itself worth keeping in the audit log.
            _audit(
                conn,
                action_id,
                device_id,
                "result_rejected",
                actor,
                {"status": status, "reason": f"already {row['status']}"},
                now,
            )
            rejected = ActionError(
                f"action {action_id} is already {row['status']}; its result cannot change",
                "status",
                "conflict",
                409,
            )
    if rejected is not None:
        raise rejected
    with metadata.tx() as conn:
        cur = conn.execute(
            "UPDATE device_actions SET status = ?, result_comment = ?, result_details = ?, updated_at = ?,"
            " completed_at = ? WHERE id = ? AND status IN ('Pending', 'InProgress')",
            (status, comment, details_text, now, now, action_id),
        )
        if cur.rowcount == 0:  # closed by a concurrent report between the two transactions
            raise ActionError(
                f"action {action_id} was closed concurrently", "status", "conflict", 409
            )
        _audit(
            conn,
            action_id,
            device_id,
            "result",
            actor,
            {"status": status, "comment": comment, "details": details},
            now,
        )
        row = conn.execute("SELECT * FROM device_actions WHERE id = ?", (action_id,)).fetchone()
    return _to_api(row)


def cancel_action(
    metadata: MetadataDB, device_id: str, action_id: str, actor: str, comment: str = ""
) -> dict[str, Any]:
    now = _now()
    with metadata.tx() as conn:
        row = _action_row(conn, device_id, action_id)
        if row["status"] not in OPEN_STATUSES:
            raise ActionError(
                f"action {action_id} is already {row['status']}", "status", "conflict", 409
            )
        conn.execute(
            "UPDATE device_actions SET status = 'Cancelled', updated_at = ?, completed_at = ? WHERE id = ?",
            (now, now, action_id),
        )
        _audit(conn, action_id, device_id, "cancelled", actor, {"comment": comment}, now)
        row = conn.execute("SELECT * FROM device_actions WHERE id = ?", (action_id,)).fetchone()
    return _to_api(row)


def record_package(
    metadata: MetadataDB, device_id: str, action_id: str, actor: str, size: int, sha256: str
) -> None:
    """Audit an investigation package upload (the file itself is kept by the API layer)."""
    with metadata.tx() as conn:
        _audit(conn, action_id, device_id, "package_uploaded", actor,
               {"bytes": size, "sha256": sha256}, _now())


def audit_log(
    metadata: MetadataDB,
    device_id: str | None = None,
    action_id: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Audit entries, oldest first."""
    cond, params = where_clause([("device_id = ?", device_id), ("action_id = ?", action_id)])
    sql = f"SELECT * FROM device_action_audit{cond} ORDER BY id LIMIT ?"
    return [
        {
            "id": int(r["id"]),
            "actionId": r["action_id"],
            "machineId": r["device_id"],
            "event": r["event"],
            "actor": r["actor"],
            "detail": json.loads(r["detail"]),
            "at": r["at"],
        }
        for r in metadata.query(sql, (*params, limit))
    ]
