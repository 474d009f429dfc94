"""Every function in the Kusto documentation's lists (kql/known_functions.py) is either
implemented or refused with a positioned `unsupported` diagnostic that names it; the counts are
the ones docs/kql.md states."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kql import CompileOptions, compile_kql
from kql import functions as F
from kql.known_functions import KUSTO_AGGREGATES, KUSTO_SCALARS
from schema import default_catalog

# Forms the compiler handles itself rather than through the function tables (docs/kql.md).
SPECIAL = {"toscalar", "materialize", "table", "ingestion_time", "column_ifexists", "dynamic"}
IMPLEMENTED = set(F.SCALARS) | set(F.AGGREGATES) | set(F.ALIASES) | SPECIAL
MISSING = sorted((KUSTO_SCALARS | KUSTO_AGGREGATES) - IMPLEMENTED)


@pytest.mark.parametrize("name", MISSING)
def test_an_unimplemented_kusto_function_is_refused_by_name(name: str) -> None:
    compiled = compile_kql(f"print x = {name}(1)", default_catalog(), CompileOptions())
    assert not compiled.ok
    d = compiled.errors[0]
    assert d.code == "unsupported", (name, d)
    assert f"{name}()" in d.message and (d.line, d.column) == (1, 11)


def test_docs_state_the_counts() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "kql.md").read_text(encoding="utf-8")
    scalars = len(KUSTO_SCALARS & IMPLEMENTED)
    aggregates = len(KUSTO_AGGREGATES & IMPLEMENTED)
    assert re.search(rf"\b{scalars} of the {len(KUSTO_SCALARS)} scalar", text), scalars
    assert re.search(rf"\b{aggregates} of the {len(KUSTO_AGGREGATES)} aggregation", text), aggregates
