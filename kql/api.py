"""The one public entry point: ``compile_kql(text, catalog, options) -> Compiled``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kql import limits as lim
from kql.compiler import Compiler, Ctx
from kql.diagnostics import ERROR, Diagnostic, make
from kql.functions import DIALECTS
from kql.lower import render
from kql.nodes import Span
from kql.parser import KqlSyntaxError, parse
from kql.sqlbuild import add_parens
from schema.catalog import Catalog


@dataclass(frozen=True)
class CompileOptions:
    dialect: str = "duckdb"
    # Fixes now()/ago(); default: the time of compilation (UTC, naive like stored datetimes).
    now: datetime | None = None
    # The data comes from Quarry's storage, which stores a missing string as "" (Kusto strings
    # are never null): catalog string columns then need no COALESCE(col, ''). Computed strings
    # still get it. Leave False for data that may hold NULL strings (test fixtures).
    strings_never_null: bool = False
    # Runs a SELECT the compiler built and returns its rows, where the query will run (same
    # connection, views and timeout): `evaluate bag_unpack/pivot` learn their data-dependent
    # output columns through it. Without one, such a query compiles with a
    # `data_dependent_schema` warning and no SQL (Compiled.needs_probe).
    probe: Callable[[str], Sequence[Sequence[Any]]] | None = None
    # Values for `declare query_parameters`, as the request sent them: Kusto REST text (each
    # value a string read by the declared type: `datetime(2024-01-01)`, `5`, plain text for a
    # string) or JSON values (native API). They only ever become typed SQL literals. Names the
    # query does not declare are ignored (as Kusto does); see kql.params.
    parameters: Mapping[str, Any] | None = None
    # Size limits (kql.limits): checked before compiling; a query past one gets `too_complex`.
    limits: lim.KqlLimits = field(default_factory=lim.KqlLimits)
    # time.monotonic() past which compiling stops with a `timeout` diagnostic (the query's
    # timeout covers its compilation); None: no deadline
    deadline: float | None = None


@dataclass
class Compiled:
    sql: str | None
    columns: list[tuple[str, str]]  # (name, KQL type)
    diagnostics: list[Diagnostic]
    tables: set[str] = field(default_factory=set)
    # ok, but the output columns depend on the data: compile again with a probe to get SQL
    needs_probe: bool = False
    # the `render` operator's chart hint (kql.chart.parse_render), None without one
    render: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not any(d.severity == ERROR for d in self.diagnostics)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == ERROR]


def compile_kql(text: str, catalog: Catalog, options: CompileOptions | None = None) -> Compiled:
    """Compile KQL to SQL for ``options.dialect``; never raises on bad input (see diagnostics)."""
    options = options or CompileOptions()
    if options.dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {options.dialect!r}; known: {', '.join(DIALECTS)}")
    now = options.now or datetime.now(UTC).replace(tzinfo=None)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    with lim.using(options.limits, options.deadline):
        return _compile(text, catalog, options, now)


def _compile(text: str, catalog: Catalog, options: CompileOptions, now: datetime) -> Compiled:
    try:
        lim.check_text(text, options.limits)
        tree = parse(text)
        lim.check_tree(text, tree, options.limits)
    except KqlSyntaxError as e:
        return Compiled(None, [], [e.diagnostic], set())
    except lim.TooComplex as e:
        return Compiled(None, [], [e.diagnostic], set())
    bad = lim.bad_value_path(dict(options.parameters or {}))
    if bad is not None:
        return Compiled(None, [], [make(text, "invalid_parameter", f"query parameter {bad} holds a lone "
                                        "UTF-16 surrogate, which is not a character", Span(0, 0))], set())
    ctx = Ctx(text, catalog, now, options.dialect, strings_never_null=options.strings_never_null,
              probe=options.probe, parameters=dict(options.parameters or {}))
    try:
        return _lower(text, tree, ctx, options)
    except lim.CompileDeadline:
        return Compiled(None, [], [make(text, "timeout", "compiling the query took longer than its timeout",
                                        Span(0, 0))], set())
    except RecursionError:
        # within query_max_depth, a long pipeline of heavy operators can still nest too deep
        return Compiled(None, [], [make(text, "too_complex", "the query is nested too deeply to compile; "
                                        "split it or use fewer stages (query_max_depth)", Span(0, 0))], set())


def _lower(text: str, tree: Any, ctx: Ctx, options: CompileOptions) -> Compiled:
    rel = Compiler(ctx).query(tree)
    diags = sorted(ctx.diagnostics, key=lambda d: (d.start, d.end))
    if rel is None or any(d.severity == ERROR for d in diags):
        return Compiled(None, [], diags, set(ctx.tables))
    if ctx.needs_probe:
        known = [(c, t if t != "unknown" else "string") for c, t in rel.cols.items()]
        return Compiled(None, known, diags, set(ctx.tables), needs_probe=True, render=ctx.render)
    lim.check_deadline()  # before rendering, the last long step
    final = rel.select()
    for name, body in ctx.ctes:
        # MATERIALIZED: the body is read more than once and must be computed once
        final = final.with_(name, as_=body, materialized=True, copy=False)
    sql = render(add_parens(final), options.dialect)
    columns = [(c, t if t != "unknown" else "string") for c, t in rel.cols.items()]
    return Compiled(sql, columns, diags, set(ctx.tables), render=ctx.render)
