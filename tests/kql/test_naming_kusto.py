"""Column names of unnamed expressions, as Kusto.Language infers them (each case was asked of
kusto-check): conversion and rounding functions keep their argument's name, a few functions
prefix or suffix it, anything else is Column1, Column2..."""

from __future__ import annotations

import pytest

from tests.kql.fixtures import run_kql

P = "DeviceProcessEvents | where ReportId == 2"


@pytest.mark.parametrize(("query", "names"), [
    (f"{P} | project tostring(ProcessId), tolower(FileName), strlen(FileName), gettype(FileName)",
     ["ProcessId", "Column1", "strlen_FileName", "type_FileName"]),
    (f"{P} | summarize count() by tolower(FileName), startofday(Timestamp), bin(ProcessId, 10)",
     ["Column1", "Timestamp", "ProcessId", "count_"]),
    (f"{P} | summarize tostring(make_set(FileName)), todynamic(make_list(FolderPath)), dcount(DeviceId) * 2",
     ["set_FileName", "list_FolderPath", "Column1"]),
    (f"{P} | project FileName | mv-expand split(FileName, '.')", ["FileName"]),
    (f"{P} | project FileName | mv-expand split(tolower(FileName), '.'), pack_array(1, 2)",
     ["FileName", "Column1", "Column2"]),
])
def test_unnamed_columns(query: str, names: list[str]) -> None:
    assert run_kql(query).names == names


def test_mv_expand_of_an_unnamed_expression_runs() -> None:
    r = run_kql(f"{P} | project FileName | mv-expand split(tolower(FileName), '.')")
    assert sorted(str(row[1]) for row in r.rows) == ['cmd', 'exe']


@pytest.mark.parametrize(("query", "names"), [
    # Kusto.Language: a column colliding with a key gets a number; `*` skips keys and target
    ("DeviceInfo | summarize arg_max(Timestamp, DeviceId, DeviceName) by DeviceId",
     ["DeviceId", "Timestamp", "DeviceId1", "DeviceName"]),
    ("DeviceInfo | summarize ReportId = arg_max(Timestamp, ReportId) by DeviceId",
     ["DeviceId", "ReportId", "ReportId1"]),
])
def test_arg_max_collisions(query: str, names: list[str]) -> None:
    assert run_kql(query).names == names


def test_arg_max_star_skips_keys_and_the_target() -> None:
    names = run_kql("DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId, bin(Timestamp, 1h)").names
    assert names[:4] == ["DeviceId", "Timestamp", "Timestamp1", "DeviceName"]
    assert names.count("DeviceId") == 1
    renamed = run_kql("DeviceInfo | summarize LastSeen = arg_max(Timestamp, *) by DeviceName").names
    assert renamed[:3] == ["DeviceName", "LastSeen", "DeviceId"] and "Timestamp" not in renamed


def test_lookup_drops_the_right_keys_join_keeps_them() -> None:
    right = "(DeviceNetworkInfo | project D2 = DeviceId, MacAddress)"
    left = "DeviceInfo | project DeviceId, DeviceName"
    assert run_kql(f"{left} | lookup {right} on $left.DeviceId == $right.D2").names == [
        "DeviceId", "DeviceName", "MacAddress"]
    assert run_kql(f"{left} | join {right} on $left.DeviceId == $right.D2").names == [
        "DeviceId", "DeviceName", "D2", "MacAddress"]


def test_names_may_start_with_digits() -> None:
    # Kusto.Language accepts them (`let 2022Cves = ...`, `bin(5MinuteBin = Timestamp, 5m)`)
    r = run_kql("let 2022Ids = dynamic([1, 2]);\nDeviceProcessEvents | where ReportId in (2022Ids)\n"
                "| summarize c = count() by bin(5MinuteBin = Timestamp, 5m) | project 5MinuteBin, c")
    assert r.names == ["5MinuteBin", "c"] and sum(row[1] for row in r.rows) == 2
    # numbers and timespans still read as such
    r = run_kql("print a = 1e5, b = 0x1F, c = 5m, d = 10")
    assert r.types == ["real", "long", "timespan", "long"]


def test_render_inside_a_function_body() -> None:
    r = run_kql('let F = (x:string) {\n  DeviceProcessEvents | project FileName\n  | render piechart\n};\nF("a")')
    assert r.names == ["FileName"]


@pytest.mark.parametrize(("query", "head"), [
    # arg_max beside other aggregates (each list checked with kusto-check)
    ("DeviceInfo | summarize n = dcount(DeviceId), arg_max(Timestamp, *) by DeviceName, bin(Timestamp, 15m)",
     ["DeviceName", "Timestamp", "n", "Timestamp1", "DeviceId", "ClientVersion"]),
    ("DeviceInfo | summarize n = count(), arg_max(Timestamp, DeviceId) by DeviceId",
     ["DeviceId", "n", "Timestamp", "DeviceId1"]),
    ("DeviceInfo | summarize n = count(), L = arg_max(Timestamp, *) by DeviceId",
     ["DeviceId", "n", "L", "DeviceName", "ClientVersion", "PublicIP"]),
])
def test_arg_max_beside_other_aggregates(query: str, head: list[str]) -> None:
    assert run_kql(query).names[:len(head)] == head


def test_column_ifexists_takes_any_constant_name() -> None:
    r = run_kql('let F = (R:string) { DeviceProcessEvents | summarize c = count() by column_ifexists(R, "x") };\n'
                'F("FileName")')
    assert r.names == ["Column1", "c"] and len(r.rows) >= 2
    assert run_kql('let n = "Nope"; DeviceProcessEvents | project v = column_ifexists(n, "none") | take 1').rows == [("none",)]
