"""The embedded SQLite metadata database: API keys now; rules, alerts and incidents later.

Schema changes are versioned migrations (``MIGRATIONS``), applied in order at open and recorded
in ``PRAGMA user_version``, so an existing data directory upgrades in place. Append new
migrations; never edit an applied one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: API keys, stored as SHA-256 of the key (keys are 32 random bytes, so a fast hash is
    # enough: there is nothing to brute-force), with a short prefix to tell keys apart in lists.
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL CHECK (scope IN ('ingest', 'query', 'admin')),
        name TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    """,
    # 2 (notify): device groups, notification rules and their delivery outbox, device actions
    # and their audit log. Notifications go through an outbox so an alert handed to the
    # notifier survives a crash and every send attempt leaves a status and an error.
    """
    CREATE TABLE device_groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        name_pattern TEXT,
        os_platforms TEXT NOT NULL DEFAULT '[]',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE notification_rules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        min_severity TEXT NOT NULL,
        emails TEXT NOT NULL DEFAULT '[]',
        webhook_url TEXT,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE notification_rule_groups (
        rule_id INTEGER NOT NULL REFERENCES notification_rules(id) ON DELETE CASCADE,
        group_id INTEGER NOT NULL REFERENCES device_groups(id) ON DELETE RESTRICT,
        PRIMARY KEY (rule_id, group_id)
    );
    CREATE TABLE notification_inbox (
        id INTEGER PRIMARY KEY,
        alert_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL,
        routed_at TEXT
    );
    CREATE INDEX notification_inbox_unrouted ON notification_inbox(routed_at);
    CREATE TABLE notification_messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
        recipient TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('alert', 'digest', 'test')),
        subject TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        next_attempt_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX notification_messages_due ON notification_messages(status, next_attempt_at);
    CREATE INDEX notification_messages_recipient ON notification_messages(channel, recipient, created_at);
    CREATE TABLE notification_items (
        id INTEGER PRIMARY KEY,
        alert_id TEXT NOT NULL,
        rule_id INTEGER,
        channel TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
        recipient TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        message_id INTEGER REFERENCES notification_messages(id),
        UNIQUE (alert_id, channel, recipient)
    );
    CREATE INDEX notification_items_unsent ON notification_items(message_id, channel, recipient);
    CREATE TABLE device_actions (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('Pending', 'InProgress', 'Succeeded', 'Failed', 'Cancelled')),
        requestor TEXT NOT NULL,
        requestor_comment TEXT NOT NULL DEFAULT '',
        rule_id TEXT,
        result_comment TEXT,
        result_details TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        delivered_at TEXT,
        completed_at TEXT
    );
    CREATE INDEX device_actions_device ON device_actions(device_id, status);
    CREATE TABLE device_action_audit (
        id INTEGER PRIMARY KEY,
        action_id TEXT NOT NULL REFERENCES device_actions(id),
        device_id TEXT NOT NULL,
        event TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        at TEXT NOT NULL
    );
    CREATE INDEX device_action_audit_device ON device_action_audit(device_id, id);
    """,
    # 3 (detect): custom detection rules, their run history, alerts and incidents. Times are
    # ISO-8601 UTC text with microseconds ("...T..:..:..123456Z") so they sort as text. The
    # partial unique index is the alert de-duplication: one alert per (rule, DeviceId, ReportId,
    # Timestamp), whatever number of runs see the event.
    """
    CREATE TABLE detection_rules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        query TEXT NOT NULL,
        frequency TEXT NOT NULL,
        severity TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT '',
        mitre_techniques TEXT NOT NULL DEFAULT '[]',
        alert_title TEXT NOT NULL,
        alert_description TEXT NOT NULL DEFAULT '',
        recommended_actions TEXT NOT NULL DEFAULT '',
        device_groups TEXT NOT NULL DEFAULT '[]',
        actions TEXT NOT NULL DEFAULT '[]',
        enabled INTEGER NOT NULL DEFAULT 1,
        created_by TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_run_at TEXT,
        last_run_status TEXT,
        last_error TEXT,
        next_run_at TEXT,
        covered_through TEXT,
        ingest_watermark TEXT
    );
    CREATE TABLE detection_runs (
        id INTEGER PRIMARY KEY,
        rule_id INTEGER NOT NULL REFERENCES detection_rules(id) ON DELETE CASCADE,
        trigger TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        duration_ms REAL,
        window_start TEXT,
        window_end TEXT,
        ingested_after TEXT,
        ingest_watermark TEXT,
        rows_matched INTEGER NOT NULL DEFAULT 0,
        alerts_created INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        capped INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        error TEXT,
        error_code TEXT,
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX detection_runs_rule ON detection_runs(rule_id, id);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'new',
        assigned_to TEXT,
        classification TEXT,
        determination TEXT,
        comments TEXT NOT NULL DEFAULT '[]',
        tags TEXT NOT NULL DEFAULT '[]',
        first_activity TEXT NOT NULL,
        last_activity TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('detection', 'health')),
        rule_id INTEGER REFERENCES detection_rules(id) ON DELETE SET NULL,
        rule_name TEXT NOT NULL,
        run_id INTEGER,
        incident_id INTEGER REFERENCES incidents(id),
        title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        recommended_actions TEXT NOT NULL DEFAULT '',
        severity TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT '',
        mitre_techniques TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL DEFAULT 'new',
        assigned_to TEXT,
        classification TEXT,
        determination TEXT,
        comments TEXT NOT NULL DEFAULT '[]',
        device_id TEXT,
        device_name TEXT,
        report_id TEXT,
        event_time TEXT,
        evidence TEXT NOT NULL DEFAULT '[]',
        entities TEXT NOT NULL DEFAULT '[]',
        evidence_summary TEXT NOT NULL DEFAULT '',
        occurrences INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        resolved_at TEXT
    );
    CREATE UNIQUE INDEX alerts_dedup ON alerts(rule_id, device_id, report_id, event_time)
        WHERE kind = 'detection';
    CREATE INDEX alerts_created ON alerts(created_at);
    CREATE INDEX alerts_incident ON alerts(incident_id);
    CREATE INDEX alerts_device ON alerts(device_id, event_time);
    CREATE TABLE alert_entities (
        alert_id TEXT NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (alert_id, kind, value)
    );
    CREATE INDEX alert_entities_value ON alert_entities(kind, value);
    """,
    # 4 (web): browser sessions of the alert pages and /docs (server/web/sessions.py). Only the
    # SHA-256 of the session token is stored. key_id is the API key signed in with; sessions of
    # QUARRY_ADMIN_KEY have no row there and carry admin_fp instead (an HMAC of the token hash
    # under that key), so changing the env key ends them. A session is valid while unexpired,
    # unrevoked and its key unrevoked (checked on every request, whoever revoked the key).
    """
    CREATE TABLE web_sessions (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        key_id INTEGER REFERENCES api_keys(id) ON DELETE CASCADE,
        admin_fp TEXT,
        scope TEXT NOT NULL CHECK (scope IN ('ingest', 'query', 'admin')),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT,
        CHECK ((key_id IS NULL) <> (admin_fp IS NULL))
    );
    CREATE INDEX web_sessions_key ON web_sessions(key_id);
    CREATE INDEX web_sessions_expires ON web_sessions(expires_at);
    """,
    # 5 (notify): the optional per-rule webhook signing secret (server/notify/rules.py). Stored as
    # given, not hashed: the notifier needs it to compute each POST's HMAC. Write-only in the API.
    """
    ALTER TABLE notification_rules ADD COLUMN webhook_secret TEXT;
    """,
    # 6 (keys): when a key was last used (written at most once a minute per key, see
    # server/auth.py), and the devices an ingest key is bound to (none: any device).
    """
    ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
    CREATE TABLE api_key_devices (
        key_id INTEGER NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
        device_id TEXT NOT NULL,
        PRIMARY KEY (key_id, device_id)
    );
    """,
    # 7 (console): each user's query history and saved queries (server/query/saved.py). The owner
    # is ``key:<api_keys.id>`` or ``admin`` (QUARRY_ADMIN_KEY); a saved query may be shared
    # with every user of the console.
    """
    CREATE TABLE query_history (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        query TEXT NOT NULL,
        timespan TEXT,
        ran_at TEXT NOT NULL,
        rows INTEGER,
        elapsed_ms REAL,
        error TEXT
    );
    CREATE INDEX query_history_owner ON query_history(owner, id);
    CREATE TABLE saved_queries (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        query TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        shared INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (owner, name)
    );
    """,
    # 8 (fidelity): a detection rule's metadata (JSON), e.g. the Sigma id, author and license of
    # an imported rule (server/detections/sigma.py)
    """
    ALTER TABLE detection_rules ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    """,
    # 9 (sigma): what an imported rule is found by on re-import ("sigma:<id>"), so the same Sigma
    # rule imported twice updates one detection rule instead of making a second.
    """
    ALTER TABLE detection_rules ADD COLUMN source_ref TEXT;
    CREATE UNIQUE INDEX detection_rules_source_ref ON detection_rules(source_ref)
        WHERE source_ref IS NOT NULL;
    """,
]


class MetadataDB:
    """A thread-safe wrapper over one SQLite connection in WAL mode."""

    def __init__(self, path: Path, migrations: list[str] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self.migrate(migrations if migrations is not None else MIGRATIONS)

    def migrate(self, migrations: list[str]) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for i, sql in enumerate(migrations[version:], start=version + 1):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _split_sql(sql):
                        self._conn.execute(stmt)
                    self._conn.execute(f"PRAGMA user_version = {int(i)}")
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; commits on success, rolls back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def where_clause(filters: list[tuple[str, object]]) -> tuple[str, list[object]]:
    """A `` WHERE`` clause (or "") over the filters whose value is not None, and its parameters.

    Each filter is a fixed SQL condition with exactly one ``?`` and the value for it; values
    are always parameters, never pasted into the text."""
    given = [(cond, value) for cond, value in filters if value is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
