"""Time from ingest to email for a `continuous` detection rule, end to end.

The real server (uvicorn on loopback, scheduler on) and a real SMTP server (aiosmtpd on
loopback): a notification rule for admin@example.com and a continuous rule on
DeviceProcessEvents. Each sample POSTs one matching event to the ingest API and waits for the
email naming it. Baseline, measured in the same run: ``POST /api/notifications/test`` until its
email arrives (the delivery path alone), so the ratio shows what detection adds on this machine.

    .venv/bin/python benchmarks/alert_latency.py [--samples 10] [--poll 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.notify_helpers import iso, live_server, settings_for  # noqa: E402
from tests.smtp_fixture import start_smtp_server, stop_smtp_server  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--poll", type=float, default=1.0, help="continuous_poll_s and scheduler tick")
    args = ap.parse_args()

    smtp = start_smtp_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(
                Path(tmp),
                **smtp.settings(),
                scheduler_enabled=True,
                continuous_poll_s=args.poll,
                scheduler_tick_s=args.poll,
                email_throttle_s=0.0,  # one email per alert: no digest folding in a benchmark
            )
            with live_server(settings) as srv, srv.client() as admin:
                ingest_key = srv.key("ingest")
                r = admin.post(
                    "/api/notifications/rules",
                    json={"name": "bench", "minSeverity": "informational", "emails": ["admin@example.com"]},
                )
                r.raise_for_status()
                # Baseline: the notification path alone.
                base: list[float] = []
                for _ in range(args.samples):
                    n = len(smtp.messages)
                    t0 = time.perf_counter()
                    admin.post("/api/notifications/test", json={"emails": ["admin@example.com"]}).raise_for_status()
                    smtp.wait_for(n + 1, timeout=30)
                    base.append(time.perf_counter() - t0)

                r = admin.post(
                    "/api/detections/rules",
                    json={
                        "name": "usb continuous",
                        "query": 'DeviceProcessEvents | where ProcessCommandLine contains "/Volumes/"',
                        "frequency": "continuous",
                        "severity": "high",
                        "alertTitle": "USB copy {{ReportId}}",
                    },
                )
                r.raise_for_status()
                time.sleep(args.poll * 2)  # let the first (30-day) run pass
                lat: list[float] = []
                with srv.client(ingest_key) as agent:
                    for i in range(args.samples):
                        n = len(smtp.messages)
                        row = {
                            "Timestamp": iso(datetime.now(UTC)),
                            "DeviceId": "bench-mac",
                            "DeviceName": "bench-mac.corp",
                            "ActionType": "ProcessCreated",
                            "FileName": "cp",
                            "ProcessCommandLine": f"cp f{i} /Volumes/USB/",
                            "ReportId": 10_000 + i,
                        }
                        t0 = time.perf_counter()
                        agent.post("/api/ingest/DeviceProcessEvents", json=[row]).raise_for_status()
                        msgs = smtp.wait_for(n + 1, timeout=60)
                        lat.append(time.perf_counter() - t0)
                        assert f"USB copy {10_000 + i}" in msgs[-1].subject + msgs[-1].text()
                        time.sleep(0.3)
    finally:
        stop_smtp_server(smtp)

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
        return f"median {statistics.median(xs):.3f} s, p90 {p90:.3f} s, max {xs[-1]:.3f} s"

    print(f"continuous rule, poll {args.poll:g} s, {args.samples} samples")
    print(f"  baseline (test email, delivery path only): {fmt(base)}")
    print(f"  ingest -> email:                           {fmt(lat)}")
    print(f"  ratio of medians: {statistics.median(lat) / statistics.median(base):.1f}x the delivery path")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
