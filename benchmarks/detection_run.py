"""What a scheduled rule run costs against a plain hunting query over the same event window.

A rule run reads its lookback window (Timestamp >= now - 4h for a 1h rule) UNION ALL the rows
ingested since its previous run whatever their event time (late events). The second branch must
not turn every run into a scan of the whole retention: Parquet statistics on `_ingestion_time`
should let DuckDB skip files. This times, in one process over the same data:

- baseline: the rule's KQL through the query runner with a 4 h time range (no late-row branch);
- a steady-state 1h rule run (watermark one hour back), creating/de-duplicating alerts;
- for scale, a rule's first run (30 days).

Data: ``server.demo`` bulk DeviceProcessEvents over 30 days, appended through ``Storage`` in
time order with the storage clock at each slice's end (so ingestion times follow event times)
and flushed to Parquet. Only ratios are reported.

    .venv/bin/python benchmarks/detection_run.py [--rows 300000] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import median, timed  # noqa: E402
from schema.catalog import default_catalog  # noqa: E402
from server.demo.bulk import iter_bulk_process_events  # noqa: E402
from server.detections.runner import DetectionEngine  # noqa: E402
from server.detections.timeutil import iso  # noqa: E402
from server.metadata import MetadataDB  # noqa: E402
from server.query.runner import QueryLimits, QueryRunner  # noqa: E402
from server.query.timerange import TimeRange  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.storage import Storage  # noqa: E402

QUERY = 'DeviceProcessEvents | where ProcessCommandLine contains "/Volumes/"'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    end = datetime(2026, 3, 31)
    start = end - timedelta(days=30)
    clock_now = [start]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            flush_max_rows=10_000_000,
            flush_max_age_s=3600.0,
            retention_days=3650,
            scheduler_enabled=False,
            alerts_per_run_cap=100,
        )
        storage = Storage(settings, default_catalog(), clock=lambda: clock_now[0])
        storage.start()
        metadata = MetadataDB(Path(tmp) / "metadata.sqlite")
        try:
            slices = 60
            for i, batch in enumerate(
                iter_bulk_process_events(args.rows, start, end, seed=7, batch_rows=max(1, args.rows // slices))
            ):
                clock_now[0] = start + (end - start) * (i + 1) / slices
                storage.append("DeviceProcessEvents", batch)
                if i % 6 == 5:
                    storage.flush()
            storage.flush()
            clock_now[0] = end
            engine = DetectionEngine(settings, metadata, storage, default_catalog(), clock=lambda: end)
            runner = QueryRunner(storage, default_catalog(), QueryLimits(timeout_s=120, max_rows=100_000))
            rule = engine.store.create_rule(
                {"name": "usb", "query": QUERY, "frequency": "1h", "severity": "low", "alert_title": "usb", "enabled": 1},
                end,
            )
            rid = int(rule["id"])

            def rule_run(since: str | None) -> float:
                """One scheduled run with the rule's watermarks at ``since`` (None: a first run)."""
                engine.store.update_rule(rid, {"covered_through": since, "ingest_watermark": since}, end)
                elapsed, run = timed(lambda: engine.run_rule(rid, "scheduled", now=end))
                assert run["status"] == "completed", run
                return elapsed

            def steady() -> float:
                return rule_run(iso(end - timedelta(hours=1)))

            def first() -> float:
                return rule_run(None)

            def baseline() -> float:
                return timed(lambda: runner.run(QUERY, time_range=TimeRange(end - timedelta(hours=4)), now=end))[0]

            first()  # warm caches and create the alerts once
            b, s, f = [], [], []
            for _ in range(args.reps):
                b.append(baseline())
                s.append(steady())
                f.append(first())
            runner.close()
        finally:
            storage.close()
            metadata.close()
    mb, ms, mf = median(b), median(s), median(f)
    print(f"{args.rows} DeviceProcessEvents rows over 30 days, {args.reps} repetitions (medians)")
    print(f"  steady 1h rule run / 4h hunting query: {ms / mb:.2f}x")
    print(f"  first run (30 days) / 4h hunting query: {mf / mb:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
