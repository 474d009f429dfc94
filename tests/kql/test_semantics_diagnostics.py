"""Diagnostics: code, 1-based line/column, 0-based offsets, hints ("did you mean").

Contract: docs/internals.md, "Compiler"; issue 3, "Diagnostics".
"""

from __future__ import annotations

from tests.kql.fixtures import assert_kql_error, compile_query


def _hints(diag: object) -> str:
    return " ".join(str(h) for h in (getattr(diag, "hints", None) or []))


def test_syntax_error_position_on_a_later_line() -> None:
    d = assert_kql_error("DeviceProcessEvents\n| where FileName ==\n| take 10", "syntax", 3, 1)
    assert d.severity == "error"
    assert d.start == len("DeviceProcessEvents\n| where FileName ==\n")


def test_syntax_error_says_what_was_expected() -> None:
    d = assert_kql_error("DeviceProcessEvents | where (FileName == 'x'", "syntax")
    assert d.line == 1
    assert ")" in d.message or "expected" in d.message.lower()


def test_misspelt_operator_is_an_error_at_its_position() -> None:
    compiled = compile_query('DeviceProcessEvents | wher FileName == "x"')
    assert not compiled.ok
    d = compiled.diagnostics[0]
    assert (d.line, d.column) == (1, 23)


def test_unknown_table_with_did_you_mean() -> None:
    d = assert_kql_error("DeviceProcesEvents | take 1", "unknown_table", 1, 1)
    assert "DeviceProcessEvents" in d.message + _hints(d)
    assert (d.start, d.end) == (0, len("DeviceProcesEvents"))


def test_unknown_column_with_did_you_mean() -> None:
    d = assert_kql_error("DeviceProcessEvents\n| where FileNme == 'x'", "unknown_column", 2, 9)
    assert "FileName" in d.message + _hints(d)


def test_unknown_column_lists_the_columns_available_at_that_point() -> None:
    d = assert_kql_error(
        "DeviceProcessEvents | project FileName, ProcessId | where AccountName == 'x'",
        "unknown_column", 1, 59,
    )
    text = d.message + _hints(d)
    assert "FileName" in text and "ProcessId" in text


def test_unknown_function_with_did_you_mean() -> None:
    d = assert_kql_error("print x = tolowr('A')", "unknown_function", 1, 11)
    assert "tolower" in d.message + _hints(d)


def test_type_mismatch_datetime_compared_to_string() -> None:
    d = assert_kql_error('DeviceProcessEvents | where Timestamp > "abc"', "type_mismatch")
    assert d.line == 1 and d.column >= 29


def test_type_mismatch_sum_of_string() -> None:
    d = assert_kql_error("DeviceProcessEvents\n| summarize sum(FileName)", "type_mismatch")
    assert d.line == 2


def test_externaldata_is_unsupported_at_its_position() -> None:
    assert_kql_error(
        'let x = 1;\nexternaldata(Url:string) [@"https://example.com/list.csv"] with (format="csv")',
        "unsupported", 2, 1,
    )



def test_evaluate_plugin_is_unsupported() -> None:
    assert_kql_error("DeviceInfo | evaluate autocluster()", "unsupported", 1, 14)


def test_table_outside_the_catalog_is_reported() -> None:
    compiled = compile_query("EmailEvents | take 1")
    assert not compiled.ok
    assert compiled.diagnostics[0].code in ("unsupported", "unknown_table")
    assert (compiled.diagnostics[0].line, compiled.diagnostics[0].column) == (1, 1)


def test_several_errors_are_collected() -> None:
    compiled = compile_query(
        "DeviceProcessEvents\n| where FileNme == 'x'\n| extend y = tolowr(FileName)\n| project Nope"
    )
    assert not compiled.ok
    codes = [(d.code, d.line) for d in compiled.diagnostics]
    assert ("unknown_column", 2) in codes
    assert ("unknown_function", 3) in codes


def test_no_sql_for_a_failed_compile_and_ok_flag() -> None:
    compiled = compile_query("DeviceProcesEvents")
    assert compiled.ok is False
    good = compile_query("DeviceProcessEvents | take 1")
    assert good.ok is True and good.sql and good.diagnostics == [] or all(
        d.severity != "error" for d in good.diagnostics
    )
    assert good.tables == {"DeviceProcessEvents"}


def test_positions_inside_a_function_body_and_a_join_subquery() -> None:
    d = assert_kql_error(
        "let f = (x:string) {\n  DeviceProcessEvents | where FileNam == x\n};\nf('a')",
        "unknown_column", 2, 31,
    )
    assert "FileName" in d.message + _hints(d)
    d = assert_kql_error(
        "DeviceProcessEvents\n| join kind=inner (\n    DeviceNetworkEvents | where RemotPort == 443\n) on DeviceId",
        "unknown_column", 3, 33,
    )
    assert "RemotePort" in d.message + _hints(d)


def test_unclosed_parenthesis_is_a_syntax_error() -> None:
    d = assert_kql_error("DeviceProcessEvents\n| where FileName in~ ('a', 'b'\n| take 1", "syntax")
    assert d.line in (2, 3)
    assert ")" in d.message + _hints(d)
