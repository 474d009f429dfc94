"""Scalar expressions: literals, names, parentheses, negation, dynamic member and index access."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Scope
from kql.diagnostics import name_hints
from kql.lower import capabilities
from kql.registry import Binder, expression
from kql.relation import is_notnull
from kql.typed import (
    NOCONST,
    NUMERIC,
    STRINGY,
    UNKNOWN,
    V,
    as_string,
    const,
    is_numeric,
)


@expression(n.Literal)
def x_Literal(bd: Binder, node: n.Literal, scope: Scope) -> V:
    return const(node.value, node.type)


@expression(n.Paren)
def x_Paren(bd: Binder, node: n.Paren, scope: Scope) -> V:
    if bd.is_tabular(node.inner, scope.env):
        return bd.scalar_subquery(node.inner, scope)
    v = bd.scalar(node.inner, scope)
    return replace(v, sql=sb.paren(v.sql))


# Sentinel's columns beyond Defender's, on a relation that still has its table's event time
# (where TimeGenerated resolves): each reads as a string constant (Type: the table's name).
SENTINEL_COLUMNS = ("TenantId", "SourceSystem", "Type", "MachineGroup")


@expression(n.Name)
def x_Name(bd: Binder, node: n.Name, scope: Scope) -> V:
    rel = scope.rel
    if rel is not None and node.name in rel.cols:
        e = rel.exprs[node.name]
        return V(e.copy(), rel.cols[node.name], notnull=is_notnull(rel, e))
    if rel is not None and rel.aliases.get(node.name) in rel.cols:
        target = rel.aliases[node.name]
        return V(rel.exprs[target].copy(), rel.cols[target])
    b = scope.env.get(node.name)
    if b is not None:
        if b.kind == "scalar":
            v: V = b.value
            return V(v.sql.copy(), v.type, v.const)
        if b.kind in ("tabular", "rel"):
            return bd.scalar_subquery(node, scope)
        raise bd.ctx.fail("type_mismatch", f"{node.name!r} is a function: call it with ()", node.span)
    if rel is not None and "TimeGenerated" in rel.aliases and node.name in SENTINEL_COLUMNS:
        # Sentinel's copies of the Device tables add these columns; queries written for
        # Sentinel read them. Quarry has one tenant and no workspace: they are constants.
        return const(rel.name or "" if node.name == "Type" else "", "string")
    if node.name.lower() in ("true", "false"):
        return const(node.name.lower() == "true", "bool")
    if node.name == "null":
        return V(exp.Null(), UNKNOWN, None)
    if bd.ctx.catalog.table(node.name) is not None:
        raise bd.ctx.fail("type_mismatch", f"{node.name!r} is a table; a scalar is needed here", node.span)
    if rel is not None and rel.open_schema:
        return V(sb.col(node.name), UNKNOWN)  # a column the data will decide (no probe)
    names = list(rel.cols) if rel else []
    names += [k for k in scope.env.all_names() if k not in names]
    raise bd.ctx.fail("unknown_column", f"unknown column or variable {node.name!r}", node.span,
                        name_hints(node.name, names, "columns" if rel else "names"))


@expression(n.ArrayLit)
def x_ArrayLit(bd: Binder, node: n.ArrayLit, scope: Scope) -> V:
    # `['Column Name']` is a bracketed column reference outside dynamic()
    if len(node.items) == 1 and isinstance(node.items[0], n.Literal) and isinstance(node.items[0].value, str):
        return x_Name(bd, n.Name(node.span, node.items[0].value, bracketed=True), scope)
    raise bd.ctx.fail("syntax", "an array literal must be written dynamic([...])", node.span)


@expression(n.SideRef)
def x_SideRef(bd: Binder, node: n.SideRef, scope: Scope) -> V:
    raise bd.ctx.fail("syntax", f"${node.side} can only be used in a join condition", node.span)


@expression(n.NamedArg)
def x_NamedArg(bd: Binder, node: n.NamedArg, scope: Scope) -> V:
    # `toint(Total = count())`: Kusto lets the name ride inside the call; it names the column
    bd.pending_name = node.name
    return bd.scalar(node.value, scope)


@expression(n.Star)
def x_Star(bd: Binder, node: n.Star, scope: Scope) -> V:
    raise bd.ctx.fail("syntax", "* is not allowed here", node.span)


@expression(n.Neg)
def x_Neg(bd: Binder, node: n.Neg, scope: Scope) -> V:
    v = bd.scalar(node.operand, scope)
    if not (is_numeric(v.type) or v.type == "timespan"):
        bd.ctx.error("type_mismatch", f"cannot negate a {v.type}", node.span)
    if node.op == "+":
        return v
    return V(exp.Neg(this=sb.paren(v.sql)), v.type, -v.const if v.is_const and v.const is not None else NOCONST)


@expression(n.ColumnTerm)
def x_ColumnTerm(bd: Binder, node: n.ColumnTerm, scope: Scope) -> V:
    raise bd.ctx.fail("syntax", f'{node.column.name}:"..." is search syntax: write {node.column.name} has "..."',
                        node.span)


@expression(n.Member)
def x_Member(bd: Binder, node: n.Member, scope: Scope) -> V:
    target = bd.scalar(node.target, scope)
    _warn_string_access(bd, target, node)
    out = json_path(bd, target, [("key", node.name)], node)
    return replace(out, agg=target.agg, window=target.window)


@expression(n.Index)
def x_Index(bd: Binder, node: n.Index, scope: Scope) -> V:
    target = bd.scalar(node.target, scope)
    _warn_string_access(bd, target, node)
    idx = bd.scalar(node.index, scope)
    if idx.is_const and isinstance(idx.const, int | str):
        out = json_path(bd, target, [("idx" if isinstance(idx.const, int) else "key", idx.const)], node)
        return replace(out, agg=target.agg, window=target.window)
    capabilities.check(bd.ctx, "feature", "computed-dynamic-index", node.index.span)
    arr = dyn(bd, target, node)
    if idx.type in NUMERIC:
        path: exp.Expr = exp.DPipe(this=exp.DPipe(this=sb.s("$["), expression=sb.cast(idx.sql, "string")),
                                         expression=sb.s("]"))
    else:
        # a runtime key: quoted in the JSON path; an empty or missing key yields null
        key = sb.fn("replace", sb.fn("replace", as_string(idx), sb.s("\\"), sb.s("\\\\")), sb.s('"'), sb.s('\\"'))
        path = exp.DPipe(this=exp.DPipe(this=sb.s('$."'), expression=key), expression=sb.s('"'))
        path = exp.Nullif(this=path, expression=sb.s('$.""'))
    return V(sb.fn("json_extract", arr, path), "dynamic", agg=target.agg, window=target.window)


def _warn_string_access(bd: Binder, target: V, node: n.Member | n.Index) -> None:
    """Kusto rejects `.name` and `[...]` on a string (Kusto.Language: KS142/KS147); Quarry reads
    the text as JSON, which is what the author meant, and says so."""
    if target.type in STRINGY:
        bd.ctx.warn("kusto_rejects", "Kusto rejects member access on a string: write "
                    "parse_json(...) first (Quarry reads the text as JSON)", node.span)


def dyn(bd: Binder, v: V, node: n.Node) -> exp.Expr:
    if v.type == "dynamic":
        return v.sql
    if v.type in STRINGY or v.type == UNKNOWN:
        return F._parse_json(bd.ctx, [v], n.Call(node.span, "todynamic", node.span, ()))
    bd.ctx.error("type_mismatch", f"cannot index into a {v.type}", node.span)
    return v.sql


def json_path(bd: Binder, target: V, steps: list[tuple[str, Any]], node: n.Node) -> V:
    base = dyn(bd, target, node)
    path = "$"
    base_args = sb.call_args(base) if sb.call_name(base) == "json_extract" else []
    if len(base_args) == 2 and isinstance(base_args[1], exp.Literal):
        path = base_args[1].this
        base = base_args[0]
    for kind, key in steps:
        if kind == "idx":
            path += f"[#{key}]" if key < 0 else f"[{key}]"
        else:
            path += '."' + str(key).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if target.is_const and isinstance(target.const, dict | list):
        val = target.const
        try:
            for _kind, key in steps:
                val = val[key]
            return const(val, "dynamic")  # dynamic access stays dynamic
        except (KeyError, IndexError, TypeError):
            return V(sb.null("dynamic"), "dynamic", None)
    return V(sb.fn("json_extract", base, sb.s(path)), "dynamic")


@expression(n.ObjectLit)
def x_ObjectLit(bd: Binder, node: n.ObjectLit, scope: Scope) -> V:
    raise bd.ctx.fail("syntax", "a property bag must be written dynamic({...})", node.span)
