"""Kusto-documented behaviours where Quarry diverged, each row citing the documentation page
whose example or note gives the expected value (learn.microsoft.com/kusto/query/...)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.kql.fixtures import run_kql

NAN = float("nan")

# (doc page, query, expected single row)
CASES: list[tuple[str, str, tuple[Any, ...]]] = [
    # summarize-operator, "Default values of aggregations" and its example over an empty table:
    # count/countif/dcount/sum/sumif/stdev/variance give 0, make_list/make_set [], avg NaN
    # (0/0), min/max null.
    ("summarize-operator",
     "range x from 1 to 0 step 1 | summarize sum(x), sumif(x, x > 0), countif(x > 0), count(), "
     "dcount(x), stdev(x), variance(x), avg(x), min(x), max(x), make_list(x), make_set(x)",
     (0, 0, 0, 0, 0, 0.0, 0.0, NAN, None, None, [], [])),
    # null-values, "Null values and aggregation functions": sum/stdev/variance/countif ignore
    # nulls, so a group of nulls aggregates nothing and gets the same default values.
    ("null-values",
     "range x from 1 to 3 step 1 | extend y = int(null), k = 1 | summarize sum(y), countif(y > 1), "
     "dcount(y), stdev(y), variance(y), avg(y), min(y), make_list(y) by k",
     (1, 0, 0, 0, 0.0, 0.0, NAN, None, [])),
    ("null-values",
     "range x from 1 to 3 step 1 | extend y = real(null) | summarize sum(y), sumif(y, x > 1), avg(y)",
     (0.0, 0.0, NAN)),
    # summarize-operator: "The avg aggregate sums only the non-null values and counts only those"
    ("summarize-operator",
     "range x from 1 to 4 step 1 | extend y = iff(x == 1, real(null), real(5)) | summarize sum(y), avg(y)",
     (15.0, 5.0)),
    # numerical-operators, "Note on the modulo operator": 0 <= N % D < abs(D)
    ("numerical-operators",
     "print plusPlus = 14 % 12, minusPlus = -14 % 12, plusMinus = 14 % -12, minusMinus = -14 % -12",
     (2, 10, 2, 10)),
    ("numerical-operators",
     "range x from 14 to 14 step 1 | extend d = 12 | project a = -x % d, b = x % -d, c = -x % -d, e = -5.5 % 2",
     (10, 2, 10, 0.5)),
    # numerical-operators, "Type rules for arithmetic operations": two integers give a long (so
    # int + int does not overflow at 2^31) and integer division truncates (1 / 2 is 0)
    ("numerical-operators",
     "print a = int(2147483647) + int(1), b = int(65536) * int(65536), c = 1 / 2, d = 1.0 / 2, e = real(1) / 2",
     (2147483648, 4294967296, 0, 0.5, 0.5)),
    ("numerical-operators",
     "range x from 7 to 7 step 1 | project a = -x / 2, b = x / -2, c = 9223372036854775807 / 3",
     (-3, -3, 3074457345618258602)),
    # integer division or modulo by zero: undocumented; null rather than failing the whole query
    ("numerical-operators",
     "range x from 5 to 5 step 1 | project a = x / 0, b = x % 0",
     (None, None)),
    # substring-function examples: a negative start counts from the end
    ("substring-function",
     'print a = substring("123456", 1), b = substring("123456", 2, 2), c = substring("ABCD", 0, 2), '
     'd = substring("123456", -2, 2), e = substring("123456", -2)',
     ("23456", "34", "AB", "56", "56")),
    ("substring-function",
     'range s from 1 to 1 step 1 | project t = "123456", k = -2 | project a = substring(t, k, 2), b = substring(t, k)',
     ("56", "56")),
    # indexof-function, its example's output row: negative start, length, occurrence, casts
    ("indexof-function",
     'print idx1 = indexof("abcdefg","cde"), idx2 = indexof("abcdefg","cde",1,4), idx3 = indexof("abcdefg","cde",1,2), '
     'idx4 = indexof("abcdefg","cde",3,4), idx5 = indexof("abcdefg","cde",-5), idx6 = indexof(1234567,5,1,4), '
     'idx7 = indexof("abcdefg","cde",2,-1), idx8 = indexof("abcdefgabcdefg", "cde", 1, 10, 2), '
     'idx9 = indexof("abcdefgabcdefg", "cde", 1, -1, 3)',
     (2, 2, -1, -1, 2, 4, 2, 9, -1)),
    # indexof-function, "Returns": null when length < -1 or occurrence < 0
    ("indexof-function", 'print a = indexof("abc", "b", 0, -2), b = indexof("abc", "b", 0, -1, -1)', (None, None)),
    # array-length-function, "Returns": null when the value is not an array
    ("array-length-function",
     'print a = array_length(dynamic([1, 2, 3, "four"])), b = array_length(dynamic({"a": 1})), '
     'c = array_length(dynamic(5)), d = array_length(dynamic(null)), e = array_length(dynamic([]))',
     (4, None, None, None, 0)),
    ("array-length-function",
     'range x from 1 to 1 step 1 | extend d = parse_json(\'{"k": [1, 2]}\') | project a = array_length(d), '
     'b = array_length(d.k), c = array_length(d.k[0])',
     (None, 2, None)),
    # array-slice-function examples: inclusive ends, negative indices from the end
    ("array-slice-function",
     "print a = array_slice(dynamic([1,2,3]), 1, 2), b = array_slice(dynamic([1,2,3,4,5]), 2, -1), "
     "c = array_slice(dynamic([1,2,3,4,5]), -3, -2)",
     ([2, 3], [3, 4, 5], [3, 4])),
    # ... "Out of bounds indices are ignored"; not an array: null, as array_length()
    ("array-slice-function",
     'print a = array_slice(dynamic([1,2,3]), 2, 10), b = array_slice(dynamic([1,2,3]), -10, 0), '
     'c = array_slice(dynamic([1,2,3]), 2, 1), d = array_slice(dynamic({"a": 1}), 0, 1)',
     ([3], [1], [], None)),
    # strcat_array of a value that is not an array: no elements, and a Kusto string is never null
    # bag-keys-function example: null, 'a' and [] give null; {} gives []
    ("bag-keys-function",
     "print a = bag_keys(dynamic({'a':'b', 'c':123})), b = bag_keys(dynamic(null)), c = bag_keys(dynamic({})), "
     "d = bag_keys(dynamic('a')), e = bag_keys(dynamic([]))",
     (["a", "c"], None, [], None, None)),
    # not-between-operator, "Returns": rows where (expr < leftRange or expr > rightRange) is true,
    # so for a null value the predicate is null, not true
    ("not-between-operator",
     "print a = int(null) !between (1 .. 5), b = 7 !between (1 .. 5), c = 3 !between (1 .. 5), "
     "d = datetime(2024-01-05) !between (datetime(2024-01-01) .. 3d)",
     (None, True, False, True)),
    ("not-between-operator",
     "range x from 1 to 4 step 1 | extend y = iff(x == 2, int(null), x) | where y !between (1 .. 3) | count",
     (1,)),
    ("strcat-array-function", 'print a = strcat_array(dynamic({"a": 1}), "-"), b = strcat_array(dynamic([1, "b"]), "-")',
     ("", "1-b")),
]


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return bool(got == want)


@pytest.mark.parametrize(("page", "kql", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_documented_value(page: str, kql: str, expected: tuple[Any, ...]) -> None:
    result = run_kql(kql)
    if page == "numerical-operators" and "int(" in kql:
        assert set(result.types) <= {"long", "real"}, result.columns
    assert len(result.rows) == 1, result.rows
    row = result.rows[0]
    assert len(row) == len(expected) and all(_same(g, w) for g, w in zip(row, expected, strict=True)), (
        f"{page}: {kql}\nexpected {expected}\ngot      {row}\nSQL:\n{result.sql}")
