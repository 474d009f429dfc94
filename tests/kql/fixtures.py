"""Fixture harness for the KQL compiler's semantic tests.

Builds an in-memory DuckDB database shaped exactly like `Storage.connect()` (docs/internals.md,
"Storage"): every catalog table exists under its catalog name with the schema columns in order,
then `_ingestion_time` (TIMESTAMP), `_extra` (JSON) and `date` (DATE). A handful of tables hold
the small hand-written rows below; every other catalog table is present and empty, so queries
over any catalog table run.

Expected results in the tests are derived by reading these rows with the Kusto documentation in
hand, never by running the compiler. Keep the rows small and keep this table of them readable.

Missing string values are stored as NULL (what ingest produces for an absent field); Kusto has
no null strings, so the compiler must treat a NULL string as "" (see test_semantics_nulls.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import cache
from typing import Any

import duckdb

from schema import default_catalog
from schema.catalog import DATE_PARTITION, EXTRA_COLUMN, INGESTION_TIME_COLUMN, Catalog

# The fixed "now" every test compiles with: a Wednesday, so week/day functions have known answers.
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)

WS01 = "ws-01.contoso.com"
SRV02 = "srv-02.contoso.com"
WS03 = "ws-03.contoso.com"
WS04 = "ws-04.contoso.com"


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# --- DeviceProcessEvents ----------------------------------------------------------------------
# ReportId is the row's identity in assertions.
#  RID  Timestamp         DeviceId Account  FileName        InitiatingProcessFileName ProcessId FileSize
#  1    2024-05-15 11:00  d1       alice    powershell.exe  cmd.exe                   100       1000
#  2    2024-05-15 09:00  d1       alice    cmd.exe         explorer.exe              200       2000
#  3    2024-05-14 10:00  d2       bob      PowerShell.EXE  services.exe              300       3000
#  4    2024-05-13 12:00  d3       SYSTEM   rundll32.exe    winword.exe               400       null
#  5    2024-05-15 11:50  d2       (null)   notepad.exe     explorer.exe              500       500
#  6    2024-05-10 08:30  d1       alice    whoami.exe      cmd.exe                   600       600
PROCESS_ROWS: list[dict[str, Any]] = [
    {
        "ReportId": 1, "Timestamp": _t("2024-05-15 11:00:00"), "DeviceId": "d1", "DeviceName": WS01,
        "ActionType": "ProcessCreated", "AccountDomain": "contoso", "AccountName": "alice",
        "FileName": "powershell.exe",
        "FolderPath": r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        "ProcessCommandLine": "powershell.exe -NoProfile -EncodedCommand SQBFAFgA",
        "InitiatingProcessFileName": "cmd.exe", "ProcessId": 100, "FileSize": 1000,
        "InitiatingProcessId": 10, "SHA256": "aa11",
        "ProcessCreationTime": _t("2024-05-15 11:00:00"),
    },
    {
        "ReportId": 2, "Timestamp": _t("2024-05-15 09:00:00"), "DeviceId": "d1", "DeviceName": WS01,
        "ActionType": "ProcessCreated", "AccountDomain": "contoso", "AccountName": "alice",
        "FileName": "cmd.exe", "FolderPath": r"C:\Windows\System32\cmd.exe",
        "ProcessCommandLine": "cmd.exe /c whoami",
        "InitiatingProcessFileName": "explorer.exe", "ProcessId": 200, "FileSize": 2000,
        "InitiatingProcessId": 20, "SHA256": "bb22",
        "ProcessCreationTime": _t("2024-05-15 09:00:00"),
    },
    {
        "ReportId": 3, "Timestamp": _t("2024-05-14 10:00:00"), "DeviceId": "d2", "DeviceName": SRV02,
        "ActionType": "ProcessCreated", "AccountDomain": "CONTOSO", "AccountName": "bob",
        "FileName": "PowerShell.EXE",
        "FolderPath": r"C:\Windows\System32\WindowsPowerShell\v1.0\PowerShell.EXE",
        "ProcessCommandLine": r"PowerShell.EXE -ExecutionPolicy Bypass -File C:\temp\run.ps1",
        "InitiatingProcessFileName": "services.exe", "ProcessId": 300, "FileSize": 3000,
        "InitiatingProcessId": 30, "SHA256": "cc33",
        "ProcessCreationTime": _t("2024-05-14 10:00:00"),
    },
    {
        "ReportId": 4, "Timestamp": _t("2024-05-13 12:00:00"), "DeviceId": "d3", "DeviceName": WS03,
        "ActionType": "ProcessCreated", "AccountDomain": "nt authority", "AccountName": "SYSTEM",
        "FileName": "rundll32.exe", "FolderPath": r"C:\Windows\System32\rundll32.exe",
        "ProcessCommandLine": 'rundll32.exe javascript:"\\..\\mshtml,RunHTMLApplication"',
        "InitiatingProcessFileName": "winword.exe", "ProcessId": 400, "FileSize": None,
        "InitiatingProcessId": 40, "SHA256": "dd44",
        "ProcessCreationTime": _t("2024-05-13 12:00:00"),
    },
    {
        "ReportId": 5, "Timestamp": _t("2024-05-15 11:50:00"), "DeviceId": "d2", "DeviceName": SRV02,
        "ActionType": "ProcessCreated", "AccountDomain": None, "AccountName": None,
        "FileName": "notepad.exe", "FolderPath": r"C:\Windows\notepad.exe",
        "ProcessCommandLine": "",
        "InitiatingProcessFileName": "explorer.exe", "ProcessId": 500, "FileSize": 500,
        "InitiatingProcessId": 50, "SHA256": "ee55",
        "ProcessCreationTime": _t("2024-05-15 11:50:00"),
    },
    {
        "ReportId": 6, "Timestamp": _t("2024-05-10 08:30:00"), "DeviceId": "d1", "DeviceName": WS01,
        "ActionType": "ProcessCreated", "AccountDomain": "contoso", "AccountName": "alice",
        "FileName": "whoami.exe", "FolderPath": r"C:\Windows\System32\whoami.exe",
        "ProcessCommandLine": "whoami /all",
        "InitiatingProcessFileName": "cmd.exe", "ProcessId": 600, "FileSize": 600,
        "InitiatingProcessId": 60, "SHA256": "ff66",
        "ProcessCreationTime": _t("2024-05-10 08:30:00"),
    },
]

# --- DeviceNetworkEvents ----------------------------------------------------------------------
#  RID Timestamp         DeviceId RemoteIP      RemotePort RemoteUrl                               Init.FileName
#  1   2024-05-15 11:05  d1       10.1.2.3      445        ""                                      powershell.exe
#  2   2024-05-15 11:06  d1       8.8.8.8       53         dns.google                              svchost.exe
#  3   2024-05-14 10:05  d2       192.168.1.20  3389       ""                                      mstsc.exe
#  4   2024-05-14 10:10  d2       172.16.5.4    443        https://evil.example.com/payload?id=7   powershell.exe
#  5   2024-05-13 12:05  d4       52.1.2.3      443        www.contoso.com                         chrome.exe
NETWORK_ROWS: list[dict[str, Any]] = [
    {
        "ReportId": 1, "Timestamp": _t("2024-05-15 11:05:00"), "DeviceId": "d1", "DeviceName": WS01,
        "ActionType": "ConnectionSuccess", "RemoteIP": "10.1.2.3", "RemotePort": 445,
        "RemoteUrl": "", "LocalIP": "10.0.0.5", "LocalPort": 50001, "Protocol": "Tcp",
        "InitiatingProcessFileName": "powershell.exe", "InitiatingProcessId": 100,
    },
    {
        "ReportId": 2, "Timestamp": _t("2024-05-15 11:06:00"), "DeviceId": "d1", "DeviceName": WS01,
        "ActionType": "ConnectionSuccess", "RemoteIP": "8.8.8.8", "RemotePort": 53,
        "RemoteUrl": "dns.google", "LocalIP": "10.0.0.5", "LocalPort": 50002, "Protocol": "Udp",
        "InitiatingProcessFileName": "svchost.exe", "InitiatingProcessId": 900,
    },
    {
        "ReportId": 3, "Timestamp": _t("2024-05-14 10:05:00"), "DeviceId": "d2", "DeviceName": SRV02,
        "ActionType": "ConnectionFailed", "RemoteIP": "192.168.1.20", "RemotePort": 3389,
        "RemoteUrl": "", "LocalIP": "192.168.1.10", "LocalPort": 50003, "Protocol": "Tcp",
        "InitiatingProcessFileName": "mstsc.exe", "InitiatingProcessId": 910,
    },
    {
        "ReportId": 4, "Timestamp": _t("2024-05-14 10:10:00"), "DeviceId": "d2", "DeviceName": SRV02,
        "ActionType": "ConnectionSuccess", "RemoteIP": "172.16.5.4", "RemotePort": 443,
        "RemoteUrl": "https://evil.example.com/payload?id=7", "LocalIP": "192.168.1.10",
        "LocalPort": 50004, "Protocol": "Tcp",
        "InitiatingProcessFileName": "powershell.exe", "InitiatingProcessId": 300,
    },
    {
        "ReportId": 5, "Timestamp": _t("2024-05-13 12:05:00"), "DeviceId": "d4", "DeviceName": WS04,
        "ActionType": "ConnectionSuccess", "RemoteIP": "52.1.2.3", "RemotePort": 443,
        "RemoteUrl": "www.contoso.com", "LocalIP": "10.0.0.9", "LocalPort": 50005,
        "Protocol": "Tcp", "InitiatingProcessFileName": "chrome.exe", "InitiatingProcessId": 920,
    },
]

# --- DeviceInfo: d1 reported twice (OS upgraded), d2 and d3 once; d4 never. ---------------------
INFO_ROWS: list[dict[str, Any]] = [
    {"ReportId": 1, "Timestamp": _t("2024-05-14 00:00:00"), "DeviceId": "d1", "DeviceName": WS01,
     "OSPlatform": "Windows10", "PublicIP": "52.0.0.1", "OSBuild": 19045},
    {"ReportId": 2, "Timestamp": _t("2024-05-15 00:00:00"), "DeviceId": "d1", "DeviceName": WS01,
     "OSPlatform": "Windows11", "PublicIP": "52.0.0.1", "OSBuild": 22631},
    {"ReportId": 3, "Timestamp": _t("2024-05-15 00:00:00"), "DeviceId": "d2", "DeviceName": SRV02,
     "OSPlatform": "WindowsServer2022", "PublicIP": "52.0.0.2", "OSBuild": 20348},
    {"ReportId": 4, "Timestamp": _t("2024-05-15 00:00:00"), "DeviceId": "d3", "DeviceName": WS03,
     "OSPlatform": "Windows10", "PublicIP": "52.0.0.3", "OSBuild": 19045},
]

# --- DeviceFileEvents -------------------------------------------------------------------------
FILE_ROWS: list[dict[str, Any]] = [
    {"ReportId": 1, "Timestamp": _t("2024-05-15 11:10:00"), "DeviceId": "d1", "DeviceName": WS01,
     "ActionType": "FileCreated", "FileName": "run.ps1", "FolderPath": r"C:\temp\run.ps1",
     "SHA256": "aa11", "InitiatingProcessFileName": "powershell.exe", "FileSize": 120},
    {"ReportId": 2, "Timestamp": _t("2024-05-14 10:01:00"), "DeviceId": "d2", "DeviceName": SRV02,
     "ActionType": "FileModified", "FileName": "report.docx",
     "FolderPath": r"C:\Users\bob\Documents\report.docx", "SHA256": "9999",
     "InitiatingProcessFileName": "winword.exe", "FileSize": 4096},
    {"ReportId": 3, "Timestamp": _t("2024-05-13 12:01:00"), "DeviceId": "d3", "DeviceName": WS03,
     "ActionType": "FileDeleted", "FileName": "evil.dll", "FolderPath": r"C:\Windows\Temp\evil.dll",
     "SHA256": "dd44", "InitiatingProcessFileName": "rundll32.exe", "FileSize": 77},
]

# --- DeviceEvents: AdditionalFields holds JSON text, as in Defender. ---------------------------
EVENT_ROWS: list[dict[str, Any]] = [
    {"ReportId": 1, "Timestamp": _t("2024-05-15 11:20:00"), "DeviceId": "d1", "DeviceName": WS01,
     "ActionType": "AntivirusDetection", "FileName": "evil.dll",
     "AdditionalFields": json.dumps({"ThreatName": "Trojan:Win32/Evil", "WasRemediated": True,
                                     "Count": 3, "Tags": ["a", "b"]})},
    {"ReportId": 2, "Timestamp": _t("2024-05-14 10:30:00"), "DeviceId": "d2", "DeviceName": SRV02,
     "ActionType": "PowerShellCommand", "FileName": "",
     "AdditionalFields": json.dumps({"Command": "Invoke-WebRequest"})},
]

# --- DeviceLogonEvents ------------------------------------------------------------------------
LOGON_ROWS: list[dict[str, Any]] = [
    {"ReportId": 1, "Timestamp": _t("2024-05-15 08:00:00"), "DeviceId": "d1", "DeviceName": WS01,
     "ActionType": "LogonSuccess", "AccountName": "alice", "LogonType": "Interactive",
     "RemoteIP": ""},
    {"ReportId": 2, "Timestamp": _t("2024-05-14 09:00:00"), "DeviceId": "d2", "DeviceName": SRV02,
     "ActionType": "LogonFailed", "AccountName": "bob", "LogonType": "Network",
     "RemoteIP": "10.0.0.5"},
]

FIXTURE_ROWS: dict[str, list[dict[str, Any]]] = {
    "DeviceProcessEvents": PROCESS_ROWS,
    "DeviceNetworkEvents": NETWORK_ROWS,
    "DeviceInfo": INFO_ROWS,
    "DeviceFileEvents": FILE_ROWS,
    "DeviceEvents": EVENT_ROWS,
    "DeviceLogonEvents": LOGON_ROWS,
}


def _qi(name: str) -> str:
    """Quote an identifier for DuckDB (names come from the catalog, never from user text)."""
    return '"' + name.replace('"', '""') + '"'


def create_tables(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    """Create every catalog table with the storage column layout (schema, system, partition)."""
    for table in catalog.tables.values():
        cols = [f"{_qi(c.name)} {c.type.duckdb}" for c in table.columns]
        cols += [
            f"{_qi(INGESTION_TIME_COLUMN)} TIMESTAMP",
            f"{_qi(EXTRA_COLUMN)} JSON",
            f"{_qi(DATE_PARTITION)} DATE",
        ]
        con.execute(f"CREATE TABLE {_qi(table.name)} ({', '.join(cols)})")


def load_rows(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, table_name: str, rows: Iterable[dict[str, Any]]
) -> None:
    """Insert rows (dicts of schema columns; absent columns are NULL) with the system columns."""
    table = catalog.table(table_name)
    assert table is not None, table_name
    names = table.column_names
    params = ", ".join(["?"] * (len(names) + 3))
    sql = f"INSERT INTO {_qi(table_name)} VALUES ({params})"
    batch = []
    for row in rows:
        unknown = set(row) - set(names)
        assert not unknown, f"{table_name}: fixture columns not in schema: {unknown}"
        ts = row.get("Timestamp")
        values = [row.get(n) for n in names]
        ingestion = (ts + dt.timedelta(minutes=1)) if ts is not None else NOW
        day = (ts or ingestion).date()
        batch.append([*values, ingestion, None, day])
    if batch:
        con.executemany(sql, batch)


@cache
def fixture_connection() -> duckdb.DuckDBPyConnection:
    """One shared in-memory database with the fixture rows (tests only read it)."""
    catalog = default_catalog()
    con = duckdb.connect(":memory:")
    create_tables(con, catalog)
    for name, rows in FIXTURE_ROWS.items():
        load_rows(con, catalog, name, rows)
    return con


# --- compile and run --------------------------------------------------------------------------

# The engine execution tests run on (`pytest --engine spark`, see tests/conftest.py): duckdb, or
# spark (the same queries compiled for the spark target, over the same rows loaded into one
# local[2] session per test run).
ENGINE = "duckdb"


def compile_query(kql: str, now: dt.datetime = NOW, dialect: str = "duckdb") -> Any:
    from kql import CompileOptions, compile_kql

    return compile_kql(kql, default_catalog(), CompileOptions(now=now, dialect=dialect))


@cache
def spark_fixture() -> Any:
    """The Spark session with every catalog table as a view of the fixture rows (from the DuckDB
    fixture database, as Arrow: the way the server ships its hot tail to Spark)."""
    from server.query.spark import register_table, spark_session

    spark = spark_session("local[2]", {"spark.sql.shuffle.partitions": "2",
                                       "spark.default.parallelism": "2"}, app_name="quarry-tests")
    con = fixture_connection()
    catalog = default_catalog()
    for table in catalog.tables.values():
        arrow = con.sql(f"SELECT * FROM {_qi(table.name)}").to_arrow_table()
        register_table(spark, table, None, arrow)
    return spark


def stop_spark() -> None:
    if spark_fixture.cache_info().currsize:
        spark_fixture().stop()
        spark_fixture.cache_clear()


def _run_spark(kql: str, now: dt.datetime) -> KqlResult:
    import pytest

    from server.query.spark import run_sql

    compiled = compile_query(kql, now, dialect="spark")
    unsupported = [d for d in compiled.diagnostics if d.code == "unsupported_target"]
    if unsupported:
        pytest.skip("spark engine: " + unsupported[0].message)
    assert compiled.ok, f"compile failed for spark:\n{kql}\n{_diag_text(compiled)}"
    assert compiled.sql, "compiled.ok but no SQL"
    try:
        table = run_sql(spark_fixture(), compiled.sql)
    except Exception as exc:  # pragma: no cover - the message is the point
        raise AssertionError(f"compiled SQL failed on Spark: {str(exc)[:2000]}\nKQL:\n{kql}\nSQL:\n{compiled.sql}") from exc
    types = [t for _, t in compiled.columns]
    assert table.num_columns == len(types), f"Spark returned {table.num_columns} columns for {compiled.columns}"
    raw = [tuple(r.values()) for r in table.to_pylist()] if table.num_columns else []
    rows = [tuple(normalize(v, t) for v, t in zip(r, types, strict=True)) for r in raw]
    return KqlResult(list(compiled.columns), rows, compiled.sql)


def _diag_text(compiled: Any) -> str:
    return "\n".join(
        f"  {d.code} at {d.line}:{d.column}: {d.message}" for d in compiled.diagnostics
    )


class KqlResult:
    def __init__(self, columns: list[tuple[str, str]], rows: list[tuple[Any, ...]], sql: str):
        self.columns = columns
        self.names = [c[0] for c in columns]
        self.types = [c[1] for c in columns]
        self.rows = rows
        self.sql = sql

    def column(self, name: str) -> list[Any]:
        i = self.names.index(name)
        return [r[i] for r in self.rows]


def normalize(value: Any, kql_type: str | None = None) -> Any:
    """Bring a DuckDB value to a plain Python value comparable with hand-written expectations.

    dynamic is JSON text in storage, so a dynamic result is parsed; exact decimals become floats;
    floats are rounded so that 0.1 + 0.2 compares equal to 0.3.
    """
    if value is None:
        return None
    if kql_type == "dynamic" and isinstance(value, str):
        try:
            return normalize(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return value
        return round(value, 9)
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def run_kql(kql: str, now: dt.datetime = NOW) -> KqlResult:
    if ENGINE == "spark":
        return _run_spark(kql, now)
    compiled = compile_query(kql, now)
    assert compiled.ok, f"compile failed for:\n{kql}\n{_diag_text(compiled)}"
    assert compiled.sql, "compiled.ok but no SQL"
    cur = fixture_connection().cursor()
    try:
        rel = cur.execute(compiled.sql)
        raw = rel.fetchall()
    except duckdb.Error as exc:  # pragma: no cover - the message is the point
        raise AssertionError(
            f"compiled SQL failed on DuckDB: {exc}\nKQL:\n{kql}\nSQL:\n{compiled.sql}"
        ) from exc
    finally:
        cur.close()
    types = [t for _, t in compiled.columns]
    width = len(raw[0]) if raw else len(types)
    assert width == len(compiled.columns), (
        f"SQL returns {width} columns, Compiled.columns lists {len(compiled.columns)}: "
        f"{compiled.columns}\nSQL:\n{compiled.sql}"
    )
    rows = [tuple(normalize(v, t) for v, t in zip(r, types, strict=True)) for r in raw]
    return KqlResult(list(compiled.columns), rows, compiled.sql)


def _sort_key(row: Sequence[Any]) -> tuple[str, ...]:
    return tuple(repr(normalize(v)) for v in row)


def assert_kql(
    kql: str,
    expected_rows: Sequence[Sequence[Any]],
    *,
    ordered: bool = False,
    columns: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    now: dt.datetime = NOW,
) -> KqlResult:
    """Compile `kql`, run the SQL over the fixture rows, compare the rows returned.

    `ordered=False` compares as multisets (Kusto leaves the order of most operators undefined).
    `columns`/`types` also check the output schema (names and KQL types).
    """
    result = run_kql(kql, now)
    if columns is not None:
        assert result.names == list(columns), (
            f"column names {result.names} != {list(columns)}\nSQL:\n{result.sql}"
        )
    if types is not None:
        assert result.types == list(types), (
            f"column types {result.types} != {list(types)}\nSQL:\n{result.sql}"
        )
    expected = [tuple(normalize(v) for v in row) for row in expected_rows]
    got = list(result.rows)
    if not ordered:
        expected = sorted(expected, key=_sort_key)
        got = sorted(got, key=_sort_key)
    assert got == expected, (
        f"\nKQL:\n{kql}\nexpected ({len(expected)}): {expected}\n"
        f"got ({len(got)}): {got}\ncolumns: {result.columns}\nSQL:\n{result.sql}"
    )
    return result


def assert_kql_error(
    kql: str, code: str, line: int | None = None, column: int | None = None
) -> Any:
    """Compile `kql` and assert a diagnostic with `code` (and position, when given) exists.

    Returns that diagnostic so a test can check its message and hints too.
    """
    compiled = compile_query(kql)
    assert not compiled.ok, f"expected a {code} error, the query compiled:\n{kql}\n{compiled.sql}"
    matching = [d for d in compiled.diagnostics if d.code == code]
    assert matching, f"no {code} diagnostic for:\n{kql}\ngot:\n{_diag_text(compiled)}"
    if line is not None:
        at = [d for d in matching if d.line == line and (column is None or d.column == column)]
        assert at, (
            f"{code} expected at {line}:{column}, got "
            f"{[(d.line, d.column) for d in matching]}\n{_diag_text(compiled)}"
        )
        return at[0]
    return matching[0]


def ids(result: KqlResult, column: str = "ReportId") -> list[Any]:
    """The sorted values of one column: a compact way to say which fixture rows came back."""
    return sorted(result.column(column), key=lambda v: (v is None, v))


def ids_of(kql: str, column: str = "ReportId", now: dt.datetime = NOW) -> list[Any]:
    return ids(run_kql(kql, now), column)
