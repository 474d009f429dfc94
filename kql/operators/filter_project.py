"""where, extend, project and its project-* forms, serialize: the operators that fold into the
current SELECT (filters and projections), plus the date-partition conditions a time filter implies."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace
from datetime import datetime

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import CompileError, Env, Scope
from kql.naming import column_name
from kql.registry import Binder, operator
from kql.relation import Rel
from schema.catalog import DATE_PARTITION

TIME_CMP = {">": ">=", ">=": ">=", "<": "<=", "<=": "<=", "==": "="}


@operator("where")
def op_where(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    if not rel.open:
        rel = bd.wrap(rel)
    assert op.operand is not None
    v = bd.scalar(op.operand, Scope(env, rel))
    bd.expect_bool(v, op.operand)
    if v.window:
        # SQL has no window functions in WHERE: compute the condition as a column first
        tmp = "__where"
        rel.cols[tmp], rel.exprs[tmp] = "bool", ordered_windows(v.sql, rel)
        rel = bd.wrap(rel)
        del rel.cols[tmp]
        rel.where.append(sb.col(tmp))
        return rel
    rel.where.append(sb.paren(v.sql) if isinstance(v.sql, exp.Or) else v.sql)
    if rel.base is not None and rel.base.has_timestamp:
        rel.where += partition_conds(bd, op.operand, rel, env)
    return rel


def ordered_windows(e: exp.Expr, rel: Rel) -> exp.Expr:
    """row_number()/prev()/next() follow the serialized order: the current sort, if any."""
    if rel.order:
        for w in e.find_all(exp.Window):
            if not w.args.get("order"):
                w.set("order", exp.Order(expressions=[o.copy() for o in rel.order]))
    return e


def partition_conds(bd: Binder, pred: n.Node, rel: Rel, env: Env) -> list[exp.Expr]:
    """Conditions on the date partition implied by conditions on Timestamp."""
    ts = rel.exprs.get("Timestamp")
    if not (isinstance(ts, exp.Column) and ts.name == "Timestamp"):
        return []
    out: list[exp.Expr] = []
    date = sb.col(DATE_PARTITION)

    def day(dt: datetime) -> exp.Expr:
        return exp.Cast(this=sb.s(dt.date().isoformat()), to=exp.DataType.build("DATE"))

    def walk(p: n.Node) -> None:
        if isinstance(p, n.Paren):
            walk(p.inner)
        elif isinstance(p, n.Binary) and p.op == "and":
            walk(p.left)
            walk(p.right)
        elif isinstance(p, n.Binary) and p.op in TIME_CMP:
            left, right, op = p.left, p.right, p.op
            if _is_ts(right) and not _is_ts(left):
                left, right = right, left
                op = {">": "<", "<": ">", ">=": "<=", "<=": ">="}.get(op, op)
            if _is_ts(left):
                dt = bd.const_datetime(right, env)
                if dt is not None:
                    cmp: type[exp.Binary] = {">=": exp.GTE, "<=": exp.LTE, "=": exp.EQ}[TIME_CMP[op]]
                    cond: exp.Expr = cmp(this=date.copy(), expression=day(dt))
                    out.append(cond)
        elif isinstance(p, n.Between) and not p.negated and _is_ts(p.value):
            lo, hi = bd.const_datetime(p.low, env), bd.const_datetime(p.high, env)
            if lo is not None:
                out.append(exp.GTE(this=date.copy(), expression=day(lo)))
            if hi is not None:
                out.append(exp.LTE(this=date.copy(), expression=day(hi)))

    walk(pred)
    return out


def _is_ts(node: n.Node) -> bool:
    return isinstance(node, n.Name) and node.name in ("Timestamp", "TimeGenerated")


def columns_added(bd: Binder, rel: Rel, items: tuple[n.NamedExpr, ...], env: Env,
                   keep_existing: bool) -> Rel:
    if not rel.open:
        rel = bd.wrap(rel)
    scope = Scope(env, rel)
    # extend sees its own earlier assignments (Kusto evaluates them left to right)
    new_cols: dict[str, str] = rel.cols if keep_existing else {}
    new_exprs: dict[str, exp.Expr] = rel.exprs if keep_existing else {}
    windowed = False
    auto = 0
    for item in items:
        bd.pending_name = None
        try:
            v = bd.scalar(item.expr, scope)
        except CompileError:
            continue
        if not item.names and bd.pending_name:
            item = replace(item, names=(bd.pending_name,))
        windowed |= v.window
        if v.window:
            v = replace(v, sql=ordered_windows(v.sql, rel))
        if len(item.names) > 1:
            bd.ctx.error("unsupported", "assigning to several columns at once is not supported", item.span)
            continue
        if item.names:
            name = item.names[0]
        else:
            name = column_name(item.expr) or ""
            if not name:
                auto += 1
                name = f"Column{auto}"
                while name in new_cols:
                    auto += 1
                    name = f"Column{auto}"
        if name in new_cols and not keep_existing:
            bd.ctx.error("duplicate_column", f"column {name!r} is projected twice", item.span)
        new_cols[name] = v.type
        new_exprs[name] = v.sql
    if windowed:
        rel.windowed = True
    rel.cols, rel.exprs = new_cols, new_exprs
    return rel


@operator("extend")
def op_extend(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    return columns_added(bd, rel, op.exprs, env, keep_existing=True)


@operator("project")
def op_project(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    return columns_added(bd, rel, op.exprs, env, keep_existing=False)


@operator("serialize")
def op_serialize(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    return columns_added(bd, rel, op.exprs, env, keep_existing=True) if op.exprs else rel


def _match_cols(bd: Binder, rel: Rel, pat: n.Node) -> list[str]:
    if isinstance(pat, n.WildName):
        regex = re.compile(fnmatch.translate(pat.pattern))
        return [c for c in rel.cols if regex.match(c)]
    assert isinstance(pat, n.Name)
    if pat.name in rel.cols:
        return [pat.name]
    if rel.aliases.get(pat.name) in rel.cols:
        return [rel.aliases[pat.name]]
    if rel.open_schema:
        return []
    bd.unknown_column(pat.name, pat.span, rel)
    return []


@operator("project-away")
def op_project_away(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    drop: set[str] = set()
    for p in op.names:
        drop.update(_match_cols(bd, rel, p))
    rel.cols = {c: t for c, t in rel.cols.items() if c not in drop}
    return _some_columns_left(bd, rel, op)


def _some_columns_left(bd: Binder, rel: Rel, op: n.Operator) -> Rel:
    # SQL has no zero-column SELECT: say so here rather than fail inside DuckDB
    if not rel.cols:
        raise bd.ctx.fail("invalid_argument", f"{op.kind} leaves no columns", op.span)
    return rel


@operator("project-keep")
def op_project_keep(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    keep: set[str] = set()
    for p in op.names:
        keep.update(_match_cols(bd, rel, p))
    rel.cols = {c: t for c, t in rel.cols.items() if c in keep}
    return _some_columns_left(bd, rel, op)


@operator("project-rename")
def op_project_rename(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    cols = list(rel.cols.items())
    exprs = dict(rel.exprs)
    for new, old in op.renames:
        idx = next((i for i, (c, _) in enumerate(cols) if c == old.name), None)
        if idx is None:
            bd.unknown_column(old.name, old.span, rel)
            continue
        cols[idx] = (new.name, cols[idx][1])
        exprs[new.name] = exprs[old.name]
    rel.cols = dict(cols)
    rel.exprs = exprs
    return rel


@operator("project-reorder")
def op_project_reorder(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    first: list[str] = []
    for pat, direction in op.extra:
        matched = _match_cols(bd, rel, pat)
        if direction:
            matched = sorted(matched, reverse=direction == "desc")
        first += [c for c in matched if c not in first]
    rel.cols = {c: rel.cols[c] for c in first + [c for c in rel.cols if c not in first]}
    return rel
