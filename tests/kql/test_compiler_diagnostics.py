"""Diagnostics: every class with its code, 1-based line and column, and hints; all collected."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kql import CompileOptions, compile_kql, render
from kql.diagnostics import Diagnostic
from schema import default_catalog

CAT = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)


def diags(kql: str) -> list[Diagnostic]:
    return compile_kql(kql, CAT, CompileOptions(now=NOW)).diagnostics


def assert_kql_error(kql: str, code: str, line: int, column: int, hint: str | None = None) -> Diagnostic:
    result = compile_kql(kql, CAT, CompileOptions(now=NOW))
    assert not result.ok and result.sql is None
    found = [d for d in result.diagnostics if d.code == code]
    assert found, [(d.code, d.message) for d in result.diagnostics]
    d = found[0]
    assert (d.line, d.column) == (line, column), (d.line, d.column, d.message)
    assert kql[d.start:d.end] or d.start == len(kql)
    if hint is not None:
        assert any(hint in h for h in d.hints), d.hints
    return d


def test_syntax_error_position_and_expected_words() -> None:
    d = assert_kql_error("DeviceProcessEvents\n| where FileName ==", "syntax", 2, 20)
    assert "end of the query" in d.message
    assert "NAME" not in d.message and "LPAR" not in d.message  # KQL words, not Lark token names
    d = assert_kql_error("DeviceProcessEvents\n| wher FileName", "syntax", 2, 3)
    assert "did you mean 'where'?" in d.message and "summarize" in d.hints[0]
    assert_kql_error("DeviceProcessEvents | where (FileName == 'a'", "syntax", 1, 45)
    assert_kql_error('DeviceProcessEvents | where FileName == "unterminated', "syntax", 1, 41)


def test_unknown_table_with_did_you_mean() -> None:
    d = assert_kql_error("DeviceProcesEvents | take 1", "unknown_table", 1, 1, "did you mean 'DeviceProcessEvents'")
    assert d.end == len("DeviceProcesEvents")


def test_unknown_column_lists_the_columns_of_that_stage() -> None:
    d = assert_kql_error("DeviceProcessEvents\n| project FileName, DeviceId\n| where FolderPath != ''",
                         "unknown_column", 3, 9)
    assert any("columns available here: FileName, DeviceId" in h for h in d.hints)
    assert_kql_error("DeviceProcessEvents | where Timestampp > ago(1d)", "unknown_column", 1, 29,
                     "did you mean 'Timestamp'")


def test_unknown_function() -> None:
    assert_kql_error("DeviceProcessEvents | extend x = tolowerr(FileName)", "unknown_function", 1, 34,
                     "did you mean 'tolower'")


def test_type_errors() -> None:
    d = assert_kql_error('DeviceProcessEvents | where Timestamp > "abc"', "type_mismatch", 1, 29)
    assert "datetime" in d.message and "string" in d.message
    assert_kql_error("DeviceProcessEvents | summarize sum(FileName)", "type_mismatch", 1, 37)
    assert_kql_error("DeviceProcessEvents | where FileName", "type_mismatch", 1, 29)
    assert_kql_error("DeviceProcessEvents | where ProcessId contains 'x'", "type_mismatch", 1, 29)
    assert_kql_error("DeviceProcessEvents | extend x = count()", "type_mismatch", 1, 34)


def test_unsupported_is_reported_where_it_is() -> None:
    assert_kql_error('DeviceProcessEvents\n| evaluate autocluster()', "unsupported", 2, 3)
    assert_kql_error('externaldata(a:string)["https://example.com/x.csv"] | take 1', "unsupported", 1, 1)
    assert_kql_error("EmailEvents | take 1", "unsupported", 1, 1)
    assert_kql_error("DeviceNetworkEvents | extend g = geo_info_from_ip_address(RemoteIP)", "unsupported", 1, 34)


def test_all_errors_are_collected() -> None:
    ds = diags("DeviceProcessEvents\n| where Timestampp > ago(1d)\n| summarize sum(FileName) by Devce")
    got = [(d.code, d.line, d.column) for d in ds]
    assert got == [("unknown_column", 2, 9), ("type_mismatch", 3, 17), ("unknown_column", 3, 30)]


def test_warning_does_not_block() -> None:
    result = compile_kql("DeviceProcessEvents | summarize count(FileName) by DeviceId | render barchart", CAT)
    assert result.ok and result.sql
    assert [d.severity for d in result.diagnostics] == ["warning"]
    assert result.render == {"visualization": "barchart"}


def test_render_puts_a_caret_under_the_problem() -> None:
    text = "DeviceProcessEvents\n| where Timestampp > ago(1d)"
    out = render(text, diags(text), "q.kql")
    lines = out.splitlines()
    assert lines[0].startswith("q.kql:2:9: error[unknown_column]")
    assert lines[1] == "  | where Timestampp > ago(1d)"
    assert lines[2] == "  " + " " * 8 + "^" * len("Timestampp")


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("as_file", [True, False])
def test_cli_check(tmp_path: Path, as_file: bool) -> None:
    bad = "DeviceProcessEvents\n| where Timestampp > ago(1d)\n"
    if as_file:
        f = tmp_path / "q.kql"
        f.write_text(bad)
        r = _cli("check", str(f))
    else:
        r = _cli("check", "-", stdin=bad)
    assert r.returncode == 1
    assert "error[unknown_column]" in r.stderr and "^^^^^^^^^^" in r.stderr
    ok = _cli("check", "-", stdin="DeviceProcessEvents | project FileName")
    assert ok.returncode == 0 and "ok (1 columns: FileName:string)" in ok.stdout
    js = _cli("check", "--json", "-", stdin=bad)
    payload = json.loads(js.stdout)
    assert js.returncode == 1 and payload["ok"] is False
    assert payload["diagnostics"][0]["code"] == "unknown_column"
    assert (payload["diagnostics"][0]["line"], payload["diagnostics"][0]["column"]) == (2, 9)


def test_cli_sql() -> None:
    r = _cli("sql", "--now", "2024-05-15T12:00:00", "-", stdin="DeviceProcessEvents | where Timestamp > ago(1h) | count")
    assert r.returncode == 0
    assert "\"date\" >= CAST('2024-05-15' AS DATE)" in r.stdout
    bad = _cli("sql", "-", stdin="DeviceProcessEvents | where")
    assert bad.returncode == 1 and "error[syntax]" in bad.stderr


def test_integer_literals_leading_zeros_and_range() -> None:
    # Kusto long literals: decimal digits (leading zeros allowed) or 0x hex; 64-bit signed.
    from tests.kql.fixtures import assert_kql

    assert_kql("print a = 010, b = 0x1F, c = 9223372036854775807", [(10, 31, 9223372036854775807)])
    d = assert_kql_error("print a = 1,\n  b = 9223372036854775808", "syntax", 2, 7)
    assert "does not fit in a long" in d.message


def test_unreadable_or_out_of_range_time_literals_are_positioned_errors() -> None:
    # These raised OverflowError out of compile_kql, or reported "unknown function 'datetime'".
    d = assert_kql_error("print a = 1,\n  b = datetime(2024-13-01)", "syntax", 2, 7)
    assert "'2024-13-01' as a datetime" in d.message
    assert "out of range" in assert_kql_error("print 999999999999d", "syntax", 1, 7).message
    assert_kql_error("print time(99999999999.0)", "syntax", 1, 7)
    assert_kql_error("print datetime(0001-01-01T00:00:00+01:00)", "syntax", 1, 7)
    d = assert_kql_error("DeviceProcessEvents\n| where Timestamp > ago(3649000d)", "invalid_argument", 2, 21)
    assert "ago()" in d.message
    assert_kql_error("print now(-3649000d)", "invalid_argument", 1, 7)


def test_bin_abs_and_pack_reject_arguments_duckdb_cannot_run() -> None:
    # These compiled and then failed inside DuckDB with a Binder Error and no position.
    d = assert_kql_error("DeviceProcessEvents\n| extend r = bin(FileName, 1)", "type_mismatch", 2, 18)
    assert "number, datetime or timespan" in d.message
    assert_kql_error("print abs(true)", "type_mismatch", 1, 11)
    assert_kql_error("print b = pack('a', 1, 'b')", "wrong_arguments", 1, 11)


def test_negative_row_counts_and_no_columns_left_are_diagnostics() -> None:
    # These compiled to SQL DuckDB rejects (a negative LIMIT, a SELECT with no columns).
    assert_kql_error("DeviceProcessEvents\n| take -1", "invalid_argument", 2, 8)
    assert_kql_error("let n = -2;\nDeviceProcessEvents | top n by Timestamp", "invalid_argument", 2, 27)
    d = assert_kql_error("DeviceProcessEvents\n| project-away *", "invalid_argument", 2, 3)
    assert "no columns" in d.message
    assert_kql_error("print a = 1 | project-keep b*", "invalid_argument", 1, 15)


def test_cli_bad_file_and_dialect_are_messages_not_tracebacks(tmp_path: Path) -> None:
    r = _cli("check", str(tmp_path / "missing.kql"))
    assert r.returncode != 0 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    r = _cli("sql", "--dialect", "bogus", "-", stdin="print 1")
    assert r.returncode != 0 and "invalid choice" in r.stderr and "Traceback" not in r.stderr
