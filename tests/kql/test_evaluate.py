"""evaluate bag_unpack / pivot (columns learned from the data through the probe, or declared)
and ipv4_lookup, executed on DuckDB over fixture rows."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb
import pytest

from kql import CompileOptions, compile_kql
from kql.evaluate import MAX_DATA_COLUMNS
from kql.testing import fixture_connection, run_kql
from schema import default_catalog

CAT = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)
T = dt.datetime(2024, 5, 15, 11, 0, 0)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    rows: dict[str, list[dict[str, Any]]] = {
        "DeviceEvents": [
            {"Timestamp": T, "DeviceId": "d1", "ActionType": "A", "ReportId": 1,
             "AdditionalFields": json.dumps({"Rule": "r1", "Count": 3, "Flag": True})},
            {"Timestamp": T, "DeviceId": "d2", "ActionType": "B", "ReportId": 2,
             "AdditionalFields": json.dumps({"Rule": "r2", "Count": "many", "Extra": [1, 2]})},
            {"Timestamp": T, "DeviceId": "d2", "ActionType": "A", "ReportId": 3,
             "AdditionalFields": ""},
        ],
    }
    return fixture_connection(rows, CAT)


# AdditionalFields is a string column in Defender's schema: unpacking needs parse_json first
AF = "DeviceEvents | extend AF = parse_json(AdditionalFields) | project-away AdditionalFields"


def rows_of(con: duckdb.DuckDBPyConnection, kql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    r = run_kql(con, kql, CAT, NOW)
    return r.columns, sorted(r.rows, key=repr)


def test_bag_unpack_columns_come_from_the_data(con: duckdb.DuckDBPyConnection) -> None:
    cols, rows = rows_of(con, AF + " | project ReportId, AF | evaluate bag_unpack(AF)")
    # slots sorted by name; a slot whose values all have one JSON type gets that type, else dynamic
    assert cols == ["ReportId", "Count", "Extra", "Flag", "Rule"]
    r = run_kql(con, AF + " | project ReportId, AF | evaluate bag_unpack(AF)", CAT, NOW)
    assert dict(r.compiled.columns) == {"ReportId": "long", "Count": "dynamic", "Extra": "dynamic",
                                        "Flag": "bool", "Rule": "string"}
    assert rows == sorted([(1, "3", None, True, "r1"), (2, '"many"', "[1,2]", None, "r2"),
                           (3, None, None, None, None)], key=repr)


def test_bag_unpack_prefix_ignored_and_later_filters(con: duckdb.DuckDBPyConnection) -> None:
    kql = (AF + " | project ReportId, AF"
           " | evaluate bag_unpack(AF, 'af_', ignoredProperties=dynamic(['Extra', 'Count']))"
           " | where af_Rule == 'r2' | project ReportId, af_Rule, af_Flag")
    assert rows_of(con, kql) == (["ReportId", "af_Rule", "af_Flag"], [(2, "r2", None)])


def test_bag_unpack_conflicts(con: duckdb.DuckDBPyConnection) -> None:
    base = AF + " | project ReportId, Rule = 'input', AF | where ReportId == 1"
    err = compile_kql(base + " | evaluate bag_unpack(AF)", CAT,
                      CompileOptions(now=NOW, probe=lambda sql: con.cursor().execute(sql).fetchall()))
    assert not err.ok and err.errors[0].code == "duplicate_column"
    _, rows = rows_of(con, base + " | evaluate bag_unpack(AF, columnsConflict='keep_source') | project Rule")
    assert rows == [("input",)]
    _, rows = rows_of(con, base + " | evaluate bag_unpack(AF, columnsConflict='replace_source') | project Rule")
    assert rows == [("r1",)]


def test_bag_unpack_declared_schema_needs_no_probe(con: duckdb.DuckDBPyConnection) -> None:
    kql = (AF + " | where ReportId == 1 | project ReportId, AF | evaluate bag_unpack(AF)"
           " : (ReportId:long, Count:long, Missing:string)")
    compiled = compile_kql(kql, CAT, CompileOptions(now=NOW))  # no probe
    assert compiled.ok and compiled.sql
    assert compiled.columns == [("ReportId", "long"), ("Count", "long"), ("Missing", "string")]
    assert con.execute(compiled.sql).fetchall() == [(1, 3, None)]
    star = compile_kql(AF + " | evaluate bag_unpack(AF) : (*, Rule:string)", CAT,
                       CompileOptions(now=NOW))
    names = [c for c, _ in star.columns]
    assert names[-1] == "Rule" and "DeviceId" in names and "AF" not in names


def test_without_a_probe_the_schema_is_open() -> None:
    kql = AF + " | evaluate bag_unpack(AF) | where Anything == 'x' | project DeviceId, Anything"
    compiled = compile_kql(kql, CAT, CompileOptions(now=NOW))
    assert compiled.ok and compiled.sql is None and compiled.needs_probe
    assert [d.code for d in compiled.diagnostics] == ["data_dependent_schema"]
    assert [c for c, _ in compiled.columns] == ["DeviceId", "Anything"]
    # columns before the plugin are still checked
    bad = compile_kql(AF + " | where Nope == 1 | evaluate bag_unpack(AF)", CAT,
                      CompileOptions(now=NOW))
    assert [d.code for d in bad.errors] == ["unknown_column"]


def test_probe_cap_is_a_diagnostic() -> None:
    many = [(f"k{i}", ["VARCHAR"]) for i in range(MAX_DATA_COLUMNS + 1)]
    compiled = compile_kql(AF + " | evaluate bag_unpack(AF)", CAT,
                           CompileOptions(now=NOW, probe=lambda sql: many))
    assert [d.code for d in compiled.errors] == ["too_many_columns"]


def test_pivot_counts_by_the_other_columns(con: duckdb.DuckDBPyConnection) -> None:
    cols, rows = rows_of(con, "DeviceEvents | project DeviceId, ActionType | evaluate pivot(ActionType)")
    assert cols == ["DeviceId", "A", "B"]
    assert rows == [("d1", 1, 0), ("d2", 1, 1)]


def test_pivot_with_aggregate_and_keys(con: duckdb.DuckDBPyConnection) -> None:
    kql = "DeviceEvents | evaluate pivot(ActionType, sum(ReportId), DeviceId) | where A > 2"
    assert rows_of(con, kql) == (["DeviceId", "A", "B"], [("d2", 3, 2)])
    kql = "DeviceEvents | evaluate pivot(ActionType, make_set(ReportId), DeviceId) | project DeviceId, B"
    assert rows_of(con, kql) == (["DeviceId", "B"], [("d1", None), ("d2", "[2]")])


def test_pivot_declared_schema() -> None:
    compiled = compile_kql("DeviceEvents | evaluate pivot(ActionType, count(), DeviceId) : (DeviceId:string, A:long, Z:long)",
                           CAT, CompileOptions(now=NOW))
    assert compiled.ok and compiled.columns == [("DeviceId", "string"), ("A", "long"), ("Z", "long")]


def test_ipv4_lookup(con: duckdb.DuckDBPyConnection) -> None:
    base = ("let nets = datatable(Net:string, Site:string)['10.0.0.0/8', 'lan', '192.168.1.5', 'host'];"
            " datatable(Ip:string)['10.1.2.3', '192.168.1.5', '192.168.1.6', '8.8.8.8']")
    cols, rows = rows_of(con, base + " | evaluate ipv4_lookup(nets, Ip, Net)")
    assert cols == ["Ip", "Net", "Site"]
    assert rows == [("10.1.2.3", "10.0.0.0/8", "lan"), ("192.168.1.5", "192.168.1.5", "host")]
    _, rows = rows_of(con, base + " | evaluate ipv4_lookup(nets, Ip, Net, return_unmatched = true) | project Ip, Site")
    assert rows == sorted([("10.1.2.3", "lan"), ("192.168.1.5", "host"), ("192.168.1.6", None),
                           ("8.8.8.8", None)], key=repr)


def test_bag_unpack_of_a_string_is_a_type_error() -> None:
    compiled = compile_kql("DeviceEvents | evaluate bag_unpack(AdditionalFields)", CAT, CompileOptions(now=NOW))
    assert [d.code for d in compiled.errors] == ["type_mismatch"]


def test_other_plugins_are_unsupported() -> None:
    compiled = compile_kql("DeviceEvents | evaluate autocluster()", CAT, CompileOptions(now=NOW))
    assert [(d.code, d.column) for d in compiled.errors] == [("unsupported", 16)]
