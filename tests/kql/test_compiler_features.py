"""The compiler end to end: KQL -> SQL -> DuckDB over fixture rows, asserting the rows returned.

Expected rows are worked out by hand from the fixture below and the Kusto documentation.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from typing import Any

import duckdb
import pytest

from kql import CompileOptions, compile_kql
from kql.testing import fixture_connection, run_kql
from schema import default_catalog

NOW = dt.datetime(2024, 5, 15, 12, 0, 0)  # a Wednesday
CAT = default_catalog()


def T(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


PROC = [
    dict(ReportId=1, Timestamp=T("2024-05-15 11:00"), DeviceId="d1", DeviceName="ws1", AccountName="alice",
         FileName="powershell.exe", ProcessCommandLine="powershell.exe -NoProfile -EncodedCommand SQBFAFgA",
         FolderPath=r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
         InitiatingProcessFileName="cmd.exe", ProcessId=100, FileSize=1000,
         AdditionalFields='{"Sig":{"Names":["a","b"]},"Level":"High"}'),
    dict(ReportId=2, Timestamp=T("2024-05-15 09:00"), DeviceId="d1", DeviceName="ws1", AccountName="alice",
         FileName="cmd.exe", ProcessCommandLine="cmd.exe /c whoami", FolderPath=r"C:\Windows\System32\cmd.exe",
         InitiatingProcessFileName="explorer.exe", ProcessId=200, FileSize=2000),
    dict(ReportId=3, Timestamp=T("2024-05-14 10:00"), DeviceId="d2", DeviceName="srv2", AccountName="bob",
         FileName="PowerShell.EXE", ProcessCommandLine=r"PowerShell.EXE -ExecutionPolicy Bypass -File C:\temp\run.ps1",
         FolderPath=r"C:\Windows\System32\WindowsPowerShell\v1.0\PowerShell.EXE",
         InitiatingProcessFileName="services.exe", ProcessId=300, FileSize=3000, AdditionalFields='{"Level":"Low"}'),
    dict(ReportId=4, Timestamp=T("2024-05-01 12:00"), DeviceId="d3", DeviceName="ws3", AccountName="SYSTEM",
         FileName="rundll32.exe", ProcessCommandLine="rundll32.exe shell32.dll,Control_RunDLL",
         FolderPath=r"C:\Windows\System32\rundll32.exe", InitiatingProcessFileName="winword.exe", ProcessId=400),
    dict(ReportId=5, Timestamp=T("2024-05-15 11:50"), DeviceId="d2", DeviceName="srv2", FileName="notepad.exe",
         ProcessCommandLine=r"notepad.exe C:\bypassed.txt", FolderPath=r"C:\Windows\notepad.exe",
         InitiatingProcessFileName="explorer.exe", ProcessId=500, FileSize=500),
]
NET = [
    dict(ReportId=10, Timestamp=T("2024-05-15 10:00"), DeviceId="d1", DeviceName="ws1", RemoteIP="10.1.2.3",
         RemotePort=443, RemoteUrl="https://evil.example.com:8443/a/b.php?x=1&y=2#top", ActionType="ConnectionSuccess"),
    dict(ReportId=11, Timestamp=T("2024-05-15 10:30"), DeviceId="d2", DeviceName="srv2", RemoteIP="8.8.8.8",
         RemotePort=53, RemoteUrl="", ActionType="ConnectionSuccess"),
    dict(ReportId=12, Timestamp=T("2024-05-14 08:00"), DeviceId="d9", DeviceName="ws9", RemoteIP="192.168.1.5",
         RemotePort=445, RemoteUrl="http://intranet", ActionType="ConnectionFailed"),
]
INFO = [
    dict(ReportId=20, Timestamp=T("2024-05-15 06:00"), DeviceId="d1", DeviceName="ws1", OSPlatform="Windows11"),
    dict(ReportId=21, Timestamp=T("2024-05-14 06:00"), DeviceId="d1", DeviceName="ws1", OSPlatform="Windows10"),
    dict(ReportId=22, Timestamp=T("2024-05-15 06:00"), DeviceId="d2", DeviceName="srv2", OSPlatform="WindowsServer2022"),
]


@cache
def con() -> duckdb.DuckDBPyConnection:
    return fixture_connection(
        {"DeviceProcessEvents": PROC, "DeviceNetworkEvents": NET, "DeviceInfo": INFO}, CAT,
        ingestion_time=T("2024-05-15 11:59"),
    )


def rows(kql: str) -> list[tuple[Any, ...]]:
    return run_kql(con(), kql, CAT, NOW).rows


def assert_kql(kql: str, expected: list[tuple[Any, ...]], ordered: bool = False,
               columns: list[str] | None = None) -> None:
    result = run_kql(con(), kql, CAT, NOW)
    got = result.rows
    if columns is not None:
        assert result.columns == columns, result.compiled.sql
    if not ordered:
        got, expected = sorted(got, key=repr), sorted(expected, key=repr)
    assert got == expected, f"\nKQL: {kql}\nSQL: {result.compiled.sql}"


def ids(kql: str) -> list[int]:
    return sorted(r[0] for r in rows(kql + " | project ReportId"))


P = "DeviceProcessEvents"

# ---------------------------------------------------------------- filters and string operators

FILTERS = [
    ("where ProcessId > 200", [3, 4, 5]),
    ('filter FileName == "cmd.exe"', [2]),
    ('where FileName == "powershell.exe"', [1]),  # == is case-sensitive
    ('where FileName =~ "powershell.exe"', [1, 3]),
    ('where FileName !~ "powershell.exe"', [2, 4, 5]),
    ('where FileName != "cmd.exe"', [1, 3, 4, 5]),
    ('where ProcessCommandLine contains "BYPASS"', [3, 5]),
    ('where ProcessCommandLine contains_cs "Bypass"', [3]),
    ('where ProcessCommandLine !contains "bypass"', [1, 2, 4]),
    ('where ProcessCommandLine !contains_cs "Bypass"', [1, 2, 4, 5]),
    # has: whole terms only ("bypassed" does not have "bypass")
    ('where ProcessCommandLine has "bypass"', [3]),
    ('where ProcessCommandLine !has "bypass"', [1, 2, 4, 5]),
    ('where ProcessCommandLine has_cs "Bypass"', [3]),
    ('where ProcessCommandLine has_cs "bypass"', []),
    ('where ProcessCommandLine has "-NoProfile"', [1]),
    ('where ProcessCommandLine has "shell32.dll"', [4]),
    ('where ProcessCommandLine has "shell"', []),
    ('where ProcessCommandLine hasprefix "bypa"', [3, 5]),
    ('where ProcessCommandLine hassuffix "shell"', [1, 3]),
    ('where ProcessCommandLine !hasprefix "bypa"', [1, 2, 4]),
    ('where FileName startswith "POWERSHELL"', [1, 3]),
    ('where FileName startswith_cs "Power"', [3]),
    ('where FileName !startswith "power"', [2, 4, 5]),
    ('where FileName endswith ".EXE"', [1, 2, 3, 4, 5]),
    ('where FileName endswith_cs ".EXE"', [3]),
    ('where FileName !endswith ".exe"', []),
    ('where ProcessCommandLine has_any ("whoami", "run")', [2, 3]),
    ('where ProcessCommandLine has_any ("q", "zz", "yy", "whoami", "run")', [2, 3]),
    ('where ProcessCommandLine has_all ("executionpolicy", "bypass")', [3]),
    ('where ProcessCommandLine has_all ("executionpolicy", "nope")', []),
    ('where FileName in ("cmd.exe", "notepad.exe")', [2, 5]),
    ('where FileName !in ("cmd.exe", "notepad.exe")', [1, 3, 4]),
    ('where FileName in~ ("POWERSHELL.EXE")', [1, 3]),
    ('where FileName !in~ ("POWERSHELL.EXE")', [2, 4, 5]),
    ("where DeviceId in ((DeviceNetworkEvents | where RemotePort == 53 | project DeviceId))", [3, 5]),
    ("where DeviceId !in ((DeviceNetworkEvents | project DeviceId))", [4]),
    ("where ProcessId between (200 .. 400)", [2, 3, 4]),
    ("where ProcessId !between (200 .. 400)", [1, 5]),
    ("where Timestamp between (datetime(2024-05-15) .. datetime(2024-05-15 11:00))", [1, 2]),
    ("where Timestamp between (datetime(2024-05-15) .. 11h)", [1, 2]),
    ('where ProcessCommandLine matches regex @"-[A-Z][a-z]+Command"', [1]),
    ('where (FileName == "cmd.exe" or FileName == "notepad.exe") and ProcessId > 300', [5]),
    ('where FileName == "cmd.exe" or FileName == "notepad.exe" and ProcessId > 300', [2, 5]),
    ('where not(FileName has "exe")', []),
    ("where Timestamp > ago(1h)", [5]),
    ("where Timestamp >= ago(1d)", [1, 2, 5]),
    ("where Timestamp < now(-1d)", [3, 4]),
    ("where TimeGenerated > ago(1h)", [5]),  # Sentinel's name for Timestamp
    ("where FileSize > 1500", [2, 3]),
    ("where FileSize != 1000", [2, 3, 4, 5]),  # null != value is true
    ("where isnull(FileSize)", [4]),
    ("where isempty(AccountName)", [5]),
    ("where isnotempty(AccountName)", [1, 2, 3, 4]),
    ('where AccountName == ""', [5]),
    ('where AccountName != ""', [1, 2, 3, 4]),
    ("where isnull(AccountName)", []),  # strings are never null in Kusto
    ('where parse_json(AdditionalFields).Level == "High"', [1]),
    ('where tostring(parse_json(AdditionalFields)["Level"]) =~ "low"', [3]),
    ("where array_length(parse_json(AdditionalFields).Sig.Names) == 2", [1]),
]


@pytest.mark.parametrize("stage,expected", FILTERS, ids=[f[0] for f in FILTERS])
def test_filters(stage: str, expected: list[int]) -> None:
    assert ids(f"{P} | {stage}") == expected


def test_let_dynamic_list_in_and_has_any() -> None:
    assert ids(f'let names = dynamic(["cmd.exe", "whoami.exe"]); {P} | where FileName in (names)') == [2]
    assert ids(f'let terms = pack_array("whoami", "run"); {P} | where ProcessCommandLine has_any (terms)') == [2, 3]
    assert ids(f"let t = {P} | where DeviceId == 'd3' | project FileName; "
               f"{P} | where ProcessCommandLine has_any (t)") == [4]


# ---------------------------------------------------------------- projection operators


def test_project_and_extend() -> None:
    assert_kql(f"{P} | project ReportId, N = strlen(FileName)",
               [(1, 14), (2, 7), (3, 14), (4, 12), (5, 11)], columns=["ReportId", "N"])
    assert_kql(f"{P} | extend Big = FileSize > 1500 | project ReportId, Big",
               [(1, False), (2, True), (3, True), (4, None), (5, False)])
    # an extend sees its own earlier assignments
    assert_kql(f"{P} | where ReportId == 2 | extend a = ProcessId * 2, b = a + 1 | project a, b", [(400, 401)])
    # unnamed expressions are Column1, Column2... except where Kusto derives a name
    # (Kusto.Language: strlen(X) is strlen_X, tostring(X) is X)
    assert_kql(f"{P} | where ReportId == 2 | project toupper(FileName), trim(' ', FileName), strlen(FileName), "
               "tostring(ProcessId)", [("CMD.EXE", "cmd.exe", 7, "200")],
               columns=["Column1", "Column2", "strlen_FileName", "ProcessId"])
    assert_kql(f"{P} | where ReportId == 2 | project ['File Name'] = FileName | project ['File Name']",
               [("cmd.exe",)], columns=["File Name"])


def test_project_away_rename_reorder_keep() -> None:
    base = "DeviceInfo | where ReportId == 20 | project ReportId, DeviceId, OSPlatform"
    assert_kql(f"{base} | project-away DeviceId", [(20, "Windows11")], columns=["ReportId", "OSPlatform"])
    assert_kql(f"{base} | project-away Device*", [(20, "Windows11")], columns=["ReportId", "OSPlatform"])
    assert_kql(f"{base} | project-rename Os = OSPlatform", [(20, "d1", "Windows11")],
               columns=["ReportId", "DeviceId", "Os"])
    assert_kql(f"{base} | project-reorder OSPlatform", [("Windows11", 20, "d1")],
               columns=["OSPlatform", "ReportId", "DeviceId"])
    assert_kql(f"{base} | project-keep R*, OS*", [(20, "Windows11")], columns=["ReportId", "OSPlatform"])


# ---------------------------------------------------------------- summarize


def test_summarize_count_by_and_default_names() -> None:
    assert_kql(f"{P} | summarize count() by DeviceId", [("d1", 2), ("d2", 2), ("d3", 1)],
               columns=["DeviceId", "count_"])
    result = run_kql(con(), f"{P} | summarize sum(FileSize), avg(ProcessId), dcount(DeviceId), max(Timestamp)", CAT, NOW)
    assert result.columns == ["sum_FileSize", "avg_ProcessId", "dcount_DeviceId", "max_Timestamp"]
    assert result.rows == [(6500, 300.0, 3, T("2024-05-15 11:50"))]


def test_summarize_conditional_aggregates() -> None:
    assert_kql(
        f"{P} | summarize c = countif(FileSize > 600), d = dcount(FileName), mn = min(ProcessId), "
        f"mx = max(ProcessId), di = dcountif(FileName, ProcessId > 200), si = sumif(FileSize, DeviceId == 'd1')",
        [(3, 5, 100, 500, 3, 3000)],
    )


def test_summarize_sets_and_lists() -> None:
    got = rows(f"{P} | summarize s = make_set(AccountName), l = make_list(ProcessId), "
               f"f = make_set_if(FileName, ProcessId > 150) by DeviceId | order by DeviceId asc")
    parsed = [(d, sorted(json.loads(s)), sorted(json.loads(lst)), sorted(json.loads(f))) for d, s, lst, f in got]
    assert parsed == [
        ("d1", ["alice"], [100, 200], ["cmd.exe"]),
        ("d2", ["bob"], [300, 500], ["PowerShell.EXE", "notepad.exe"]),  # a missing account is not collected
        ("d3", ["SYSTEM"], [400], ["rundll32.exe"]),
    ]
    bag = rows(f"{P} | where isnotempty(AdditionalFields) | summarize b = make_bag(parse_json(AdditionalFields))")
    assert set(json.loads(bag[0][0])) == {"Sig", "Level"}


def test_summarize_arg_max_star_and_arg_min() -> None:
    got = rows(f"{P} | summarize arg_max(Timestamp, *) by DeviceId | project DeviceId, ReportId, FileName")
    assert sorted(got) == [("d1", 1, "powershell.exe"), ("d2", 5, "notepad.exe"), ("d3", 4, "rundll32.exe")]
    assert_kql(f"{P} | summarize arg_min(Timestamp, FileName) by DeviceId",
               [("d1", T("2024-05-15 09:00"), "cmd.exe"), ("d2", T("2024-05-14 10:00"), "PowerShell.EXE"),
                ("d3", T("2024-05-01 12:00"), "rundll32.exe")], columns=["DeviceId", "Timestamp", "FileName"])
    assert_kql(f"{P} | where DeviceId == 'd3' | summarize take_any(FileName), percentile(ProcessId, 50)",
               [("rundll32.exe", 400)])


def test_summarize_by_bin() -> None:
    assert_kql(f"{P} | summarize count() by bin(Timestamp, 1d)",
               [(T("2024-05-15"), 3), (T("2024-05-14"), 1), (T("2024-05-01"), 1)], columns=["Timestamp", "count_"])
    assert_kql(f"{P} | summarize n = count() by b = bin(ProcessId, 200)", [(0, 1), (200, 2), (400, 2)])
    assert_kql(f"{P} | summarize n = count() by h = bin(Timestamp, 1h) | where n > 0 | count", [(4,)])


# ---------------------------------------------------------------- order, take, top, distinct, count


def test_sort_defaults_and_nulls() -> None:
    assert [r[0] for r in rows(f"{P} | sort by ProcessId | project ReportId")] == [5, 4, 3, 2, 1]
    assert [r[0] for r in rows(f"{P} | order by FileSize asc | project ReportId")] == [4, 5, 1, 2, 3]
    assert [r[0] for r in rows(f"{P} | sort by FileSize desc | project ReportId")] == [3, 2, 1, 5, 4]
    assert [r[0] for r in rows(f"{P} | sort by FileSize asc nulls last | project ReportId")] == [5, 1, 2, 3, 4]
    assert [r[0] for r in rows(f"{P} | sort by DeviceId asc, ProcessId desc | project ReportId")] == [2, 1, 5, 3, 4]


def test_take_top_distinct_count() -> None:
    assert [r[0] for r in rows(f"{P} | top 2 by ProcessId | project ReportId")] == [5, 4]
    assert [r[0] for r in rows(f"{P} | top 2 by ProcessId asc | project ReportId")] == [1, 2]
    assert rows(f"{P} | take 2 | count") == [(2,)]
    assert rows(f"{P} | limit 10 | count") == [(5,)]
    assert_kql(f"{P} | distinct DeviceId", [("d1",), ("d2",), ("d3",)])
    assert_kql(f"{P} | project DeviceId, AccountName | distinct *",
               [("d1", "alice"), ("d2", "bob"), ("d2", ""), ("d3", "SYSTEM")])  # a missing string is ""
    assert_kql(f"{P} | count", [(5,)], columns=["Count"])


# ---------------------------------------------------------------- join, lookup, union


def test_join_innerunique_deduplicates_left() -> None:
    q = "DeviceInfo | join (DeviceProcessEvents | project DeviceId, ReportId) on DeviceId | project DeviceId, ReportId1"
    assert_kql(q, [("d1", 1), ("d1", 2), ("d2", 3), ("d2", 5)])
    q2 = q.replace("join (", "join kind=inner (")
    assert len(rows(q2)) == 6  # inner keeps both DeviceInfo rows of d1


def test_join_kinds() -> None:
    left = f"{P} | project ReportId, DeviceId"
    info = "(DeviceInfo | where Timestamp > datetime(2024-05-15) | project DeviceId, OSPlatform)"
    assert_kql(f"{left} | join kind=leftouter {info} on DeviceId | project ReportId, OSPlatform",
               [(1, "Windows11"), (2, "Windows11"), (3, "WindowsServer2022"), (5, "WindowsServer2022"), (4, "")])
    assert ids(f"{left} | join kind=leftanti {info} on DeviceId") == [4]
    assert ids(f"{left} | join kind=leftsemi {info} on DeviceId") == [1, 2, 3, 5]
    assert ids(f"{P} | join kind=rightanti DeviceNetworkEvents on DeviceId") == [12]
    assert ids(f"{P} | join kind=rightsemi DeviceNetworkEvents on DeviceId") == [10, 11]
    net = "(DeviceNetworkEvents | project DeviceId, RemotePort)"
    assert len(rows(f"{left} | join kind=fullouter {net} on DeviceId")) == 6
    assert len(rows(f"{left} | join kind=rightouter {net} on DeviceId")) == 5
    assert_kql(f"{P} | project ReportId, Dev = DeviceId | join kind=inner {net} on $left.Dev == $right.DeviceId "
               "| project ReportId, RemotePort", [(1, 443), (2, 443), (3, 53), (5, 53)])


def test_lookup() -> None:
    assert_kql(f"{P} | project ReportId, DeviceId | lookup (DeviceNetworkEvents | project DeviceId, RemotePort) on DeviceId",
               [(1, "d1", 443), (2, "d1", 443), (3, "d2", 53), (5, "d2", 53), (4, "d3", None)],
               columns=["ReportId", "DeviceId", "RemotePort"])


def test_union() -> None:
    assert rows("union DeviceProcessEvents, DeviceNetworkEvents | count") == [(8,)]
    assert_kql("union withsource=T DeviceNetworkEvents, DeviceInfo | summarize count() by T",
               [("DeviceNetworkEvents", 3), ("DeviceInfo", 3)])
    assert_kql("union withsource=T Device*Events | summarize count() by T",
               [("DeviceNetworkEvents", 3), ("DeviceProcessEvents", 5)])
    assert rows(f"{P} | union DeviceNetworkEvents | where isnotempty(RemoteIP) | count") == [(3,)]


# ---------------------------------------------------------------- mv-expand, parse, sources


def test_mv_expand() -> None:
    assert_kql(f"{P} | where ReportId == 1 | extend Names = parse_json(AdditionalFields).Sig.Names "
               "| mv-expand Names | project N = tostring(Names)", [("a",), ("b",)])
    assert_kql("print a = dynamic([1, 2, 3]) | mv-expand a to typeof(long) | summarize s = sum(a)", [(6,)])
    assert_kql("print a = dynamic(['x', 'y']) | mv-expand with_itemindex=i a | project i, v = tostring(a)",
               [(0, "x"), (1, "y")])


def test_mv_expand_property_bags() -> None:
    got = rows('print b = dynamic({"a": 1, "b": 2}) | mv-expand b')
    assert sorted((json.loads(r[0]) for r in got), key=str) == [{"a": 1}, {"b": 2}]
    got = rows('print b = dynamic({"a": 1, "b": 2}) | mv-expand kind=array b')
    assert sorted(json.loads(r[0]) for r in got) == [["a", 1], ["b", 2]]
    assert rows("print a = 1, b = dynamic([]) | mv-expand b") == []  # an empty array gives no row


def test_parse() -> None:
    assert_kql(f'{P} | where ReportId == 3 | parse ProcessCommandLine with * "-File " Script | project Script',
               [(r"C:\temp\run.ps1",)])
    assert_kql('print s = "id=42;name=x" | parse s with "id=" Id:long ";name=" Name | project Id, Name',
               [(42, "x")])


def test_sources() -> None:
    assert_kql('datatable(a:long, b:string)[1, "x", 2, "y"] | where a > 1', [(2, "y")])
    assert_kql('print x = 1 + 2, "s"', [(3, "s")], columns=["x", "print_1"])
    assert_kql("range i from 1 to 5 step 2", [(1,), (3,), (5,)])


def test_let_functions_invoke_materialize_as() -> None:
    assert rows(f"let threshold = 250; {P} | where ProcessId > threshold | count") == [(3,)]
    assert rows(f'let procs = {P} | where DeviceId == "d1"; procs | count') == [(2,)]
    assert rows(f'let f = (name:string) {{ tolower(name) }}; {P} | where f(FileName) == "powershell.exe" | count') == [(2,)]
    assert rows(f"let g = (dev:string) {{ {P} | where DeviceId == dev }}; g('d2') | count") == [(2,)]
    assert ids(f'let h = (T:(DeviceId:string)) {{ T | where DeviceId == "d3" }}; {P} | invoke h()') == [4]
    assert rows(f"let m = materialize({P} | where ProcessId < 300); m | count") == [(2,)]
    assert rows(f"{P} | where ProcessId < 300 | as P2 | count") == [(2,)]
    assert rows(f"let n = toscalar({P} | summarize max(ProcessId)); print n") == [(500,)]


def test_serialize_row_number_follows_sort() -> None:
    assert rows(f"{P} | sort by ProcessId asc | serialize rn = row_number() | project ReportId, rn") == [
        (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    # a window in a filter, and prev() over the sorted rows
    assert rows(f"{P} | sort by ProcessId asc | serialize | where row_number() == 2 | project ReportId") == [(2,)]
    assert rows(f"{P} | sort by ProcessId desc | extend p = prev(ReportId) | project ReportId, p") == [
        (5, None), (4, 5), (3, 4), (2, 3), (1, 2)]


def test_row_number_start_and_window_argument_checks() -> None:
    # row_number(StartingIndex): the first row gets StartingIndex (the start was ignored before)
    assert rows("range a from 1 to 3 step 1 | sort by a desc | extend rn = row_number(7)") == [(3, 7), (2, 8), (1, 9)]
    opts = CompileOptions(now=NOW)
    for kql, code in ((f"{P} | serialize | extend r = prev()", "wrong_arguments"),
                      (f"{P} | serialize | extend r = next()", "wrong_arguments"),
                      (f"{P} | summarize percentiles(FileSize)", "wrong_arguments"),
                      (f"{P} | serialize | extend r = row_number(1, ProcessId == 2)", "unsupported")):
        compiled = compile_kql(kql, CAT, opts)  # these raised IndexError out of compile_kql
        assert [d.code for d in compiled.errors] == [code], kql


def test_getschema() -> None:
    assert_kql("DeviceInfo | project ReportId, OSPlatform | getschema",
               [("ReportId", 0, "System.Int64", "long"), ("OSPlatform", 1, "System.String", "string")])


# ---------------------------------------------------------------- scalars and functions


def test_literals() -> None:
    assert_kql(r"""print a = 'x', b = "y", c = @"C:\t", d = h"secret", e = "a\tb", f = @'it''s'""",
               [("x", "y", "C:\\t", "secret", "a\tb", "it's")])
    assert_kql("print a = 7 / 2, b = 7.0 / 2, c = 7 % 3, d = -3, e = 2 * 3 + 1", [(3, 3.5, 1, -3, 7)])
    assert_kql("print a = true, b = long(null), c = isnull(long(null)), d = 1e3", [(True, None, True, 1000.0)])
    assert_kql("print a = 2h + 30m + 10s + 100ms, b = time(1.02:00:00), c = 1d / 1h",
               [(dt.timedelta(hours=2, minutes=30, seconds=10, milliseconds=100), dt.timedelta(days=1, hours=2), 24.0)])
    assert_kql("print d = datetime(2024-05-15 12:00) - datetime(2024-05-14), t = datetime(2024-01-01) + 36h",
               [(dt.timedelta(days=1, hours=12), T("2024-01-02 12:00"))])


def test_dynamic_access() -> None:
    got = rows('print d = dynamic({"a": {"b": [10, 20]}, "s": "x"}) '
               '| extend v = d.a.b[1], s = tostring(d.s), k = d["s"], last = d.a.b[-1] | project v, s, k, last')
    v, s, k, last = got[0]
    assert (json.loads(v), s, json.loads(k), json.loads(last)) == (20, "x", "x", 20)
    assert_kql("print s = tostring(parse_json('{\"a\":\"x\"}').a), n = tostring(parse_json('{\"a\":1}').a)",
               [("x", "1")])
    got = rows('print k = bag_keys(dynamic({"a":1,"b":2})), p = bag_pack("x", 1), a = pack_array(1, "b"), '
               'h = set_has_element(dynamic(["a","b"]), "b"), i = array_index_of(dynamic(["a","b"]), "b"), '
               'l = array_length(dynamic([1,2,3]))')
    k, p, a, h, i, length = got[0]
    assert (sorted(json.loads(k)), json.loads(p), json.loads(a), h, i, length) == (["a", "b"], {"x": 1}, [1, "b"], True, 1, 3)


def test_conditionals() -> None:
    assert_kql(f'{P} | project ReportId, s = iff(ProcessId > 250, "big", "small"), '
               'c = case(ProcessId < 200, "low", ProcessId < 400, "mid", "high"), '
               'a = coalesce(AccountName, "none"), e = isempty(AccountName), n = isnotnull(FileSize)',
               [(1, "small", "low", "alice", False, True), (2, "small", "mid", "alice", False, True),
                (3, "big", "mid", "bob", False, True), (4, "big", "high", "SYSTEM", False, False),
                (5, "big", "high", "none", True, True)])


def test_math() -> None:
    assert_kql("print r = round(2.15, 1), a = abs(-3), l = round(log(100) / log(10), 6), p = pow(2, 10), "
               "f = floor(7.5, 2), b = bin(17, 5)", [(2.2, 3, 2.0, 1024.0, 6.0, 15)])


def test_string_functions() -> None:
    assert_kql(
        'print a = tolower("AbC"), b = toupper("AbC"), c = strcat("a", 1, "b"), d = strcat_delim("-", "a", "b"), '
        'e = strlen("héllo"), f = substring("abcdef", 2, 3), g = substring("abcdef", 4), '
        'h = tostring(split("aaa_bbb_ccc", "_")[1]), i = replace_string("a.b.c", ".", "/"), '
        'j = replace_regex("a1b22", @"\\d+", "#"), k = trim(@"[\\s_]+", "__x y__"), '
        'l = trim_start("_", "__x_"), m = trim_end("_", "__x_"), n = indexof("abcdef", "cd"), '
        'o = indexof("abc", "z"), p = reverse("abc")',
        [("abc", "ABC", "a1b", "a-b", 5, "cde", "ef", "bbb", "a/b/c", "a#b#", "x y", "x_", "__x", 2, -1, "cba")],
    )
    assert_kql(r'print a = extract(@"(\d+)\.(\d+)", 2, "v10.25"), b = extract_all(@"(\d+)", "a1b22c333"), '
               r'c = split("a,b", ",", 1), d = extract("x=([0-9.]+)", 1, "x=45.6", typeof(real))',
               [("25", '["1","22","333"]', '["b"]', 45.6)])
    assert_kql('print a = base64_decode_tostring("SGVsbG8="), b = url_decode("a%20b%2Fc")', [("Hello", "a b/c")])


def test_parse_path_and_url() -> None:
    got = rows(r'print p = parse_path(@"C:\Windows\System32\cmd.exe"), '
               r'u = parse_url("https://user:pw@evil.example.com:8443/a/b.php?x=1&y=2#top")')
    p, u = json.loads(got[0][0]), json.loads(got[0][1])
    assert (p["Filename"], p["Extension"], p["DirectoryPath"]) == ("cmd.exe", "exe", r"C:\Windows\System32")
    assert (u["Scheme"], u["Host"], u["Port"], u["Path"], u["Username"], u["Fragment"]) == (
        "https", "evil.example.com", "8443", "/a/b.php", "user", "top")
    assert u["Query Parameters"] == {"x": "1", "y": "2"}


def test_time_functions() -> None:
    assert_kql(
        "print a = startofday(datetime(2024-05-15 13:14)), b = startofweek(datetime(2024-05-15)), "
        "c = startofmonth(datetime(2024-05-15)), d = endofday(datetime(2024-05-15 01:00)), "
        "e = datetime_add('day', 2, datetime(2024-05-15)), f = datetime_diff('hour', datetime(2024-05-15 10:00), datetime(2024-05-15 07:00)), "
        "g = format_datetime(datetime(2024-05-15 13:04:05), 'yyyy-MM-dd HH:mm:ss'), h = dayofweek(datetime(2024-05-15)), "
        "i = hourofday(datetime(2024-05-15 13:00)), j = todatetime('2024-05-15T01:02:03Z'), k = totimespan('01:30:00'), "
        "l = unixtime_seconds_todatetime(1546300800), m = bin(datetime(2024-05-15 13:14), 1h)",
        [(T("2024-05-15"), T("2024-05-12"), T("2024-05-01"), T("2024-05-15 23:59:59.999999"), T("2024-05-17"), 3,
          "2024-05-15 13:04:05", dt.timedelta(days=3), 13, T("2024-05-15 01:02:03"), dt.timedelta(minutes=90),
          T("2019-01-01"), T("2024-05-15 13:00"))],
    )
    # datetime_diff counts period boundaries: the 14 days from R4 to now
    assert_kql(f"{P} | where ReportId == 4 | project d = datetime_diff('day', now(), Timestamp)", [(14,)])


def test_conversions() -> None:
    assert_kql('print a = tostring(12), b = toint("42"), c = tolong("7"), d = toreal("1.5"), e = todouble(2), '
               'f = tobool("true"), g = toint("nope"), h = tostring(long(null))',
               [("12", 42, 7, 1.5, 2.0, True, None, "")])


def test_ip_functions() -> None:
    assert ids("DeviceNetworkEvents | where ipv4_is_private(RemoteIP)") == [10, 12]
    assert ids('DeviceNetworkEvents | where ipv4_is_in_range(RemoteIP, "8.8.0.0/16")') == [11]
    assert_kql('print a = parse_ipv4("10.1.2.3"), b = ipv4_is_private("172.20.0.1"), c = ipv4_is_private("nope")',
               [(167838211, True, False)])


def test_ingestion_time() -> None:
    assert_kql(f"{P} | where ReportId == 1 | project t = ingestion_time()", [(T("2024-05-15 11:59"),)])
