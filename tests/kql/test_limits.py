"""Size limits (kql.limits), bounded array producers (kql.bounded) and Kusto's datetime/timespan
range (kql.temporal), checked through compile_kql and real DuckDB."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import duckdb
import pytest

from kql import CompileOptions, compile_kql
from kql.limits import KqlLimits
from schema.catalog import default_catalog

CATALOG = default_catalog()


def _errors(text: str, **limits: int) -> list[Any]:
    options = CompileOptions(limits=KqlLimits(**limits)) if limits else None
    return compile_kql(text, CATALOG, options).errors


def _run(text: str, **limits: int) -> list[tuple[Any, ...]]:
    options = CompileOptions(limits=KqlLimits(**limits)) if limits else None
    compiled = compile_kql(text, CATALOG, options)
    assert compiled.ok and compiled.sql, [e.message for e in compiled.errors]
    return duckdb.connect().execute(compiled.sql).fetchall()


@pytest.mark.parametrize(("text", "setting", "limits"), [
    ("print x = 1 // " + "a" * 200, "query_max_bytes", {"max_query_bytes": 150}),
    ("print x = " + "(" * 30 + "1" + ")" * 30, "query_max_depth", {"max_depth": 20}),
    ("print x = 1 | where " + " and ".join(f"x != {i}" for i in range(40)), "query_max_expression_nodes",
     {"max_expression_nodes": 100}),
    ("print x = 1 | where x in (" + ",".join(map(str, range(30))) + ")", "query_max_list_items",
     {"max_list_items": 20}),
    ("print x = 1 | extend " + ",".join(f"c{i}={i}" for i in range(30)), "query_max_list_items",
     {"max_list_items": 20}),
    ("print x = 1 | extend " + ",".join(f"c{i}={i}" for i in range(19)) + "| take 1" * 10, "query_max_nodes",
     {"max_nodes": 60}),
])
def test_each_limit_is_named_with_a_position(text: str, setting: str, limits: dict[str, int]) -> None:
    errors = _errors(text, **limits)
    assert [e.code for e in errors] == ["too_complex"]
    assert setting in errors[0].message
    assert errors[0].line == 1 and errors[0].column >= 1
    assert any(setting in h for h in errors[0].hints)
    assert not _errors(text, max_query_bytes=100_000)  # within the defaults, the query compiles


def test_the_defaults_admit_the_largest_corpus_shapes() -> None:
    # 999 or-ed terms in one where, as the largest Sigma rule has: within the defaults
    text = "DeviceProcessEvents | where " + " or ".join(f'ProcessCommandLine contains "x{i}"' for i in range(999))
    assert not _errors(text)


def test_expression_limit_counts_in_list_literals_as_list_items() -> None:
    items = ",".join(map(str, range(9_000)))
    assert not _errors(f"print x = 1 | where x in ({items})")


def test_deep_trees_are_parsed_without_recursion_and_refused() -> None:
    t0 = time.monotonic()
    errors = _errors("print x = " + "+".join(["1"] * 30_000), max_query_bytes=1_000_000)
    assert time.monotonic() - t0 < 10
    assert errors[0].code == "too_complex" and "query_max_depth" in errors[0].message
    errors = _errors("print x = " + "-(" * 30_000 + "1" + ")" * 30_000, max_query_bytes=1_000_000)
    assert errors[0].code == "too_complex"
    assert _run("print x = " + "-" * 3_000 + "1") == [(1,)]  # an even run of signs, folded flat


def test_a_long_pipeline_past_the_compilers_reach_is_too_complex_not_an_exception() -> None:
    errors = _errors("print x = 1" + " | take 1" * 95, max_depth=10_000)
    assert [e.code for e in errors] == ["too_complex"]


def test_lone_surrogates_are_refused_where_they_are() -> None:
    errors = _errors('print x = "ab\ud800"')
    assert errors[0].code == "invalid_text" and errors[0].column == 14
    errors = _errors('print x = "\\ud800"')  # a KQL escape that decodes to a lone surrogate
    assert errors[0].code == "invalid_text" and errors[0].column == 11
    compiled = compile_kql("declare query_parameters(p:dynamic); print p", CATALOG,
                           CompileOptions(parameters={"p": {"k": ["ok", "\udfff"]}}))
    assert compiled.errors[0].code == "invalid_parameter" and "p.k[1]" in compiled.errors[0].message


def test_a_surrogate_pair_escape_is_one_character() -> None:
    assert _run('print x = "\\ud83d\\ude00"') == [("\U0001F600",)]


# -- bounded arrays --------------------------------------------------------------------------


def test_range_returns_at_most_the_documented_number_of_values() -> None:
    # the KQL reference's own example: print r = range(1,1000000000) | mv-expand r | count
    assert _run("print r = range(1, 1000000000) | mv-expand r | count") == [(1_048_576,)]
    assert _run("print r = range(1, 100, 1) | mv-expand r | count", max_array_elements=10) == [(10,)]
    assert _run("print r = range(10, 1, -3)") == [("[10,7,4,1]",)]
    rows = _run("print r = range(datetime(2020-01-01), datetime(2030-01-01), 1h)", max_array_elements=3)
    assert rows == [('["2020-01-01 00:00:00","2020-01-01 01:00:00","2020-01-01 02:00:00"]',)]


def test_make_list_and_make_set_keep_at_most_the_limit() -> None:
    q = "range x from 1 to 100 step 1 | summarize l = make_list(x), s = make_set(x), k = make_list(x, 50)"
    rows = _run(q + " | project array_length(l), array_length(s), array_length(k)", max_array_elements=7)
    assert rows == [(7, 7, 7)]
    rows = _run(q + " | project array_length(l), array_length(k)")
    assert rows == [(100, 50)]


def test_make_series_refuses_more_bins_than_the_limit() -> None:
    q = ("range x from 1 to 3 step 1 | extend T = datetime(2020-01-01) "
         "| make-series n = count() on T from datetime(2020-01-01) to datetime(2020-01-02) step {step}")
    assert len(_run(q.format(step="1h"), max_array_elements=30)) == 1
    with pytest.raises(duckdb.InvalidInputException, match="query_max_array_elements"):
        _run(q.format(step="1m"), max_array_elements=30)


def test_the_range_operator_streams_under_the_memory_limit() -> None:
    compiled = compile_kql("range x from 1 to 100000000 step 1 | summarize l = make_list(x)", CATALOG)
    con = duckdb.connect()
    con.execute("SET memory_limit = '300MB'")
    # the list aggregate of 1e8 rows passes the memory limit and fails, instead of a whole
    # unnested list being built outside the buffer manager first
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute(compiled.sql).fetchall()


# -- Kusto's datetime and timespan ranges ----------------------------------------------------


@pytest.mark.parametrize(("expr", "expected"), [
    ("datetime(9999-12-31) + 1d", None),
    ("1d + datetime(9999-12-31)", None),
    ("datetime(9999-12-31) + 23h", dt.datetime(9999, 12, 31, 23)),
    ("datetime(0001-01-01) - 1d", None),
    ("datetime(0001-01-02) - 1d", dt.datetime(1, 1, 1)),
    ("datetime_add('year', 1, datetime(9999-06-01))", None),
    ("datetime_add('year', 1, datetime(2020-06-01))", dt.datetime(2021, 6, 1)),
    ("10675199d + 10675199d", None),
    ("1d * 1e30", None),
    ("10675199d - 1d", dt.timedelta(days=10675198)),
])
def test_datetime_and_timespan_overflow_is_null(expr: str, expected: object) -> None:
    # folded as constants and computed by DuckDB from columns: the same answer
    assert _run(f"print r = {expr}") == [(expected,)]
    column = ("print d = datetime(9999-12-31), e = datetime(0001-01-01), f = datetime(2020-06-01), "
              "g = datetime(9999-06-01), t = 10675199d, one = 1d | project r = ")
    replaced = (expr.replace("datetime(9999-12-31)", "d").replace("datetime(0001-01-01)", "e")
                .replace("10675199d", "t"))
    assert _run(column + replaced) == [(expected,)]


def test_compiling_stops_at_its_deadline() -> None:
    text = "print x = 1" + " | extend y = x" * 40
    compiled = compile_kql(text, CATALOG, CompileOptions(deadline=time.monotonic() - 1))
    assert [e.code for e in compiled.errors] == ["timeout"]
    assert compile_kql(text, CATALOG, CompileOptions(deadline=time.monotonic() + 60)).ok
