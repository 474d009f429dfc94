"""Must show: every acknowledged event survives SIGKILL, exactly once.

``quarry serve`` runs as a subprocess on a free loopback port; several clients ingest gzip NDJSON
batches with unique ReportIds and remember what was acknowledged (200). The server is killed
with SIGKILL while they are sending, restarted on the same data directory, sent more, killed
again, restarted and stopped cleanly. Then the data directory is opened with
``Storage.connect()`` and every acknowledged ReportId must be there exactly once, and no
ReportId at all (acknowledged or in flight when killed) twice.
"""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from schema import default_catalog
from server.settings import Settings
from server.storage import Storage
from tests.support.serve import ADMIN_KEY, QuarryProcess

pytestmark = pytest.mark.slow

KEY = ADMIN_KEY
CLIENTS = 4
BATCH = 200
Server = QuarryProcess


def batch(client: int, start: int) -> tuple[list[int], bytes]:
    ids = [client * 10_000_000 + start + i for i in range(BATCH)]
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    lines = [
        orjson.dumps({
            "Timestamp": f"{ts}.{i % 10_000_000:07d}Z", "DeviceId": f"dev{client}",
            "DeviceName": f"host{client}.example", "ActionType": "ProcessCreated",
            "FileName": "bash", "ProcessCommandLine": f"bash -c 'echo {rid}'", "ReportId": rid,
        })
        for i, rid in enumerate(ids)
    ]
    return ids, gzip.compress(b"\n".join(lines), 1)


def run_clients(url: str, next_id: list[int], acked: list[int], stop: threading.Event
                ) -> list[threading.Thread]:
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}",
                          "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
                          timeout=10) as c:
            while not stop.is_set():
                ids, body = batch(n, next_id[n])
                next_id[n] += BATCH  # never reuse an id, even for a batch whose fate is unknown
                try:
                    r = c.post("/api/ingest/DeviceProcessEvents", content=body)
                except httpx.HTTPError:
                    return  # server gone: whatever was in flight is unknown, not acknowledged
                if r.status_code == 200:
                    assert r.json()["accepted"] == BATCH
                    with lock:
                        acked.extend(ids)
                elif r.status_code != 503:
                    raise AssertionError(r.text)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def ingest_then_kill(data_dir: Path, log: Path, next_id: list[int], acked: list[int],
                     min_acks: int) -> None:
    srv = Server(data_dir, log)
    stop = threading.Event()
    before = len(acked)
    threads = run_clients(srv.url, next_id, acked, stop)
    deadline = time.monotonic() + 60
    while len(acked) - before < min_acks and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.kill()  # mid-stream: the clients are still sending
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) - before >= min_acks, "clients got too few acknowledgements"


def test_acknowledged_events_survive_sigkill_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    next_id = [1] * CLIENTS
    acked: list[int] = []
    ingest_then_kill(data_dir, log, next_id, acked, min_acks=20 * BATCH)
    ingest_then_kill(data_dir, log, next_id, acked, min_acks=10 * BATCH)
    Server(data_dir, log).stop()  # replay on start, clean shutdown

    settings = Settings(data_dir=data_dir, scheduler_enabled=False)
    storage = Storage(settings, default_catalog())
    storage.start()
    try:
        con = storage.connect()
        rows = con.execute(
            'SELECT ReportId, count(*) FROM "DeviceProcessEvents" GROUP BY ReportId'
        ).fetchall()
        con.close()
    finally:
        storage.close()
    counts = dict(rows)
    dupes = {k: v for k, v in counts.items() if v != 1}
    assert not dupes, f"{len(dupes)} ReportIds stored more than once"
    missing = set(acked) - set(counts)
    assert not missing, f"{len(missing)} acknowledged ReportIds lost, e.g. {sorted(missing)[:5]}"
    assert len(acked) == len(set(acked))
