"""search, find and top-nested (Kusto docs: "search operator", "find operator", "top-nested
operator"), plus extract_json and replace_regex details met in the community corpus. Each test
runs the compiled SQL on DuckDB over the rows below and asserts the rows that come back."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kql import CompileOptions, compile_kql
from kql.testing import fixture_connection
from schema import default_catalog

CATALOG = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)
T = dt.datetime(2024, 5, 10, 8, 0, 0)

ROWS: dict[str, list[dict[str, Any]]] = {
    "DeviceFileEvents": [
        {"Timestamp": T, "DeviceId": "d1", "FileName": "ntds.dit", "FolderPath": r"C:\x\ntds.dit",
         "ActionType": "FileModified", "ReportId": 1},
        {"Timestamp": T, "DeviceId": "d2", "FileName": "other", "FolderPath": r"C:\ntds",
         "ActionType": "FileModified", "ReportId": 2},
        {"Timestamp": T, "DeviceId": "d2", "FileName": "ntds.dit", "FolderPath": r"C:\y\ntds.dit",
         "ActionType": "FileCreated", "ReportId": 3},
    ],
    "DeviceNetworkEvents": [
        {"Timestamp": T, "DeviceId": "d1", "RemoteIP": "1.2.3.4", "RemoteUrl": "evil.com",
         "ActionType": "ConnectionSuccess", "ReportId": 4},
        {"Timestamp": T, "DeviceId": "d3", "RemoteIP": "1.2.3.4", "RemoteUrl": "Evil.com",
         "ActionType": "ConnectionSuccess", "ReportId": 5},
        {"Timestamp": T, "DeviceId": "d3", "RemoteUrl": "good.com", "ActionType": "ConnectionSuccess",
         "ReportId": 6},
    ],
    "DeviceEvents": [
        {"Timestamp": T, "DeviceId": "d9", "RemoteUrl": "evil.com", "ActionType": "SmartScreenUrlWarning",
         "FileName": "f.exe", "ReportId": 7},
    ],
}


@pytest.fixture(scope="module")
def con() -> Any:
    c = fixture_connection(ROWS, CATALOG)
    yield c
    c.close()


def rows_of(con: Any, kql: str) -> list[tuple[Any, ...]]:
    compiled = compile_kql(kql, CATALOG, CompileOptions(now=NOW))
    assert compiled.ok, [(d.code, d.message) for d in compiled.diagnostics]
    assert compiled.sql is not None
    return sorted(con.cursor().execute(compiled.sql).fetchall(), key=repr)


def test_search_in_a_table_with_terms_and_a_column_term(con: Any) -> None:
    # the corpus query: terms anywhere, ActionType:"x" is `ActionType has "x"`
    assert rows_of(con, 'search in (DeviceFileEvents) "ntds" and "dit" and ActionType:"FileModified" '
                        "| project ReportId, $table") == [(1, "DeviceFileEvents")]


def test_search_every_table_is_case_insensitive_unless_asked(con: Any) -> None:
    assert rows_of(con, 'search "evil.com" | project $table, ReportId') == [
        ("DeviceEvents", 7), ("DeviceNetworkEvents", 4), ("DeviceNetworkEvents", 5)]
    assert rows_of(con, 'search kind=case_sensitive "Evil" | project ReportId') == [(5,)]


@pytest.mark.parametrize(("term", "ids"), [
    ('"ntds"', [1, 2, 3]),        # has: a whole term of FileName or FolderPath
    ('"nt*"', [1, 2, 3]),         # hasprefix
    ('"*dit"', [1, 3]),           # hassuffix
    ('"*tds.d*"', [1, 3]),        # contains
    ('"x*dit"', [1]),             # a regex \bx.*dit\b
    ("*", [1, 2, 3]),
    ('FolderPath:"ntds" and not("dit")', [2]),
])
def test_search_term_wildcards(con: Any, term: str, ids: list[int]) -> None:
    assert [r[0] for r in rows_of(con, f"DeviceFileEvents | search {term} | project ReportId")] == ids


def test_search_operator_output_starts_with_table(con: Any) -> None:
    compiled = compile_kql('DeviceEvents | search "evil"', CATALOG, CompileOptions(now=NOW))
    assert compiled.columns[0] == ("$table", "string")


def test_find_with_project(con: Any) -> None:
    # a column a table lacks is null (FileName in DeviceNetworkEvents)
    assert rows_of(con, 'find in (DeviceEvents, DeviceNetworkEvents) where RemoteIP == "1.2.3.4" or '
                        'RemoteUrl =~ "evil.com" project ReportId, FileName') == [
        ("DeviceEvents", 7, "f.exe"), ("DeviceNetworkEvents", 4, None), ("DeviceNetworkEvents", 5, None)]


def test_find_project_smart_packs_the_rest(con: Any) -> None:
    compiled = compile_kql('find withsource=T in (DeviceEvents, DeviceNetworkEvents) where RemoteUrl == "evil.com"',
                           CATALOG, CompileOptions(now=NOW))
    names = [c for c, _ in compiled.columns]
    assert names[0] == "T" and "RemoteUrl" in names and names[-1] == "pack_"
    assert "FileName" not in names and "RemoteIP" in names  # FileName: DeviceEvents only, packed
    got = rows_of(con, 'find withsource=T in (DeviceEvents, DeviceNetworkEvents) where RemoteUrl == "evil.com" '
                       "| project T, ReportId, pack_")
    import json

    assert [(t, rid, json.loads(p).get("FileName")) for t, rid, p in got] == [
        ("DeviceEvents", 7, "f.exe"), ("DeviceNetworkEvents", 4, None)]


def test_top_nested_one_level(con: Any) -> None:
    assert rows_of(con, "DeviceNetworkEvents | top-nested 1 of RemoteIP by dcount(DeviceId)") == [("1.2.3.4", 2)]
    compiled = compile_kql("DeviceNetworkEvents | top-nested 2 of tolower(RemoteUrl) by count() asc",
                           CATALOG, CompileOptions(now=NOW))
    assert not compiled.ok and compiled.errors[0].code == "wrong_arguments"  # an expression needs a name
    got = rows_of(con, "DeviceNetworkEvents | top-nested 1 of U = tolower(RemoteUrl) by n = count() asc")
    assert got == [("good.com", 1)]
    compiled = compile_kql("DeviceNetworkEvents | top-nested 2 of RemoteUrl by count()",
                           CATALOG, CompileOptions(now=NOW))
    assert [c for c, _ in compiled.columns] == ["RemoteUrl", "aggregated_RemoteUrl"]


def test_top_nested_levels_are_refused_clearly() -> None:
    compiled = compile_kql("DeviceNetworkEvents | top-nested 2 of RemoteIP by count(), top-nested 1 of DeviceId by count()",
                           CATALOG, CompileOptions(now=NOW))
    assert compiled.errors[0].code == "unsupported"


def test_extract_json_of_empty_or_invalid_text_and_its_type(con: Any) -> None:
    assert rows_of(con, 'print a = extract_json("$.a", "{\\"a\\": 5}", typeof(int)), b = extractjson("$.b", ""), '
                        'c = extract_json("$.a", "not json")') == [(5, "", "")]


def test_replace_regex_rewrite_backslashes(con: Any) -> None:
    # \\ is a backslash and \1 a group; any other backslash is kept literally
    assert rows_of(con, r'print a = replace_regex(@"C:\Users\bob\x", @"(C|D):\\Users\\.*?\\", @"C:\\Users\\u\\"), '
                        r'b = replace_regex("a{1}b", @"\{.*\}", @"\{x\}"), c = replace_regex("ab", "(a)(b)", @"\2\1")') == [
        ("C:\\Users\\u\\x", "a\\{x\\}b", "ba")]
