"""String operators: case rules, _cs and negated forms, `has` term rules, in/between/regex.

Source of truth: https://learn.microsoft.com/kusto/query/datatypes-string-operators (the table of
operators, each with an example that yields true) and the per-operator pages
(has-operator, hasprefix-operator, in-operator, between-operator, regex ...). The fixture rows
are in tests/kql/fixtures.py.
"""

from __future__ import annotations

import pytest

from tests.kql.fixtures import assert_kql, ids_of

# The documented example for every operator (datatypes-string-operators: "Example (yields
# true)"). Each must be true, and its negated form (the operator with/without "!") false.
DOC_TRUE_EXAMPLES = [
    '"aBc" == "aBc"',
    '"abc" != "ABC"',
    '"abc" =~ "ABC"',
    '"aBc" !~ "xyz"',
    '"FabriKam" contains "BRik"',
    '"Fabrikam" !contains "xyz"',
    '"FabriKam" contains_cs "Kam"',
    '"Fabrikam" !contains_cs "Kam"',
    '"Fabrikam" endswith "Kam"',
    '"Fabrikam" !endswith "brik"',
    '"Fabrikam" endswith_cs "kam"',
    '"Fabrikam" !endswith_cs "brik"',
    '"North America" has "america"',
    '"North America" !has "amer"',
    '"North and South America" has_all("south", "north")',
    '"North America" has_any("south", "north")',
    '"North America" has_cs "America"',
    '"North America" !has_cs "amer"',
    '"North America" hasprefix "ame"',
    '"North America" !hasprefix "mer"',
    '"North America" hasprefix_cs "Ame"',
    '"North America" !hasprefix_cs "CA"',
    '"North America" hassuffix "ica"',
    '"North America" !hassuffix "americ"',
    '"North America" hassuffix_cs "ica"',
    '"North America" !hassuffix_cs "icA"',
    '"abc" in ("123", "345", "abc")',
    '"bca" !in ("123", "345", "abc")',
    '"Abc" in~ ("123", "345", "abc")',
    '"bCa" !in~ ("123", "345", "ABC")',
    '"Fabrikam" matches regex "b.*k"',
    '"Fabrikam" startswith "fab"',
    '"Fabrikam" !startswith "kam"',
    '"Fabrikam" startswith_cs "Fab"',
    '"Fabrikam" !startswith_cs "fab"',
]


@pytest.mark.parametrize("expr", DOC_TRUE_EXAMPLES)
def test_documented_operator_example_is_true(expr: str) -> None:
    assert_kql(f"print r = {expr}", [(True,)], columns=["r"], types=["bool"])


def _negate(expr: str) -> str:
    """Flip an operator to its negated twin (`has` <-> `!has`, `==` <-> `!=`); "" if it has none."""
    for a, b in (("==", "!="), ("=~", "!~")):
        if f" {a} " in expr:
            return expr.replace(f" {a} ", f" {b} ", 1)
        if f" {b} " in expr:
            return expr.replace(f" {b} ", f" {a} ", 1)
    head, _, rest = expr.partition('" ')
    op, _, tail = rest.partition(" ")
    if op.startswith(("has_all", "has_any", "matches")):
        return ""
    flipped = op[1:] if op.startswith("!") else "!" + op
    return f'{head}" {flipped} {tail}'


@pytest.mark.parametrize("expr", [e for e in DOC_TRUE_EXAMPLES if _negate(e)])
def test_negated_documented_example_is_false(expr: str) -> None:
    assert_kql(f"print r = {_negate(expr)}", [(False,)])


def test_has_matches_whole_terms_only() -> None:
    # datatypes-string-operators, "What is a term?": "KustoExplorerQueryRun" has "Explorer"
    # is false while contains is true, because has is term based.
    assert_kql(
        'print h = "KustoExplorerQueryRun" has "Explorer", c = "KustoExplorerQueryRun" contains "Explorer"',
        [(False, True)],
    )
    # Terms are maximal alphanumeric runs: the GUID parts are terms.
    assert_kql(
        'print a = "Kusto: ad67d136-c1db-4f9f-88ef-d94f3b6b0b5a;KustoExplorerQueryRun" has "c1db",'
        ' b = "Kusto: ad67d136-c1db-4f9f-88ef-d94f3b6b0b5a;KustoExplorerQueryRun" has "c1d"',
        [(True, False)],
    )


def test_has_on_columns_term_boundaries_and_case() -> None:
    # "System32" is one term: has "System" never matches, contains does.
    assert ids_of('DeviceProcessEvents | where FolderPath has "system"') == []
    assert ids_of('DeviceProcessEvents | where FolderPath has "SYSTEM32"') == [1, 2, 3, 4, 6]
    assert ids_of('DeviceProcessEvents | where FolderPath contains "system"') == [1, 2, 3, 4, 6]
    # "." separates terms: "powershell.exe" has "exe".
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has "exe"') == [1, 2, 3, 4]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has "whoami"') == [2, 6]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has "mshtml"') == [4]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has "html"') == []
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has "SQBF"') == []
    # has is case-insensitive, has_cs is not.
    assert ids_of('DeviceProcessEvents | where FileName has "POWERSHELL"') == [1, 3]
    assert ids_of('DeviceProcessEvents | where FileName has_cs "PowerShell"') == [3]
    assert ids_of('DeviceProcessEvents | where FileName !has "powershell"') == [2, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName !has_cs "PowerShell"') == [1, 2, 4, 5, 6]


def test_hasprefix_hassuffix_on_columns() -> None:
    # Term prefix/suffix (hasprefix-operator, hassuffix-operator), case-insensitive without _cs.
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine hasprefix "SQBF"') == [1]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine hasprefix "noprof"') == [1]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine hasprefix_cs "noprof"') == []
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine hassuffix "fga"') == [1]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine hassuffix_cs "FgA"') == [1]
    # "whoami" ends the term "whoami" only; "hoami" is a suffix of it.
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine hassuffix "hoami"') == [2, 6]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine !hasprefix "who"') == [1, 3, 4, 5]


def test_equality_and_case_insensitive_equality_on_columns() -> None:
    assert ids_of('DeviceProcessEvents | where FileName == "powershell.exe"') == [1]
    assert ids_of('DeviceProcessEvents | where FileName =~ "powershell.exe"') == [1, 3]
    assert ids_of('DeviceProcessEvents | where FileName != "powershell.exe"') == [2, 3, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName !~ "powershell.exe"') == [2, 4, 5, 6]


def test_contains_startswith_endswith_on_columns() -> None:
    assert ids_of('DeviceProcessEvents | where FileName contains "SHELL"') == [1, 3]
    assert ids_of('DeviceProcessEvents | where FileName contains_cs "Shell"') == [3]
    assert ids_of('DeviceProcessEvents | where FileName !contains "shell"') == [2, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName !contains_cs "Shell"') == [1, 2, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName startswith "POWER"') == [1, 3]
    assert ids_of('DeviceProcessEvents | where FileName startswith_cs "Power"') == [3]
    assert ids_of('DeviceProcessEvents | where FileName !startswith "power"') == [2, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName !startswith_cs "Power"') == [1, 2, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName endswith ".EXE"') == [1, 2, 3, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName endswith_cs ".EXE"') == [3]
    assert ids_of('DeviceProcessEvents | where FileName !endswith_cs ".exe"') == [3]
    assert ids_of('DeviceProcessEvents | where FileName !endswith ".exe"') == []


def test_like_wildcards_in_values_are_literal() -> None:
    # contains/startswith/endswith take a plain string: % and _ must not act as SQL wildcards.
    assert_kql(
        'print a = "100%" contains "0%", b = "abc" contains "%", c = "a_c" startswith "a_",'
        ' d = "abc" startswith "a_", e = "abc" endswith "_c"',
        [(True, False, True, False, False)],
    )


def test_in_and_in_tilde_on_columns() -> None:
    # in-operator: in is case-sensitive, in~ is not.
    assert ids_of('DeviceProcessEvents | where FileName in ("cmd.exe", "POWERSHELL.EXE")') == [2]
    assert ids_of('DeviceProcessEvents | where FileName in~ ("cmd.exe", "POWERSHELL.EXE")') == [1, 2, 3]
    assert ids_of('DeviceProcessEvents | where FileName !in ("cmd.exe")') == [1, 3, 4, 5, 6]
    assert ids_of('DeviceProcessEvents | where FileName !in~ ("CMD.EXE", "powershell.exe")') == [4, 5, 6]
    assert ids_of("DeviceProcessEvents | where ProcessId in (100, 300)") == [1, 3]


def test_in_with_dynamic_array_and_let() -> None:
    assert ids_of(
        'let names = dynamic(["cmd.exe", "whoami.exe"]);\n'
        "DeviceProcessEvents | where FileName in (names)"
    ) == [2, 6]


def test_in_with_tabular_subquery() -> None:
    # in-operator: the right side may be a tabular expression; its first column is used.
    assert ids_of(
        "DeviceProcessEvents\n"
        "| where DeviceId in ((DeviceNetworkEvents | where RemotePort == 443 | project DeviceId))"
    ) == [3, 5]
    assert ids_of(
        "let ps = DeviceNetworkEvents | where InitiatingProcessFileName =~ 'powershell.exe'"
        " | distinct DeviceId;\n"
        "DeviceProcessEvents | where DeviceId !in (ps)"
    ) == [4]


def test_has_any_and_has_all() -> None:
    # has_any-operator / has_all-operator: term matches, case-insensitive.
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has_any ("BYPASS", "whoami")') == [2, 3, 6]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has_all ("powershell", "bypass")') == [3]
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine has_any ("whoam", "bypas")') == []
    assert ids_of(
        'let l = dynamic(["noprofile", "all"]);\n'
        "DeviceProcessEvents | where ProcessCommandLine has_any (l)"
    ) == [1, 6]


def test_between_and_not_between() -> None:
    # between-operator: inclusive range on numbers, datetimes (also with timespan width).
    assert ids_of("DeviceProcessEvents | where ProcessId between (200 .. 400)") == [2, 3, 4]
    assert ids_of("DeviceProcessEvents | where ProcessId !between (200 .. 400)") == [1, 5, 6]
    assert ids_of(
        "DeviceProcessEvents | where Timestamp between (datetime(2024-05-13 12:00) .. datetime(2024-05-14 10:00))"
    ) == [3, 4]
    assert ids_of(
        "DeviceProcessEvents | where Timestamp between (datetime(2024-05-15 09:00) .. 2h)"
    ) == [1, 2]


def test_matches_regex_is_case_sensitive() -> None:
    # matches-regex-operator: RE2 syntax, case-sensitive unless (?i).
    assert ids_of('DeviceProcessEvents | where FileName matches regex "^power"') == [1]
    assert ids_of('DeviceProcessEvents | where FileName matches regex "(?i)^power"') == [1, 3]
    assert ids_of(
        r'DeviceProcessEvents | where ProcessCommandLine matches regex @"-[Ee]xecution[Pp]olicy\s+Bypass"'
    ) == [3]
    # Not anchored: a match anywhere in the string counts.
    assert ids_of('DeviceProcessEvents | where ProcessCommandLine matches regex "c whoa"') == [2]


def test_string_literal_forms() -> None:
    # scalar-data-types/string: single/double quotes, backslash escapes, verbatim @"...",
    # obfuscated h"..." (same value, hidden from logs).
    assert_kql(
        r"""print b = "say \"hi\"", c = @"C:\temp", d = "C:\\temp", e = h"secret","""
        r""" f = 'tab\there', g = @'x"y', h = 'single'""",
        [('say "hi"', "C:\\temp", "C:\\temp", "secret", "tab\there", 'x"y', "single")],
    )
    # Verbatim strings double a quote to escape it.
    assert_kql('print v = @"a""b"', [('a"b',)])


def test_verbatim_string_against_column() -> None:
    assert ids_of(r'DeviceProcessEvents | where ProcessCommandLine endswith @"C:\temp\run.ps1"') == [3]
    assert ids_of(r'DeviceProcessEvents | where ProcessCommandLine endswith "C:\\temp\\run.ps1"') == [3]
    assert ids_of(r"DeviceProcessEvents | where ProcessCommandLine has @'C:\temp\run.ps1'") == [3]


def test_string_values_are_not_pasted_into_sql() -> None:
    # A value that would break out of a pasted SQL literal must come back unchanged.
    nasty = "x'); DROP TABLE \"DeviceInfo\"; --"
    assert_kql(f"print s = @'{nasty.replace(chr(39), chr(39) * 2)}'", [(nasty,)])
    assert ids_of("DeviceInfo | project ReportId") == [1, 2, 3, 4]


def test_quotes_in_names_and_values_are_quoted_not_pasted() -> None:
    # Bracketed names (['...']) may hold any character; values may hold quotes and SQL syntax.
    r = assert_kql("""print ['we"ird name'] = 1""", [(1,)])
    assert r.names == ['we"ird name']
    assert_kql(
        """DeviceProcessEvents | where FileName contains "x'y" or FileName has "a'); drop table x; --"
        or FileName startswith "%_" or FileName matches regex "'\\"" | count""",
        [(0,)],
    )
    r = assert_kql(
        """DeviceProcessEvents | where ReportId == 1 | extend ['x"y'] = FileName | project ['x"y']""",
        [("powershell.exe",)],
    )
    assert r.names == ['x"y']
