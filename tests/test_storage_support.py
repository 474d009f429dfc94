"""Shared helpers for the storage tests (no tests here; named to stay in the storage test set)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from schema.catalog import default_catalog
from server.settings import Settings
from server.storage import Storage
from tests.support.settings import MANUAL_FLUSH

TABLE = "DeviceProcessEvents"
TS = pa.timestamp("us")


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        # Tests flush by hand unless they say otherwise.
        **MANUAL_FLUSH,
        "query_timeout_s": 0.0,
        "query_memory_limit": "1GB",
    }
    base.update(overrides)
    return Settings(**base)


@contextmanager
def open_storage(data_dir: Path, clock: Any = None, **overrides: Any) -> Iterator[Storage]:
    st = Storage(settings_for(data_dir, **overrides), default_catalog(), clock=clock)
    st.start()
    try:
        yield st
    finally:
        st.close()


def process_batch(
    report_ids: list[int],
    timestamps: list[datetime],
    device: str = "dev-1",
    extra: list[str | None] | None = None,
    command_lines: list[str] | None = None,
) -> pa.Table:
    n = len(report_ids)
    cols: dict[str, pa.Array] = {
        "Timestamp": pa.array(timestamps, TS),
        "DeviceId": pa.array([device] * n),
        "DeviceName": pa.array([f"{device}.corp"] * n),
        "ActionType": pa.array(["ProcessCreated"] * n),
        "ReportId": pa.array(report_ids, pa.int64()),
        "ProcessCommandLine": pa.array(command_lines or [f"cmd {r}" for r in report_ids]),
        "AdditionalFields": pa.array(['{"k": 1}'] * n),
    }
    if extra is not None:
        cols["_extra"] = pa.array(extra, pa.string())
    return pa.table(cols)


def report_ids(st: Storage, table: str = TABLE) -> list[int]:
    con = st.connect()
    try:
        return [r[0] for r in con.execute(f'SELECT ReportId FROM "{table}" ORDER BY 1').fetchall()]
    finally:
        con.close()
