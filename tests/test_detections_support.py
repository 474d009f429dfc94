"""Shared helpers for the detection tests (no tests here): a hand-moved clock, real storage and
metadata in a temp directory, event batches typed from the schema, a recording notifier."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from schema.catalog import default_catalog
from server.detections.runner import DetectionEngine
from server.metadata import MetadataDB
from server.settings import Settings
from server.storage import Storage
from tests.support.clock import ManualClock
from tests.support.settings import MANUAL_FLUSH

T0 = datetime(2026, 3, 10, 12, 0, 0)


def batch(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """An Arrow batch of ``rows`` with the columns they name, typed as the schema says."""
    tbl = default_catalog().table(table)
    assert tbl is not None
    names = [c.name for c in tbl.columns if any(c.name in r for r in rows)]
    arrays = {}
    for name in names:
        col = tbl.column(name)
        assert col is not None
        arrays[name] = pa.array([r.get(name) for r in rows], col.type.arrow)
    return pa.table(arrays)


def proc(ts: datetime, report_id: int, device: str = "dev-1", cmd: str = "ls", **more: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Timestamp": ts,
        "DeviceId": device,
        "DeviceName": f"{device}.corp",
        "ActionType": "ProcessCreated",
        "ReportId": report_id,
        "ProcessCommandLine": cmd,
        "FileName": cmd.split(" ")[0],
    }
    row.update(more)
    return row


@dataclass
class RecordingNotifier:
    """Stands in for the notifier where a test only checks what detections hand over."""

    received: list[dict[str, Any]] = field(default_factory=list)

    def alerts_created(self, alerts: list[dict[str, Any]]) -> None:
        self.received.extend(alerts)


@dataclass
class Env:
    clock: ManualClock
    storage: Storage
    metadata: MetadataDB
    engine: DetectionEngine
    notifier: Any
    settings: Settings

    def ingest(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.storage.append(table, batch(table, rows))

    def rule(self, query: str, frequency: str = "1h", **fields: Any) -> int:
        data: dict[str, Any] = {
            "name": fields.pop("name", f"rule {len(self.engine.store.list_rules()) + 1}"),
            "query": query,
            "frequency": frequency,
            "severity": fields.pop("severity", "medium"),
            "alert_title": fields.pop("alert_title", "Test alert"),
            "enabled": 1,
        }
        data.update(fields)
        return int(self.engine.store.create_rule(data, self.clock())["id"])

    def alerts(self, rule_id: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM alerts WHERE kind = 'detection'"
        params: tuple[Any, ...] = ()
        if rule_id is not None:
            sql += " AND rule_id = ?"
            params = (rule_id,)
        return [dict(r) for r in self.metadata.query(sql + " ORDER BY event_time", params)]


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        **MANUAL_FLUSH,
        "retention_days": 3650,  # fixture times are fixed; retention must not drop them
        "query_memory_limit": "512MB",
        "scheduler_enabled": False,
        "detection_timeout_s": 30.0,
    }
    base.update(overrides)
    return Settings(**base)


@contextmanager
def detection_env(data_dir: Path, now: datetime = T0, notifier: Any = None, **overrides: Any) -> Iterator[Env]:
    clock = ManualClock(now)
    settings = settings_for(data_dir, **overrides)
    storage = Storage(settings, default_catalog(), clock=clock)
    storage.start()
    metadata = MetadataDB(data_dir / "metadata.sqlite")
    note = notifier if notifier is not None else RecordingNotifier()
    engine = DetectionEngine(settings, metadata, storage, default_catalog(), notifier=lambda: note, clock=clock)
    try:
        yield Env(clock, storage, metadata, engine, note, settings)
    finally:
        storage.close()
        metadata.close()
