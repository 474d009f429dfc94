"""Storage never writes what it cannot read back, and a table poisoned by an earlier version (a
Parquet file or WAL segment with strings that are not UTF-8) is repaired, never a permanent
outage: by compaction on its own, by ``quarry repair``, and on WAL replay."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schema.catalog import default_catalog
from server import cli
from server.app import create_app
from server.storage import BatchError, utc_now
from server.storage.wal import encode_record, segment_path
from tests.support.clock import ManualClock
from tests.support.live import LiveServer
from tests.test_storage_support import TABLE, open_storage, process_batch, report_ids

NOW = datetime(2025, 3, 10, 12, 0, 0)
BAD = b"C:\\Users\\b\xe9a\\x.exe \xff"  # Latin-1 bytes, as a careless agent sends them
KEY = "repair-admin-key"


def with_invalid_utf8(t: pa.Table, column: str, row: int) -> pa.Table:
    """``t`` with one value of a string column replaced by bytes that are not UTF-8, built
    without validation (as the NDJSON fast path of earlier versions produced it)."""
    values = [None if v is None else v.encode() for v in t[column].to_pylist()]
    values[row] = BAD
    binary = pa.array(values, pa.binary())
    bad = pa.Array.from_buffers(pa.string(), len(binary), binary.buffers(), binary.null_count)
    return t.set_column(t.schema.get_field_index(column), column, bad)


def poisoned_dir(data_dir: Path, now: datetime = NOW) -> Path:
    """Two flushed files of one day (ids 1-3 and 4-6); the second rewritten the way an earlier
    version wrote it, with one command line that is not UTF-8. Returns that file."""
    with open_storage(data_dir, clock=ManualClock(now)) as st:
        st.append(TABLE, process_batch([1, 2, 3], [now] * 3))
        st.flush()
        st.append(TABLE, process_batch([4, 5, 6], [now] * 3))
        st.flush()
    files = sorted((data_dir / TABLE).glob("date=*/w*.parquet"))
    assert len(files) == 2
    victim = files[1]
    table = pq.read_table(victim)
    pq.write_table(with_invalid_utf8(table, "ProcessCommandLine", 1), victim, compression="zstd")
    return victim


def command_lines(st_connect: duckdb.DuckDBPyConnection) -> list[str]:
    rows = st_connect.execute(f'SELECT ProcessCommandLine FROM "{TABLE}" ORDER BY ReportId')
    return [r[0] for r in rows.fetchall()]


def test_append_refuses_invalid_utf8_before_the_wal(tmp_path: Path) -> None:
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        st.append(TABLE, process_batch([1], [NOW]))
        seg = st._wal.current
        assert seg is not None
        size = seg.size
        bad = with_invalid_utf8(process_batch([2, 3], [NOW] * 2), "ProcessCommandLine", 1)
        with pytest.raises(BatchError, match="UTF8"):
            st.append(TABLE, bad)
        assert seg.size == size, "nothing may reach the WAL"
        assert report_ids(st) == [1]


def test_compaction_repairs_a_poisoned_file_and_keeps_every_row(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    victim = poisoned_dir(tmp_path)
    original = victim.read_bytes()
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        con = st.connect()
        with pytest.raises(duckdb.InvalidInputException, match="not valid UTF8"):
            command_lines(con)  # the outage an earlier version left behind
        with caplog.at_level(logging.ERROR, logger="quarry"):
            st.compact()  # used to fail on every cycle
        assert any("cannot be read back" in r.getMessage() for r in caplog.records)
        assert not list(victim.parent.glob("_compact-*")), "a failed merge must leave no intent"
        lines = command_lines(st.connect())
        assert len(lines) == 6 and lines[4] == BAD.decode(errors="replace")
        assert "\ufffd" in lines[4]
        st.compact()  # the next cycle merges what is now readable
        assert st.stats()["tables"][TABLE]["files"] == 1  # the sources go after a grace period
        assert report_ids(st) == [1, 2, 3, 4, 5, 6]
    quarantined = tmp_path / "_quarantine" / victim.relative_to(tmp_path)
    assert quarantined.read_bytes() == original
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert report_ids(st) == [1, 2, 3, 4, 5, 6]


def test_quarry_repair_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = poisoned_dir(tmp_path)
    with open_storage(tmp_path, clock=ManualClock(NOW)):
        # Never under a running server: it holds the data directory's lock.
        assert cli.main(["repair", "--data-dir", str(tmp_path)]) == 2
        assert "stop it first" in capsys.readouterr().err
    assert cli.main(["repair", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"repaired {victim.relative_to(tmp_path)}: 3 rows kept" in out
    assert "checked 2 Parquet files, repaired 1" in out
    assert str(tmp_path) not in out  # paths relative to the data directory
    assert (tmp_path / "_quarantine" / victim.relative_to(tmp_path)).exists()
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        assert len(command_lines(st.connect())) == 6
    assert cli.main(["repair", "--data-dir", str(tmp_path)]) == 0
    assert "repaired 0" in capsys.readouterr().out


def test_wal_segment_from_an_earlier_version_is_replayed_readable(tmp_path: Path) -> None:
    with open_storage(tmp_path / "scratch", clock=ManualClock(NOW)) as scratch:
        ok, _ = scratch._prepare(default_catalog().tables[TABLE],
                                 process_batch([1, 2], [NOW] * 2), NOW)
    wal = tmp_path / "_wal"
    wal.mkdir(parents=True)
    frames = encode_record(TABLE, with_invalid_utf8(ok, "ProcessCommandLine", 0))
    segment_path(wal, 5).write_bytes(b"".join(bytes(b) for b in frames))
    with open_storage(tmp_path, clock=ManualClock(NOW)) as st:
        lines = command_lines(st.connect())  # replayed and flushed to Parquet: readable
        assert lines == [BAD.decode(errors="replace"), "cmd 2"]


def test_query_error_on_a_poisoned_file_hides_server_paths(tmp_path: Path) -> None:
    """Over HTTP, before any repair: a 4xx that names the file relative to the data directory
    and points to ``quarry repair``, never the server's absolute path."""
    from server.settings import Settings

    poisoned_dir(tmp_path, utc_now())  # within the retention of the real clock
    settings = Settings(data_dir=tmp_path, admin_key=KEY, scheduler_enabled=False,
                        compaction_interval_s=3600.0)
    with LiveServer(create_app(settings)) as srv, httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        r = c.post("/api/query", json={"query": f"{TABLE} | project ProcessCommandLine"})
        assert 400 <= r.status_code < 500, r.text
        assert str(tmp_path) not in r.text
        assert "quarry repair" in r.text and f"{TABLE}/date=" in r.text
