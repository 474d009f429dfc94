"""DuckDB: the default target. The compiler's trees are built for DuckDB's functions (typed
sqlglot nodes, and DuckDB-named calls sqlglot does not know), so sqlglot's DuckDB dialect renders
them as they are; the subclass is where a DuckDB-specific rendering fix would go."""

from __future__ import annotations

from sqlglot.dialects.duckdb import DuckDB


class QuarryDuckDB(DuckDB):
    pass
