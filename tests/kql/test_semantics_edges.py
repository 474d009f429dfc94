"""Edge cases where a straightforward SQL lowering goes wrong: escapes, backslashes, duplicate
join columns, literal forms, ordering of null keys. Pages under https://learn.microsoft.com/kusto/query/.
Fixture rows: tests/kql/fixtures.py.
"""

from __future__ import annotations

import datetime as dt

from tests.kql.fixtures import assert_kql, assert_kql_error, ids_of, run_kql

D = dt.datetime


def test_backslashes_in_contains_startswith_endswith() -> None:
    # Windows paths are the daily bread of hunting: a backslash is a literal character.
    assert ids_of(r'DeviceProcessEvents | where FolderPath contains @"\System32\"') == [1, 2, 3, 4, 6]
    assert ids_of(r'DeviceProcessEvents | where FolderPath startswith @"C:\Windows\System32"') == [1, 2, 3, 4, 6]
    assert ids_of(r'DeviceProcessEvents | where FolderPath endswith @"\cmd.exe"') == [2]
    assert ids_of(r'DeviceProcessEvents | where FolderPath =~ @"c:\windows\notepad.exe"') == [5]
    assert ids_of(r'DeviceProcessEvents | where FolderPath in~ (@"c:\windows\notepad.exe", @"C:\x")') == [5]
    assert ids_of(r'DeviceProcessEvents | where FolderPath has @"WindowsPowerShell\v1.0"') == [1, 3]


def test_regex_metacharacters_are_literal_outside_matches_regex() -> None:
    assert_kql(
        'print a = "axb" contains "a.b", b = "a.b" contains "a.b", c = "a+b" startswith "a+",'
        ' d = "(x)" endswith "x)", e = "a*c" == "a*c", f = "abc" has "a.c"',
        [(False, True, True, True, True, False)],
    )


def test_matches_regex_with_backslashes() -> None:
    assert ids_of(r'DeviceProcessEvents | where FolderPath matches regex @"\\System32\\[a-z]+\.exe$"') == [2, 6]


def test_join_renames_duplicate_right_columns_with_suffix_1() -> None:
    # join-operator: columns present on both sides get a numeric suffix on the right side.
    r = assert_kql(
        "DeviceProcessEvents | join kind=inner (DeviceInfo | where ReportId == 3) on DeviceId\n"
        "| project ReportId, DeviceName, DeviceName1, ReportId1, OSPlatform",
        [(3, "srv-02.contoso.com", "srv-02.contoso.com", 3, "WindowsServer2022"),
         (5, "srv-02.contoso.com", "srv-02.contoso.com", 3, "WindowsServer2022")],
    )
    assert r.names == ["ReportId", "DeviceName", "DeviceName1", "ReportId1", "OSPlatform"]


def test_join_then_summarize() -> None:
    assert_kql(
        "DeviceNetworkEvents | join kind=inner (DeviceProcessEvents | project DeviceId, FileName) on DeviceId\n"
        "| summarize n = count() by DeviceId",
        [("d1", 6), ("d2", 4)],
    )


def test_datetime_literal_forms() -> None:
    assert_kql(
        'print a = datetime("2024-05-15T11:00:00Z"), b = datetime(2024-05-15T11:00:00.5Z),'
        " c = datetime(2024-05-15 11:00), d = todatetime('2024-05-15')",
        [(D(2024, 5, 15, 11), D(2024, 5, 15, 11, 0, 0, 500000), D(2024, 5, 15, 11), D(2024, 5, 15))],
    )


def test_where_on_ingestion_time() -> None:
    # _ingestion_time is Timestamp + 1 minute in the fixtures.
    assert ids_of("DeviceProcessEvents | where ingestion_time() > datetime(2024-05-15 11:00:30)") == [1, 5]


def test_top_by_expression_and_nulls() -> None:
    r = run_kql("DeviceProcessEvents | top 2 by strlen(ProcessCommandLine) | project ReportId")
    assert [x[0] for x in r.rows] == [3, 4]  # lengths 60 and 55


def test_in_with_empty_dynamic_list() -> None:
    assert ids_of("let none = dynamic([]);\nDeviceProcessEvents | where FileName in (none)") == []
    assert ids_of("let none = dynamic([]);\nDeviceProcessEvents | where FileName !in (none)") == [1, 2, 3, 4, 5, 6]


def test_arg_min_star() -> None:
    assert_kql(
        "DeviceInfo | summarize arg_min(Timestamp, *) by DeviceId | project DeviceId, OSPlatform, ReportId",
        [("d1", "Windows10", 1), ("d2", "WindowsServer2022", 3), ("d3", "Windows10", 4)],
    )


def test_summarize_by_two_keys_with_bin_then_filter() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize n = count() by DeviceId, Day = bin(Timestamp, 1d) | where n > 1",
        [("d1", D(2024, 5, 15), 2)],
    )


def test_column_removed_by_project_away_is_unknown_later() -> None:
    assert_kql_error(
        "DeviceInfo | project-away OSPlatform | where OSPlatform == 'x'", "unknown_column", 1, 46
    )


def test_let_shadowing_a_column_name() -> None:
    # A column of the input wins over nothing; a let scalar is visible in where.
    assert ids_of('let FileSizeLimit = 1500;\nDeviceProcessEvents | where FileSize > FileSizeLimit') == [2, 3]


def test_count_of_union_with_filter_on_shared_column() -> None:
    assert_kql(
        'union DeviceProcessEvents, DeviceNetworkEvents | where DeviceId == "d1" | count',
        [(5,)],
    )


def test_in_tilde_with_tabular_subquery() -> None:
    # File events were initiated by powershell.exe, winword.exe and rundll32.exe.
    assert ids_of(
        "DeviceProcessEvents\n"
        "| where FileName in~ ((DeviceFileEvents | project InitiatingProcessFileName))"
    ) == [1, 3, 4]


def test_timespan_between_two_datetime_columns() -> None:
    # ProcessCreationTime equals Timestamp in the fixtures: the difference is a zero timespan.
    assert ids_of(
        "DeviceProcessEvents | where Timestamp - ProcessCreationTime < 1m and ProcessId < 300"
    ) == [1, 2]


def test_lookup_on_left_right_columns() -> None:
    assert_kql(
        "DeviceProcessEvents\n"
        "| lookup (DeviceNetworkEvents | project InitiatingProcessId, RemoteIP)"
        " on $left.ProcessId == $right.InitiatingProcessId\n"
        "| where isnotempty(RemoteIP) | project ReportId, RemoteIP",
        [(1, "10.1.2.3"), (3, "172.16.5.4")],
    )


def test_distinct_star() -> None:
    assert_kql(
        "DeviceInfo | project DeviceId, OSBuild | distinct *",
        [("d1", 19045), ("d1", 22631), ("d2", 20348), ("d3", 19045)],
    )


def test_strcat_converts_values_to_strings() -> None:
    assert_kql('print s = strcat("a", true, "-", 42, "-", 1.5)', [("atrue-42-1.5",)])


def test_lambda_parameters_never_capture_user_columns() -> None:
    # The SQL for set_intersect/set_difference, mv-expand of a bag and base64_decode_toarray
    # uses DuckDB lambdas; a user column named like the lambda parameter must still mean the column.
    assert_kql(
        "print x = dynamic([1, 2, 3]) | project a = array_sort_asc(set_intersect(dynamic([2, 3, 4]), x)),"
        " b = set_difference(dynamic([2, 3, 4]), x)",
        [([2, 3], [4])],
    )
    got = run_kql('print k = dynamic({"a": 1, "b": 2}) | mv-expand k')
    assert sorted(got.rows, key=repr) == [({"a": 1},), ({"b": 2},)]
    assert_kql("print i = 'S3VzdG8=' | project a = base64_decode_toarray(i)", [([75, 117, 115, 116, 111],)])


def test_time_filter_against_a_column_computed_from_a_scalar() -> None:
    # `Timestamp < M` with M a column (not a constant bound) is no partition filter and no error
    r = run_kql("let T = toscalar(DeviceProcessEvents | summarize max(Timestamp));\n"
                "DeviceProcessEvents | extend M = T | where Timestamp < M | count")
    assert r.rows[0][0] >= 1
