"""A full disk, at the storage level, on a tmpfs the test mounts (tests/support/tmpfs.py): the
write-ahead log refuses cleanly, a failed flush leaves no partial file and backs off, a start on
a full disk replays the log into memory, and everything acknowledged stays exactly once.
The end-to-end version (a real server, HTTP 507, /healthz) is tests/test_e2e_disk_full.py."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import httpx
import pytest

from server.app import create_app
from server.storage import DiskFull
from server.storage.space import is_out_of_space
from tests.support.tmpfs import fill, free_bytes, small_filesystem
from tests.test_ingest_api import ADMIN, LiveServer, make_settings
from tests.test_storage_support import TABLE, open_storage, process_batch, report_ids

ROWS = 2_000


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "mnt", "6m") as mnt:
        yield mnt


def batch(start: int, n: int = ROWS):  # type: ignore[no-untyped-def]
    now = datetime.utcnow()
    return process_batch(list(range(start, start + n)), [now] * n)


def leftovers(data_dir: Path) -> list[Path]:
    """Partial files a failed write could leave behind."""
    return [p for p in data_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("_compact-")]


def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_full_disk_refuses_appends_whole_and_resumes_when_space_is_freed(fs: Path) -> None:
    data = fs / "data"
    with open_storage(data, min_free_bytes=0, disk_reserve_bytes=256 * 1024) as st:
        assert (data / "_reserve").stat().st_size == 256 * 1024
        st.append(TABLE, batch(0))
        fill(fs / "filler")
        # Whatever the WAL still had room for, the disk runs out within a few batches: refused
        # whole, with nothing of the refused batch stored.
        start = ROWS
        with pytest.raises(DiskFull):
            for _ in range(200):
                st.append(TABLE, batch(start))
                start += ROWS
        acked = start
        assert not (data / "_reserve").exists(), "the reserve is given back when the disk fills"
        assert [r["code"] for r in st.health()] == ["disk_full"]
        with pytest.raises(DiskFull):  # refused at once now, not after a failed write
            st.append(TABLE, batch(10_000_000))
        assert report_ids(st) == list(range(acked))
        (fs / "filler").unlink()
        # Space freed: the backlog is flushed, the reserve comes back, ingest resumes by itself.
        wait_for(lambda: not st.health())
        st.append(TABLE, batch(acked))
        assert (data / "_reserve").exists()
        assert report_ids(st) == list(range(acked + ROWS))
    assert not leftovers(data)


def test_a_failed_flush_leaves_no_partial_file_keeps_rows_once_and_backs_off(
    fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = fs / "data"
    with open_storage(data, min_free_bytes=0, disk_reserve_bytes=0) as st:
        for i in range(10):
            st.append(TABLE, batch(i * ROWS))
        fill(fs / "filler")
        with pytest.raises(OSError, match="No space left"):
            st.flush()
        assert not leftovers(data)
        assert report_ids(st) == list(range(10 * ROWS))  # from the tail, once
        # The background retries back off (1 s, 2 s, ...): not one rewrite per second.
        caplog.set_level(logging.ERROR, logger="quarry.storage")
        st._wake.set()
        time.sleep(3.2)
        waits = [int(m.group(1)) for r in caplog.records
                 if (m := re.search(r"^flush failed .* retrying in (\d+) s", r.getMessage()))]
        assert waits[:3] == [1, 2, 4][: len(waits)] and 2 <= len(waits) <= 3, waits
        assert not leftovers(data)
        (fs / "filler").unlink()
        t0 = time.monotonic()
        wait_for(lambda: st.unflushed_rows == 0)
        resumed = time.monotonic() - t0
        assert resumed < 1.5, f"the flush waited {resumed:.1f} s after space was freed"
        assert report_ids(st) == list(range(10 * ROWS))
        assert list(data.rglob("w*.parquet"))
    assert not leftovers(data)


def test_a_start_on_a_full_disk_serves_the_log_from_memory_until_it_can_flush(fs: Path) -> None:
    data = fs / "data"
    with open_storage(data, min_free_bytes=0, disk_reserve_bytes=0) as st:
        for i in range(10):
            st.append(TABLE, batch(i * ROWS))
        fill(fs / "filler")
    # close() could not flush (logged); the rows are in the WAL only.
    assert list((data / "_wal").glob("*.wal"))
    assert free_bytes(fs) < 64 * 1024
    with open_storage(data, min_free_bytes=0, disk_reserve_bytes=0) as st:
        assert report_ids(st) == list(range(10 * ROWS))
        assert st.unflushed_rows == 10 * ROWS
        assert [r["code"] for r in st.health()] == ["disk_full"]
        with pytest.raises(DiskFull):
            st.append(TABLE, batch(10 * ROWS))
        assert not leftovers(data)
        (fs / "filler").unlink()
        wait_for(lambda: st.unflushed_rows == 0 and not st.health())
        st.append(TABLE, batch(10 * ROWS))
        assert report_ids(st) == list(range(11 * ROWS))
    with open_storage(data, min_free_bytes=0, disk_reserve_bytes=0) as st:
        assert report_ids(st) == list(range(11 * ROWS))


def test_low_free_space_refuses_ingest_before_the_disk_is_full(fs: Path) -> None:
    data = fs / "data"
    with open_storage(data, min_free_bytes=2 << 20, disk_reserve_bytes=0) as st:
        st.append(TABLE, batch(0))
        fill(fs / "filler", leave=1 << 20)
        with pytest.raises(DiskFull, match="min_free_bytes"):
            st.append(TABLE, batch(ROWS))
        assert [r["code"] for r in st.health()] == ["low_disk_space"]
        (fs / "filler").unlink()
        st.append(TABLE, batch(ROWS))
        assert not st.health()
        assert report_ids(st) == list(range(2 * ROWS))


def test_a_compaction_that_runs_out_of_space_leaves_nothing_behind(
    fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fs / "data"
    with open_storage(data, min_free_bytes=0, disk_reserve_bytes=0) as st:
        for i in range(6):
            st.append(TABLE, batch(i * ROWS))
            st.flush()
        sources = sorted(data.rglob("w*.parquet"))
        assert len(sources) == 6
        fill(fs / "filler", leave=16 * 1024)
        # Not enough room for the merged file: compaction waits for a later cycle.
        assert st.compact() == 0
        # Forced past that check, the merge itself fails for want of space (in DuckDB's COPY)
        # and undoes itself: no partial file, no intent left for the next start to resolve.
        monkeypatch.setattr(st, "_room_to_compact", lambda _sources: True)
        with pytest.raises(Exception) as failed:
            st.compact()
        assert is_out_of_space(failed.value), failed.value
        assert isinstance(failed.value, duckdb.IOException), "the COPY failed, not the intent"
        assert not leftovers(data) and not list(data.rglob("c*.parquet"))
        assert sorted(data.rglob("w*.parquet")) == sources
        assert report_ids(st) == list(range(6 * ROWS))
        (fs / "filler").unlink()
        monkeypatch.undo()
        assert st.compact() == 5
        assert report_ids(st) == list(range(6 * ROWS))
    assert not leftovers(data)


def test_an_unusable_write_ahead_log_answers_503_and_says_so(tmp_path: Path) -> None:
    """After a failed fsync the WAL refuses writes until a restart: ingest answers 503 with
    Retry-After (never 500) and /healthz names the reason."""
    with LiveServer(create_app(make_settings(tmp_path))) as srv:
        srv.app.state.storage._wal.broken = "fsync failed: [Errno 5] Input/output error"
        row = [{"Timestamp": "2026-11-28T19:48:48Z", "DeviceId": "d", "ActionType": "x"}]
        r = httpx.post(f"{srv.url}/api/ingest/{TABLE}", json=row, timeout=10,
                       headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "30" and r.json()["errors"][0]["code"] == "unavailable"
        health = httpx.get(f"{srv.url}/healthz", timeout=10).json()
        assert health["status"] == "degraded"
        assert [x["code"] for x in health["reasons"]] == ["wal_unusable"]
