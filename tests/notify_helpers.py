"""Shared helpers for the notify/devices/web tests: a real uvicorn server on loopback, a loopback
webhook receiver, and DeviceInfo rows."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from server.app import create_app
from server.auth import create_key
from server.settings import Settings
from tests.support.live import LiveServer as SharedLiveServer

ADMIN = "test-admin-key-notify"


class LiveServer(SharedLiveServer):
    """The shared live server (tests/support/live.py) with an admin client and key minting."""

    def client(self, key: str = ADMIN) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=30)

    def key(self, scope: str, name: str = "") -> str:
        return create_key(self.app.state.metadata, scope, name)


def settings_for(data_dir: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_key": ADMIN,
        "scheduler_enabled": False,
        "flush_max_age_s": 3600.0,
        "public_url": "http://quarry.test:8080",
        "notify_poll_s": 0.2,
        "notify_retry_s": 0.2,
        "notify_max_attempts": 3,
        "smtp_timeout_s": 5.0,
    }
    base.update(kw)
    return Settings(**base)


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(settings)) as s:
        yield s


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def device_info(device_id: str, name: str, platform: str, tags: list[str] | None = None,
                when: datetime | None = None, report_id: int = 1) -> dict[str, Any]:
    return {
        "Timestamp": iso(when or datetime.now(UTC)),
        "DeviceId": device_id,
        "DeviceName": name,
        "OSPlatform": platform,
        "DeviceManualTags": json.dumps(tags or []),
        "ReportId": report_id,
    }


def alert(alert_id: str, device_id: str = "dev-mac-1", device_name: str = "mac-alice.corp",
          severity: str = "informational", title: str = "File copied to USB") -> dict[str, Any]:
    """An alert dict as detections hand it to ``alerts_created``."""
    return {
        "id": alert_id,
        "title": title,
        "description": "A file was copied to removable media",
        "severity": severity,
        "status": "new",
        "category": "Exfiltration",
        "ruleId": 7,
        "ruleName": "USB copy",
        "deviceId": device_id,
        "deviceName": device_name,
        "timestamp": "2026-11-28T10:00:00.000000Z",
        "createdAt": "2026-11-28T10:05:00.000000Z",
        "incidentId": 3,
        "evidenceSummary": "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt",
        "entities": [{"entityType": "device", "deviceId": device_id}],
    }


class WebhookReceiver:
    """A loopback HTTP server that records POSTed JSON; ``fail_next(k)`` answers 500 k times."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []  # raw, as signed: verify these, not re-serialised JSON
        self.cond = threading.Condition()
        self.fail_remaining = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with outer.cond:
                    if outer.fail_remaining > 0:
                        outer.fail_remaining -= 1
                        self.send_response(500)
                        self.end_headers()
                        self.wfile.write(b"receiver down (test)")
                        return
                    outer.received.append(json.loads(body))
                    outer.bodies.append(body)
                    outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                    outer.cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, k: int) -> None:
        with self.cond:
            self.fail_remaining = k

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {n} webhook call(s), got {len(self.received)}")
                self.cond.wait(left)
            return list(self.received)


def wait_until(pred: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
