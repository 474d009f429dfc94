"""Latency from ``notifier.alerts_created`` to the email arriving at an SMTP server on loopback,
as a ratio against a baseline measured in the same run: one direct smtplib send of the same kind
of message to the same server. Run: ``.venv/bin/python benchmarks/notify_latency.py``."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.metadata import MetadataDB  # noqa: E402
from server.notify import Notifier  # noqa: E402
from server.notify.notifier import send_email  # noqa: E402
from server.notify.render import email_message  # noqa: E402
from server.notify.rules import create_rule  # noqa: E402
from tests.notify_helpers import alert, settings_for  # noqa: E402
from tests.smtp_fixture import start_smtp_server, stop_smtp_server  # noqa: E402

N = 20


def main() -> None:
    smtp = start_smtp_server()
    tmp = Path(tempfile.mkdtemp(prefix="quarry-notify-bench-"))
    # Throttle off, so every alert is its own email and its own measurement.
    settings = settings_for(tmp, email_throttle_s=0.0, **smtp.settings())
    md = MetadataDB(tmp / "metadata.sqlite")
    create_rule(md, {"name": "bench", "emails": ["admin@example.com"]})
    notifier = Notifier(settings, md)
    notifier.start()
    try:
        base, notify = [], []
        for i in range(N):
            t0 = time.perf_counter()
            send_email(settings, email_message([alert(f"b{i}")], settings.smtp_from, "admin@example.com", settings.public_url))
            smtp.wait_for(2 * i + 1)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            notifier.alerts_created([alert(f"n{i}")])
            smtp.wait_for(2 * i + 2)
            notify.append(time.perf_counter() - t0)
        b, n = statistics.median(base), statistics.median(notify)
        print(f"direct SMTP send (baseline) median {b * 1000:.1f} ms")
        print(f"alerts_created -> email received median {n * 1000:.1f} ms")
        print(f"ratio notifier/baseline: {n / b:.2f}x over {N} alerts")
    finally:
        notifier.close()
        md.close()
        stop_smtp_server(smtp)


if __name__ == "__main__":
    main()
