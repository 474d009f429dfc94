"""Null and empty-string rules.

https://learn.microsoft.com/kusto/query/scalar-data-types/null-values :
- "The string data type doesn't support null values": a missing string is "", so a NULL stored
  for a string column must behave as "" (isempty true, isnull false, != "x" true).
- `==` between null and a non-null value is false; `!=` between null and non-null is TRUE
  (unlike SQL, where it is NULL and `where` drops the row).
- `where` treats a null predicate as false; aggregations ignore nulls.
Fixture rows: tests/kql/fixtures.py (row 5 has AccountName NULL, row 4 has FileSize NULL).
"""

from __future__ import annotations

from tests.kql.fixtures import assert_kql, ids_of


def test_null_string_column_behaves_as_empty_string() -> None:
    assert ids_of("DeviceProcessEvents | where isempty(AccountName)") == [5]
    assert ids_of("DeviceProcessEvents | where isnotempty(AccountName)") == [1, 2, 3, 4, 6]
    assert ids_of('DeviceProcessEvents | where AccountName == ""') == [5]
    assert ids_of("DeviceProcessEvents | where isnull(AccountName)") == []


def test_negated_string_operators_keep_empty_strings() -> None:
    assert ids_of('DeviceProcessEvents | where AccountName != "alice"') == [3, 4, 5]
    assert ids_of('DeviceProcessEvents | where AccountName !~ "ALICE"') == [3, 4, 5]
    assert ids_of('DeviceProcessEvents | where AccountName !contains "a"') == [3, 4, 5]
    assert ids_of('DeviceProcessEvents | where AccountName !has "alice"') == [3, 4, 5]
    assert ids_of('DeviceProcessEvents | where AccountName !startswith "al"') == [3, 4, 5]
    assert ids_of('DeviceProcessEvents | where AccountName !in ("alice", "bob")') == [4, 5]
    assert ids_of('DeviceProcessEvents | where AccountName !in~ ("ALICE")') == [3, 4, 5]


def test_string_functions_on_missing_strings() -> None:
    assert_kql(
        "DeviceProcessEvents | where ReportId == 5 | project a = strlen(AccountName),"
        " b = strcat('[', AccountName, ']'), c = tolower(AccountName)",
        [(0, "[]", "")],
    )


def test_tostring_of_null_is_empty() -> None:
    assert_kql("print a = tostring(long(null)), b = strcat('x', tostring(long(null)))", [("", "x")])


def test_null_number_comparisons() -> None:
    # FileSize is null on row 4.
    assert ids_of("DeviceProcessEvents | where FileSize > 0") == [1, 2, 3, 5, 6]
    assert ids_of("DeviceProcessEvents | where FileSize == 1000") == [1]
    # null != non-null is true (null-values page, "Equality and inequality of null values").
    assert ids_of("DeviceProcessEvents | where FileSize != 1000") == [2, 3, 4, 5, 6]
    assert ids_of("DeviceProcessEvents | where isnull(FileSize)") == [4]
    assert ids_of("DeviceProcessEvents | where isnotnull(FileSize)") == [1, 2, 3, 5, 6]


def test_documented_null_example() -> None:
    # null-values page example: val > 3 is null for null; `val > 3 or isnull(val)` is true;
    # val == int(null) is null for both rows... except 5 == null is false, 5 != null is true.
    assert_kql(
        "datatable(val:int)[5, int(null)]\n"
        "| extend IsBiggerThan3 = val > 3\n"
        "| extend IsBiggerThan3OrNull = val > 3 or isnull(val)\n"
        "| extend IsEqualToNull = val == int(null)\n"
        "| extend IsNotEqualToNull = val != int(null)",
        [(5, True, True, False, True), (None, None, True, None, None)],
    )


def test_aggregations_ignore_nulls() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize s = sum(FileSize), a = avg(FileSize), mn = min(FileSize),"
        " d = dcount(FileSize), n = count()",
        [(7100, 1420.0, 500, 5, 6)],
    )


def test_empty_strings_in_group_keys_and_distinct() -> None:
    assert_kql(
        "DeviceProcessEvents | summarize n = count() by AccountName",
        [("alice", 3), ("bob", 1), ("SYSTEM", 1), ("", 1)],
    )


def test_strcat_delim_keeps_the_slot_of_a_null_argument() -> None:
    # strcat-delim-function converts every argument to a string; tostring(null) is "", so the
    # delimiters around it remain (SQL CONCAT_WS would skip the NULL).
    assert_kql('print a = strcat_delim(",", "a", long(null), "b")', [("a,,b",)])
    assert_kql(
        "DeviceProcessEvents | where ReportId == 5 | project s = strcat_delim('|', DeviceId, AccountName, FileName)",
        [("d2||notepad.exe",)],
    )


def test_empty_and_missing_strings_are_one_group() -> None:
    # DeviceLogonEvents row 1 has RemoteIP "" and DeviceProcessEvents row 5 a missing AccountName:
    # both are the empty string in Kusto, so they fall in one group.
    assert_kql(
        "union (DeviceLogonEvents | project R = RemoteIP), (DeviceProcessEvents | project R = AccountName)\n"
        "| summarize n = count() by R",
        [("", 2), ("10.0.0.5", 1), ("alice", 3), ("bob", 1), ("SYSTEM", 1)],
    )
    assert_kql(
        "union (DeviceLogonEvents | project R = RemoteIP), (DeviceProcessEvents | project R = AccountName)\n"
        "| where isempty(R) | distinct R",
        [("",)],
    )


def test_outer_join_unmatched_strings_are_empty_not_null() -> None:
    # "The string data type doesn't support null values": the unmatched side of an outer join
    # gives "" for its string columns (numbers stay null).
    a = 'datatable(k:string, v:long)["x", 1, "y", 3]'
    b = 'datatable(k:string, s:string)["x", "a", "z", "q"]'
    assert_kql(f"{a} | join kind=fullouter ({b}) on k",
               [("x", 1, "x", "a"), ("", None, "z", "q"), ("y", 3, "", "")])
    assert_kql(f"{a} | join kind=leftouter ({b}) on k", [("x", 1, "x", "a"), ("y", 3, "", "")])
    assert_kql(f"{a} | join kind=rightouter ({b}) on k", [("x", 1, "x", "a"), ("", None, "z", "q")])
    assert_kql(f"{a} | lookup ({b}) on k", [("x", 1, "a"), ("y", 3, "")])
