"""Tabular sources that are not tables: print, range, datatable (externaldata is refused)."""

from __future__ import annotations

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Env, Scope
from kql.naming import column_name
from kql.registry import Binder, source
from kql.relation import Rel
from kql.typed import (
    normalize_type,
    to_type,
)


@source("externaldata")
def src_externaldata(bd: Binder, node: n.Source, env: Env) -> Rel:
    raise bd.ctx.fail("unsupported", "externaldata is not supported: Quarry does not fetch data from URLs", node.span)


@source("print")
def src_print(bd: Binder, node: n.Source, env: Env) -> Rel:
    scope = Scope(env)
    cols: dict[str, str] = {}
    exprs: dict[str, exp.Expr] = {}
    for i, ne in enumerate(node.exprs):
        v = bd.scalar(ne.expr, scope)
        # print has no input columns: a bare name is a let variable, which names nothing
        # (`print x` is print_0); `print d.a` is still d_a
        inferred = None if isinstance(ne.expr, n.Name) else column_name(ne.expr)
        name = ne.names[0] if ne.names else (inferred or f"print_{i}")
        cols[name] = v.type
        exprs[name] = v.sql
    sel = exp.Select(expressions=[sb.alias(exprs[c], c) for c in cols])
    return bd.wrap_select(sel, cols)


@source("range")
def src_range(bd: Binder, node: n.Source, env: Env) -> Rel:
    scope = Scope(env)
    start, stop, step = (bd.scalar(x, scope) for x in node.items)
    name = str(node.extra)
    # the table function streams its rows; unnest(generate_series(...)) built the whole list
    # first, out of reach of the memory limit and of interrupt()
    series = exp.Table(this=sb.fn("generate_series", start.sql, stop.sql, step.sql),
                       alias=exp.TableAlias(this=sb.ident("_range"), columns=[sb.ident(name)]))
    sel = exp.Select(expressions=[sb.alias(sb.col(name, "_range"), name)]).from_(series, copy=False)
    t = start.type if start.type != "int" else "long"
    return bd.wrap_select(sel, {name: t})


@source("datatable")
def src_datatable(bd: Binder, node: n.Source, env: Env) -> Rel:
    decls: list[tuple[str, str, n.Span]] = list(node.extra)
    cols: dict[str, str] = {}
    for name, typ, span in decls:
        try:
            cols[name] = normalize_type(typ)
            from schema.types import kql_type

            kql_type(typ)
        except KeyError:
            raise bd.ctx.fail("unknown_type", f"unknown type {typ!r}", span) from None
    values = [bd.scalar(v, Scope(env)) for v in node.items]
    width = len(cols)
    if width == 0 or len(values) % width:
        raise bd.ctx.fail(
            "wrong_arguments",
            f"datatable has {len(values)} values for {width} columns: the count must be a multiple",
            node.span,
        )
    names = list(cols)
    rows = []
    for r in range(0, len(values), width):
        row = [sb.cast(to_type(values[r + i], cols[names[i]]), cols[names[i]]) for i in range(width)]
        rows.append(exp.Tuple(expressions=row))
    if not rows:
        sel = exp.Select(expressions=[sb.alias(sb.null(t), c) for c, t in cols.items()]).where(exp.false())
        return bd.wrap_select(sel, cols)
    alias = bd.ctx.alias("_dt")
    values_node = exp.Values(
        expressions=rows,
        alias=exp.TableAlias(this=sb.ident(alias), columns=[sb.ident(c) for c in names]),
    )
    sel = exp.Select(expressions=[sb.col(c) for c in names]).from_(values_node)
    return bd.wrap_select(sel, cols)
