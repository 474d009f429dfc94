"""Must show (issue 9, item 9): a full disk is survivable, end to end.

The data directory lives on a tmpfs of a few MiB that the test mounts (skipped, with the
reason, where mounting is not permitted). A real ``quarry serve`` subprocess ingests over HTTP;
the test fills the filesystem behind its back, and then:

* ingest answers 507 with ``Retry-After`` in the one error shape, and ``/healthz`` says why;
* a clean restart and a SIGKILL restart both come up on the full disk (the WAL is served from
  memory until it can be flushed), and everything acknowledged is queryable;
* once the filler is deleted, ingest resumes by itself (measured);
* every acknowledged event is stored exactly once, and no partial file is left behind.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from schema import default_catalog
from server.settings import Settings
from server.storage import Storage
from tests.support.serve import QuarryProcess
from tests.support.tmpfs import fill, small_filesystem
from tests.test_e2e_durability import BATCH, batch

pytestmark = pytest.mark.slow

ENV = {
    "QUARRY_MIN_FREE_BYTES": str(1 << 20),
    "QUARRY_DISK_RESERVE_BYTES": str(1 << 20),
    # Acknowledged rows stay in the WAL (no flush by size or age) until the disk fills.
    "QUARRY_FLUSH_MAX_AGE_S": "3600",
    "QUARRY_COMPACTION_INTERVAL_S": "3600",
}
INGEST = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}


def report_ids(srv: QuarryProcess) -> Counter[int]:
    with srv.client() as c:
        r = c.post("/api/query", json={"query": "DeviceProcessEvents | project ReportId"})
    assert r.status_code == 200, r.text
    assert not r.json()["truncated"]
    return Counter(row[0] for row in r.json()["rows"])


def assert_all_once(srv: QuarryProcess, acked: list[int]) -> None:
    counts = report_ids(srv)
    assert not [k for k, v in counts.items() if v > 1], "events stored twice"
    missing = set(acked) - set(counts)
    assert not missing, f"{len(missing)} acknowledged events missing"


def health(srv: QuarryProcess) -> dict:  # type: ignore[type-arg]
    r = httpx.get(srv.url + "/healthz", timeout=5)
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def post(srv: QuarryProcess, start: int) -> tuple[httpx.Response, list[int]]:
    ids, body = batch(0, start)
    with srv.client(**INGEST) as c:
        return c.post("/api/ingest/DeviceProcessEvents", content=body), ids


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 507, r.text
    assert int(r.headers["Retry-After"]) >= 1
    body = r.json()
    assert body["ok"] is False and body["errors"][0]["code"] == "insufficient_storage"
    assert "/" not in body["error"], "no server path in the message"


def test_a_full_disk_answers_507_survives_restarts_and_resumes_by_itself(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "mnt", "12m") as mnt:
        data, log, filler = mnt / "data", tmp_path / "server.log", mnt / "filler"
        acked: list[int] = []
        next_id = 0
        srv = QuarryProcess(data, log, ENV)
        try:
            assert health(srv)["status"] == "ok"
            assert (data / "_reserve").stat().st_size == 1 << 20
            for _ in range(10):
                r, ids = post(srv, next_id)
                next_id += BATCH
                assert r.status_code == 200, r.text
                acked += ids

            # Below min_free_bytes: refused before the disk is full.
            fill(filler, leave=512 * 1024)
            r, _ = post(srv, next_id)
            next_id += BATCH
            assert_refused(r)
            assert [x["code"] for x in health(srv)["reasons"]] == ["low_disk_space"]

            # Completely full (the acknowledged rows are still only in the WAL).
            fill(filler)
            r, _ = post(srv, next_id)
            next_id += BATCH
            assert_refused(r)
            assert health(srv)["status"] == "degraded"
            # Routes that write the metadata database say so too (SQLite: disk full).
            with srv.client() as c:
                r = c.post("/api/keys", json={"scope": "query"})
            assert r.status_code == 507, r.text
            assert r.json()["errors"][0]["code"] == "insufficient_storage"

            # A clean restart on the full disk: close cannot flush, the metadata database is
            # closed; the next start gives back the reserve to open it and replays the WAL.
            srv.stop()
            srv = QuarryProcess(data, log, ENV)
            assert_all_once(srv, acked)
            r, _ = post(srv, next_id)
            next_id += BATCH
            assert_refused(r)
            fill(filler)  # whatever the reserve gave back, taken again

            # SIGKILL and a start on a disk with no room at all.
            srv.kill()
            srv = QuarryProcess(data, log, ENV)
            assert_all_once(srv, acked)
            h = health(srv)
            assert h["status"] == "degraded" and h["reasons"][0]["code"] in ("disk_full",
                                                                             "low_disk_space")
            assert "/" not in str(h), "no server path in /healthz"
            r, _ = post(srv, next_id)
            next_id += BATCH
            assert_refused(r)

            # Space freed: ingest resumes by itself (the client only retries).
            filler.unlink()
            t0 = time.monotonic()
            while True:
                r, ids = post(srv, next_id)
                next_id += BATCH
                if r.status_code == 200:
                    acked += ids
                    break
                assert_refused(r)
                assert time.monotonic() - t0 < 10, "ingest did not resume within 10 s"
                time.sleep(0.05)
            resumed = time.monotonic() - t0
            print(f"ingest resumed {resumed:.2f} s after space was freed")
            deadline = time.monotonic() + 10
            while health(srv)["status"] != "ok":
                assert time.monotonic() < deadline, health(srv)
                time.sleep(0.1)
            assert (data / "_reserve").stat().st_size == 1 << 20
            assert_all_once(srv, acked)
        finally:
            if srv.proc.poll() is None:
                srv.stop()
        # After the clean stop, straight from the data directory: all in Parquet, once.
        # (a clean stop leaves only the empty segment it had open)
        assert not [p for p in (data / "_wal").glob("*.wal") if p.stat().st_size], "WAL left"
        assert not [p for p in data.rglob("*.tmp")], "no partial file left behind"
        storage = Storage(Settings(data_dir=data), default_catalog())
        storage.start()
        try:
            con = storage.connect()
            counts = Counter(r[0] for r in con.execute(
                'SELECT ReportId FROM "DeviceProcessEvents"').fetchall())
            con.close()
        finally:
            storage.close()
        assert set(counts) == set(acked) and set(counts.values()) == {1}
