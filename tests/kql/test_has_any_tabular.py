"""has_any / has_all / in whose argument is a tabular expression, a let-bound table or an array
the query computes (Kusto accepts each)."""

from __future__ import annotations

import pytest

from tests.kql.fixtures import assert_kql

ROWS = 'datatable(c:string)["cmd /c whoami", "cmd.exe", "x"]'
TABLE = 'let T = datatable(t:string)["cmd", "whoami"];\n'
ARRAY = 'let T = toscalar(datatable(t:string)["cmd", "whoami"] | summarize make_set(t));\n'


@pytest.mark.parametrize(("prefix", "cond", "want"), [
    (TABLE, "c has_any (T)", ["cmd /c whoami", "cmd.exe"]),
    (TABLE, "c has_all (T)", ["cmd /c whoami"]),
    (TABLE, "c !has_all (T)", ["cmd.exe", "x"]),
    ("", 'c has_any ((datatable(t:string)["whoami"]))', ["cmd /c whoami"]),
    ("", 'c has_all ((datatable(t:string)["cmd", "exe"]))', ["cmd.exe"]),
    (ARRAY, "c has_any (T)", ["cmd /c whoami", "cmd.exe"]),
    (ARRAY, "c has_all (T)", ["cmd /c whoami"]),
    (ARRAY, "c !has_any (T)", ["x"]),
    (TABLE, "c in (T)", []),
    ('let T = datatable(t:string)["x", "cmd.exe"];\n', "c in (T)", ["cmd.exe", "x"]),
    ('let T = datatable(t:string)["X"];\n', "c in~ (T)", ["x"]),
])
def test_tabular_and_computed_arguments(prefix: str, cond: str, want: list[str]) -> None:
    assert_kql(f"{prefix}{ROWS} | where {cond}", [(w,) for w in want])
