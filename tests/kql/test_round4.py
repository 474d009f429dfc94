"""Round 4 compiler gaps, executed on DuckDB: each test asserts the rows Kusto's documentation gives."""

from __future__ import annotations

import datetime as dt

from kql.testing import fixture_connection, run_kql
from schema import default_catalog

CAT = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)
T0 = dt.datetime(2024, 5, 15, 10, 0, 0)


def test_in_a_subquery_of_arrays_compares_with_the_elements() -> None:
    # "Nested arrays are flattened into a single list of values" (in operator)
    con = fixture_connection({"DeviceInfo": [{"Timestamp": T0, "DeviceId": "d1", "DeviceName": "a"},
                                             {"Timestamp": T0, "DeviceId": "d2", "DeviceName": "b"}],
                              "DeviceProcessEvents": [{"Timestamp": T0, "DeviceId": d, "FileName": f}
                                                      for d, f in (("d1", "x"), ("d2", "y"), ("d3", "z"))]}, CAT)
    q = ("let ids = DeviceInfo | where DeviceName == 'a' | summarize make_set(DeviceId);"
         " DeviceProcessEvents | where DeviceId in (ids) | project FileName")
    assert run_kql(con, q, CAT, NOW).rows == [("x",)]
    q2 = ("let ids = DeviceInfo | summarize make_set(DeviceId);"
          " DeviceProcessEvents | where DeviceId !in (ids) | project FileName")
    assert run_kql(con, q2, CAT, NOW).rows == [("z",)]
