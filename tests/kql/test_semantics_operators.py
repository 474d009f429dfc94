"""Tabular operators and statements, each checked on rows against the Kusto documentation.

Pages (https://learn.microsoft.com/kusto/query/<page>): where-operator, project-operator,
project-away-operator, project-rename-operator, project-reorder-operator, project-keep-operator,
extend-operator, sort-operator, take-operator, top-operator, distinct-operator, count-operator,
datatable-operator, print-operator, range-operator, as-operator, serialize-operator,
materialize-function, invoke-operator, getschema-operator, union-operator, lookup-operator,
mv-expand-operator, parse-operator, let-statement, functions/user-defined-functions.
Fixture rows: tests/kql/fixtures.py.
"""

from __future__ import annotations

import datetime as dt

from tests.kql.fixtures import assert_kql, ids_of, run_kql

D = dt.datetime


# --- statements -------------------------------------------------------------------------------

def test_comments_anywhere_and_several_statements() -> None:
    assert_kql(
        "// leading comment\n"
        "let a = 1; // after a statement\n"
        "let b = 2;\n"
        "// between statements\n"
        "print c = a + b // at the end",
        [(3,)],
        columns=["c"],
    )


def test_let_scalar_and_timespan() -> None:
    assert ids_of("let n = 300;\nDeviceProcessEvents | where ProcessId > n") == [4, 5, 6]
    # ago(1d) with now = 2024-05-15 12:00 is 2024-05-14 12:00.
    assert ids_of("let lookback = 1d;\nDeviceProcessEvents | where Timestamp > ago(lookback)") == [1, 2, 5]


def test_let_tabular_expression() -> None:
    assert_kql(
        'let d1 = DeviceProcessEvents | where DeviceId == "d1";\nd1 | count',
        [(3,)],
        columns=["Count"],
    )


def test_let_scalar_function_with_default_argument() -> None:
    # user-defined-functions: typed parameters, optional ones with a default value.
    assert_kql(
        'let wrap = (x:string) { strcat("<", x, ">") };\nprint r = wrap("a")', [("<a>",)]
    )
    assert_kql(
        "let add = (x:long, y:long = 10) { x + y };\nprint a = add(1), b = add(1, 2)", [(11, 3)]
    )


def test_let_tabular_function() -> None:
    assert ids_of(
        'let byDevice = (d:string) { DeviceProcessEvents | where DeviceId == d };\nbyDevice("d3")'
    ) == [4]


def test_let_referring_to_earlier_let() -> None:
    assert ids_of(
        "let base = DeviceProcessEvents | where AccountName == 'alice';\n"
        "let recent = base | where Timestamp > ago(2d);\n"
        "recent"
    ) == [1, 2]


# --- where / filter / logic -------------------------------------------------------------------

def test_where_and_filter_alias() -> None:
    assert ids_of('DeviceProcessEvents | where AccountName == "alice"') == [1, 2, 6]
    assert ids_of('DeviceProcessEvents | filter AccountName == "alice"') == [1, 2, 6]


def test_and_or_not_precedence() -> None:
    # `and` binds tighter than `or` (logical-operators).
    assert ids_of(
        'DeviceProcessEvents | where FileName == "cmd.exe" or FileName == "whoami.exe" and ProcessId > 500'
    ) == [2, 6]
    assert ids_of(
        'DeviceProcessEvents | where (FileName == "cmd.exe" or FileName == "whoami.exe") and ProcessId > 500'
    ) == [6]
    assert ids_of('DeviceProcessEvents | where not(DeviceId == "d1")') == [3, 4, 5]


def test_comparisons_on_numbers_and_datetimes() -> None:
    assert ids_of("DeviceProcessEvents | where ProcessId >= 500") == [5, 6]
    assert ids_of("DeviceProcessEvents | where ProcessId < 200") == [1]
    assert ids_of("DeviceProcessEvents | where Timestamp < datetime(2024-05-14)") == [4, 6]
    assert ids_of("DeviceProcessEvents | where Timestamp <= datetime(2024-05-13 12:00:00)") == [4, 6]


# --- project family / extend ------------------------------------------------------------------

def test_project_with_renames_and_expressions() -> None:
    assert_kql(
        "DeviceProcessEvents | where ReportId == 2 | project FileName, Pid = ProcessId, Doubled = ProcessId * 2",
        [("cmd.exe", 200, 400)],
        columns=["FileName", "Pid", "Doubled"],
        types=["string", "long", "long"],
    )


def test_project_away_with_wildcard() -> None:
    base = 'DeviceInfo | where ReportId == 3 | project DeviceId, OSPlatform, OSBuild'
    assert_kql(base + " | project-away OSBuild", [("d2", "WindowsServer2022")],
               columns=["DeviceId", "OSPlatform"])
    assert_kql(base + " | project-away OS*", [("d2",)], columns=["DeviceId"])


def test_project_rename_keeps_position() -> None:
    assert_kql(
        "DeviceInfo | where ReportId == 3 | project DeviceId, OSPlatform, OSBuild"
        " | project-rename Os = OSPlatform",
        [("d2", "WindowsServer2022", 20348)],
        columns=["DeviceId", "Os", "OSBuild"],
    )


def test_project_reorder_and_keep() -> None:
    base = "DeviceInfo | where ReportId == 3 | project DeviceId, OSPlatform, OSBuild"
    assert_kql(base + " | project-reorder OSBuild", [(20348, "d2", "WindowsServer2022")],
               columns=["OSBuild", "DeviceId", "OSPlatform"])
    assert_kql(base + " | project-keep OS*", [("WindowsServer2022", 20348)],
               columns=["OSPlatform", "OSBuild"])


def test_extend_adds_and_replaces_columns() -> None:
    # extend-operator: a name that already exists is replaced by the new value (the page says
    # it is removed and appended; only names and values are asserted, not that position).
    r = run_kql(
        "DeviceInfo | where ReportId == 3 | project DeviceId, OSBuild"
        " | extend Big = OSBuild > 20000, DeviceId = toupper(DeviceId)"
    )
    assert sorted(r.names) == ["Big", "DeviceId", "OSBuild"]
    assert len(r.rows) == 1
    assert dict(zip(r.names, r.rows[0], strict=True)) == {"DeviceId": "D2", "OSBuild": 20348, "Big": True}


def test_extend_unnamed_expression_is_named_column1() -> None:
    r = run_kql("DeviceInfo | where ReportId == 3 | project OSBuild | extend OSBuild * 2")
    assert r.names == ["OSBuild", "Column1"]
    assert r.rows == [(20348, 40696)]


def test_extend_can_use_a_column_defined_earlier_in_the_same_extend() -> None:
    assert_kql(
        "print x = 2 | extend y = x * 10, z = y + 1",
        [(2, 20, 21)],
        columns=["x", "y", "z"],
    )


def test_print_unnamed_columns_are_print_n() -> None:
    # print-operator: unnamed expressions are named print_0, print_1, ...
    assert_kql('print 1 + 2, x = "a", 5', [(3, "a", 5)], columns=["print_0", "x", "print_2"])


# --- sort / take / top / distinct / count ------------------------------------------------------

def test_sort_defaults_to_descending() -> None:
    r = run_kql("DeviceProcessEvents | sort by ProcessId | project ReportId")
    assert [x[0] for x in r.rows] == [6, 5, 4, 3, 2, 1]
    r = run_kql("DeviceProcessEvents | order by ProcessId asc | project ReportId")
    assert [x[0] for x in r.rows] == [1, 2, 3, 4, 5, 6]


def test_sort_null_placement_defaults_and_overrides() -> None:
    # sort-operator: default nulls last for desc, nulls first for asc. FileSize is null on row 4.
    def order(q: str) -> list[int]:
        return [x[0] for x in run_kql(f"DeviceProcessEvents | {q} | project ReportId").rows]

    assert order("sort by FileSize") == [3, 2, 1, 6, 5, 4]
    assert order("sort by FileSize desc") == [3, 2, 1, 6, 5, 4]
    assert order("sort by FileSize asc") == [4, 5, 6, 1, 2, 3]
    assert order("sort by FileSize asc nulls last") == [5, 6, 1, 2, 3, 4]
    assert order("sort by FileSize desc nulls first") == [4, 3, 2, 1, 6, 5]


def test_sort_by_several_keys() -> None:
    r = run_kql("DeviceProcessEvents | sort by DeviceId asc, ProcessId desc | project ReportId")
    assert [x[0] for x in r.rows] == [6, 2, 1, 5, 3, 4]


def test_take_and_limit_count_rows() -> None:
    # take-operator: no order is guaranteed, only the number of rows.
    r = run_kql("DeviceProcessEvents | take 2")
    assert len(r.rows) == 2
    r = run_kql("DeviceProcessEvents | limit 4 | project ReportId")
    assert len(r.rows) == 4 and {x[0] for x in r.rows} <= {1, 2, 3, 4, 5, 6}
    r = run_kql("DeviceProcessEvents | sort by ProcessId asc | take 2 | project ReportId")
    assert [x[0] for x in r.rows] == [1, 2]


def test_top_defaults_and_nulls() -> None:
    def order(q: str) -> list[int]:
        return [x[0] for x in run_kql(f"DeviceProcessEvents | {q} | project ReportId").rows]

    assert order("top 2 by ProcessId") == [6, 5]
    assert order("top 3 by FileSize") == [3, 2, 1]  # desc, nulls last
    assert order("top 2 by FileSize asc") == [4, 5]  # asc, nulls first
    assert order("top 2 by FileSize asc nulls last") == [5, 6]


def test_distinct() -> None:
    assert_kql("DeviceProcessEvents | distinct DeviceId", [("d1",), ("d2",), ("d3",)],
               columns=["DeviceId"])
    assert_kql(
        "DeviceProcessEvents | where isnotempty(AccountName) | distinct DeviceId, AccountName",
        [("d1", "alice"), ("d2", "bob"), ("d3", "SYSTEM")],
    )


def test_count_operator_names_its_column_Count() -> None:
    assert_kql("DeviceProcessEvents | count", [(6,)], columns=["Count"], types=["long"])
    assert_kql("DeviceProcessEvents | where ProcessId < 0 | count", [(0,)])


# --- datatable / print / range / as / serialize / materialize / invoke / getschema -----------

def test_datatable() -> None:
    assert_kql(
        "datatable(Key:string, Value:long, When:datetime, Ok:bool)\n"
        "['a', 1, datetime(2024-01-01), true, 'b', 2, datetime(2024-01-02), false]\n"
        "| where Value > 1",
        [("b", 2, D(2024, 1, 2), False)],
        columns=["Key", "Value", "When", "Ok"],
        types=["string", "long", "datetime", "bool"],
    )


def test_range() -> None:
    # range-operator: inclusive of `to`.
    assert_kql("range x from 1 to 5 step 2", [(1,), (3,), (5,)], columns=["x"], ordered=True)
    assert_kql(
        "range d from datetime(2024-01-01) to datetime(2024-01-03) step 1d",
        [(D(2024, 1, 1),), (D(2024, 1, 2),), (D(2024, 1, 3),)],
    )


def test_as_binds_a_name_for_later_use() -> None:
    assert_kql("range x from 1 to 3 step 1 | as T | union (T) | count", [(6,)])
    assert ids_of('DeviceInfo | as X | where DeviceId == "d3"') == [4]


def test_serialize_with_computed_columns() -> None:
    assert_kql(
        'DeviceProcessEvents | where DeviceId == "d1" | serialize Double = ProcessId * 2'
        " | project ReportId, Double",
        [(1, 200), (2, 400), (6, 1200)],
    )


def test_materialize() -> None:
    assert_kql(
        "let m = materialize(DeviceProcessEvents | summarize c = count() by DeviceId);\n"
        "m | where c > 1 | project DeviceId",
        [("d1",), ("d2",)],
    )


def test_invoke_tabular_function() -> None:
    assert ids_of(
        "let big = (T:(*)) { T | where ProcessId > 300 };\nDeviceProcessEvents | invoke big()"
    ) == [4, 5, 6]


def test_getschema() -> None:
    # getschema-operator: ColumnName, ColumnOrdinal, DataType, ColumnType.
    r = assert_kql(
        "DeviceInfo | project DeviceId, OSBuild, Timestamp | getschema | project ColumnName, ColumnOrdinal, ColumnType",
        [("DeviceId", 0, "string"), ("OSBuild", 1, "long"), ("Timestamp", 2, "datetime")],
    )
    assert r.names == ["ColumnName", "ColumnOrdinal", "ColumnType"]


# --- summarize --------------------------------------------------------------------------------

def test_summarize_count_is_named_count_() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize count() by DeviceId",
        [("d1", 3), ("d2", 2), ("d3", 1)],
        columns=["DeviceId", "count_"],
        types=["string", "long"],
    )


def test_summarize_default_names_of_aggregates() -> None:
    # summarize-operator: "Defaults to a name derived from the expression", e.g. sum_X.
    r = run_kql(
        "DeviceProcessEvents | summarize sum(FileSize), avg(ProcessId), min(Timestamp),"
        " max(ProcessId), dcount(DeviceId), countif(DeviceId == 'd1')"
    )
    assert r.names == [
        "sum_FileSize", "avg_ProcessId", "min_Timestamp", "max_ProcessId", "dcount_DeviceId",
        "countif_",
    ]
    # Nulls are ignored by aggregations (summarize-operator, "Aggregates default values").
    assert r.rows == [(7100, 350.0, D(2024, 5, 10, 8, 30), 600, 3, 3)]


def test_summarize_make_set_and_list_names() -> None:
    r = run_kql('DeviceProcessEvents | where DeviceId == "d2" | summarize make_set(FileName), make_list(ProcessId)')
    assert r.names == ["set_FileName", "list_ProcessId"]
    assert r.types == ["dynamic", "dynamic"]
    assert sorted(r.rows[0][0]) == ["PowerShell.EXE", "notepad.exe"]
    assert sorted(r.rows[0][1]) == [300, 500]


def test_summarize_aliases_and_bin() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize n = count() by Day = bin(Timestamp, 1d)",
        [(D(2024, 5, 15), 3), (D(2024, 5, 14), 1), (D(2024, 5, 13), 1), (D(2024, 5, 10), 1)],
        columns=["Day", "n"],
    )
    # bin() on a column keeps the column's name.
    r = run_kql("DeviceProcessEvents | summarize count() by bin(Timestamp, 1d)")
    assert r.names == ["Timestamp", "count_"]


def test_summarize_by_only_is_distinct() -> None:
    assert_kql("DeviceProcessEvents | summarize by DeviceId", [("d1",), ("d2",), ("d3",)])


def test_summarize_conditional_aggregates() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize c = countif(AccountName == 'alice'),"
        " s = sumif(FileSize, DeviceId == 'd1'), d = dcountif(FileName, DeviceId == 'd1')",
        [(3, 3600, 3)],
    )
    r = run_kql("DeviceProcessEvents | summarize s = make_set_if(FileName, DeviceId == 'd2')")
    assert sorted(r.rows[0][0]) == ["PowerShell.EXE", "notepad.exe"]


def test_summarize_on_empty_input() -> None:
    # summarize-operator: no group keys -> one row; count() is 0, make_set() is [].
    assert_kql(
        "DeviceProcessEvents | where ProcessId < 0 | summarize n = count(), s = make_set(FileName)",
        [(0, [])],
    )
    assert_kql("DeviceProcessEvents | where ProcessId < 0 | summarize count() by DeviceId", [])


def test_summarize_arg_max_star() -> None:
    # arg_max-aggregation-function: the row where the expression is largest, `*` = all columns.
    assert_kql(
        "DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId | project DeviceId, OSPlatform, ReportId",
        [("d1", "Windows11", 2), ("d2", "WindowsServer2022", 3), ("d3", "Windows10", 4)],
    )
    r = run_kql("DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId")
    assert r.names[:2] == ["DeviceId", "Timestamp"]
    assert r.names.count("DeviceId") == 1 and "OSBuild" in r.names


def test_summarize_arg_min_with_columns() -> None:
    assert_kql(
        "DeviceInfo | summarize arg_min(Timestamp, OSPlatform) by DeviceId",
        [("d1", D(2024, 5, 14), "Windows10"), ("d2", D(2024, 5, 15), "WindowsServer2022"),
         ("d3", D(2024, 5, 15), "Windows10")],
        columns=["DeviceId", "Timestamp", "OSPlatform"],
    )


def test_summarize_take_any_and_any() -> None:
    assert_kql('DeviceProcessEvents | where DeviceId == "d3" | summarize f = take_any(FileName)',
               [("rundll32.exe",)])
    assert_kql('DeviceProcessEvents | where DeviceId == "d3" | summarize f = any(FileName)',
               [("rundll32.exe",)])


def test_summarize_percentile() -> None:
    # percentile: nearest-rank; for d1's ProcessIds 100, 200, 600 the 50th is 200.
    r = run_kql('DeviceProcessEvents | where DeviceId == "d1" | summarize percentile(ProcessId, 50)')
    assert r.names == ["percentile_ProcessId_50"]
    assert r.rows == [(200,)]


def test_summarize_make_bag() -> None:
    assert_kql(
        'DeviceProcessEvents | where DeviceId == "d3" | summarize b = make_bag(bag_pack("file", FileName))',
        [({"file": "rundll32.exe"},)],
    )


def test_summarize_sum_avg_min_max_by_key() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize s = sum(ProcessId), a = avg(ProcessId), lo = min(ProcessId),"
        " hi = max(ProcessId) by DeviceId",
        [("d1", 900, 300.0, 100, 600), ("d2", 800, 400.0, 300, 500), ("d3", 400, 400.0, 400, 400)],
    )


# --- union ------------------------------------------------------------------------------------

def test_union_tables() -> None:
    assert_kql("union DeviceFileEvents, DeviceLogonEvents | count", [(5,)])
    assert_kql("DeviceFileEvents | union DeviceLogonEvents | count", [(5,)])
    # Columns present in one side only are null on the other side (union kind=outer).
    assert_kql(
        "union DeviceFileEvents, DeviceLogonEvents | where LogonType == 'Network' | project ReportId, AccountName",
        [(2, "bob")],
    )


def test_union_withsource() -> None:
    assert_kql(
        "union withsource=SourceTable DeviceFileEvents, DeviceLogonEvents"
        " | summarize n = count() by SourceTable",
        [("DeviceFileEvents", 3), ("DeviceLogonEvents", 2)],
        columns=["SourceTable", "n"],
    )


def test_union_wildcard_tables() -> None:
    # Device*Events matches every catalog table of that shape, including DeviceEvents.
    assert_kql(
        "union withsource=T Device*Events | summarize n = count() by T",
        [("DeviceProcessEvents", 6), ("DeviceNetworkEvents", 5), ("DeviceFileEvents", 3),
         ("DeviceEvents", 2), ("DeviceLogonEvents", 2)],
    )


# --- join -------------------------------------------------------------------------------------

XY = (
    "let X = datatable(Key:string, Value1:long) ['a',1, 'b',2, 'b',3, 'c',4];\n"
    "let Y = datatable(Key:string, Value2:long) ['b',10, 'c',20, 'c',30, 'd',40];\n"
)


def test_join_default_is_innerunique_deduplicating_left_keys() -> None:
    # join-innerunique: one left row per key ('b' appears twice on the left: one is kept).
    r = run_kql(XY + "X | join Y on Key")
    assert r.names == ["Key", "Value1", "Key1", "Value2"]
    rows = sorted(r.rows, key=lambda x: (x[0], x[3]))
    assert [(k, k1, v2) for k, _, k1, v2 in rows] == [("b", "b", 10), ("c", "c", 20), ("c", "c", 30)]
    assert rows[0][1] in (2, 3) and rows[1][1] == 4 and rows[2][1] == 4
    r = run_kql(XY + "X | join kind=innerunique Y on Key")
    assert len(r.rows) == 3


def test_join_innerunique_on_tables() -> None:
    # DeviceInfo holds d1 twice: innerunique keeps one of them, inner keeps both.
    assert_kql("DeviceInfo | join (DeviceNetworkEvents) on DeviceId | count", [(4,)])
    assert_kql("DeviceInfo | join kind=inner (DeviceNetworkEvents) on DeviceId | count", [(6,)])


def test_join_inner() -> None:
    assert_kql(XY + "X | join kind=inner Y on Key",
               [("b", 2, "b", 10), ("b", 3, "b", 10), ("c", 4, "c", 20), ("c", 4, "c", 30)],
               columns=["Key", "Value1", "Key1", "Value2"])


def test_join_outer_kinds() -> None:
    assert_kql(XY + "X | join kind=leftouter Y on Key | project Key, Value1, Value2",
               [("a", 1, None), ("b", 2, 10), ("b", 3, 10), ("c", 4, 20), ("c", 4, 30)])
    assert_kql(XY + "X | join kind=rightouter Y on Key | project Key1, Value1, Value2",
               [("b", 2, 10), ("b", 3, 10), ("c", 4, 20), ("c", 4, 30), ("d", None, 40)])
    assert_kql(XY + "X | join kind=fullouter Y on Key | project Value1, Value2",
               [(1, None), (2, 10), (3, 10), (4, 20), (4, 30), (None, 40)])


def test_join_anti_and_semi() -> None:
    assert_kql(XY + "X | join kind=leftanti Y on Key", [("a", 1)], columns=["Key", "Value1"])
    assert_kql(XY + "X | join kind=rightanti Y on Key", [("d", 40)], columns=["Key", "Value2"])
    assert_kql(XY + "X | join kind=leftsemi Y on Key", [("b", 2), ("b", 3), ("c", 4)],
               columns=["Key", "Value1"])
    assert_kql(XY + "X | join kind=rightsemi Y on Key", [("b", 10), ("c", 20), ("c", 30)],
               columns=["Key", "Value2"])


def test_join_on_left_right_columns() -> None:
    assert_kql(
        "DeviceProcessEvents\n"
        "| join kind=inner (DeviceNetworkEvents) on DeviceId, $left.ProcessId == $right.InitiatingProcessId\n"
        "| project ReportId, RemoteIP",
        [(1, "10.1.2.3"), (3, "172.16.5.4")],
    )


def test_join_with_let_subquery_and_where_after() -> None:
    assert_kql(
        "let net = DeviceNetworkEvents | where RemotePort == 443;\n"
        "DeviceProcessEvents | join kind=inner net on DeviceId | distinct FileName",
        [("PowerShell.EXE",), ("notepad.exe",)],
    )


# --- lookup -----------------------------------------------------------------------------------

LATEST_OS = "(DeviceInfo | summarize arg_max(Timestamp, OSPlatform) by DeviceId | project DeviceId, OSPlatform)"


def test_lookup_defaults_to_leftouter() -> None:
    r = run_kql(f"DeviceNetworkEvents | lookup {LATEST_OS} on DeviceId | project ReportId, OSPlatform")
    got = dict(r.rows)
    assert {k: got[k] for k in (1, 2, 3, 4)} == {
        1: "Windows11", 2: "Windows11", 3: "WindowsServer2022", 4: "WindowsServer2022"}
    assert got[5] in (None, "")
    assert sorted(got) == [1, 2, 3, 4, 5]


def test_lookup_inner_and_key_not_duplicated() -> None:
    r = run_kql(f"DeviceNetworkEvents | lookup kind=inner {LATEST_OS} on DeviceId")
    assert sorted(x[r.names.index("ReportId")] for x in r.rows) == [1, 2, 3, 4]
    assert r.names.count("DeviceId") == 1 and "DeviceId1" not in r.names
    assert r.names[-1] == "OSPlatform"


# --- mv-expand / parse ------------------------------------------------------------------------

def test_mv_expand_array() -> None:
    assert_kql("print a = dynamic([1, 2, 3]) | mv-expand a", [(1,), (2,), (3,)], types=["dynamic"])
    assert_kql("print a = dynamic([1, 2]) | mv-expand a to typeof(long) | extend b = a + 1",
               [(1, 2), (2, 3)], types=["long", "long"])


def test_mv_expand_keeps_other_columns_and_item_index() -> None:
    assert_kql(
        "datatable(x:long, arr:dynamic) [1, dynamic(['a', 'b']), 2, dynamic(['c'])]\n"
        "| mv-expand with_itemindex=i arr | project x, i, v = tostring(arr)",
        [(1, 0, "a"), (1, 1, "b"), (2, 0, "c")],
    )


def test_mv_expand_json_from_a_column() -> None:
    assert_kql(
        "DeviceEvents | where ReportId == 1 | extend Tag = parse_json(AdditionalFields).Tags"
        " | mv-expand Tag | project t = tostring(Tag)",
        [("a",), ("b",)],
    )


def test_parse_simple() -> None:
    # parse-operator: `*` skips text; unmatched rows give null (empty) columns.
    assert_kql(
        'DeviceProcessEvents | parse ProcessCommandLine with * "-File " ScriptPath'
        " | where isnotempty(ScriptPath) | project ReportId, ScriptPath",
        [(3, "C:\\temp\\run.ps1")],
    )
    assert_kql(
        'print s = "pid=42 user=bob" | parse s with "pid=" pid:long " user=" user | project pid, user',
        [(42, "bob")],
        types=["long", "string"],
    )


def test_parse_regex() -> None:
    assert_kql(
        'print s = "key1=val1;key2=val2" | parse kind=regex s with "key1=" v1 ";key2=" v2 | project v1, v2',
        [("val1", "val2")],
    )


def test_parse_documented_example_with_typed_columns_and_skips() -> None:
    # parse-operator, first example: typed columns (long, date) followed by `*` take only
    # their own value.
    assert_kql(
        "let Traces = datatable(EventText:string)\n"
        '["Event: NotifySliceRelease (resourceName=PipelineScheduler, totalSlices=27, sliceNumber=23,'
        ' lockTime=02/17/2016 08:40:01, releaseTime=02/17/2016 08:40:01, previousLockTime=02/17/2016 08:39:01)"];\n'
        "Traces\n"
        '| parse EventText with * "resourceName=" resourceName ", totalSlices=" totalSlices:long * "sliceNumber="'
        ' sliceNumber:long * "lockTime=" lockTime ", releaseTime=" releaseTime:date "," * "previousLockTime="'
        ' previousLockTime:date ")" *\n'
        "| project resourceName, totalSlices, sliceNumber, lockTime, releaseTime, previousLockTime",
        [("PipelineScheduler", 27, 23, "02/17/2016 08:40:01", D(2016, 2, 17, 8, 40, 1), D(2016, 2, 17, 8, 39, 1))],
        types=["string", "long", "long", "string", "datetime", "datetime"],
    )


# --- whole hunting queries --------------------------------------------------------------------

def test_hunting_query_shell_activity_per_user() -> None:
    assert_kql(
        "let lookback = 3d;\n"
        "DeviceProcessEvents\n"
        "| where Timestamp > ago(lookback)\n"
        '| where FileName in~ ("powershell.exe", "cmd.exe")\n'
        "| summarize Count = count(), Commands = make_set(ProcessCommandLine), FirstSeen = min(Timestamp),"
        " LastSeen = max(Timestamp) by DeviceName, AccountName\n"
        "| extend Duration = LastSeen - FirstSeen\n"
        "| where Count > 1\n"
        "| project DeviceName, AccountName, Count, Duration, n = array_length(Commands)",
        [("ws-01.contoso.com", "alice", 2, dt.timedelta(hours=2), 2)],
        types=["string", "string", "long", "timespan", "long"],
    )


def test_hunting_query_network_connection_to_its_process() -> None:
    assert_kql(
        "DeviceNetworkEvents\n"
        "| where RemotePort == 443\n"
        "| join kind=inner (DeviceProcessEvents | project DeviceId, ProcessId, ProcFile = FileName)\n"
        "    on DeviceId, $left.InitiatingProcessId == $right.ProcessId\n"
        "| project ReportId, ProcFile",
        [(4, "PowerShell.EXE")],
    )
    assert ids_of("DeviceNetworkEvents | join kind=leftanti DeviceInfo on DeviceId") == [5]


def test_mv_expand_property_bag() -> None:
    # mv-expand-operator: a property bag yields one row per property; kind=bag (default) gives
    # single-entry bags, kind=array gives [key, value] arrays.
    assert_kql('print b = dynamic({"a": 1, "b": 2}) | mv-expand b', [({"a": 1},), ({"b": 2},)])
    assert_kql('print b = dynamic({"a": 1, "b": 2}) | mv-expand kind=array b', [(["a", 1],), (["b", 2],)])
