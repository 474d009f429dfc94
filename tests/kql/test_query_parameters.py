"""`declare query_parameters(...)` with CompileOptions.parameters, executed on the fixture rows.

Expected rows come from the fixture table in tests/kql/fixtures.py (DeviceProcessEvents: six
rows, ReportId 1..6) read with the Kusto docs ("Query parameters declaration statement"): values
are read by the declared type, a missing value falls back to the default, a value the query does
not declare is ignored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kql import CompileOptions, compile_kql
from schema import default_catalog
from tests.kql.fixtures import NOW, fixture_connection


def compile_with(kql: str, params: dict[str, Any] | None) -> Any:
    return compile_kql(kql, default_catalog(), CompileOptions(now=NOW, parameters=params))


def rows(kql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    compiled = compile_with(kql, params)
    assert compiled.ok, [(d.code, d.message) for d in compiled.diagnostics]
    assert compiled.sql is not None
    return fixture_connection().cursor().execute(compiled.sql).fetchall()


def errors(kql: str, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    compiled = compile_with(kql, params)
    assert not compiled.ok
    return [(d.code, d.message) for d in compiled.errors]


IDS = "DeviceProcessEvents | where {} | project ReportId | order by ReportId asc"


def ids(where: str, decl: str, params: dict[str, Any] | None = None) -> list[int]:
    return [r[0] for r in rows(f"declare query_parameters({decl});\n" + IDS.format(where), params)]


# ---------------------------------------------------------------- values by declared type


def test_string_value_is_plain_text() -> None:
    # the docs' REST example sends "courtesyTitle": "Mr." -- the text itself, no quotes
    assert ids("AccountName == who", "who:string", {"who": "alice"}) == [1, 2, 6]
    assert ids("AccountName == who", "who:string", {"who": "bob"}) == [3]


def test_long_in_kusto_text_and_json_forms() -> None:
    decl = "minSize:long"
    expected = [2, 3]  # FileSize 2000, 3000
    assert ids("FileSize > minSize", decl, {"minSize": "1000"}) == expected
    assert ids("FileSize > minSize", decl, {"minSize": "long(1000)"}) == expected
    assert ids("FileSize > minSize", decl, {"minSize": 1000}) == expected  # JSON number


def test_default_used_when_not_passed_and_overridden_when_passed() -> None:
    decl = "minSize:long = 1500"
    assert ids("FileSize > minSize", decl) == [2, 3]
    assert ids("FileSize > minSize", decl, {"minSize": "550"}) == [1, 2, 3, 6]


def test_datetime_forms() -> None:
    where = "Timestamp >= since"
    expected = [1, 2, 5]  # on 2024-05-15
    for value in ("datetime(2024-05-15)", "2024-05-15", "2024-05-15T00:00:00Z",
                  # azure-kusto-data serialises a Python datetime with str()
                  str(dt.datetime(2024, 5, 15)), str(dt.datetime(2024, 5, 15, tzinfo=dt.UTC))):
        assert ids(where, "since:datetime", {"since": value}) == expected, value


def test_datetime_parameter_prunes_partitions_like_a_literal() -> None:
    compiled = compile_with("declare query_parameters(since:datetime);\n"
                            "DeviceProcessEvents | where Timestamp > since", {"since": "2024-05-14"})
    assert compiled.ok and compiled.sql is not None
    # a parameter is a constant: the date partition bound is derived from it, as from a literal
    assert '"date" >=' in compiled.sql and "2024-05-14" in compiled.sql


def test_timespan_forms_with_ago() -> None:
    # NOW is 2024-05-15 12:00; within 1h: ReportId 1 (11:00) and 5 (11:50)
    for value in ("1h", "time(1h)", "01:00:00", "0.01:00:00", "timespan(01:00:00)"):
        assert ids("Timestamp >= ago(window)", "window:timespan", {"window": value}) == [1, 5], value
    # str(timedelta(days=1, hours=1)) as the Python client sends it: since 2024-05-14 11:00
    assert ids("Timestamp >= ago(window)", "window:timespan",
               {"window": str(dt.timedelta(days=1, hours=1))}) == [1, 2, 5]


def test_dynamic_list_with_in() -> None:
    decl = "names:dynamic"
    expected = [2, 4]  # cmd.exe, rundll32.exe
    assert ids("FileName in (names)", decl, {"names": 'dynamic(["cmd.exe", "rundll32.exe"])'}) == expected
    assert ids("FileName in (names)", decl, {"names": '["cmd.exe", "rundll32.exe"]'}) == expected
    assert ids("FileName in (names)", decl, {"names": ["cmd.exe", "rundll32.exe"]}) == expected  # JSON


def test_bool_real_int_guid_values() -> None:
    got = rows("declare query_parameters(b:bool, r:real, i:int, g:guid);\nprint b, r * 2, i + 1, g",
               {"b": "true", "r": "1.25", "i": "int(41)", "g": "0F8FAD5B-D9CB-469F-A165-70867728950E"})
    assert [(x[0], float(x[1]), x[2], x[3]) for x in got] == [
        (True, 2.5, 42, "0f8fad5b-d9cb-469f-a165-70867728950e")]
    compiled = compile_with("declare query_parameters(b:bool, r:real, i:int, g:guid);\nprint b, r, i, g",
                            {"b": False, "r": 3, "i": 7, "g": "0f8fad5b-d9cb-469f-a165-70867728950e"})
    assert [t for _, t in compiled.columns] == ["bool", "real", "int", "guid"]


def test_parameters_usable_in_let_functions_and_summarize() -> None:
    kql = """declare query_parameters(acct:string, top_n:long = 1);
let proc = (name:string) { DeviceProcessEvents | where AccountName == acct and FileName != name };
proc("cmd.exe") | summarize n = count() by DeviceId | top top_n by n desc"""
    assert rows(kql, {"acct": "alice"}) == [("d1", 2)]  # ReportId 1 and 6


def test_undeclared_parameter_is_ignored() -> None:
    assert ids("AccountName == who", "who:string", {"who": "bob", "unused": "x", "other": 5}) == [3]
    assert rows("print 1", {"anything": "'; select 1 --"}) == [(1,)]


# ---------------------------------------------------------------- injection attempts stay values


@pytest.mark.parametrize("value", [
    "alice' OR '1'='1",
    "alice\" or 1==1 //",
    "x'); DROP TABLE DeviceProcessEvents; --",
    "' UNION SELECT 1 --",
    "\\'; SELECT 1; --",
])
def test_string_injection_is_a_value(value: str) -> None:
    assert ids("AccountName == who", "who:string", {"who": value}) == []
    assert rows("declare query_parameters(who:string);\nprint who, strlen(who)", {"who": value}) == [
        (value, len(value))]


def test_typed_injection_is_a_diagnostic_not_text() -> None:
    errs = errors("declare query_parameters(n:long);\nDeviceProcessEvents | where FileSize > n",
                  {"n": "1 or 1==1"})
    assert [c for c, _ in errs] == ["invalid_parameter"]
    errs = errors("declare query_parameters(d:dynamic);\nprint d", {"d": "dynamic([1]) | take 5"})
    assert [c for c, _ in errs] == ["invalid_parameter"]


# ---------------------------------------------------------------- diagnostics


def test_missing_parameter_without_default() -> None:
    errs = errors("declare query_parameters(who:string, n:long = 1);\nprint who, n", {})
    assert errs[0][0] == "missing_parameter" and "'who'" in errs[0][1]
    assert len(errs) == 1  # the later use is not a second error


def test_bad_value_names_parameter_and_type() -> None:
    compiled = compile_with("declare query_parameters(\n  since:datetime);\nprint since", {"since": "yesterday"})
    (d,) = compiled.errors
    assert d.code == "invalid_parameter"
    assert "'since'" in d.message and "datetime" in d.message and "yesterday" in d.message
    assert (d.line, d.column) == (2, 3)  # points at the declaration


@pytest.mark.parametrize(("decl", "value"), [
    ("n:int", "3000000000"),  # out of range for int
    ("n:long", "1.5"),
    ("n:long", True),  # a JSON boolean is not a number
    ("n:bool", "yes"),
    ("n:guid", "not-a-guid"),
    ("n:timespan", "soon"),
    ("n:dynamic", "{not json"),
    ("n:string", 5),  # JSON number for a string parameter
])
def test_bad_values(decl: str, value: Any) -> None:
    errs = errors(f"declare query_parameters({decl});\nprint n", {"n": value})
    assert [c for c, _ in errs] == ["invalid_parameter"], errs
    assert "'n'" in errs[0][1]


def test_declaration_errors() -> None:
    assert [c for c, _ in errors("declare query_parameters(d:dynamic = dynamic([1]));\nprint d")] == [
        "invalid_argument"]
    assert [c for c, _ in errors("declare query_parameters(n:long = 'x');\nprint n")] == ["type_mismatch"]
    assert [c for c, _ in errors("declare query_parameters(n:long, n:long);\nprint n", {"n": 1})] == [
        "invalid_argument"]
    assert [c for c, _ in errors("declare query_parameters(n:nosuchtype);\nprint 1")] == ["unknown_type"]
    assert [c for c, _ in errors("declare query_parameters(t:(*));\nprint 1")] == ["invalid_argument"]
    assert [c for c, _ in errors("declare query_parameters(n:long = 1);\ndeclare query_parameters(n:long = 2);\n"
                                 "print n")] == ["invalid_argument"]
    assert [c for c, _ in errors("let f = () { declare query_parameters(a:long); print a };\nf()",
                                 {"a": 1})] == ["unsupported"]


def test_default_literals_of_each_kind() -> None:
    got = rows("declare query_parameters(a:datetime = datetime(2024-01-02), b:timespan = 2h, "
               "c:real = 2, d:string = 'x', e:bool = false);\nprint a, b, c, d, e")
    assert [(r[0], r[1], float(r[2]), r[3], r[4]) for r in got] == [
        (dt.datetime(2024, 1, 2), dt.timedelta(hours=2), 2.0, "x", False)]


def test_json_null_is_a_typed_null() -> None:
    assert rows("declare query_parameters(n:long, s:string);\nprint isnull(n), isempty(s)",
                {"n": None, "s": None}) == [(True, True)]
