"""mv-apply, make-series, partition, parse-kv, in over array subqueries, base64/codepoint functions:
executed on DuckDB; each test asserts the rows the Kusto documentation gives."""

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


def _procs(*cmds: str) -> dict[str, list[dict[str, object]]]:
    return {"DeviceProcessEvents": [{"Timestamp": T0, "ReportId": i, "ProcessCommandLine": c, "FileName": f"f{i}"}
                                    for i, c in enumerate(cmds)]}


def test_mv_apply_filters_each_rows_subtable() -> None:
    con = fixture_connection(_procs("net user bob /domain", "net group"), CAT)
    q = ("DeviceProcessEvents | extend P = split(ProcessCommandLine, ' ')"
         " | mv-apply Q = P on (where not(Q has_any ('net', 'user', 'group', '/domain')) | project Q)"
         " | project FileName, Q = tostring(Q), n = array_length(P)")
    r = run_kql(con, q, CAT, NOW)
    # the second row's subtable is empty after the filter: no output row for it
    assert r.columns == ["FileName", "Q", "n"] and r.rows == [("f0", "bob", 4)]


def test_mv_apply_summarize_is_per_row_and_top_per_subtable() -> None:
    con = fixture_connection({}, CAT)
    # the documentation's example shape: the two largest values of each row's array
    q = ("datatable(Id:long, Metric:dynamic) [1, dynamic([3, 9, 1, 7]), 2, dynamic([5])]"
         " | mv-apply Metric to typeof(long) on (top 2 by Metric desc)"
         " | sort by Id asc, Metric desc")
    assert run_kql(con, q, CAT, NOW).rows == [(1, 9), (1, 7), (2, 5)]
    q2 = ("datatable(Id:long, Metric:dynamic) [1, dynamic([3, 9, 1]), 2, dynamic([])]"
          " | mv-apply with_itemindex=i m = Metric to typeof(long) on (summarize total = sum(m), n = count(), last = max(i))"
          " | sort by Id asc")
    r = run_kql(con, q2, CAT, NOW)
    assert r.columns == ["Id", "Metric", "total", "n", "last"]
    # a summarize without `by` gives one row even for an empty subtable, with the documented
    # default values (summarize-operator: sum() and count() are 0, max() null)
    assert [(row[0], row[2], row[3], row[4]) for row in r.rows] == [(1, 13, 3, 2), (2, 0, 0, None)]


def test_base64_bytes_and_codepoints() -> None:
    con = fixture_connection({}, CAT)
    # documented examples: base64_decode_toarray("S3VzdG8=") == [75,117,115,116,111];
    # unicode_codepoints_to_string(75, 117, 115, 116, 111) == "Kusto" (make_string is its old name)
    q = ("print a = base64_decode_toarray('S3VzdG8='), s = unicode_codepoints_to_string(dynamic([75, 117, 115, 116, 111])),"
         " m = make_string(base64_decode_toarray('S3VzdG8=')), e = notempty('x'), bad = base64_decode_toarray('!!')"
         " | project n = array_length(a), first = tolong(a[0]), s, m, e, isnull(bad)")
    assert run_kql(con, q, CAT, NOW).rows == [(5, 75, "Kusto", "Kusto", True, True)]


def test_partition_runs_the_subquery_per_key() -> None:
    con = fixture_connection({}, CAT)
    q = ("datatable(K:string, V:long) ['a', 1, 'a', 5, 'b', 2, 'b', 7, 'b', 3, '', 4]"
         " | partition hint.strategy=native by K (top 1 by V | project K, V)"
         " | sort by K asc")
    assert run_kql(con, q, CAT, NOW).rows == [("", 4), ("a", 5), ("b", 7)]
    q2 = ("datatable(K:string, V:long) ['a', 1, 'a', 5, 'b', 2]"
          " | partition by K (summarize n = count(), s = sum(V)) | sort by s asc")
    # the key column is not added: the result is the subquery's columns
    r = run_kql(con, q2, CAT, NOW)
    assert r.columns == ["n", "s"] and r.rows == [(1, 2), (2, 6)]


def test_range_of_array_length_arithmetic() -> None:
    con = fixture_connection({}, CAT)
    q = "print a = dynamic([1, 2, 3, 4, 5]) | extend r = range(0, array_length(a) - 2, 2) | project n = array_length(r), last = tolong(r[-1])"
    assert run_kql(con, q, CAT, NOW).rows == [(2, 2)]


def test_make_series_fills_missing_bins_with_the_default() -> None:
    ev = [("a", dt.datetime(2024, 5, 15, 8, 10)), ("a", dt.datetime(2024, 5, 15, 8, 50)),
          ("a", dt.datetime(2024, 5, 15, 10, 5)), ("b", dt.datetime(2024, 5, 15, 9, 30)),
          ("b", dt.datetime(2024, 5, 15, 12, 0))]  # outside the range: `to` is exclusive
    con = fixture_connection({"DeviceProcessEvents": [{"Timestamp": t, "DeviceName": d, "ProcessId": 1}
                                                      for d, t in ev]}, CAT)
    q = ("DeviceProcessEvents | make-series n = count(), s = sum(ProcessId) default = -1 on Timestamp"
         " from datetime(2024-05-15 08:00) to datetime(2024-05-15 12:00) step 1h by DeviceName"
         " | sort by DeviceName asc")
    r = run_kql(con, q, CAT, NOW)
    assert r.columns == ["DeviceName", "n", "s", "Timestamp"]
    import json
    rows = [(d, json.loads(n), json.loads(s), json.loads(ts)) for d, n, s, ts in r.rows]
    axis = ["2024-05-15T08:00:00.0000000Z", "2024-05-15T09:00:00.0000000Z",
            "2024-05-15T10:00:00.0000000Z", "2024-05-15T11:00:00.0000000Z"]
    assert rows == [("a", [2, 0, 1, 0], [2, -1, 1, -1], axis), ("b", [0, 1, 0, 0], [-1, 1, -1, -1], axis)]


def test_make_series_without_bounds_and_without_by() -> None:
    con = fixture_connection({}, CAT)
    q = ("datatable(x:long, v:long) [1, 10, 2, 20, 7, 5]"
         " | make-series total = sum(v) on x step 3 | project total = tostring(total), x = tostring(x)")
    assert run_kql(con, q, CAT, NOW).rows == [("[30,0,5]", "[1,4,7]")]


def test_parse_into_bracketed_column_names() -> None:
    con = fixture_connection({}, CAT)
    q = ("print s = 'user=bob level=3'"
         " | parse s with 'user=' ['User Name'] ' level=' ['Level']:long"
         " | project ['User Name'], Level")
    r = run_kql(con, q, CAT, NOW)
    assert r.columns == ["User Name", "Level"] and r.rows == [("bob", 3)]


def test_parse_kv_documented_examples() -> None:
    con = fixture_connection({}, CAT)
    # the documentation's first example
    q = ('print str="ThreadId:458745723, Machine:Node001, Text: The service is up, Level: Info"'
         " | parse-kv str as (Text: string, ThreadId:long, Machine: string) with (pair_delimiter=',', kv_delimiter=':')"
         " | project-away str")
    r = run_kql(con, q, CAT, NOW)
    assert r.columns == ["Text", "ThreadId", "Machine"] and r.rows == [("The service is up", 458745723, "Node001")]
    # quoted values, a missing key ("" for string, null otherwise), first occurrence wins
    q2 = ("print s = 'name=\"allow rdp\" dir=in dir=out localport=3389'"
          " | parse-kv s as (name:string, dir:string, localport:long, missing:string, gone:long)"
          " with (pair_delimiter=' ', kv_delimiter='=', quote='\"') | project-away s")
    assert run_kql(con, q2, CAT, NOW).rows == [("allow rdp", "in", 3389, "", None)]
    q3 = ("print s = 'a=1; b=22' | parse-kv s as (b:long, a:long) with (regex=@'(\\w+)=(\\d+)') | project-away s")
    assert run_kql(con, q3, CAT, NOW).rows == [(22, 1)]


def test_make_series_in_range_form_is_refused_clearly() -> None:
    from kql import compile_kql

    c = compile_kql("DeviceEvents | make-series n = count() on Timestamp in range(ago(1d), now(), 1h)", CAT)
    assert [d.code for d in c.errors] == ["unsupported"] and "in range()" in c.errors[0].message
