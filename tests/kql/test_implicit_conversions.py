"""Implicit conversions Kusto applies in equality and `in` between a number or bool and a string
(Kusto.Language accepts `RemotePort == "3389"`, `LocalPort in ("389", "636")`,
`IsLocalAdmin == "true"` and the reverse, `RemoteIP == 5`; it rejects `<`, `>` and `between`
across those types)."""

from __future__ import annotations

import pytest

from tests.kql.fixtures import assert_kql, assert_kql_error

T = ('datatable(p:int, l:long, b:bool, s:string)\n'
     '[3389, long(3389), true, "3389", 80, long(80), false, "x", 636, long(636), true, "636"]\n')


@pytest.mark.parametrize(("cond", "want"), [
    ('p == "3389"', [3389]),
    ('l == "3389"', [3389]),
    ('"3389" == p', [3389]),
    ('p != "3389"', [80, 636]),
    ('p == "3389.0"', [3389]),  # the literal reads as a number
    ('p == "abc"', []),  # a literal that is no number equals nothing
    ('p != "abc"', [3389, 80, 636]),
    ('p in ("389", "636")', [636]),
    ('l in ("80", "x")', [80]),
    ('p !in ("3389")', [80, 636]),
    ('b == "true"', [3389, 636]),
    ('b == "false"', [80]),
    ('s == 3389', [3389]),  # the reverse: a number literal against a string
    ('s in (636, 1)', [636]),
    ('p == s', [3389, 636]),  # two columns: compared as text
])
def test_number_and_bool_against_strings(cond: str, want: list[int]) -> None:
    assert_kql(T + f"| where {cond} | project p", [(x,) for x in want])


@pytest.mark.parametrize("cond", ['p > "100"', 'p between ("1" .. "5")'])
def test_ordering_across_types_is_still_an_error(cond: str) -> None:
    assert_kql_error(T + f"| where {cond}", "type_mismatch")
