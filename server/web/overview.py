"""What the console's list pages show, read through the same stores as the JSON API: the home
page's overview, the rules' health and alerts per day, the devices list. Blocking (DuckDB and
SQLite): the pages call these on a worker thread."""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Any

from schema.catalog import default_catalog
from server.detections.runner import run_to_api
from server.detections.store import AlertFilter
from server.detections.views import alert_to_api, incident_to_api, rule_to_api
from server.devices.groups import all_device_facts, list_groups

log = logging.getLogger("quarry.web")

CHART_DAYS = 14  # the rules list's alerts-per-day chart


def _engine(state: Any) -> Any:
    return getattr(state, "detections", None)


def events_last_day(state: Any) -> list[tuple[str, int]]:
    """Events per table with a Timestamp in the last 24 hours, read from storage by one query
    over the day's partitions (the table names come from the catalog, never from a request)."""
    tables = [t.name for t in default_catalog().tables.values() if t.has_timestamp and t.is_event_table]
    storage = getattr(state, "storage", None)
    if storage is None or not tables:
        return []
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=24)
    parts = " UNION ALL ".join(
        f"SELECT '{t}' AS t, count(*) AS n FROM \"{t}\" WHERE \"Timestamp\" >= ?" for t in tables
    )
    con = storage.connect()
    try:
        rows = con.execute(parts, [since] * len(tables)).fetchall()
    finally:
        con.close()
    return sorted(((str(t), int(n)) for t, n in rows), key=lambda r: (-r[1], r[0]))


def storage_size(state: Any) -> tuple[int, int]:
    """(bytes of Parquet, rows acknowledged but not yet flushed to Parquet)."""
    storage = getattr(state, "storage", None)
    if storage is None:
        return 0, 0
    stats = storage.stats()
    return sum(int(t["bytes"]) for t in stats["tables"].values()), int(stats.get("unflushed_rows") or 0)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def alerts(state: Any, f: AlertFilter) -> list[dict[str, Any]]:
    engine = _engine(state)
    if engine is None:
        return []
    return [alert_to_api(a, state.settings) for a in engine.store.list_alerts(f)]


def incidents(state: Any, status: str | None, top: int) -> list[dict[str, Any]]:
    engine = _engine(state)
    if engine is None:
        return []
    store = engine.store
    found = store.list_incidents(status, top, 0)
    by_id = store.incident_alerts([i["id"] for i in found])
    return [incident_to_api(i, by_id[i["id"]], state.settings) for i in found]


def rule_health(rule: dict[str, Any]) -> str:
    """ok / degraded / failing / never run / disabled, from the rule's last run's status
    (completed, partiallyFailed, failed)."""
    if not rule.get("enabled"):
        return "disabled"
    status = rule.get("lastRunStatus")
    if status is None:
        return "never run"
    return {"completed": "ok", "partiallyFailed": "degraded"}.get(str(status), "failing")


def rules(state: Any) -> list[dict[str, Any]]:
    """Every rule as the API shows it, with ``health`` and ``perDay`` (alerts per day over the
    last CHART_DAYS days, oldest first)."""
    engine = _engine(state)
    if engine is None:
        return []
    today = dt.datetime.now(dt.UTC).date()
    days = [(today - dt.timedelta(days=i)).isoformat() for i in range(CHART_DAYS - 1, -1, -1)]
    since = dt.datetime.combine(today - dt.timedelta(days=CHART_DAYS - 1), dt.time(), tzinfo=dt.UTC)
    counts: Counter[tuple[int, str]] = Counter()
    for a in engine.store.list_alerts(AlertFilter(kind="detection", since=since, top=10_000)):
        stamp = str(a.get("created_at") or a.get("event_time") or "")[:10]
        if a.get("rule_id") is not None:
            counts[(int(a["rule_id"]), stamp)] += 1
    out = []
    for r in engine.store.list_rules():
        last = engine.store.last_run(r["id"])
        api = rule_to_api(r, run_to_api(last) if last else None)
        api["health"] = rule_health(api)
        per_day = [counts[(int(r["id"]), d)] for d in days]
        peak = max(per_day) or 1
        api["perDay"] = [{"day": d, "n": n, "h": round(20 * n / peak, 1)} for d, n in zip(days, per_day, strict=True)]
        out.append(api)
    return out


def rule_detail(state: Any, rule_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    engine = _engine(state)
    if engine is None:
        return None
    rule = engine.store.get_rule(rule_id)
    if rule is None:
        return None
    last = engine.store.last_run(rule_id)
    api = rule_to_api(rule, run_to_api(last) if last else None)
    api["health"] = rule_health(api)
    return api, [run_to_api(r) for r in engine.store.list_runs(rule_id, 50)]


_DEVICES_SQL = """
SELECT DeviceId, max("Timestamp") AS LastSeen,
       arg_max(OSVersion, "Timestamp") FILTER (WHERE OSVersion IS NOT NULL AND OSVersion <> '') AS OSVersion
FROM "DeviceInfo" GROUP BY DeviceId
"""


def devices(state: Any) -> list[dict[str, Any]]:
    """Devices from DeviceInfo (latest facts), their last report and the groups they are in."""
    storage = getattr(state, "storage", None)
    if storage is None:
        return []
    facts = all_device_facts(storage)
    con = storage.connect()
    try:
        seen = {str(r[0]): (r[1], r[2]) for r in con.execute(_DEVICES_SQL).fetchall()}
    finally:
        con.close()
    groups = list_groups(state.metadata)
    out = []
    for f in facts:
        last, version = seen.get(f.device_id, (None, None))
        out.append({
            "deviceId": f.device_id,
            "deviceName": f.device_name or "",
            "osPlatform": f.os_platform or "",
            "osVersion": version or "",
            "lastSeen": last.isoformat(sep=" ", timespec="seconds") if last else "",
            "groups": [g.name for g in groups if g.matches(f)],
            "tags": sorted(f.tags),
        })
    return sorted(out, key=lambda d: (d["deviceName"].lower(), d["deviceId"]))


TIMELINE_ROWS = 500  # newest events a device page lists
TIMELINE_HOURS = (1, 24, 168, 720)
# What a timeline row shows of an event: the first of these columns the table has.
_SUMMARY = ("ProcessCommandLine", "FileName", "RemoteUrl", "RemoteIP", "RegistryKey", "AccountName", "FolderPath")


def timeline_tables() -> list[str]:
    """The Device* tables a device timeline reads: those with DeviceId, Timestamp and ActionType."""
    out = []
    for t in default_catalog().tables.values():
        names = {c.name for c in t.columns}
        if t.name.startswith("Device") and {"DeviceId", "Timestamp", "ActionType"} <= names:
            out.append(t.name)
    return sorted(out)


def device_timeline(state: Any, device_id: str, table: str | None, action_type: str | None,
                    hours: int) -> list[dict[str, Any]]:
    """The device's newest events across the timeline tables (or one), newest first. Table and
    column names come from the catalog; the request's values are bound parameters."""
    storage = getattr(state, "storage", None)
    if storage is None:
        return []
    catalog = default_catalog()
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=hours)
    parts, params = [], []
    for name in ([table] if table else timeline_tables()):
        cols = {c.name for c in catalog.tables[name].columns}
        summary = next((c for c in _SUMMARY if c in cols), None)
        what = f'CAST("{summary}" AS VARCHAR)' if summary else "''"
        rid = 'CAST("ReportId" AS VARCHAR)' if "ReportId" in cols else "NULL"
        cond = '"DeviceId" = ? AND "Timestamp" >= ?' + (' AND "ActionType" = ?' if action_type else "")
        parts.append(f"SELECT '{name}' AS tbl, \"Timestamp\" AS ts, \"ActionType\" AS action, {what} AS what, "
                     f"{rid} AS rid FROM \"{name}\" WHERE {cond}")
        params += [device_id, since] + ([action_type] if action_type else [])
    sql = " UNION ALL ".join(parts) + f" ORDER BY ts DESC LIMIT {TIMELINE_ROWS}"
    con = storage.connect()
    try:
        rows = con.execute(sql, params).fetchall()
    finally:
        con.close()
    return [{"table": t, "timestamp": ts.isoformat(sep=" ", timespec="seconds") if ts else "",
             "at": ts.isoformat() if ts else "", "actionType": a or "", "what": w or "", "reportId": r}
            for t, ts, a, w, r in rows]


def device(state: Any, device_id: str) -> dict[str, Any] | None:
    return next((d for d in devices(state) if d["deviceId"] == device_id), None)
