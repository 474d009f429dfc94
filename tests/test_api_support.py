"""Helpers for the hunting API tests: a real uvicorn server in a thread on a free loopback port,
keys, and fixture events posted through the real ingest API.

The fixture events are written relative to the server's real clock (the seed query uses
``ago(2h)``), so the expected rows are known from the table below, not from running the query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx

from server.app import create_app
from server.auth import create_key
from server.settings import Settings
from tests.support.live import LiveServer as SharedLiveServer

SEED_QUERY = (
    "DeviceProcessEvents | where Timestamp > ago(2h) "
    '| where ProcessCommandLine contains "/Volume" | sort by Timestamp asc'
)


# A 40-billion-row join: minutes of work on any machine, so only the timeout can end it.
HEAVY = (
    "range i from 1 to 200000 step 1 | extend k = 1 "
    "| join kind=inner (range j from 1 to 200000 step 1 | extend k = 1) on k | summarize n = count()"
)


class LiveServer(SharedLiveServer):
    """The shared live server (tests/support/live.py) over ``create_app(settings)``, with an
    ingest, a query and an admin key made at start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # A short graceful shutdown: a heavy query left running must not hold up the module.
        super().__init__(create_app(settings), timeout_graceful_shutdown=2, join_timeout_s=15)
        self.keys: dict[str, str] = {}

    def start(self) -> Self:
        super().start()
        for scope in ("ingest", "query", "admin"):
            self.keys[scope] = create_key(self.app.state.metadata, scope, f"test-{scope}")
        return self

    def client(self, scope: str | None = "query", timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"} if scope else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


@contextmanager
def live_server(data_dir: Path, **overrides: Any) -> Iterator[LiveServer]:
    settings = Settings(data_dir=data_dir, scheduler_enabled=False, **overrides)
    with LiveServer(settings) as srv:
        yield srv


@contextmanager
def seeded_server(data_dir: Path, network_rows: int = 0, **overrides: Any) -> Iterator[LiveServer]:
    """``live_server`` with the process fixture ingested (and ``network_rows`` network events,
    if any), both stamped relative to one ``utcnow()``."""
    with live_server(data_dir, **overrides) as srv:
        now = utcnow()
        ingest(srv, "DeviceProcessEvents", process_events(now))
        if network_rows:
            ingest(srv, "DeviceNetworkEvents", network_events(now, network_rows))
        yield srv


@contextmanager
def kusto_client(srv: LiveServer) -> Iterator[Any]:
    """The real azure-kusto-data client against ``srv``, authenticated with its query key."""
    from azure.kusto.data import KustoClient, KustoConnectionStringBuilder

    kcsb = KustoConnectionStringBuilder.with_aad_application_token_authentication(srv.url, srv.keys["query"])
    c = KustoClient(kcsb)
    try:
        yield c
    finally:
        c.close()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Seed-query fixture: (id, minutes ago, command line). ReportId is the row's identity.
#   1  90 min ago  "/Volumes/Installer"   matches
#   2  30 min ago  "/VOLUMES/usb"         matches (contains is case-insensitive)
#   3  10 min ago  "/Volumes/USB/"        matches
#   4  180 min ago "/Volumes/old"         outside ago(2h)
#   5  20 min ago  "ls /tmp"              no "/Volume"
#   6  5 min ago   "/Volum"               no "/Volume" (prefix only)
PROCESS_FIXTURE: list[tuple[int, int, str]] = [
    (1, 90, "hdiutil attach /Volumes/Installer/app.dmg"),
    (2, 30, "ls -la /VOLUMES/usb"),
    (3, 10, "cp /Users/alice/secret.txt /Volumes/USB/"),
    (4, 180, "ls /Volumes/old"),
    (5, 20, "ls /tmp"),
    (6, 5, "echo /Volum"),
]
SEED_EXPECTED_IDS = [1, 2, 3]  # sorted by Timestamp asc


def process_events(now: dt.datetime) -> list[dict[str, Any]]:
    rows = []
    for rid, minutes, cmd in PROCESS_FIXTURE:
        ts = now - dt.timedelta(minutes=minutes)
        rows.append(
            {
                "Timestamp": iso(ts),
                "DeviceId": f"dev{rid % 2}",
                "DeviceName": f"mac-{rid % 2:02d}.contoso.com",
                "ActionType": "ProcessCreated",
                "FileName": cmd.split()[0],
                "FolderPath": f"/usr/bin/{cmd.split()[0]}",
                "ProcessCommandLine": cmd,
                "ProcessId": 1000 + rid,
                "ReportId": rid,
                "AccountName": "alice",
                "AdditionalFields": '{"Tags": ["usb"], "Score": 7}' if rid == 1 else None,
            }
        )
    return rows


def network_events(now: dt.datetime, n: int) -> list[dict[str, Any]]:
    return [
        {
            "Timestamp": iso(now - dt.timedelta(seconds=10 + i)),
            "DeviceId": f"dev{i % 5}",
            "DeviceName": f"host-{i % 5}",
            "ActionType": "ConnectionSuccess",
            "RemoteIP": f"10.0.{i // 250}.{i % 250}",
            "RemotePort": 443,
            "ReportId": i,
        }
        for i in range(n)
    ]


def ingest(srv: LiveServer, table: str, rows: list[dict[str, Any]]) -> httpx.Response:
    with srv.client("ingest") as c:
        r = c.post(f"/api/ingest/{table}", json=rows)
    assert r.status_code == 200, r.text
    return r


def assert_error_shape(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Quarry's error shape; on the Microsoft-shaped routes Microsoft's ({"error": {"code",
    "message", ...}}) with Quarry's entries in error.details, returned as ``errors``."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    if isinstance(body.get("error"), dict):
        err = body["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"]
        assert "ok" not in body
        body = {**body, "errors": err["details"]}
    else:
        assert body["ok"] is False
        assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["errors"], list) and body["errors"]
    for e in body["errors"]:
        assert isinstance(e["code"], str) and isinstance(e["message"], str)
    if code is not None:
        assert code in [e["code"] for e in body["errors"]], body
    return body
