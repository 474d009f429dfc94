"""Kusto's RE2 forms that DuckDB's older RE2 lacks are rewritten: named groups `(?<n>...)` (as
well as `(?P<n>...)`), `\\uXXXX`; flags work as RE2's."""

from __future__ import annotations

import pytest

from kql.regex import re2
from tests.kql.fixtures import assert_kql


@pytest.mark.parametrize(("pattern", "want"), [
    (r"(?<user>\w+)@", r"(?P<user>\w+)@"),
    (r"(?P<user>\w+)@", r"(?P<user>\w+)@"),
    (r"[\u02B0-\u02FF]", r"[\x{02B0}-\x{02FF}]"),
    (r"\\u0041", r"\\u0041"),  # an escaped backslash followed by u is left alone
    (r"\(?<x>", r"\(?<x>"),  # an escaped parenthesis is no group
    (r"(?<=a)b", r"(?<=a)b"),  # lookbehind is no named group (and not RE2: DuckDB says so)
])
def test_rewrite(pattern: str, want: str) -> None:
    assert re2(pattern) == want


def test_named_groups_flags_and_unicode_escapes_run() -> None:
    assert_kql(
        'print a = extract(@"(?<user>[a-z]+)@(?P<host>[a-z.]+)", 2, "bob@example.org"),\n'
        '      b = "ABC" matches regex @"(?i)^abc$",\n'
        '      c = "x\u02B0y" matches regex @"[\\u02B0-\\u02FF]",\n'
        '      d = replace_regex("a-b", @"(?<sep>-)", "+"),\n'
        '      e = extract_all(@"(?<d>\\d+)", "a1b22")',
        [("example.org", True, True, "a+b", ["1", "22"])],
    )
