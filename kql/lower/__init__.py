"""Lowering: the compiler's sqlglot tree rendered as SQL for one target engine.

One ``Dialect`` subclass per target (kql/lower/duckdb.py, kql/lower/spark.py) with ``<name>_sql``
overrides where sqlglot's own rendering is wrong for KQL. What a target cannot do at all is not
found here but before: kql/lower/capabilities.py turns it into a diagnostic while the query is
checked, so rendering never fails on a query that compiled.
"""

from __future__ import annotations

from sqlglot import Dialect, exp

from kql.lower.duckdb import QuarryDuckDB
from kql.lower.spark import QuarrySpark

TARGETS: dict[str, type[Dialect]] = {"duckdb": QuarryDuckDB, "spark": QuarrySpark}


def render(tree: exp.Expr, target: str) -> str:
    """SQL text of ``tree`` for ``target`` (a key of TARGETS)."""
    return tree.sql(dialect=TARGETS[target]())
