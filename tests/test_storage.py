"""Storage engine behaviour on a real data directory: WAL, tail, Parquet, views, retention."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schema.catalog import default_catalog
from server.storage import Backpressure, BatchError
from server.storage.wal import encode_record, list_segments, segment_path
from tests.support.clock import ManualClock
from tests.test_storage_support import (
    TABLE,
    open_storage,
    process_batch,
    report_ids,
    settings_for,
)

NOW = datetime(2025, 3, 10, 12, 0, 0)


def parquet_files(data_dir: Path, table: str = TABLE) -> list[Path]:
    return sorted(p for p in (data_dir / table).rglob("*.parquet") if not p.name.startswith("."))


# ---------------------------------------------------------------- views and the contract


def test_view_columns_follow_the_contract_even_without_data(tmp_path: Path) -> None:
    catalog = default_catalog()
    with open_storage(tmp_path) as st:
        con = st.connect()
        for name in (TABLE, "DeviceTvmSoftwareInventory"):
            tbl = catalog.tables[name]
            described = con.execute(f'DESCRIBE "{name}"').fetchall()
            got = [(r[0], r[1]) for r in described]
            want = [(c.name, c.type.duckdb) for c in tbl.columns]
            want += [("_ingestion_time", "TIMESTAMP"), ("_extra", "JSON"), ("date", "DATE")]
            assert got == want
            assert con.execute(f'SELECT count(*) FROM "{name}"').fetchone() == (0,)
        # Every catalog table has its view.
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert set(catalog.tables) <= views


def test_appended_rows_are_readable_within_one_second(tmp_path: Path) -> None:
    with open_storage(tmp_path, flush_max_age_s=0.2) as st:
        for i in range(5):
            ts = datetime.utcnow()
            st.append(TABLE, process_batch([i], [ts]))
            returned = time.monotonic()
            con = st.connect()
            row = con.execute(f'SELECT ReportId FROM "{TABLE}" WHERE ReportId = ?', [i]).fetchone()
            assert row == (i,)
            assert time.monotonic() - returned < 1.0
            con.close()
            time.sleep(0.15)  # let the age-based flusher move some of them to Parquet
        # Whether in the tail or in Parquet, each row is there exactly once.
        assert report_ids(st) == list(range(5))
    assert parquet_files(tmp_path)


def test_ingestion_time_is_stamped_and_extra_and_sql_looking_text_pass_through(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    evil = "x'); DROP TABLE t; --"
    with open_storage(tmp_path, clock=clock) as st:
        batch = process_batch(
            [1, 2], [NOW - timedelta(hours=1)] * 2, extra=['{"MachineGroup": "G1"}', None],
            command_lines=[evil, 'cmd "quoted"'],
        )
        assert st.append(TABLE, batch).accepted == 2
        clock.advance(minutes=5)
        st.append(TABLE, process_batch([3], [NOW]))
        for flushed in (False, True):
            if flushed:
                st.flush()
            con = st.connect()
            rows = con.execute(
                f'SELECT ReportId, _ingestion_time, _extra->>\'MachineGroup\', ProcessCommandLine, '
                f'AdditionalFields->>\'k\' FROM "{TABLE}" ORDER BY ReportId'
            ).fetchall()
            assert rows == [
                (1, NOW, "G1", evil, "1"),
                (2, NOW, None, 'cmd "quoted"', "1"),
                (3, NOW + timedelta(minutes=5), None, "cmd 3", "1"),
            ]
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 't'").fetchone() == (0,)


def test_bad_batches_are_refused_and_write_nothing(tmp_path: Path) -> None:
    with open_storage(tmp_path) as st:
        with pytest.raises(BatchError, match=r"_extra: row 1 is not JSON"):
            st.append(TABLE, process_batch([1, 2], [NOW, NOW], extra=['{"a":1}', "{not json"]))
        with pytest.raises(BatchError, match="NoSuchColumn"):
            st.append(TABLE, process_batch([1], [NOW]).append_column("NoSuchColumn", pa.array([1])))
        with pytest.raises(BatchError, match="ReportId"):
            st.append(TABLE, process_batch([1], [NOW]).set_column(4, "ReportId", pa.array(["abc"])))
        with pytest.raises(BatchError, match="unknown table"):
            st.append("NoSuchTable", process_batch([1], [NOW]))
        assert report_ids(st) == []
        assert st.unflushed_rows == 0
    assert not parquet_files(tmp_path)


def test_types_are_conformed(tmp_path: Path) -> None:
    """Nanosecond and zoned datetimes (Defender's 7 digits) and int32 ids are stored as typed."""
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        ts = pa.array([1_741_608_000_123_456_789], pa.timestamp("ns", tz="UTC"))
        batch = pa.table({"Timestamp": ts, "DeviceId": ["d"], "ReportId": pa.array([7], pa.int32())})
        st.append(TABLE, batch)
        row = st.connect().execute(f'SELECT Timestamp, ReportId FROM "{TABLE}"').fetchone()
        assert row == (datetime(2025, 3, 10, 12, 0, 0, 123456), 7)


# ---------------------------------------------------------------- Parquet layout


def test_flush_writes_sorted_zstd_hive_partitions_and_keeps_rows_once(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    day1 = datetime(2025, 3, 8, 23, 0)
    day2 = datetime(2025, 3, 9, 1, 0)
    # Out of order on purpose: the files must come out sorted by Timestamp.
    stamps = [day2 + timedelta(minutes=30), day1 + timedelta(minutes=50), day2, day1]
    with open_storage(tmp_path, clock=clock) as st:
        st.append(TABLE, process_batch([1, 2, 3, 4], stamps))
        st.append("DeviceTvmSoftwareInventory", pa.table({"DeviceId": ["d"], "SoftwareName": ["x"]}))
        st.flush()
        assert report_ids(st) == [1, 2, 3, 4]
        assert st.unflushed_rows == 0
        assert not list_segments(tmp_path / "_wal")[:-1]  # only the open segment remains
    files = parquet_files(tmp_path)
    assert [f.parent.name for f in files] == ["date=2025-03-08", "date=2025-03-09"]
    for f in files:
        meta = pq.ParquetFile(f).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        ts = pq.read_table(f).column("Timestamp").to_pylist()
        assert ts == sorted(ts)
    inv = parquet_files(tmp_path, "DeviceTvmSoftwareInventory")
    # No Timestamp: partitioned by the ingestion date.
    assert [f.parent.name for f in inv] == [f"date={NOW.date().isoformat()}"]


def test_compaction_merges_small_files_and_keeps_every_row(tmp_path: Path) -> None:
    base = datetime(2025, 3, 9, 0, 0)
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        expected = []
        for k in range(6):
            ids = list(range(k * 100, k * 100 + 100))
            # Two dates per flush, interleaved times across flushes.
            stamps = [base + timedelta(hours=(i * 7) % 40, seconds=k) for i in range(100)]
            st.append(TABLE, process_batch(ids, stamps))
            st.flush()
            expected += ids
        before = parquet_files(tmp_path)
        assert len(before) == 12
        con = st.connect()
        assert st.compact() == 10
        # A connection opened before compaction still reads its rows: old files outlive it.
        assert sorted(r[0] for r in con.execute(f'SELECT ReportId FROM "{TABLE}"').fetchall()) == expected
        assert report_ids(st) == expected
        dup = st.connect().execute(
            f'SELECT count(*) FROM (SELECT ReportId FROM "{TABLE}" GROUP BY 1 HAVING count(*) > 1)'
        ).fetchone()
        assert dup == (0,)
    after = parquet_files(tmp_path)
    assert len(after) == 2 and all(p.name.startswith("c") for p in after)
    for f in after:
        ts = pq.read_table(f).column("Timestamp").to_pylist()
        assert ts == sorted(ts)
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == expected


def test_interrupted_compaction_is_finished_or_undone_at_start(tmp_path: Path) -> None:
    base = datetime(2025, 3, 9, 0, 0)
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        for k in range(3):
            st.append(TABLE, process_batch([k], [base]))
            st.flush()
    ddir = tmp_path / TABLE / "date=2025-03-09"
    sources = sorted(p.name for p in ddir.glob("w*.parquet"))
    # Case 1: crash after the merged file landed but before its sources were deleted.
    merged = pa.concat_tables([pq.read_table(ddir / s) for s in sources])
    pq.write_table(merged, ddir / "cdeadbeef.parquet")
    intent = {"target": "cdeadbeef.parquet", "sources": sources}
    (ddir / "_compact-deadbeef.done").write_text(json.dumps(intent))
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [0, 1, 2]
    assert sorted(p.name for p in ddir.iterdir()) == ["cdeadbeef.parquet"]
    # Case 2: crash while the merged file was still being written.
    (ddir / ".cfeed.parquet.tmp").write_bytes(b"PAR1 half written")
    (ddir / "_compact-feed.json").write_text('{"target": "cfeed.parquet", "sources": ["cdeadbeef.parquet"]}')
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [0, 1, 2]
    assert sorted(p.name for p in ddir.iterdir()) == ["cdeadbeef.parquet"]
    # Case 3: the merged file is in place but the merge was not committed: it is the one undone.
    shutil.copy(ddir / "cdeadbeef.parquet", ddir / "cfeed.parquet")
    (ddir / "_compact-feed.json").write_text('{"target": "cfeed.parquet", "sources": ["cdeadbeef.parquet"]}')
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [0, 1, 2]
    assert sorted(p.name for p in ddir.iterdir()) == ["cdeadbeef.parquet"]
    # Case 4: two committed merges chained (the first merge's output merged again), listed in
    # any order: every source of both goes, only the last output stays.
    shutil.copy(ddir / "cdeadbeef.parquet", ddir / "cfinal.parquet")
    (ddir / "_compact-a.done").write_text('{"target": "cfinal.parquet", "sources": ["cmid.parquet"]}')
    (ddir / "_compact-b.done").write_text(
        '{"target": "cmid.parquet", "sources": ["cdeadbeef.parquet"]}'
    )
    shutil.copy(ddir / "cdeadbeef.parquet", ddir / "cmid.parquet")
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [0, 1, 2]
    assert sorted(p.name for p in ddir.iterdir()) == ["cfinal.parquet"]


def test_date_filter_prunes_files(tmp_path: Path) -> None:
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        for d in range(1, 5):
            st.append(TABLE, process_batch([d], [datetime(2025, 3, d, 10, 0)]))
        st.flush()
        con = st.connect()
        plan = con.execute(
            f"EXPLAIN ANALYZE SELECT ReportId FROM \"{TABLE}\" WHERE date >= DATE '2025-03-04'"
        ).fetchall()[0][1]
        assert con.execute(
            f"SELECT ReportId FROM \"{TABLE}\" WHERE date >= DATE '2025-03-04'"
        ).fetchall() == [(4,)]
    scanning = re.search(r"Scanning Files: (\d+)/(\d+)", plan)
    assert scanning is not None, plan
    assert scanning.groups() == ("1", "4")
    assert "Total Files Read: 1" in plan


# ---------------------------------------------------------------- WAL replay


def test_unflushed_rows_are_replayed_once_after_restart(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    with open_storage(tmp_path, clock=clock) as st:
        st.append(TABLE, process_batch([1, 2], [NOW, NOW - timedelta(days=1)]))
        wal = tmp_path / "_wal"
        saved = {p.name: p.read_bytes() for _, p in list_segments(wal)}
        st.flush()
    # Crash after the Parquet files landed but before the segment was deleted: put it back.
    for name, data in saved.items():
        (tmp_path / "_wal" / name).write_bytes(data)
    with open_storage(tmp_path, clock=clock) as st:
        assert report_ids(st) == [1, 2]
    # Crash mid-flush: one date's file written, the other not.
    for name, data in saved.items():
        (tmp_path / "_wal" / name).write_bytes(data)
    seg_seq = list_segments(tmp_path / "_wal")[0][0]
    (tmp_path / TABLE / "date=2025-03-09" / f"w{seg_seq:012d}.parquet").unlink()
    with open_storage(tmp_path, clock=clock) as st:
        assert report_ids(st) == [1, 2]


def test_torn_wal_tail_is_ignored_and_whole_records_replayed(tmp_path: Path) -> None:
    wal = tmp_path / "_wal"
    wal.mkdir(parents=True)
    with open_storage(tmp_path / "scratch", clock=ManualClock(NOW)) as scratch:
        ok1, _ = scratch._prepare(default_catalog().tables[TABLE], process_batch([1], [NOW]), NOW)
        ok2, _ = scratch._prepare(default_catalog().tables[TABLE], process_batch([2], [NOW]), NOW)
    rec1 = b"".join(bytes(b) for b in encode_record(TABLE, ok1))
    rec2 = b"".join(bytes(b) for b in encode_record(TABLE, ok2))
    segment_path(wal, 7).write_bytes(rec1 + rec2[: len(rec2) // 2])
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [1]
        st.append(TABLE, process_batch([3], [NOW]))
        assert report_ids(st) == [1, 3]
    # Segment numbers are never reused, even after every segment was deleted.
    assert (wal / "LAST_SEGMENT").read_text().strip() not in {"", "7"}
    assert int((wal / "LAST_SEGMENT").read_text()) > 7


def test_concurrent_appends_share_fsyncs_and_lose_nothing(tmp_path: Path) -> None:
    with open_storage(tmp_path, clock=ManualClock(NOW), flush_max_rows=700) as st:
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            try:
                for b in range(20):
                    ids = [w * 10_000 + b * 50 + i for i in range(50)]
                    st.append(TABLE, process_batch(ids, [NOW] * 50))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        ids = report_ids(st)
        assert len(ids) == 6 * 20 * 50 == len(set(ids))
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert len(report_ids(st)) == 6000


# ---------------------------------------------------------------- retention and back-pressure


def test_retention_with_a_controlled_clock(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    with open_storage(tmp_path, clock=clock, retention_days=30) as st:
        old = NOW - timedelta(days=31)
        res = st.append(TABLE, process_batch([1, 2, 3], [old, NOW - timedelta(days=29), NOW]))
        assert (res.accepted, res.expired) == (2, 1)
        assert st.append(TABLE, process_batch([9], [old])).accepted == 0
        st.flush()
        assert report_ids(st) == [2, 3]
        days = sorted(p.parent.name for p in parquet_files(tmp_path))
        assert days == ["date=2025-02-09", "date=2025-03-10"]

        clock.advance(days=1)  # the cutoff is now 2025-02-09 12:00: that day is not over
        assert st.apply_retention() == 0
        assert report_ids(st) == [2, 3]
        clock.advance(days=1)  # 2025-02-09 is now wholly older than 30 days
        assert st.apply_retention() == 1
        assert report_ids(st) == [3]
        clock.advance(days=28)
        assert st.apply_retention() == 0
        clock.advance(days=1)
        assert st.apply_retention() == 1
        assert report_ids(st) == []
    assert not parquet_files(tmp_path)
    assert not (tmp_path / TABLE / "date=2025-02-09").exists()


def test_backpressure_when_the_backlog_is_over_the_bound(tmp_path: Path) -> None:
    with open_storage(tmp_path, clock=ManualClock(NOW), max_unflushed_rows=100) as st:
        # Keep the background flusher from draining the backlog while we probe it.
        with st._maint_lock:
            st.append(TABLE, process_batch(list(range(80)), [NOW] * 80))
            with pytest.raises(Backpressure) as info:
                st.append(TABLE, process_batch(list(range(80, 101)), [NOW] * 21))
            assert info.value.retry_after_s >= 1
            assert st.unflushed_rows == 80
            assert report_ids(st) == list(range(80))  # the refused batch wrote nothing
        deadline = time.monotonic() + 10
        while st.unflushed_rows and time.monotonic() < deadline:
            time.sleep(0.05)  # the background flusher drains the backlog on its own
        assert st.unflushed_rows == 0
        assert st.append(TABLE, process_batch(list(range(80, 101)), [NOW] * 21)).accepted == 21
        assert report_ids(st) == list(range(101))


# ---------------------------------------------------------------- lockdown


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "COPY (SELECT 1) TO '{outside}/out.csv'",
        "ATTACH '{outside}/other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "LOAD '{outside}/evil.duckdb_extension'",
        "SET enable_external_access = true",
        "SET allowed_directories = ['/']",
        "SET lock_configuration = false",
        "SET memory_limit = '100TB'",
        "SELECT * FROM read_parquet('{data}/metadata.sqlite')",
        "SELECT * FROM read_text('{data}/_wal/LAST_SEGMENT')",
    ],
)
def test_connections_are_locked_down(tmp_path: Path, sql: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    with open_storage(data, clock=ManualClock(NOW)) as st:
        st.append(TABLE, process_batch([1], [NOW]))
        st.flush()
        st.append(TABLE, process_batch([2], [NOW]))
        con = st.connect()
        with pytest.raises(duckdb.Error):
            con.execute(sql.format(outside=outside, data=data)).fetchall()
        assert list(outside.iterdir()) == []
        # The views keep working on the same connection, over Parquet and tail.
        assert con.execute(f'SELECT count(*) FROM "{TABLE}"').fetchone() == (2,)
        assert con.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)


# ---------------------------------------------------------------- app wiring


def test_app_lifespan_starts_and_closes_storage(tmp_path: Path) -> None:
    from server.app import create_app

    app = create_app(settings_for(tmp_path))

    async def run() -> None:
        async with app.router.lifespan_context(app):
            st = app.state.storage
            await st.append_async(TABLE, process_batch([5], [datetime.utcnow()]))
            assert report_ids(st) == [5]
        with pytest.raises(Exception, match="closed"):
            st.connect()

    asyncio.run(run())
    assert [p.parent.name for p in parquet_files(tmp_path)] == [f"date={date.today().isoformat()}"]


def test_start_removes_stale_temp_files(tmp_path: Path) -> None:
    ddir = tmp_path / TABLE / "date=2025-03-09"
    ddir.mkdir(parents=True)
    (ddir / ".w000000000003.parquet.tmp").write_bytes(b"junk")
    (tmp_path / "_tmp").mkdir()
    (tmp_path / "_tmp" / "spill.bin").write_bytes(b"junk")
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == []
    assert list(ddir.iterdir()) == []
    shutil.rmtree(tmp_path / "_tmp")


def test_a_data_directory_is_opened_by_one_storage_at_a_time(tmp_path: Path) -> None:
    from server.storage import StorageLocked

    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        st.append(TABLE, process_batch([1], [NOW]))
        locked = pytest.raises(StorageLocked, match=r"in use by another Quarry process \(pid \d+\)")
        with locked, open_storage(tmp_path, clock=ManualClock(NOW)):
            pass
        # The refused second instance touched nothing: the row is still in the tail, once.
        assert report_ids(st) == [1]
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [1]


def test_tail_chunks_are_merged_without_losing_or_repeating_rows(tmp_path: Path) -> None:
    from server.storage.base import TAIL_MERGE_CHUNKS

    appends = TAIL_MERGE_CHUNKS * 2 + 5
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        for k in range(appends):
            st.append(TABLE, process_batch([k * 10 + i for i in range(10)], [NOW] * 10))
            if k == TAIL_MERGE_CHUNKS + 3:
                assert report_ids(st) == list(range((k + 1) * 10))
        (chunks,) = st._tail[TABLE].values()
        assert len(chunks) == 2 + 5  # two merged runs, then the five latest appends
        assert report_ids(st) == list(range(appends * 10))
        st.flush()
        assert report_ids(st) == list(range(appends * 10))


def test_an_unreadable_parquet_file_is_set_aside_not_fatal(tmp_path: Path) -> None:
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        st.append(TABLE, process_batch([1], [NOW]))
    ddir = tmp_path / TABLE / "date=2025-03-10"
    (ddir / "w000000000099.parquet").write_bytes(b"not parquet at all")
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [1]
    assert (tmp_path / "_quarantine" / TABLE / "date=2025-03-10" / "w000000000099.parquet").exists()
    assert not (ddir / "w000000000099.parquet").exists()


def test_wal_records_that_no_longer_fit_are_kept_aside_not_dropped(tmp_path: Path) -> None:
    wal = tmp_path / "_wal"
    wal.mkdir(parents=True)
    with open_storage(tmp_path / "scratch", clock=ManualClock(NOW)) as scratch:
        good, _ = scratch._prepare(default_catalog().tables[TABLE], process_batch([1], [NOW]), NOW)
    stray = pa.table({"Timestamp": pa.array([NOW], pa.timestamp("us")), "Gone": ["x"]})
    frames = [*encode_record("RetiredTable", stray), *encode_record(TABLE, good)]
    segment_path(wal, 3).write_bytes(b"".join(bytes(b) for b in frames))
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [1]
    kept = tmp_path / "_quarantine" / "_wal" / segment_path(wal, 3).name
    assert kept.read_bytes() == b"".join(bytes(b) for b in frames)


def test_append_many_is_one_unit_refused_whole_and_replayed_once(tmp_path: Path) -> None:
    net = "DeviceNetworkEvents"

    def net_batch(ids: list[int]) -> pa.Table:
        return pa.table({"Timestamp": pa.array([NOW] * len(ids), pa.timestamp("us")),
                         "DeviceId": pa.array(["dev-1"] * len(ids)),
                         "ReportId": pa.array(ids, pa.int64())})

    clock = ManualClock(NOW)
    with open_storage(tmp_path, clock=clock, max_unflushed_rows=10) as st:
        got = st.append_many({TABLE: process_batch([1, 2], [NOW, NOW]), net: net_batch([7])})
        assert {t: r.accepted for t, r in got.items()} == {TABLE: 2, net: 1}
        # 3 + 2 would fit, 3 + 2 + 6 does not: neither table takes anything.
        with pytest.raises(Backpressure):
            st.append_many({net: net_batch([8, 9]), TABLE: process_batch(list(range(3, 9)), [NOW] * 6)})
        assert (report_ids(st), report_ids(st, net)) == ([1, 2], [7])
        saved = {p.name: p.read_bytes() for _, p in list_segments(tmp_path / "_wal")}
    # Killed before any flush: the one WAL write holding both tables is replayed once.
    shutil.rmtree(tmp_path)
    (tmp_path / "_wal").mkdir(parents=True)
    for name, data in saved.items():
        (tmp_path / "_wal" / name).write_bytes(data)
    with open_storage(tmp_path, clock=clock) as st:
        assert (report_ids(st), report_ids(st, net)) == ([1, 2], [7])
