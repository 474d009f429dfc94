"""has_any_index, print's unnamed columns and aggregate names through TimeGenerated, executed."""

from __future__ import annotations

import datetime as dt

from kql.testing import fixture_connection, run_kql
from schema import default_catalog

CAT = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)


def test_has_any_index_as_documented() -> None:
    con = fixture_connection({}, CAT)
    r = run_kql(con, "print idx1 = has_any_index('this is an example', dynamic(['this', 'example'])),"
                     " idx2 = has_any_index('this is an example', dynamic(['not', 'example'])),"
                     " idx3 = has_any_index('this is an example', dynamic(['not', 'found'])),"
                     " idx4 = has_any_index('Example number 2', dynamic([1, 2])),"
                     " idx5 = has_any_index('this is an example', dynamic([])),"
                     " idx6 = has_any_index('examples', dynamic(['example']))", CAT, NOW)
    assert r.rows == [(0, 1, -1, 1, -1, -1)]  # whole terms, as has


def test_print_of_a_variable_is_print_0() -> None:
    con = fixture_connection({}, CAT)
    r = run_kql(con, "let d = dynamic(['a', 'b']); print d | mv-expand x = print_0 | project x = tostring(x)", CAT, NOW)
    assert r.columns == ["x"] and sorted(r.rows) == [("a",), ("b",)]


def test_aggregate_of_time_generated_is_named_after_timestamp() -> None:
    t = dt.datetime(2024, 5, 15, 11, 0, 0)
    con = fixture_connection({"DeviceProcessEvents": [{"Timestamp": t, "DeviceName": "h"}]}, CAT)
    r = run_kql(con, "DeviceProcessEvents | summarize max(TimeGenerated) by DeviceName | project max_Timestamp", CAT, NOW)
    assert r.rows == [(t,)]
