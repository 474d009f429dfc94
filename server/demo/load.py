"""``quarry demo``: generate the dataset into a data directory through ``Storage``, once.

A marker file records what was loaded. It is written as ``loading`` before the first append and
as ``complete`` after the final flush, so a second run on the same directory neither loads the
data twice nor silently builds on a half-loaded directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from schema.catalog import Catalog, default_catalog
from server.demo.generator import DEFAULT_EVENTS_PER_DEVICE_PER_DAY, generate
from server.settings import Settings

MARKER_NAME = "quarry-demo.json"
CHUNK_ROWS = 50_000


class DemoError(RuntimeError):
    """The data directory cannot take the demo dataset (the message says why and what to do)."""


@dataclass
class DemoLoad:
    loaded: bool  # False when the directory already had the complete demo dataset
    start: datetime
    end: datetime
    rows: dict[str, int]
    marker: Path

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def marker_path(data_dir: Path) -> Path:
    return Path(data_dir) / MARKER_NAME


def _write_marker(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_all(storage: Any, tables: dict[str, pa.Table], chunk_rows: int = CHUNK_ROWS) -> dict[str, int]:
    """Append every table in chunks; on back-pressure flush and retry. Returns accepted rows."""
    from server.storage import Backpressure, DiskFull

    accepted: dict[str, int] = {}
    for name, table in tables.items():
        accepted[name] = 0
        for offset in range(0, table.num_rows, chunk_rows):
            chunk = table.slice(offset, chunk_rows)
            for attempt in range(20):
                try:
                    accepted[name] += storage.append(name, chunk).accepted
                    break
                except Backpressure as bp:
                    storage.flush()
                    if attempt:
                        time.sleep(min(bp.retry_after_s, 1.0))
                except DiskFull as e:
                    raise DemoError(f"{e} (see QUARRY_MIN_FREE_BYTES in docs/limits.md)") from e
            else:
                raise DemoError(f"storage kept refusing {name} rows (back-pressure); try a smaller --devices/--days")
    return accepted


def load_demo(
    settings: Settings,
    *,
    days: int = 7,
    devices: int = 40,
    seed: int = 0,
    events_per_device_per_day: int = DEFAULT_EVENTS_PER_DEVICE_PER_DAY,
    now: datetime | None = None,
    catalog: Catalog | None = None,
    log: Callable[[str], None] = print,
) -> DemoLoad:
    """Generate ``days`` days up to ``now`` and store them in ``settings.data_dir`` (once)."""
    from server.storage import Storage

    if days < 1:
        raise DemoError(f"--days must be at least 1, got {days}")
    if days > settings.retention_days:
        raise DemoError(f"--days {days} is longer than the retention ({settings.retention_days} days): "
                        "older events would be dropped at ingest")
    if devices < 1:
        raise DemoError(f"--devices must be at least 1, got {devices}")
    catalog = catalog or default_catalog()
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = marker_path(data_dir)
    if marker.exists():
        doc = orjson.loads(marker.read_bytes())
        if doc.get("state") == "complete":
            return DemoLoad(False, datetime.fromisoformat(doc["start"]), datetime.fromisoformat(doc["end"]),
                            {k: int(v) for k, v in doc["rows"].items()}, marker)
        raise DemoError(
            f"{data_dir} holds a demo dataset whose loading was interrupted ({marker} says "
            f"{doc.get('state')!r}); loading again would duplicate rows. Remove the directory or "
            "choose another --data-dir.")

    now = now or datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    end = now.replace(microsecond=0)
    start = end - timedelta(days=days)
    params = {"seed": seed, "devices": devices, "days": days,
              "events_per_device_per_day": events_per_device_per_day,
              "start": start.isoformat(), "end": end.isoformat()}
    t0 = time.monotonic()
    tables = generate(catalog, start=start, end=end, devices=devices, seed=seed,
                      events_per_device_per_day=events_per_device_per_day)
    log(f"generated {sum(t.num_rows for t in tables.values()):,} rows in {time.monotonic() - t0:.1f} s")
    _write_marker(marker, {"state": "loading", **params})
    storage = Storage(settings, catalog)
    storage.start()
    try:
        rows = append_all(storage, tables)
        storage.flush()
    finally:
        storage.close()
    _write_marker(marker, {"state": "complete", **params, "rows": rows})
    return DemoLoad(True, start, end, rows, marker)


def banner(settings: Settings, load: DemoLoad, key: str, *, serving: bool = True) -> str:
    """What ``quarry demo`` prints before serving: where the data is and how to query it."""
    base = f"http://{settings.host}:{settings.port}"
    what = "loaded" if load.loaded else "already present (not loaded again)"
    query = '{"Query": "DeviceEvents | where ActionType == \\"UsbDriveMounted\\" | take 10"}'
    return "\n".join([
        "",
        f"Quarry demo: {load.total_rows:,} rows {what} in {Path(settings.data_dir).resolve()}",
        f"  events from {load.start.isoformat()}Z to {load.end.isoformat()}Z",
        "",
        "Admin API key (printed once; only its hash is stored):",
        f"  {key}",
        "",
        "Try it:",
        f"  export QUARRY_KEY={key}",
        f"  curl -s -X POST {base}/api/advancedhunting/run \\",
        "    -H \"Authorization: Bearer $QUARRY_KEY\" -H 'Content-Type: application/json' \\",
        f"    -d '{query}'",
        "",
        f"Serving on {base} (Ctrl-C to stop)" if serving else f"Start the server with: quarry serve --data-dir {settings.data_dir}",
        "",
    ])
