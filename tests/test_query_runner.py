"""The query runner on real storage (no HTTP): partition pruning in the stats, time ranges,
timeouts with interrupt(), slots, exports in batches; and ``quarry query`` offline on a
``quarry demo`` data directory."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from schema import default_catalog
from server.demo.arrow import rows_to_table
from server.query.runner import (
    CompileFailed,
    QueryExecutionError,
    QueryLimits,
    QueryRejected,
    QueryRunner,
    QueryTimeout,
    QueryUnavailable,
    _wrap,
)
from server.query.timerange import TimeRange
from server.settings import Settings
from server.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
CATALOG = default_catalog()
HEAVY = (
    "range i from 1 to 200000 step 1 | extend k = 1 "
    "| join kind=inner (range j from 1 to 200000 step 1 | extend k = 1) on k | summarize n = count()"
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """Rows on three UTC days, flushed to Parquet (one file per day), plus two unflushed rows."""
    s = Storage(Settings(data_dir=tmp_path_factory.mktemp("runner"), scheduler_enabled=False), CATALOG)
    s.start()
    now = _now()
    table = CATALOG.tables["DeviceProcessEvents"]
    days = [now - dt.timedelta(days=d) for d in (4, 2, 0)]
    rows = [
        {"Timestamp": day - dt.timedelta(minutes=i), "DeviceId": "d1", "ReportId": n * 10 + i,
         "FileName": "a.exe", "ProcessCommandLine": f"run {i}"}
        for n, day in enumerate(days) for i in range(5)
    ]
    s.append("DeviceProcessEvents", rows_to_table(table, rows))
    s.flush()
    tail = [{"Timestamp": now - dt.timedelta(seconds=30), "DeviceId": "d2", "ReportId": 100 + i} for i in range(2)]
    s.append("DeviceProcessEvents", rows_to_table(table, tail))
    try:
        yield s
    finally:
        s.close()


def _runner(storage: Storage, **limits: object) -> QueryRunner:
    return QueryRunner(storage, CATALOG, QueryLimits(**limits))  # type: ignore[arg-type]


def test_counts_and_partition_pruning(storage: Storage) -> None:
    r = _runner(storage)
    assert r.run("DeviceProcessEvents | count").rows == [(17,)]  # 15 flushed + 2 in the tail
    files = len(list((storage.data_dir / "DeviceProcessEvents").glob("date=*/*.parquet")))
    assert files >= 3
    # (a bare count is answered from Parquet metadata, scanning no file: filter on a column)
    full = r.run("DeviceProcessEvents | where DeviceId != 'x' | count")
    assert full.rows == [(17,)]
    assert full.stats.partitionsScanned == files
    recent = r.run("DeviceProcessEvents | where DeviceId != 'x' and Timestamp > ago(1d) | count")
    assert 1 <= recent.stats.partitionsScanned < files
    assert recent.rows == [(7,)]
    assert recent.stats.compileMs > 0 and recent.stats.elapsedMs >= recent.stats.compileMs


def test_time_range_views(storage: Storage) -> None:
    r = _runner(storage)
    now = _now()
    res = r.run("DeviceProcessEvents | count", time_range=TimeRange(now - dt.timedelta(days=3)))
    assert res.rows == [(12,)]
    res = r.run(
        "DeviceProcessEvents | count",
        time_range=TimeRange(now - dt.timedelta(days=5), now - dt.timedelta(days=1)),
    )
    assert res.rows == [(10,)]
    # a table without Timestamp is not restricted (and does not fail)
    res = r.run("DeviceTvmSoftwareInventory | count", time_range=TimeRange(now - dt.timedelta(hours=1)))
    assert res.rows == [(0,)]
    # the restriction lives in the query's own connection only
    assert r.run("DeviceProcessEvents | count").rows == [(17,)]


def test_row_cap_and_truncation(storage: Storage) -> None:
    r = _runner(storage, max_rows=4)
    res = r.run("DeviceProcessEvents | sort by ReportId asc | project ReportId")
    assert res.truncated and [x[0] for x in res.rows] == [0, 1, 2, 3]
    assert res.warnings and "truncated" in res.warnings[0]
    res = r.run("DeviceProcessEvents | sort by ReportId desc | project ReportId", max_rows=2)
    assert [x[0] for x in res.rows] == [101, 100] and res.truncated
    res = r.run("DeviceProcessEvents | take 3")
    assert len(res.rows) == 3 and not res.truncated


def test_compile_errors_carry_diagnostics(storage: Storage) -> None:
    r = _runner(storage)
    with pytest.raises(CompileFailed) as e:
        r.run("DeviceProcessEvents\n| where Nope == 1")
    entry = e.value.errors[0]
    assert entry["code"] == "unknown_column" and entry["line"] == 2
    assert {"message", "column", "hints"} <= set(entry)
    with pytest.raises(CompileFailed):
        r.run("   ")


def test_timeout_interrupts(storage: Storage) -> None:
    r = _runner(storage, timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(QueryTimeout):
        r.run(HEAVY)
    assert time.monotonic() - t0 < 5
    # per-call timeouts too
    with pytest.raises(QueryTimeout):
        _runner(storage).run(HEAVY, timeout_s=0.3)


def test_slots_reject_after_the_wait(storage: Storage) -> None:
    r = _runner(storage, max_concurrent=1, queue_wait_s=0.2, timeout_s=2.0)
    errors: list[Exception] = []

    def heavy() -> None:
        try:
            r.run(HEAVY)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    t = threading.Thread(target=heavy)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    with pytest.raises(QueryRejected) as e:
        r.run("DeviceProcessEvents | count")
    assert 0.15 <= time.monotonic() - t0 < 1.5
    assert e.value.retry_after_s >= 1
    t.join()
    assert isinstance(errors[0], QueryTimeout)
    assert r.run("DeviceProcessEvents | count").rows == [(17,)]  # the slot came back


def test_close_stops_running_queries_and_refuses_new_ones(storage: Storage) -> None:
    """At shutdown the app closes the runner before storage: a heavy query is interrupted at
    once (storage cannot close its database under a busy connection), not left to its timeout."""
    r = _runner(storage, timeout_s=120.0)
    errors: list[Exception] = []

    def heavy() -> None:
        try:
            r.run(HEAVY)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    t = threading.Thread(target=heavy)
    t.start()
    deadline = time.monotonic() + 10
    while r.running == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.running == 1
    time.sleep(0.2)  # inside the join
    t0 = time.monotonic()
    r.close()
    assert time.monotonic() - t0 < 5
    t.join(timeout=5)
    assert not t.is_alive() and r.running == 0
    assert isinstance(errors[0], QueryUnavailable) and "shutting down" in errors[0].message
    with pytest.raises(QueryUnavailable):
        r.run("DeviceProcessEvents | count")


def test_export_streams_batches_without_cap(storage: Storage) -> None:
    r = QueryRunner(storage, CATALOG, QueryLimits(max_rows=2, export_batch_rows=4))
    cols, batches = r.export_batches("DeviceProcessEvents | project ReportId | sort by ReportId asc")
    assert cols == [("ReportId", "long")]
    assert next(batches) is None  # primed: the query runs
    got = [b for b in batches if b is not None]
    assert len(got) >= 2  # several batches, not one materialised table
    ids = [v for b in got for v in b.column(0).to_pylist()]
    assert ids == sorted(ids) and len(ids) == 17


def test_only_one_select_runs() -> None:
    assert _wrap("SELECT 1") == "SELECT 1"
    for sql in ("SELECT 1; SELECT 2", "COPY (SELECT 1) TO 'x.csv'", "ATTACH 'x.db'", "INSTALL httpfs"):
        with pytest.raises(QueryExecutionError):
            _wrap(sql)


def test_data_errors_are_execution_errors(storage: Storage) -> None:
    r = _runner(storage)
    try:
        res = r.run("DeviceProcessEvents | where ProcessCommandLine matches regex '(' | count")
    except (QueryExecutionError, CompileFailed) as e:
        assert e.status == 400
    else:
        assert res.rows  # an engine that accepts it is fine too; a 500 is not


# -- quarry query (offline) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    p = subprocess.run(
        [sys.executable, "-m", "server.cli", "demo", "--no-serve", "--data-dir", str(d), "--days", "1",
         "--devices", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr
    return d


def _quarry(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "server.cli", "query", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_query_formats(demo_dir: Path) -> None:
    q = "DeviceProcessEvents | summarize n = count() by DeviceName | sort by DeviceName asc"
    j = _quarry(q, "--data-dir", str(demo_dir), "--format", "json")
    assert j.returncode == 0, j.stderr
    body = orjson.loads(j.stdout)
    assert body["columns"] == [{"name": "DeviceName", "type": "string"}, {"name": "n", "type": "long"}]
    assert len(body["rows"]) == 3 and all(n > 0 for _, n in body["rows"])
    c = _quarry(q, "--data-dir", str(demo_dir), "--format", "csv")
    assert c.returncode == 0, c.stderr
    lines = c.stdout.splitlines()
    assert lines[0] == "DeviceName,n"
    assert [line.split(",") for line in lines[1:]] == [[d, str(n)] for d, n in body["rows"]]
    t = _quarry(q, "--data-dir", str(demo_dir))
    assert t.returncode == 0, t.stderr
    assert t.stdout.splitlines()[0].split() == ["DeviceName", "n"]
    assert body["rows"][0][0] in t.stdout
    usb = _quarry('DeviceEvents | where ActionType == "UsbDriveMounted" | count', "--data-dir",
                  str(demo_dir), "--format", "json")
    assert usb.returncode == 0, usb.stderr
    assert orjson.loads(usb.stdout)["rows"][0][0] >= 1  # the demo's USB scenario


def test_cli_query_diagnostics(demo_dir: Path) -> None:
    p = _quarry("DeviceProcessEvnts | take 1", "--data-dir", str(demo_dir))
    assert p.returncode == 1
    assert "1:1: [unknown_table]" in p.stderr and "^^^" in p.stderr and "DeviceProcessEvents" in p.stderr
    j = _quarry("DeviceProcessEvnts | take 1", "--data-dir", str(demo_dir), "--format", "json")
    body = orjson.loads(j.stdout)
    assert j.returncode == 1 and body["ok"] is False and body["errors"][0]["code"] == "unknown_table"
    missing = _quarry("DeviceInfo", "--data-dir", str(demo_dir / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_cli_query_refuses_a_directory_that_is_not_quarry_data(tmp_path: Path) -> None:
    """A mistyped --data-dir pointing at some other directory (a home folder) gets an error and
    is left as it was: opening storage there would create _wal/ and a folder per table."""
    (tmp_path / "notes.txt").write_text("mine")
    p = _quarry("DeviceInfo | count", "--data-dir", str(tmp_path))
    assert p.returncode == 2 and "not a Quarry data directory" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt"]
