"""The synthetic data generator, the USB scenario, bulk rows and `quarry demo`.

The generated tables are checked with DuckDB SQL over the Arrow tables (process chains, joins,
uniqueness), the loaded dataset through the real ``Storage`` and, end to end, through the real
server started by ``quarry demo``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from schema.catalog import default_catalog
from server.demo import (
    CP_COMMAND_LINE,
    LEAK_TARGET,
    VOLUME,
    arrow_schema,
    bulk_process_events,
    generate,
    iter_bulk_process_events,
    usb_scenario,
)
from server.demo.load import DemoError, load_demo, marker_path
from server.settings import Settings
from tests.support.live import free_port

CATALOG = default_catalog()
START = datetime(2024, 6, 3, 0, 0, 0)  # a Monday
END = START + timedelta(days=2)
DEVICES = 6
ACTION_TYPES = json.loads(Path("/work/shared/reference/action_types.json").read_text()) if Path(
    "/work/shared/reference/action_types.json").exists() else None


@pytest.fixture(scope="module")
def data() -> dict[str, pa.Table]:
    return generate(CATALOG, start=START, end=END, devices=DEVICES, seed=7, events_per_device_per_day=120)


@pytest.fixture(scope="module")
def db(data: dict[str, pa.Table]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    for name, table in data.items():
        con.register(name, table)
    yield con
    con.close()


def q(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None) -> list[tuple]:
    return con.execute(sql, params or []).fetchall()


# -- schema conformance ------------------------------------------------------------------------
def test_every_catalog_table_has_its_exact_schema_and_rows(data: dict[str, pa.Table]) -> None:
    assert set(data) == set(CATALOG.tables)
    for name, table in CATALOG.tables.items():
        got = data[name]
        assert got.column_names == table.column_names, name
        for col, fld in zip(table.columns, got.schema, strict=True):
            assert fld.type == col.type.arrow, f"{name}.{col.name}: {fld.type} != {col.type.arrow}"
        assert got.schema == arrow_schema(table)
        assert got.num_rows > 0, f"{name} is empty"


def test_timestamps_are_naive_microseconds_inside_the_window(data: dict[str, pa.Table]) -> None:
    for name, table in CATALOG.tables.items():
        if not table.has_timestamp:
            continue
        ts = data[name].column("Timestamp")
        assert ts.type == pa.timestamp("us") and ts.type.tz is None
        assert ts.null_count == 0, name
        lo, hi = min(ts.to_pylist()), max(ts.to_pylist())
        assert lo >= START and hi < END, f"{name}: {lo}..{hi} outside the window"


def test_event_rows_are_unique_by_device_timestamp_reportid(db: duckdb.DuckDBPyConnection) -> None:
    for table in CATALOG.tables.values():
        if not table.is_event_table or "ReportId" not in table.column_names:
            continue
        dupes = q(db, f'SELECT count(*) - count(DISTINCT (DeviceId, "Timestamp", ReportId)) FROM "{table.name}"')
        assert dupes == [(0,)], table.name
        assert q(db, f'SELECT count(*) FROM "{table.name}" WHERE DeviceId IS NULL OR ReportId IS NULL') == [(0,)]


def test_json_columns_hold_json_text(data: dict[str, pa.Table]) -> None:
    json_like = {"AdditionalFields", "LoggedOnUsers", "IPAddresses", "DnsAddresses", "DefaultGateways",
                 "ConnectedNetworks", "DeviceManualTags", "DeviceDynamicTags", "CrlDistributionPointUrls"}
    checked = 0
    for name, table in CATALOG.tables.items():
        for col in table.columns:
            if col.type.name != "dynamic" and col.name not in json_like:
                continue
            for v in data[name].column(col.name).to_pylist():
                if v is not None:
                    orjson.loads(v)
                    checked += 1
    assert checked > 1000


def test_action_types_come_from_the_reference(db: duckdb.DuckDBPyConnection) -> None:
    if ACTION_TYPES is None:
        pytest.skip("shared reference not available")
    for name, table in CATALOG.tables.items():
        if "ActionType" not in table.column_names or name not in ACTION_TYPES:
            continue
        allowed = set(ACTION_TYPES[name]["values"])
        seen = {r[0] for r in q(db, f'SELECT DISTINCT ActionType FROM "{name}"')}
        assert seen and seen <= allowed, f"{name}: {seen - allowed}"


def test_core_columns_are_filled(db: duckdb.DuckDBPyConnection) -> None:
    must = {
        "DeviceProcessEvents": ["FileName", "FolderPath", "SHA256", "ProcessId", "ProcessCommandLine",
                                "ProcessCreationTime", "AccountName", "InitiatingProcessFileName",
                                "InitiatingProcessId", "InitiatingProcessCommandLine",
                                "InitiatingProcessCreationTime", "InitiatingProcessParentFileName"],
        "DeviceNetworkEvents": ["RemoteIP", "RemotePort", "LocalIP", "Protocol", "InitiatingProcessFileName"],
        "DeviceFileEvents": ["FileName", "FolderPath", "SHA256", "InitiatingProcessFileName"],
        "DeviceLogonEvents": ["LogonType", "AccountName", "InitiatingProcessFileName"],
        "DeviceInfo": ["DeviceName", "OSPlatform", "PublicIP", "LoggedOnUsers", "MachineGroup"],
        "DeviceNetworkInfo": ["MacAddress", "IPAddresses"],
    }
    for table, cols in must.items():
        for col in cols:
            where = f'"{col}" IS NULL'
            if col == "InitiatingProcessParentFileName":
                where += " AND InitiatingProcessId <> 1"  # launchd/systemd (pid 1) have no parent
            nulls = q(db, f'SELECT count(*) FROM "{table}" WHERE {where}')[0][0]
            assert nulls == 0, f"{table}.{col} has {nulls} nulls"


def test_fleet_mixes_platforms_and_device_tables_match_events(db: duckdb.DuckDBPyConnection) -> None:
    platforms = {r[0] for r in q(db, "SELECT DISTINCT OSPlatform FROM DeviceInfo")}
    assert "macOS" in platforms and "Linux" in platforms and platforms & {"Windows10", "Windows11"}
    assert q(db, "SELECT count(DISTINCT DeviceId) FROM DeviceInfo") == [(DEVICES,)]
    # One name per device, the same in DeviceInfo and every event table.
    for table in ("DeviceProcessEvents", "DeviceNetworkEvents", "DeviceFileEvents", "DeviceLogonEvents", "DeviceEvents"):
        bad = q(db, f"""SELECT count(*) FROM "{table}" e
                        LEFT JOIN (SELECT DISTINCT DeviceId, DeviceName FROM DeviceInfo) i USING (DeviceId)
                        WHERE i.DeviceName IS NULL OR i.DeviceName <> e.DeviceName""")
        assert bad == [(0,)], table
    # Every LocalIP a device uses is one DeviceNetworkInfo reports for it.
    bad = q(db, """
        WITH ips AS (SELECT DISTINCT DeviceId, json_extract_string(a.value, '$.IPAddress') AS ip
                     FROM DeviceNetworkInfo, json_each(IPAddresses) a)
        SELECT count(*) FROM DeviceNetworkEvents n LEFT JOIN ips ON ips.DeviceId = n.DeviceId AND ips.ip = n.LocalIP
        WHERE ips.ip IS NULL""")
    assert bad == [(0,)]


def test_every_kind_of_event_is_present(db: duckdb.DuckDBPyConnection) -> None:
    for table, action in [("DeviceProcessEvents", "ProcessCreated"), ("DeviceFileEvents", "FileCreated"),
                          ("DeviceNetworkEvents", "ConnectionSuccess"), ("DeviceLogonEvents", "LogonSuccess"),
                          ("DeviceLogonEvents", "LogonFailed"), ("DeviceRegistryEvents", "RegistryValueSet"),
                          ("DeviceImageLoadEvents", "ImageLoaded"), ("DeviceEvents", "UsbDriveMounted")]:
        assert q(db, f'SELECT count(*) FROM "{table}" WHERE ActionType = ?', [action])[0][0] > 0, (table, action)


# -- process chains ----------------------------------------------------------------------------
def test_child_initiating_columns_match_the_parent_process_row(db: duckdb.DuckDBPyConnection) -> None:
    total, matched, mismatched = q(db, """
        SELECT count(*),
               count(p.ProcessId),
               count_if(p.ProcessId IS NOT NULL AND NOT (
                    c.InitiatingProcessFileName = p.FileName
                AND c.InitiatingProcessFolderPath = p.FolderPath
                AND c.InitiatingProcessCommandLine = p.ProcessCommandLine
                AND c.InitiatingProcessSHA256 = p.SHA256
                AND c.InitiatingProcessAccountName = p.AccountName
                AND c.InitiatingProcessParentId = p.InitiatingProcessId
                AND c.InitiatingProcessParentFileName = p.InitiatingProcessFileName
                AND c.InitiatingProcessParentCreationTime = p.InitiatingProcessCreationTime))
        FROM DeviceProcessEvents c
        LEFT JOIN DeviceProcessEvents p
          ON p.DeviceId = c.DeviceId AND p.ProcessId = c.InitiatingProcessId
         AND p.ProcessCreationTime = c.InitiatingProcessCreationTime""")[0]
    assert mismatched == 0
    # Most parents were themselves created in the window (the rest are boot-time processes).
    assert matched > total * 0.3, (matched, total)
    assert q(db, "SELECT count(*) FROM DeviceProcessEvents WHERE InitiatingProcessCreationTime > ProcessCreationTime "
                 "OR ProcessCreationTime > Timestamp") == [(0,)]


def test_other_events_name_a_process_consistent_with_its_creation(db: duckdb.DuckDBPyConnection) -> None:
    for table in ("DeviceFileEvents", "DeviceNetworkEvents", "DeviceImageLoadEvents", "DeviceRegistryEvents"):
        matched, bad = q(db, f"""
            SELECT count(p.ProcessId), count_if(p.ProcessId IS NOT NULL AND (
                       e.InitiatingProcessFileName <> p.FileName OR e.InitiatingProcessCommandLine <> p.ProcessCommandLine
                    OR e.InitiatingProcessParentId <> p.InitiatingProcessId OR e."Timestamp" < p.ProcessCreationTime))
            FROM "{table}" e LEFT JOIN DeviceProcessEvents p
              ON p.DeviceId = e.DeviceId AND p.ProcessId = e.InitiatingProcessId
             AND p.ProcessCreationTime = e.InitiatingProcessCreationTime""")[0]
        assert bad == 0, table
        assert matched > 0, table


# -- determinism -------------------------------------------------------------------------------
def test_same_seed_same_data_other_seed_other_data(data: dict[str, pa.Table]) -> None:
    again = generate(CATALOG, start=START, end=END, devices=DEVICES, seed=7, events_per_device_per_day=120)
    for name in data:
        assert again[name].equals(data[name]), name
    other = generate(CATALOG, start=START, end=END, devices=DEVICES, seed=8, events_per_device_per_day=120,
                     tables={"DeviceProcessEvents"})
    assert set(other) == {"DeviceProcessEvents"}
    assert not other["DeviceProcessEvents"].equals(data["DeviceProcessEvents"])


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="end .* must be after start"):
        generate(CATALOG, start=END, end=START)
    with pytest.raises(ValueError, match="DeviceProcesEvents.*DeviceProcessEvents"):
        generate(CATALOG, start=START, end=END, tables={"DeviceProcesEvents"})
    with pytest.raises(ValueError, match="devices"):
        generate(CATALOG, start=START, end=END, devices=0)


def test_aware_datetimes_are_taken_as_utc() -> None:
    from datetime import timezone

    cet = timezone(timedelta(hours=2))
    got = generate(CATALOG, start=datetime(2024, 6, 3, 2, tzinfo=cet), end=datetime(2024, 6, 3, 8, tzinfo=cet),
                   devices=2, events_per_device_per_day=50, tables={"DeviceInfo"})["DeviceInfo"]
    ts = got.column("Timestamp").to_pylist()
    assert min(ts) >= datetime(2024, 6, 3, 0) and max(ts) < datetime(2024, 6, 3, 6)


# -- the USB scenario --------------------------------------------------------------------------
def test_usb_scenario_is_in_the_dataset_and_joins_like_the_classic_hunt(db: duckdb.DuckDBPyConnection) -> None:
    mount = q(db, """SELECT DeviceId, DeviceName, "Timestamp", AdditionalFields FROM DeviceEvents
                     WHERE ActionType = 'UsbDriveMounted' AND DeviceName LIKE 'mbp-alice.%'""")
    assert len(mount) == 1
    device_id, device_name, mounted_at, fields = mount[0]
    fields = orjson.loads(fields)
    assert fields["DriveLetter"] == VOLUME and fields["SerialNumber"] and fields["ProductName"]
    chain = q(db, """
        SELECT t.FileName, z.FileName, c.FileName, c.ProcessCommandLine
        FROM DeviceProcessEvents c
        JOIN DeviceProcessEvents z ON z.DeviceId = c.DeviceId AND z.ProcessId = c.InitiatingProcessId
             AND z.ProcessCreationTime = c.InitiatingProcessCreationTime
        JOIN DeviceProcessEvents t ON t.DeviceId = z.DeviceId AND t.ProcessId = z.InitiatingProcessId
             AND t.ProcessCreationTime = z.InitiatingProcessCreationTime
        WHERE c.DeviceId = ? AND c.ProcessCommandLine = ?""", [device_id, CP_COMMAND_LINE])
    assert chain == [("Terminal", "zsh", "cp", "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt")]
    # The Microsoft hunting query "Files copied to USB drives", in SQL: file creations under the
    # mounted drive after the mount.
    hits = q(db, """
        SELECT f.FolderPath, f.InitiatingProcessFileName, f.InitiatingProcessParentFileName, f.InitiatingProcessAccountName
        FROM DeviceFileEvents f JOIN (
            SELECT DeviceId, "Timestamp" AS MountTime, json_extract_string(AdditionalFields, '$.DriveLetter') AS DriveLetter
            FROM DeviceEvents WHERE ActionType = 'UsbDriveMounted') m ON m.DeviceId = f.DeviceId
        WHERE f.ActionType = 'FileCreated' AND starts_with(f.FolderPath, m.DriveLetter) AND f."Timestamp" >= m.MountTime""")
    assert ("/Volumes/TEST-USB/leak.txt", "cp", "zsh", "alice") in hits
    assert device_name.startswith("mbp-alice") and START <= mounted_at < END


def test_usb_scenario_function_returns_json_ready_rows() -> None:
    at = datetime(2024, 6, 5, 14, 23, 7, tzinfo=UTC)
    rows = usb_scenario("0123456789abcdef0123456789abcdef01234567", "mbp-test.corp.example.com", at)
    assert set(rows) == {"DeviceEvents", "DeviceProcessEvents", "DeviceFileEvents"}
    for table, items in rows.items():
        cols = set(CATALOG.tables[table].column_names)
        for r in items:
            assert set(r) <= cols, set(r) - cols
            assert r["DeviceId"] == "0123456789abcdef0123456789abcdef01234567"
            assert r["DeviceName"] == "mbp-test.corp.example.com"
            ts = datetime.fromisoformat(r["Timestamp"].replace("Z", "+00:00"))
            assert at <= ts < at + timedelta(minutes=11)
            json.dumps(r)  # JSON-ready: no datetimes or other Python objects left
    procs = {r["FileName"]: r for r in rows["DeviceProcessEvents"]}
    assert set(procs) == {"Terminal", "zsh", "cp"}
    for child, parent in (("zsh", "Terminal"), ("cp", "zsh")):
        c, p = procs[child], procs[parent]
        assert c["InitiatingProcessId"] == p["ProcessId"]
        assert c["InitiatingProcessFileName"] == p["FileName"]
        assert c["InitiatingProcessCommandLine"] == p["ProcessCommandLine"]
        assert c["InitiatingProcessCreationTime"] == p["ProcessCreationTime"]
        assert c["InitiatingProcessFolderPath"] == p["FolderPath"]
    assert procs["Terminal"]["InitiatingProcessFileName"] == "launchd"
    assert procs["cp"]["ProcessCommandLine"] == CP_COMMAND_LINE
    (created,) = rows["DeviceFileEvents"]
    assert created["ActionType"] == "FileCreated" and created["FolderPath"] == LEAK_TARGET
    assert created["InitiatingProcessId"] == procs["cp"]["ProcessId"]
    assert created["InitiatingProcessParentFileName"] == "zsh"
    actions = [r["ActionType"] for r in rows["DeviceEvents"]]
    assert actions == ["UsbDriveMounted", "UsbDriveUnmounted"]
    assert json.loads(rows["DeviceEvents"][0]["AdditionalFields"])["DriveLetter"] == VOLUME


# -- bulk --------------------------------------------------------------------------------------
def test_bulk_process_events_full_schema_sorted_unique_deterministic() -> None:
    start, end = datetime(2024, 6, 1), datetime(2024, 6, 8)
    t = bulk_process_events(200_000, start, end, seed=3)
    assert t.schema == arrow_schema(CATALOG.tables["DeviceProcessEvents"])
    assert t.num_rows == 200_000
    con = duckdb.connect()
    con.register("t", t)
    ts = t.column("Timestamp")
    unsorted = pc.sum(pc.less(ts.slice(1), ts.slice(0, len(ts) - 1))).as_py()
    (lo, hi, ids, devs, files, nulls) = con.execute("""
        SELECT min("Timestamp"), max("Timestamp"), count(DISTINCT ReportId), count(DISTINCT DeviceId), count(DISTINCT FileName),
               count_if(ProcessCommandLine IS NULL OR InitiatingProcessFileName IS NULL OR SHA256 IS NULL)
        FROM t""").fetchone()  # type: ignore[misc]
    assert start <= lo and hi < end and unsorted == 0
    assert ids == 200_000 and devs > 100 and files > 15 and nulls == 0
    # Windows devices run Windows binaries only.
    assert con.execute("""SELECT count(*) FROM t WHERE DeviceName LIKE 'lt-%' AND FolderPath NOT LIKE 'C:\\%'""").fetchone() == (0,)
    small = bulk_process_events(1000, start, end, seed=3)
    assert small.equals(bulk_process_events(1000, start, end, seed=3))
    assert not small.equals(bulk_process_events(1000, start, end, seed=4))
    with pytest.raises(ValueError, match="after start"):
        bulk_process_events(10, end, start)


def test_bulk_batches_are_time_ordered_with_continuing_report_ids() -> None:
    start, end = datetime(2024, 6, 1), datetime(2024, 6, 2)
    batches = list(iter_bulk_process_events(10_000, start, end, seed=5, batch_rows=3_000))
    assert [b.num_rows for b in batches] == [3_000, 3_000, 3_000, 1_000]
    whole = pa.concat_tables(batches)
    ts = whole.column("Timestamp")
    assert pc.sum(pc.less(ts.slice(1), ts.slice(0, len(ts) - 1))).as_py() == 0
    assert whole.column("ReportId").to_pylist() == list(range(1, 10_001))
    assert ts[0].as_py() >= start and ts[-1].as_py() < end


# -- loading through Storage -------------------------------------------------------------------
def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", scheduler_enabled=False)


def test_demo_lands_in_storage_queryable_and_is_not_loaded_twice(tmp_path: Path) -> None:
    from server.storage import Storage

    settings = _settings(tmp_path)
    now = datetime.now(UTC).replace(tzinfo=None)
    first = load_demo(settings, days=2, devices=4, events_per_device_per_day=80, now=now, log=lambda _: None)
    assert first.loaded and first.rows["DeviceProcessEvents"] > 0
    assert first.end == now.replace(microsecond=0) and first.start == first.end - timedelta(days=2)
    parquet = list((settings.data_dir / "DeviceProcessEvents").glob("date=*/*.parquet"))
    assert parquet, "flushed to Parquet"

    again = load_demo(settings, days=2, devices=4, events_per_device_per_day=80, log=lambda _: None)
    assert not again.loaded and again.rows == first.rows

    storage = Storage(settings, CATALOG)
    storage.start()
    try:
        con = storage.connect()
        for name, n in first.rows.items():
            assert con.execute(f'SELECT count(*) FROM "{name}"').fetchone() == (n,), name
        hit = con.execute("""SELECT FileName, InitiatingProcessFileName, InitiatingProcessParentFileName
                             FROM DeviceFileEvents WHERE FolderPath = ?""", [LEAK_TARGET]).fetchall()
        assert hit == [("leak.txt", "cp", "zsh")]
        assert con.execute("SELECT count(*) FROM DeviceEvents WHERE ActionType = 'UsbDriveMounted' "
                           "AND json_extract_string(AdditionalFields, '$.DriveLetter') = ?", [VOLUME]).fetchone() == (1,)
    finally:
        storage.close()


def test_interrupted_demo_load_is_refused_not_duplicated(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.data_dir.mkdir(parents=True)
    marker_path(settings.data_dir).write_text('{"state": "loading"}')
    with pytest.raises(DemoError, match="interrupted.*duplicate"):
        load_demo(settings, days=1, devices=2, log=lambda _: None)
    with pytest.raises(DemoError, match="retention"):
        load_demo(Settings(data_dir=tmp_path / "other", retention_days=3), days=7, log=lambda _: None)


# -- end to end: `quarry demo` serving over HTTP -----------------------------------------------
@pytest.mark.slow
def test_quarry_demo_serves_the_dataset_over_http(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "QUARRY_SCHEDULER_ENABLED": "false"}
    env.pop("QUARRY_ADMIN_KEY", None)
    log_path = tmp_path / "demo.log"
    # Output goes to a file, not a pipe nobody drains, so the server can never block on it.
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "demo", "--data-dir", str(tmp_path / "d"), "--host", "127.0.0.1",
             "--port", str(port), "--days", "2", "--devices", "5"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 90
        key = None
        healthy = False
        base = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            keys = [ln.strip() for ln in log_path.read_text().splitlines() if ln.strip().startswith("qk_")]
            key = keys[0] if keys else None
            if key:
                with contextlib.suppress(httpx.TransportError):
                    healthy = httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            time.sleep(0.2)
        assert key and healthy, "quarry demo did not come up:\n" + log_path.read_text()[-3000:]
        auth = {"Authorization": f"Bearer {key}"}
        # Ingest the scenario for another Mac through the API, then hunt for both.
        at = datetime.now(UTC) - timedelta(hours=1)
        for table, rows in usb_scenario("f" * 40, "mbp-bob.corp.example.com", at, user="bob").items():
            r = httpx.post(f"{base}/api/ingest/{table}", json=rows, headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == len(rows)
        if _compiler_ready():
            kql = ('DeviceFileEvents | where ActionType == "FileCreated" and FolderPath startswith "/Volumes/" '
                   '| project DeviceName, FolderPath, InitiatingProcessFileName, InitiatingProcessParentFileName '
                   '| order by DeviceName asc')
            r = httpx.post(f"{base}/api/advancedhunting/run", json={"Query": kql}, headers=auth, timeout=60)
            assert r.status_code == 200, r.text
            results = r.json()["Results"]
            assert [(x["DeviceName"].split(".")[0], x["FolderPath"], x["InitiatingProcessFileName"],
                     x["InitiatingProcessParentFileName"]) for x in results] == [
                ("mbp-alice", LEAK_TARGET, "cp", "zsh"), ("mbp-bob", LEAK_TARGET, "cp", "zsh")]
        proc.terminate()
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # After a clean stop, both leaks (generated and ingested over HTTP) are in the data directory.
    from server.storage import Storage

    storage = Storage(Settings(data_dir=tmp_path / "d", scheduler_enabled=False), CATALOG)
    storage.start()
    try:
        got = storage.connect().execute("""
            SELECT split_part(DeviceName, '.', 1), InitiatingProcessFileName, InitiatingProcessParentFileName
            FROM DeviceFileEvents WHERE FolderPath = ? ORDER BY 1""", [LEAK_TARGET]).fetchall()
        assert got == [("mbp-alice", "cp", "zsh"), ("mbp-bob", "cp", "zsh")]
    finally:
        storage.close()


def _compiler_ready() -> bool:
    """The hunting API needs the KQL compiler, built by another part of the project."""
    import importlib

    kql = importlib.import_module("kql")
    return hasattr(kql, "compile_kql") and hasattr(kql, "CompileOptions")
