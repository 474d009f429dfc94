"""Running a rule: what it sees, what it raises, what it records.

One run (scheduled, continuous poll, or "run now"):

1. compiles the rule with ``now()`` fixed at the run's time;
2. shadows each table it reads with the rows of this run (``scope.py``): the event-time lookback
   of its frequency (30 days on the first run) plus every row ingested since the previous run's
   watermark, so a late event is caught by the next run; a continuous rule sees only newly
   ingested rows; rows of devices outside the rule's device groups are not seen at all;
3. runs it with a timeout (``interrupt()`` from a timer: DuckDB has no statement timeout);
4. turns each row into an alert unless its (rule, DeviceId, ReportId, Timestamp) already has
   one, at most ``alerts_per_run_cap`` per run (a capped run says so), each put in an incident;
5. records the run (start, end, duration, rows, alerts, status, error) and moves the rule's
   "covered through" and ingest watermark forward only when the run succeeded, so a failed run's
   rows are seen again by the next one;
6. hands the new alerts to the notifier and queues the rule's device actions.

A failing run raises (or refreshes) a health alert that carries the error: never skipped silently.
The next successful run resolves it (a comment says when the rule recovered).
All of it is blocking DuckDB and SQLite work: call it from a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb

from schema.catalog import Catalog
from server.detections.entities import evidence_summary, extract_entities, jsonable
from server.detections.model import FREQUENCY_SECONDS
from server.detections.rulecheck import RuleCheck, check_rule, render_template
from server.detections.scope import RunScope, ingest_watermark, scope_tables
from server.detections.store import NewAlert, SqliteDetectionStore
from server.detections.timeutil import iso, parse_iso, utcnow
from server.detections.views import alert_to_api

log = logging.getLogger("quarry.detections")


class RunFailed(Exception):
    def __init__(self, message: str, code: str = "queryExecutionFailed") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Matches:
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool
    watermark: datetime | None


class DetectionEngine:
    """Runs rules against storage and records the outcome in the store."""

    def __init__(
        self,
        settings: Any,
        metadata: Any,
        storage: Any,
        catalog: Catalog,
        *,
        notifier: Callable[[], Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        self.store = SqliteDetectionStore(metadata)
        self.storage = storage
        self.catalog = catalog
        self._notifier = notifier or (lambda: None)
        self.clock = clock
        self._locks: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        # Whether an enabled continuous rule existed at the last due_rules() (the scheduler uses
        # it to ignore ingest wake-ups when nothing would run); True until first looked at.
        self.has_continuous_rules = True

    # -- settings ----------------------------------------------------------------------------
    def _kql_limits(self) -> Any:
        """The server's query size limits (settings built in tests may lack them)."""
        make = getattr(self.settings, "kql_limits", None)
        return make() if callable(make) else None

    def lookback(self, frequency: str) -> timedelta:
        hours = {
            "1h": self.settings.lookback_1h_h,
            "3h": self.settings.lookback_3h_h,
            "12h": self.settings.lookback_12h_h,
            "24h": self.settings.lookback_24h_h,
        }.get(frequency)
        return timedelta(hours=float(hours)) if hours is not None else timedelta(0)

    def interval(self, frequency: str) -> timedelta:
        if frequency == "continuous":
            return timedelta(seconds=float(self.settings.continuous_poll_s))
        return timedelta(seconds=FREQUENCY_SECONDS[frequency])

    def first_lookback(self) -> timedelta:
        return timedelta(days=float(self.settings.first_run_lookback_days))

    def _lock(self, rule_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks[rule_id]

    # -- scope -------------------------------------------------------------------------------
    def device_scope(self, rule: dict[str, Any]) -> frozenset[str] | None:
        groups = rule.get("device_groups") or []
        if not groups:
            return None
        from server.devices.groups import group_device_ids  # owned by the notify/devices part

        try:
            ids = group_device_ids(self.metadata, self.storage, groups)
        except ValueError as e:  # GroupError: a group was deleted under the rule
            raise RunFailed(f"device group scope: {e}", "queryExecutionFailed") from None
        return None if ids is None else frozenset(ids)

    def plan(self, rule: dict[str, Any], now: datetime) -> RunScope:
        devices = self.device_scope(rule)
        if rule.get("covered_through") is None:
            # A new rule looks back 30 days, whatever its frequency (as Defender).
            return RunScope(now - self.first_lookback(), None, devices)
        overlap = timedelta(seconds=float(self.settings.detection_ingest_overlap_s))
        # The watermark is the newest ingestion time a run saw; before any row arrived, the
        # previous run's time stands in for it.
        mark = rule.get("ingest_watermark") or rule["covered_through"]
        after = parse_iso(mark) - overlap
        if rule["frequency"] == "continuous":
            return RunScope(None, after, devices)
        return RunScope(now - self.lookback(rule["frequency"]), after, devices)

    # -- query -------------------------------------------------------------------------------
    def query(
        self,
        rule: dict[str, Any],
        scope: RunScope,
        now: datetime,
        max_rows: int,
        watermark_after: datetime | None = None,
        want_watermark: bool = True,
    ) -> Matches:
        check = check_rule(
            rule["query"],
            rule["frequency"],
            self.catalog,
            now,
            rule.get("alert_title") or "",
            rule.get("alert_description") or "",
            limits=self._kql_limits(),
        )
        if not check.ok or (check.sql is None and not check.needs_probe):
            msg = "; ".join(e["message"] for e in check.errors)
            raise RunFailed(f"the rule no longer compiles: {msg}", "queryExecutionFailed")
        try:
            con = self.storage.connect()
        except duckdb.Error as e:
            raise RunFailed(f"storage is not available: {e}") from None
        try:
            wm = ingest_watermark(con, self.catalog, check.tables, watermark_after) if want_watermark else None
            scope_tables(con, self.catalog, check.tables, scope)
            if check.needs_probe:
                check = self._probed_check(con, rule, now)
            assert check.sql is not None
            sql = check.sql.strip().rstrip(";")
            statements = duckdb.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise RunFailed("internal: the compiled query is not a single SELECT")
            fired = threading.Event()

            def fire() -> None:
                fired.set()
                con.interrupt()

            timer = threading.Timer(float(self.settings.detection_timeout_s), fire)
            timer.daemon = True
            timer.start()
            try:
                cur = con.execute(f"SELECT * FROM ({sql}) AS _rule LIMIT {int(max_rows) + 1}")
                names = [d[0] for d in (cur.description or [])]
                raw = cur.fetchmany(int(max_rows) + 1)
            except duckdb.Error as e:
                if fired.is_set() or isinstance(e, duckdb.InterruptException):
                    raise RunFailed(
                        f"the query ran longer than {self.settings.detection_timeout_s:g} s and was stopped",
                        "queryTimeout",
                    ) from None
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise RunFailed(f"the query failed while running: {first}") from None
            finally:
                timer.cancel()
        finally:
            try:
                con.close()
            except duckdb.Error:
                log.debug("closing a detection connection failed", exc_info=True)
        truncated = len(raw) > max_rows
        rows = [dict(zip(names, r, strict=True)) for r in raw[:max_rows]]
        return Matches(names, rows, truncated, wm)

    def _probed_check(self, con: duckdb.DuckDBPyConnection, rule: dict[str, Any], now: datetime) -> RuleCheck:
        """Check the rule again with a probe on the run's connection (its scope views apply):
        `evaluate bag_unpack/pivot` learn their columns from the data the run reads."""

        def probe(sql: str) -> list[Any]:
            # bounded like the rule's query itself
            timer = threading.Timer(float(self.settings.detection_timeout_s), con.interrupt)
            timer.daemon = True
            timer.start()
            try:
                return con.execute(sql).fetchmany(100_000)
            except duckdb.Error as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise RunFailed(f"the query failed while learning its columns: {first}") from None
            finally:
                timer.cancel()

        check = check_rule(rule["query"], rule["frequency"], self.catalog, now,
                           rule.get("alert_title") or "", rule.get("alert_description") or "", probe=probe,
                           limits=self._kql_limits())
        if not check.ok or check.sql is None:
            msg = "; ".join(e["message"] for e in check.errors) or "its columns could not be learned"
            raise RunFailed(f"the rule no longer compiles: {msg}", "queryExecutionFailed")
        return check

    # -- alerts from rows --------------------------------------------------------------------
    def to_alert(self, rule: dict[str, Any], row: dict[str, Any], run_id: int | None) -> NewAlert:
        title = render_template(rule.get("alert_title") or rule["name"], row) or rule["name"]
        jrow = {k: jsonable(v) for k, v in row.items()}
        return NewAlert(
            kind="detection",
            rule_id=rule["id"],
            rule_name=rule["name"],
            run_id=run_id,
            title=title[:500],
            description=render_template(rule.get("alert_description") or "", row),
            recommended_actions=rule.get("recommended_actions") or "",
            severity=rule["severity"],
            category=rule.get("category") or "",
            mitre_techniques=list(rule.get("mitre_techniques") or []),
            device_id=str(row["DeviceId"]),
            device_name=None if row.get("DeviceName") is None else str(row["DeviceName"]),
            report_id=str(row["ReportId"]),
            event_time=row["Timestamp"],
            evidence=[jrow],
            entities=extract_entities(row),
            evidence_summary=evidence_summary(row),
        )

    @staticmethod
    def event_key(row: dict[str, Any]) -> tuple[str, str, str] | None:
        ts, dev, rep = row.get("Timestamp"), row.get("DeviceId"), row.get("ReportId")
        if not isinstance(ts, datetime) or dev in (None, "") or rep is None:
            return None
        return (str(dev), str(rep), iso(ts))

    # -- run ---------------------------------------------------------------------------------
    def run_rule(self, rule_id: int, trigger: str = "manual", now: datetime | None = None) -> dict[str, Any]:
        """Run the rule once and return the run record. Scheduled runs skip a rule that is
        already running; a manual run waits for it."""
        lock = self._lock(rule_id)
        if not lock.acquire(blocking=trigger == "manual"):
            return {"ruleId": rule_id, "status": "skipped", "message": "the rule is already running"}
        try:
            return self._run_locked(rule_id, trigger, now)
        except Exception:
            # Deleted while it ran (its runs cascade away, its alerts and health alert then
            # break the foreign key): the rule is gone, which is no internal error.
            if self.store.get_rule(rule_id) is None:
                raise KeyError(rule_id) from None
            raise
        finally:
            lock.release()

    def _run_locked(self, rule_id: int, trigger: str, now: datetime | None) -> dict[str, Any]:
        rule = self.store.get_rule(rule_id)
        if rule is None:
            raise KeyError(rule_id)
        now = now or self.clock()
        started = time.perf_counter()
        run_id = self.store.start_run(rule_id, trigger, now)
        scope: RunScope | None = None
        try:
            scope = self.plan(rule, now)
            matches = self.query(
                rule, scope, now, int(self.settings.detection_max_rows), watermark_after=scope.ingested_after
            )
            created, result = self._raise_alerts(rule, run_id, matches, now)
        except RunFailed as e:
            return self._failed(rule, run_id, now, started, scope, str(e), e.code)
        except Exception as e:  # a bug must still surface as a failed run and a health alert
            if self.store.get_rule(rule_id) is None:
                raise KeyError(rule_id) from None  # deleted while it ran
            log.exception("detection rule %s failed", rule_id)
            return self._failed(rule, run_id, now, started, scope, f"internal error: {type(e).__name__}: {e}", "alertCreationFailed")
        watermark = matches.watermark
        if watermark is None:
            watermark = parse_iso(rule["ingest_watermark"]) if rule.get("ingest_watermark") else None
        result.update(
            ended_at=iso(max(now, self.clock())),
            duration_ms=(time.perf_counter() - started) * 1000,
            window_start=iso(scope.window_start) if scope.window_start else None,
            window_end=iso(now),
            ingested_after=iso(scope.ingested_after) if scope.ingested_after else None,
            ingest_watermark=iso(watermark) if watermark else None,
        )
        self.store.finish_run(
            run_id,
            rule_id,
            result,
            {
                "last_run_at": iso(now),
                "last_run_status": result["status"],
                "last_error": None,
                "covered_through": iso(now),
                "ingest_watermark": iso(watermark) if watermark else None,
                "next_run_at": iso(now + self.interval(rule["frequency"])),
            },
        )
        # The rule works again: its open health alert (if any) is resolved; a later failure
        # raises a new one, so each outage keeps its own record.
        self.store.resolve_health_alerts(rule_id, now)
        self._after(rule, created)
        run = self.store.list_runs(rule_id, 1)[0]
        out = run_to_api(run)
        out["alerts"] = created
        return out

    def _raise_alerts(
        self, rule: dict[str, Any], run_id: int, matches: Matches, now: datetime
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        cap = int(self.settings.alerts_per_run_cap)
        bad = 0
        keyed: dict[tuple[str, str, str], dict[str, Any]] = {}
        for row in matches.rows:
            key = self.event_key(row)
            if key is None:
                bad += 1
                continue
            keyed.setdefault(key, row)
        fresh = self.store.new_dedup_keys(rule["id"], list(keyed))
        new_keys = [k for k in keyed if k in fresh]
        new_keys.sort(key=lambda k: k[2])  # oldest events first: the cap keeps the earliest
        duplicates = len(matches.rows) - bad - len(new_keys)
        capped = len(new_keys) > cap
        alerts = [self.to_alert(rule, keyed[k], run_id) for k in new_keys[:cap]]
        window = timedelta(hours=float(self.settings.correlation_window_h))
        rows = self.store.insert_alerts(alerts, now, window)
        created = [alert_to_api(a, self.settings) for a in rows]
        notes: list[str] = []
        code = None
        if capped:
            code = "queryExceededResultSize"
            notes.append(
                f"capped: {len(new_keys)} new matches, only the first {cap} raised alerts "
                f"(alerts_per_run_cap={cap}); {len(new_keys) - cap} were not alerted"
            )
        if matches.truncated:
            # Rows past the limit were never looked at: flagged like the alert cap (Defender's
            # "only the first N query results were processed"), not left as a plain success.
            code = "queryExceededResultSize"
            notes.append(
                f"the query returned more than {self.settings.detection_max_rows} rows; only the "
                "first were evaluated (detection_max_rows); narrow the query or aggregate"
            )
        if bad:
            code = code or "partialRowsFailed"
            notes.append(f"{bad} row(s) lacked Timestamp, DeviceId or ReportId and could not alert")
        status = "completed" if not bad else "partiallyFailed"
        return created, {
            "rows_matched": len(matches.rows),
            "alerts_created": len(created),
            "duplicates": duplicates,
            "capped": int(capped),
            "status": status,
            "error": None,
            "error_code": code,
            "message": "; ".join(notes),
        }

    def _failed(
        self,
        rule: dict[str, Any],
        run_id: int,
        now: datetime,
        started: float,
        scope: RunScope | None,
        error: str,
        code: str,
    ) -> dict[str, Any]:
        # A failing continuous rule retries after a minute, not every poll: one error, not a flood.
        retry = max(self.interval(rule["frequency"]), timedelta(seconds=60))
        self.store.finish_run(
            run_id,
            rule["id"],
            {
                "ended_at": iso(max(now, self.clock())),
                "duration_ms": (time.perf_counter() - started) * 1000,
                "window_start": iso(scope.window_start) if scope and scope.window_start else None,
                "window_end": iso(now),
                "ingested_after": iso(scope.ingested_after) if scope and scope.ingested_after else None,
                "status": "failed",
                "error": error,
                "error_code": code,
            },
            {
                "last_run_at": iso(now),
                "last_run_status": "failed",
                "last_error": error,
                "next_run_at": iso(now + retry),
            },
        )
        health, new = self.store.raise_health_alert(
            NewAlert(
                kind="health",
                rule_id=rule["id"],
                rule_name=rule["name"],
                run_id=run_id,
                title=f"Detection rule '{rule['name']}' failed",
                description=(
                    f"The custom detection rule '{rule['name']}' (id {rule['id']}) failed at {iso(now)} "
                    f"and raised no alerts for this run: {error}"
                ),
                recommended_actions="Open the rule's run history, fix the query or its scope, then run it again.",
                severity="medium",
                category="SuspiciousActivity",
                mitre_techniques=[],
                device_id=None,
                device_name=None,
                report_id=None,
                event_time=now,
                evidence=[{"ruleId": rule["id"], "runId": run_id, "error": error, "errorCode": code}],
                evidence_summary=f"rule '{rule['name']}' failed: {error}"[:500],
            ),
            now,
        )
        if new:
            self._notify([alert_to_api(health, self.settings)])
        run = self.store.list_runs(rule["id"], 1)[0]
        out = run_to_api(run)
        out["alerts"] = []
        out["healthAlertId"] = health["id"]
        return out

    # -- after a run -------------------------------------------------------------------------
    def _notify(self, alerts: list[dict[str, Any]]) -> None:
        if not alerts:
            return
        notifier = self._notifier()
        hook = getattr(notifier, "alerts_created", None)
        if hook is None:
            return
        try:
            hook(alerts)
        except Exception:  # the alerts exist; a notifier failure must not undo the run
            log.exception("the notifier failed on %d alert(s)", len(alerts))

    def _after(self, rule: dict[str, Any], created: list[dict[str, Any]]) -> None:
        self._notify(created)
        actions = rule.get("actions") or []
        if not actions or not created:
            return
        from server.devices.actions import ActionError, queue_action  # notify/devices part

        done: set[tuple[str, str]] = set()
        for alert in created:
            device = alert.get("deviceId")
            for action in actions:
                if not device or (device, action) in done:
                    continue
                done.add((device, action))
                try:
                    queue_action(
                        self.metadata,
                        device,
                        action,
                        requested_by=f"detection rule {rule['id']}",
                        comment=f"Custom detection '{rule['name']}' raised alert {alert['id']}",
                        rule_id=rule["id"],
                    )
                except ActionError:
                    log.exception("queueing %s for %s failed", action, device)

    # -- scheduling --------------------------------------------------------------------------
    def due_rules(self, now: datetime, eager_continuous: bool = False) -> list[dict[str, Any]]:
        """Enabled rules whose time has come; with ``eager_continuous`` (new rows were just
        ingested) every continuous rule is due too, without waiting for its poll."""
        out = []
        continuous = False
        for rule in self.store.list_rules():
            if not rule["enabled"]:
                continue
            continuous = continuous or rule["frequency"] == "continuous"
            nxt = rule.get("next_run_at")
            eager = eager_continuous and rule["frequency"] == "continuous" and not rule.get("last_error")
            if eager or nxt is None or parse_iso(nxt) <= now:
                out.append(rule)
        self.has_continuous_rules = continuous
        # Continuous rules first: their promise is seconds.
        out.sort(key=lambda r: (r["frequency"] != "continuous", r.get("next_run_at") or ""))
        return out

    # -- backtest ----------------------------------------------------------------------------
    def backtest(self, rule: dict[str, Any], days: float, now: datetime | None = None) -> dict[str, Any]:
        """Replay the rule over the last ``days`` of retained data, creating nothing."""
        now = now or self.clock()
        started = time.perf_counter()
        scope = RunScope(now - timedelta(days=days), None, self.device_scope(rule))
        max_rows = int(self.settings.detection_max_rows)
        matches = self.query(rule, scope, now, max_rows, want_watermark=False)
        per_day: Counter[str] = Counter()
        per_device: Counter[tuple[str, str]] = Counter()
        keys: dict[tuple[str, str, str], dict[str, Any]] = {}
        bad = 0
        for row in matches.rows:
            key = self.event_key(row)
            if key is None:
                bad += 1
                continue
            per_day[key[2][:10]] += 1
            per_device[(key[0], str(row.get("DeviceName") or ""))] += 1
            keys.setdefault(key, row)
        # Alerts it would have raised had it run on its schedule: one per event, and at most
        # the per-run cap among the events each run would have seen first.
        cap = int(self.settings.alerts_per_run_cap)
        period = self.interval(rule["frequency"]).total_seconds() if rule["frequency"] != "continuous" else 0
        per_run: Counter[int] = Counter()
        would: list[dict[str, Any]] = []
        dropped = 0
        for key in sorted(keys, key=lambda k: k[2]):
            bucket = int(parse_iso(key[2]).timestamp() // period) if period else 0
            if period and per_run[bucket] >= cap:
                dropped += 1
                continue
            per_run[bucket] += 1
            would.append(alert_preview(self.to_alert(rule, keys[key], None)))
        emails = self._would_email(would)
        return {
            "ruleId": rule.get("id"),
            "days": days,
            "from": iso(now - timedelta(days=days)),
            "to": iso(now),
            "rowsMatched": len(matches.rows),
            "truncated": matches.truncated,
            "rowsWithoutEventKey": bad,
            "matchesPerDay": [{"day": d, "count": c} for d, c in sorted(per_day.items())],
            "matchesPerDevice": [
                {"deviceId": d, "deviceName": n or None, "count": c}
                for (d, n), c in sorted(per_device.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            "sampleRows": [{k: jsonable(v) for k, v in r.items()} for r in matches.rows[:20]],
            "alertsWouldCreate": len(would),
            "alertsDroppedByCap": dropped,
            "sampleAlerts": would[:10],
            "emailsWouldSend": emails,
            "durationMs": (time.perf_counter() - started) * 1000,
        }

    def _would_email(self, alerts: list[dict[str, Any]]) -> Any:
        notifier = self._notifier()
        preview = getattr(notifier, "preview", None)
        if preview is None:
            return None
        try:
            return preview(alerts)
        except Exception:
            log.exception("the notifier's preview failed")
            return None


def alert_preview(a: NewAlert) -> dict[str, Any]:
    return {
        "title": a.title,
        "description": a.description,
        "severity": a.severity,
        "status": "new",
        "category": a.category,
        "ruleId": a.rule_id,
        "ruleName": a.rule_name,
        "deviceId": a.device_id,
        "deviceName": a.device_name,
        "reportId": a.report_id,
        "timestamp": iso(a.event_time) if a.event_time else None,
        "evidenceSummary": a.evidence_summary,
        "entities": a.entities,
    }


def run_to_api(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run["id"],
        "ruleId": run["rule_id"],
        "trigger": run["trigger"],
        "startedAt": run["started_at"],
        "endedAt": run["ended_at"],
        "durationMs": run["duration_ms"],
        "windowStart": run["window_start"],
        "windowEnd": run["window_end"],
        "ingestedAfter": run["ingested_after"],
        "ingestWatermark": run["ingest_watermark"],
        "rowsMatched": run["rows_matched"],
        "alertsCreated": run["alerts_created"],
        "duplicates": run["duplicates"],
        "capped": bool(run["capped"]),
        "status": run["status"],
        "error": run["error"],
        "errorCode": run["error_code"],
        "message": run["message"],
    }
