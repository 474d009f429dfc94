"""The mappings sqlglot renders silently wrong for a target, each run on the engine.

These run on DuckDB in the default test run and on Spark with `pytest --engine spark`: the same
expected rows (from the Kusto documentation) on both. The text checks at the end show why each
needs our own mapping: sqlglot's stock Spark rendering of the same tree differs.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlglot
from sqlglot import exp

from kql.lower import render
from kql.lower.spark import java_format
from tests.kql.fixtures import assert_kql

D = dt.datetime


def test_day_of_week_counts_from_sunday() -> None:
    # dayofweek-function: Sunday is 0 (a timespan of days); 2024-05-12 was a Sunday
    assert_kql(
        "print a = dayofweek(datetime(2024-05-12)), b = dayofweek(datetime(2024-05-15 23:59)),"
        " c = dayofweek(datetime(2024-05-18))",
        [(dt.timedelta(0), dt.timedelta(days=3), dt.timedelta(days=6))],
    )


def test_datetime_diff_counts_boundaries_not_elapsed_units() -> None:
    # datetime-diff-function examples: 01:00 vs 23:05:01 the day before is 2 hours (boundaries)
    assert_kql(
        "print h = datetime_diff('hour', datetime(2017-10-31 01:00), datetime(2017-10-30 23:05:01)),"
        " d = datetime_diff('day', datetime(2017-10-30 23:05:01), datetime(2017-09-30 23:05:01)),"
        " y = datetime_diff('year', datetime(2017-01-01), datetime(2000-12-31)),"
        " m = datetime_diff('minute', datetime(2017-10-30 23:05:01), datetime(2017-10-30 23:00:59))",
        [(2, 30, 17, 5)],
    )


def test_sub_day_bins_on_the_epoch_grid() -> None:
    # bin-function: values round down to a multiple of the bin size
    assert_kql(
        "print a = bin(datetime(2024-05-15 11:50:20), 15m), b = bin(datetime(2024-05-15 11:50:20), 1h),"
        " c = bin(datetime(2024-05-15 11:50:20.5), 1s), d = bin(datetime(2024-05-15 23:10), 1d)",
        [(D(2024, 5, 15, 11, 45), D(2024, 5, 15, 11), D(2024, 5, 15, 11, 50, 20), D(2024, 5, 15))],
    )


def test_summarize_by_sub_day_bin() -> None:
    # fixture rows 1 (11:00) and 5 (11:50) share the 11:00 hour; 2 is at 09:00
    assert_kql(
        "DeviceProcessEvents | where Timestamp > datetime(2024-05-15) | summarize n = count() by bin(Timestamp, 1h)",
        [(D(2024, 5, 15, 11), 2), (D(2024, 5, 15, 9), 1)],
    )


def test_percentile_is_nearest_rank() -> None:
    # percentiles-function: nearest-rank, a value of the input
    assert_kql(
        "range x from 1 to 10 step 1 | summarize p50 = percentile(x, 50), p90 = percentile(x, 90),"
        " p100 = percentile(x, 100)",
        [(5, 9, 10)],
    )


def test_json_arrays_are_json_text() -> None:
    assert_kql(
        "range x from 1 to 3 step 1 | summarize l = make_list(x) | extend n = array_length(l)",
        [([1, 2, 3], 3)],
        types=["dynamic", "long"],
    )


def test_case_insensitive_regex() -> None:
    # fixture: powershell.exe (1) and PowerShell.EXE (3)
    assert_kql(
        'DeviceProcessEvents | where FileName matches regex "(?i)^POWERSHELL\\\\.exe$" | project ReportId',
        [(1,), (3,)],
    )
    assert_kql(
        'DeviceProcessEvents | where FileName matches regex "^PowerShell" | project ReportId', [(3,)]
    )


def test_tostring_of_a_datetime() -> None:
    assert_kql(
        "print s = tostring(datetime(2024-05-15 11:00:01.25))", [("2024-05-15T11:00:01.250000Z",)]
    )


@pytest.mark.parametrize(
    ("duckdb_sql", "stock", "ours"),
    [
        ("SELECT DAYOFWEEK(t)", "DAYOFWEEK(t)", "(DAYOFWEEK(t) - 1)"),
        ("SELECT DATE_DIFF('HOUR', a, b)", "DATEDIFF(HOUR, a, b)",
         "TIMESTAMPDIFF(HOUR, DATE_TRUNC('HOUR', a), DATE_TRUNC('HOUR', b))"),
        ("SELECT QUANTILE_DISC(x, 0.5)", "PERCENTILE_DISC(x, 0.5)", "PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY x)"),
        ("SELECT TRY_CAST(s AS JSON)", "TO_JSON(s)", "TO_JSON(TRY_PARSE_JSON(s))"),
        ("SELECT STRFTIME(t, '%Y-%m-%dT%H:%M:%S')", "DATE_FORMAT(t, 'yyyy-MM-ddTHH:mm:ss')",
         "DATE_FORMAT(t, 'yyyy-MM-dd\\'T\\'HH:mm:ss')"),
    ],
)
def test_stock_spark_rendering_differs_where_we_map(duckdb_sql: str, stock: str, ours: str) -> None:
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    assert isinstance(tree, exp.Select)
    assert stock in tree.sql(dialect="spark")
    assert ours in render(tree, "spark")


def test_java_format_quotes_literal_letters_only() -> None:
    assert java_format("%Y-%m-%dT%H:%M:%S.%fZ") == "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'"
    assert java_format("%-d/%-m/%y %I %p, 100%%") == "d/M/yy hh a, 100%"
