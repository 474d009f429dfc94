"""Rules, runs, alerts and incidents in the SQLite metadata database.

``DetectionStore`` is the interface the runner and the API use; ``SqliteDetectionStore`` fills it
over ``MetadataDB`` (migration 3). A PostgreSQL store would implement the same methods.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import orjson

from server.detections.entities import correlation_keys
from server.detections.model import SEVERITY_RANK
from server.detections.timeutil import iso, parse_iso
from server.metadata import MetadataDB


def _j(value: Any) -> str:
    return orjson.dumps(value).decode()


def _l(text: str | None) -> Any:
    return orjson.loads(text) if text else []


@dataclass
class NewAlert:
    """An alert the runner wants to create; the store de-duplicates and correlates it."""

    kind: str
    rule_id: int | None
    rule_name: str
    run_id: int | None
    title: str
    description: str
    recommended_actions: str
    severity: str
    category: str
    mitre_techniques: list[str]
    device_id: str | None
    device_name: str | None
    report_id: str | None
    event_time: datetime | None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)
    evidence_summary: str = ""


@dataclass
class AlertFilter:
    status: str | None = None
    severity: str | None = None
    min_severity: str | None = None
    device: str | None = None
    rule_id: int | None = None
    incident_id: int | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    top: int = 1000
    skip: int = 0


class DetectionStore(Protocol):
    def create_rule(self, fields: dict[str, Any], now: datetime) -> dict[str, Any]: ...
    def get_rule(self, rule_id: int) -> dict[str, Any] | None: ...
    def rule_by_source(self, source_ref: str) -> dict[str, Any] | None: ...
    def list_rules(self) -> list[dict[str, Any]]: ...
    def update_rule(self, rule_id: int, fields: dict[str, Any], now: datetime) -> dict[str, Any] | None: ...
    def delete_rule(self, rule_id: int) -> bool: ...
    def start_run(self, rule_id: int, trigger: str, now: datetime) -> int: ...
    def finish_run(self, run_id: int, rule_id: int, result: dict[str, Any], rule_update: dict[str, Any]) -> None: ...
    def list_runs(self, rule_id: int, limit: int = 50) -> list[dict[str, Any]]: ...
    def new_dedup_keys(self, rule_id: int, keys: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]: ...
    def insert_alerts(self, alerts: list[NewAlert], now: datetime, window: timedelta) -> list[dict[str, Any]]: ...
    def raise_health_alert(self, alert: NewAlert, now: datetime) -> tuple[dict[str, Any], bool]: ...
    def resolve_health_alerts(self, rule_id: int, now: datetime) -> list[str]: ...
    def list_alerts(self, f: AlertFilter) -> list[dict[str, Any]]: ...
    def get_alert(self, alert_id: str) -> dict[str, Any] | None: ...
    def update_alert(self, alert_id: str, fields: dict[str, Any], comments: list[dict[str, Any]], now: datetime) -> dict[str, Any] | None: ...
    def list_incidents(self, status: str | None, top: int, skip: int) -> list[dict[str, Any]]: ...
    def get_incident(self, incident_id: int) -> dict[str, Any] | None: ...
    def update_incident(self, incident_id: int, fields: dict[str, Any], comments: list[dict[str, Any]], now: datetime) -> dict[str, Any] | None: ...


_RULE_JSON = ("mitre_techniques", "device_groups", "actions", "metadata")
_ALERT_JSON = ("mitre_techniques", "comments", "evidence", "entities")
_RULE_COLUMNS = (
    "name",
    "query",
    "frequency",
    "severity",
    "category",
    "mitre_techniques",
    "alert_title",
    "alert_description",
    "recommended_actions",
    "device_groups",
    "actions",
    "enabled",
    "created_by",
    "next_run_at",
    "covered_through",
    "ingest_watermark",
    "metadata",
    "source_ref",
)


def _row(r: sqlite3.Row, json_cols: tuple[str, ...]) -> dict[str, Any]:
    d = dict(r)
    for c in json_cols:
        if c in d:
            d[c] = _l(d[c])
    return d


class SqliteDetectionStore:
    def __init__(self, db: MetadataDB) -> None:
        self.db = db

    # -- rules -------------------------------------------------------------------------------
    def create_rule(self, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
        cols = [c for c in _RULE_COLUMNS if c in fields]
        vals = [_j(fields[c]) if c in _RULE_JSON else fields[c] for c in cols]
        with self.db.tx() as conn:
            cur = conn.execute(
                f"INSERT INTO detection_rules ({', '.join(cols)}, created_at, updated_at) "
                f"VALUES ({', '.join('?' for _ in cols)}, ?, ?)",
                (*vals, iso(now), iso(now)),
            )
            rule_id = int(cur.lastrowid or 0)
        rule = self.get_rule(rule_id)
        assert rule is not None
        return rule

    def get_rule(self, rule_id: int) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM detection_rules WHERE id = ?", (rule_id,))
        return _row(rows[0], _RULE_JSON) if rows else None

    def rule_by_name(self, name: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM detection_rules WHERE name = ?", (name,))
        return _row(rows[0], _RULE_JSON) if rows else None

    def rule_by_source(self, source_ref: str) -> dict[str, Any] | None:
        """The rule imported from ``source_ref`` (e.g. ``sigma:<id>``), if any (migration 9)."""
        rows = self.db.query("SELECT * FROM detection_rules WHERE source_ref = ?", (source_ref,))
        return _row(rows[0], _RULE_JSON) if rows else None

    def list_rules(self) -> list[dict[str, Any]]:
        return [_row(r, _RULE_JSON) for r in self.db.query("SELECT * FROM detection_rules ORDER BY id")]

    def update_rule(self, rule_id: int, fields: dict[str, Any], now: datetime) -> dict[str, Any] | None:
        cols = [c for c in _RULE_COLUMNS if c in fields]
        if cols:
            sets = ", ".join(f"{c} = ?" for c in cols)
            vals = [_j(fields[c]) if c in _RULE_JSON else fields[c] for c in cols]
            with self.db.tx() as conn:
                conn.execute(
                    f"UPDATE detection_rules SET {sets}, updated_at = ? WHERE id = ?",
                    (*vals, iso(now), rule_id),
                )
        return self.get_rule(rule_id)

    def delete_rule(self, rule_id: int) -> bool:
        with self.db.tx() as conn:
            cur = conn.execute("DELETE FROM detection_rules WHERE id = ?", (rule_id,))
        return cur.rowcount > 0

    # -- runs --------------------------------------------------------------------------------
    def start_run(self, rule_id: int, trigger: str, now: datetime) -> int:
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO detection_runs (rule_id, trigger, started_at, status) VALUES (?, ?, ?, 'running')",
                (rule_id, trigger, iso(now)),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, rule_id: int, result: dict[str, Any], rule_update: dict[str, Any]) -> None:
        run_cols = [
            "ended_at",
            "duration_ms",
            "window_start",
            "window_end",
            "ingested_after",
            "ingest_watermark",
            "rows_matched",
            "alerts_created",
            "duplicates",
            "capped",
            "status",
            "error",
            "error_code",
            "message",
        ]
        cols = [c for c in run_cols if c in result]
        with self.db.tx() as conn:
            conn.execute(
                f"UPDATE detection_runs SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                (*[result[c] for c in cols], run_id),
            )
            if rule_update:
                ucols = list(rule_update)
                conn.execute(
                    f"UPDATE detection_rules SET {', '.join(f'{c} = ?' for c in ucols)} WHERE id = ?",
                    (*[rule_update[c] for c in ucols], rule_id),
                )

    def list_runs(self, rule_id: int, limit: int = 50) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.db.query(
                "SELECT * FROM detection_runs WHERE rule_id = ? ORDER BY id DESC LIMIT ?", (rule_id, limit)
            )
        ]

    def last_run(self, rule_id: int) -> dict[str, Any] | None:
        runs = self.list_runs(rule_id, 1)
        return runs[0] if runs else None

    # -- alerts ------------------------------------------------------------------------------
    def new_dedup_keys(self, rule_id: int, keys: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """The (DeviceId, ReportId, Timestamp) keys among ``keys`` that have no alert from the
        rule yet (looked up in chunks through the de-duplication index)."""
        seen: set[tuple[str, str, str]] = set()
        chunk = 300  # 3 parameters a key, well under SQLite's parameter limit
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            values = ", ".join("(?, ?, ?)" for _ in part)
            rows = self.db.query(
                f"WITH k(d, r, t) AS (VALUES {values}) "
                "SELECT k.d, k.r, k.t FROM k JOIN alerts a ON a.kind = 'detection' AND a.rule_id = ? "
                "AND a.device_id = k.d AND a.report_id = k.r AND a.event_time = k.t",
                (*[x for key in part for x in key], rule_id),
            )
            seen.update((str(r[0]), str(r[1]), str(r[2])) for r in rows)
        return {k for k in keys if k not in seen}

    def insert_alerts(self, alerts: list[NewAlert], now: datetime, window: timedelta) -> list[dict[str, Any]]:
        """Insert alerts that are not duplicates and put each in an incident, in one transaction.
        Returns the created alerts (API shape is the caller's business: raw rows here)."""
        created: list[str] = []
        with self.db.tx() as conn:
            for a in alerts:
                alert_id = "qa" + secrets.token_hex(10)
                t = a.event_time or now
                cur = conn.execute(
                    "INSERT OR IGNORE INTO alerts (id, kind, rule_id, rule_name, run_id, title, description, "
                    "recommended_actions, severity, category, mitre_techniques, device_id, device_name, "
                    "report_id, event_time, evidence, entities, evidence_summary, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        alert_id,
                        a.kind,
                        a.rule_id,
                        a.rule_name,
                        a.run_id,
                        a.title,
                        a.description,
                        a.recommended_actions,
                        a.severity,
                        a.category,
                        _j(a.mitre_techniques),
                        a.device_id,
                        a.device_name,
                        a.report_id,
                        iso(t),
                        _j(a.evidence),
                        _j(a.entities),
                        a.evidence_summary,
                        iso(now),
                        iso(now),
                    ),
                )
                if cur.rowcount == 0:
                    continue  # de-duplicated: the event already has an alert from this rule
                keys = correlation_keys(a.entities)
                conn.executemany(
                    "INSERT OR IGNORE INTO alert_entities (alert_id, kind, value) VALUES (?, ?, ?)",
                    [(alert_id, k, v) for k, v in keys],
                )
                self._correlate(conn, alert_id, a, t, keys, now, window)
                created.append(alert_id)
        return [a for a in (self.get_alert(i) for i in created) if a is not None]

    def _correlate(
        self,
        conn: sqlite3.Connection,
        alert_id: str,
        a: NewAlert,
        t: datetime,
        keys: set[tuple[str, str]],
        now: datetime,
        window: timedelta,
    ) -> None:
        """Join the most recent open incident holding an alert on the same device or sharing an
        entity within ``window`` of this alert's event time; else open a new incident."""
        incident_id: int | None = None
        if keys:
            cond = " OR ".join("(e.kind = ? AND e.value = ?)" for _ in keys)
            params: list[Any] = [x for kv in sorted(keys) for x in kv]
            row = conn.execute(
                "SELECT a.incident_id FROM alert_entities e JOIN alerts a ON a.id = e.alert_id "
                "JOIN incidents i ON i.id = a.incident_id "
                f"WHERE ({cond}) AND a.id != ? AND i.status != 'resolved' "
                "AND a.event_time >= ? AND a.event_time <= ? "
                "ORDER BY a.event_time DESC LIMIT 1",
                (*params, alert_id, iso(t - window), iso(t + window)),
            ).fetchone()
            if row is not None:
                incident_id = int(row[0])
        if incident_id is None:
            cur = conn.execute(
                "INSERT INTO incidents (title, severity, status, first_activity, last_activity, created_at, updated_at) "
                "VALUES (?, ?, 'new', ?, ?, ?, ?)",
                (
                    _incident_title(a.title, a.device_name or a.device_id or "an unknown device"),
                    a.severity,
                    iso(t),
                    iso(t),
                    iso(now),
                    iso(now),
                ),
            )
            incident_id = int(cur.lastrowid or 0)
        else:
            inc = conn.execute(
                "SELECT severity, first_activity, last_activity FROM incidents WHERE id = ?", (incident_id,)
            ).fetchone()
            sev = a.severity if SEVERITY_RANK[a.severity] > SEVERITY_RANK.get(inc[0], 0) else inc[0]
            conn.execute(
                "UPDATE incidents SET severity = ?, first_activity = ?, last_activity = ?, updated_at = ? WHERE id = ?",
                (sev, min(inc[1], iso(t)), max(inc[2], iso(t)), iso(now), incident_id),
            )
        conn.execute("UPDATE alerts SET incident_id = ? WHERE id = ?", (incident_id, alert_id))

    def raise_health_alert(self, alert: NewAlert, now: datetime) -> tuple[dict[str, Any], bool]:
        """One open health alert per failing rule: a repeat failure updates it (description,
        occurrences, time) rather than opening a storm of alerts. Returns (alert, created)."""
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT id FROM alerts WHERE kind = 'health' AND rule_id = ? AND status != 'resolved' "
                "ORDER BY created_at DESC LIMIT 1",
                (alert.rule_id,),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE alerts SET description = ?, evidence = ?, evidence_summary = ?, event_time = ?, "
                    "occurrences = occurrences + 1, updated_at = ? WHERE id = ?",
                    (
                        alert.description,
                        _j(alert.evidence),
                        alert.evidence_summary,
                        iso(now),
                        iso(now),
                        row[0],
                    ),
                )
                alert_id, created = str(row[0]), False
            else:
                alert_id, created = "qh" + secrets.token_hex(10), True
                conn.execute(
                    "INSERT INTO alerts (id, kind, rule_id, rule_name, run_id, title, description, severity, "
                    "category, event_time, evidence, entities, evidence_summary, created_at, updated_at) "
                    "VALUES (?, 'health', ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?, ?)",
                    (
                        alert_id,
                        alert.rule_id,
                        alert.rule_name,
                        alert.run_id,
                        alert.title,
                        alert.description,
                        alert.severity,
                        alert.category,
                        iso(now),
                        _j(alert.evidence),
                        alert.evidence_summary,
                        iso(now),
                        iso(now),
                    ),
                )
        got = self.get_alert(alert_id)
        assert got is not None
        return got, created

    def resolve_health_alerts(self, rule_id: int, now: datetime) -> list[str]:
        """A successful run closes the rule's open health alert, as monitoring systems auto-resolve
        a recovered check: status resolved with a comment saying when. Classification is left
        alone (the failure was real, not expected activity). Returns the ids resolved."""
        comment = {
            "comment": f"The rule recovered at {iso(now)}: a run succeeded, so this health alert was resolved automatically.",
            "createdBy": "Quarry",
            "createdDateTime": iso(now),
        }
        with self.db.tx() as conn:
            ids = [
                str(r[0])
                for r in conn.execute(
                    "SELECT id FROM alerts WHERE kind = 'health' AND rule_id = ? AND status != 'resolved'",
                    (rule_id,),
                ).fetchall()
            ]
            for alert_id in ids:
                _apply_triage(conn, "alerts", alert_id, {"status": "resolved"}, [comment], now)
        return ids

    def list_alerts(self, f: AlertFilter) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if f.status:
            where.append("status = ?")
            params.append(f.status)
        if f.severity:
            where.append("severity = ?")
            params.append(f.severity)
        if f.min_severity:
            allowed = [s for s, r in SEVERITY_RANK.items() if r >= SEVERITY_RANK[f.min_severity]]
            where.append(f"severity IN ({', '.join('?' for _ in allowed)})")
            params.extend(allowed)
        if f.device:
            where.append("(device_id = ? OR lower(device_name) = lower(?))")
            params.extend([f.device, f.device])
        if f.rule_id is not None:
            where.append("rule_id = ?")
            params.append(f.rule_id)
        if f.incident_id is not None:
            where.append("incident_id = ?")
            params.append(f.incident_id)
        if f.kind:
            where.append("kind = ?")
            params.append(f.kind)
        if f.since:
            where.append("event_time >= ?")
            params.append(iso(f.since))
        if f.until:
            where.append("event_time <= ?")
            params.append(iso(f.until))
        sql = "SELECT * FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, event_time DESC LIMIT ? OFFSET ?"
        return [_row(r, _ALERT_JSON) for r in self.db.query(sql, (*params, f.top, f.skip))]

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return _row(rows[0], _ALERT_JSON) if rows else None

    def update_alert(
        self, alert_id: str, fields: dict[str, Any], comments: list[dict[str, Any]], now: datetime
    ) -> dict[str, Any] | None:
        with self.db.tx() as conn:
            if _apply_triage(conn, "alerts", alert_id, fields, comments, now) is None:
                return None
        return self.get_alert(alert_id)

    # -- incidents ---------------------------------------------------------------------------
    def list_incidents(self, status: str | None, top: int, skip: int) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM incidents", []  # type: tuple[str, list[Any]]
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        sql += " ORDER BY last_activity DESC, id DESC LIMIT ? OFFSET ?"
        return [_row(r, ("comments", "tags")) for r in self.db.query(sql, (*params, top, skip))]

    def get_incident(self, incident_id: int) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return _row(rows[0], ("comments", "tags")) if rows else None

    def incident_alerts(self, incident_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {i: [] for i in incident_ids}
        if not incident_ids:
            return out
        rows = self.db.query(
            f"SELECT * FROM alerts WHERE incident_id IN ({', '.join('?' for _ in incident_ids)}) ORDER BY event_time",
            tuple(incident_ids),
        )
        for r in rows:
            out[int(r["incident_id"])].append(_row(r, _ALERT_JSON))
        return out

    def update_incident(
        self, incident_id: int, fields: dict[str, Any], comments: list[dict[str, Any]], now: datetime
    ) -> dict[str, Any] | None:
        with self.db.tx() as conn:
            sets = _apply_triage(conn, "incidents", incident_id, fields, comments, now)
            if sets is None:
                return None
            # As in Defender, resolving an incident resolves its alerts.
            if sets.get("status") == "resolved":
                conn.execute(
                    "UPDATE alerts SET status = 'resolved', resolved_at = ?, updated_at = ? "
                    "WHERE incident_id = ? AND status != 'resolved'",
                    (iso(now), iso(now), incident_id),
                )
        return self.get_incident(incident_id)


_TRIAGE_FIELDS = ("status", "assigned_to", "classification", "determination")


def _apply_triage(
    conn: sqlite3.Connection,
    table: Literal["alerts", "incidents"],
    row_id: str | int,
    fields: dict[str, Any],
    comments: list[dict[str, Any]],
    now: datetime,
) -> dict[str, Any] | None:
    """Write a triage change (the triage fields, resolved_at following status, appended comments)
    to one alert or incident inside ``conn``'s transaction; the columns set, or None if there is
    no such row. ``table`` is one of two fixed names, never user text."""
    row = conn.execute(f"SELECT comments FROM {table} WHERE id = ?", (row_id,)).fetchone()
    if row is None:
        return None
    sets = {k: v for k, v in fields.items() if k in _TRIAGE_FIELDS}
    if "status" in sets:
        sets["resolved_at"] = iso(now) if sets["status"] == "resolved" else None
    if comments:
        sets["comments"] = _j(_l(row["comments"]) + comments)
    sets["updated_at"] = iso(now)
    conn.execute(f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?", (*sets.values(), row_id))
    return sets


def parse_opt(text: str | None) -> datetime | None:
    return parse_iso(text) if text else None


def _incident_title(alert_title: str, device: str) -> str:
    """An incident is named after its first alert and device, unless the title names it already."""
    return alert_title if device.lower() in alert_title.lower() else f"{alert_title} on {device}"
