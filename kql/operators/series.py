"""make-series (per-group arrays over a bin axis) and partition (a subquery per key)."""

from __future__ import annotations

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.bounded import guarded_grid
from kql.context import CompileError, Env, Scope
from kql.naming import column_name
from kql.registry import Binder, operator
from kql.relation import Rel
from kql.typed import (
    V,
    is_numeric,
)


@operator("make-series")
def op_make_series(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    """make-series: per group, one array per aggregate over the bins start, start+step, ... < end.

    A bin with no rows holds the aggregate's `default` (0 unless given), as documented. Without
    `from`/`to` the bounds are the input's smallest axis value and just past its largest.
    Output: the by columns, the aggregate arrays, then the axis array (bin starts).
    """
    defaults, axis_node, start_node, end_node, step_node = op.extra
    for p in op.params:
        if not p.name.startswith("hint.") and p.name != "kind":
            bd.ctx.error("unsupported", f"make-series {p.name} is not supported", p.span)
    inp = bd.wrap(rel)
    scope = Scope(env, inp)
    axis = bd.scalar(axis_node, scope)
    axis_name = column_name(axis_node)
    if not axis_name:
        raise bd.ctx.fail("wrong_arguments", "make-series needs a column after on", axis_node.span)
    if axis.type not in ("datetime", "timespan") and not is_numeric(axis.type):
        raise bd.ctx.fail("type_mismatch", f"make-series axis must be a datetime, timespan or number, not {axis.type}",
                            axis_node.span)
    step = bd.scalar(step_node, scope)

    def bound(node: n.Node | None, agg: str) -> exp.Expr:
        if node is not None:
            v = bd.scalar(node, scope)
            if v.type != axis.type and not (is_numeric(v.type) and is_numeric(axis.type)):
                raise bd.ctx.fail("type_mismatch", f"make-series bound is {v.type}, the axis is {axis.type}", node.span)
            return v.sql
        edge: exp.Expr = sb.fn(agg, axis.sql.copy())
        if agg == "max":
            edge = exp.Add(this=edge, expression=step.sql.copy())
        return exp.Subquery(this=exp.Select(expressions=[edge]).from_(inp.src.copy(), copy=False))

    start, end = bound(start_node, "min"), bound(end_node, "max")
    binned = bd.wrap(inp)
    offset = V(exp.Sub(this=axis.sql.copy(), expression=start.copy()),
               "timespan" if axis.type == "datetime" else axis.type)
    bin_col = "__series_bin"
    binned.cols[bin_col] = axis.type
    binned.exprs[bin_col] = exp.Add(this=F.bin_value(bd.ctx, offset, step), expression=start.copy())
    binned.where += [exp.GTE(this=axis.sql.copy(), expression=start.copy()),
                     exp.LT(this=axis.sql.copy(), expression=end.copy())]
    summ = n.Operator(op.span, "summarize", exprs=op.exprs,
                      by=op.by + (n.NamedExpr(op.span, (bin_col,), n.Name(op.span, bin_col)),))
    agg = bd.operator(binned, summ, env)
    keys = [c for c in agg.cols if c != bin_col][:len(op.by)]
    values = [c for c in agg.cols if c != bin_col and c not in keys]
    agg_sel = agg.select()
    s_alias, k_alias, g_alias = bd.ctx.alias(), bd.ctx.alias(), bd.ctx.alias()

    def sub(alias: str) -> exp.Expr:
        return exp.Subquery(this=agg_sel.copy(), alias=exp.TableAlias(this=sb.ident(alias)))

    key_exprs = [sb.alias(sb.col(k), k) for k in keys] or [sb.alias(exp.true(), "__series_group")]
    groups = exp.Subquery(this=exp.Select(expressions=key_exprs, distinct=exp.Distinct()).from_(sub(s_alias + "k"), copy=False),
                          alias=exp.TableAlias(this=sb.ident(k_alias)))
    bins = guarded_grid(start, end, step.sql, axis.type)  # at most query_max_array_elements bins
    grid = exp.Subquery(this=exp.Select(expressions=[sb.alias(sb.fn("unnest", bins), "t")]),
                        alias=exp.TableAlias(this=sb.ident(g_alias)))
    on = sb.and_all([exp.NullSafeEQ(this=sb.col(k, k_alias), expression=sb.col(k, s_alias)) for k in keys]
                    + [exp.EQ(this=sb.col(bin_col, s_alias), expression=sb.col("t", g_alias))])
    order = exp.Order(expressions=[exp.Ordered(this=sb.col("t", g_alias))])
    cols: dict[str, str] = {k: agg.cols[k] for k in keys}
    exprs: list[exp.Expr] = [sb.alias(sb.col(k, k_alias), k) for k in keys]
    for i, c in enumerate(values):
        dnode = defaults[i] if i < len(defaults) else None
        dflt = bd.scalar(dnode, scope).sql if dnode is not None else sb.num(0)
        item = sb.fn("coalesce", sb.col(c, s_alias), dflt)
        lst = exp.ArrayAgg(this=exp.Order(this=item, expressions=order.expressions))
        exprs.append(sb.alias(sb.fn("to_json", lst), c))
        cols[c] = "dynamic"
    t: exp.Expr = sb.col("t", g_alias)
    if axis.type == "datetime":
        t = sb.fn("strftime", t, sb.s("%Y-%m-%dT%H:%M:%S.%f0Z"))  # Kusto's JSON form of a datetime
    exprs.append(sb.alias(sb.fn("to_json", exp.ArrayAgg(this=exp.Order(this=t, expressions=order.expressions))), axis_name))
    cols[axis_name] = "dynamic"
    sel = exp.Select(expressions=exprs).from_(groups, copy=False)
    sel = sel.join(grid, join_type="cross", copy=False)
    sel = sel.join(sub(s_alias), on=on, join_type="left", copy=False)
    sel = sel.group_by(*[sb.col(k, k_alias) for k in keys] or [sb.col("__series_group", k_alias)], copy=False)
    return bd.wrap_select(sel, cols)


@operator("partition")
def op_partition(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    """partition by Col (SubQuery): the subquery on the rows of each value of Col, results unioned.

    Lowered to a LATERAL subquery per distinct key (`hint.*` parameters change only how
    Kusto distributes the work, so they are accepted and ignored).
    """
    key = op.names[0]
    for p in op.params:
        if not p.name.startswith("hint."):
            bd.ctx.error("unsupported", f"partition {p.name} is not supported", p.span)
    inp = bd.wrap(rel)
    if key.name not in inp.cols:
        bd.unknown_column(key.name, key.span, inp)
        raise CompileError()
    if inp.cols[key.name] == "dynamic":
        raise bd.ctx.fail("type_mismatch", "partition needs a scalar key column, not dynamic", key.span)
    k_alias = bd.ctx.alias()
    keys = exp.Subquery(this=exp.Select(expressions=[sb.alias(sb.col(key.name), key.name)], distinct=exp.Distinct())
                        .from_(inp.src.copy(), copy=False), alias=exp.TableAlias(this=sb.ident(k_alias)))
    part = bd.wrap(inp)
    part.where.append(exp.NullSafeEQ(this=sb.col(key.name), expression=sb.col(key.name, k_alias)))
    sub = part
    for sub_op in op.extra:
        sub = bd.operator(sub, sub_op, env)
    s_alias = bd.ctx.alias()
    lateral = exp.Lateral(this=exp.Subquery(this=sub.select()), alias=exp.TableAlias(this=sb.ident(s_alias)))
    sel = exp.Select(expressions=[sb.alias(sb.col(c, s_alias), c) for c in sub.cols]).from_(keys, copy=False)
    sel.append("joins", exp.Join(this=lateral))
    return bd.wrap_select(sel, sub.cols)
