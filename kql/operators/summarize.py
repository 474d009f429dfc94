"""summarize: grouping keys, aggregates (from the function table), arg_max/arg_min and
percentiles (several columns from one call), and the latest-row-per-group window form."""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import CompileError, Env, Scope
from kql.naming import FIRST_ARGUMENT_NAMED, column_name, key_name, unique
from kql.registry import Binder, operator
from kql.relation import Rel
from kql.typed import (
    STRINGY,
    V,
)


def group_keys(bd: Binder, by: tuple[n.NamedExpr, ...], scope: Scope,
               keep_going: bool) -> tuple[dict[str, str], dict[str, exp.Expr], list[exp.Expr]]:
    """The `by` keys: output columns (Kusto's names: `bin(T, 1h)` is `T`, else Column1...), their
    expressions and the GROUP BY list. ``keep_going``: skip a key that failed (already reported)."""
    cols: dict[str, str] = {}
    exprs: dict[str, exp.Expr] = {}
    group: list[exp.Expr] = []
    auto = 0
    for item in by:
        try:
            v = bd.scalar(item.expr, scope)
        except CompileError:
            if keep_going:
                continue
            raise
        name = item.names[0] if item.names else key_name(item.expr)
        if not name:
            auto += 1
            name = f"Column{auto}"
        if v.type in STRINGY and isinstance(v.sql, exp.Column) and not v.notnull:
            v = V(sb.fn("coalesce", v.sql, sb.s("")), v.type)  # a missing string is ""
        cols[name], exprs[name] = v.type, v.sql
        group.append(v.sql)
    return cols, exprs, group


@operator("summarize")
def op_summarize(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    if not rel.open or rel.order:
        rel = bd.wrap(rel) if not rel.open else rel
        rel.order = []
    if _single_arg_extreme(op):
        return summarize_latest(bd, rel, op, env)
    scope = Scope(env, rel)
    cols, exprs, group = group_keys(bd, op.by, scope, keep_going=True)
    post: dict[str, exp.Expr] = {}  # arg_max/arg_min unpacking needs a second SELECT
    for item in op.exprs:
        try:
            aggregate(bd, item, scope, cols, exprs, post)
        except CompileError:
            continue
    rel.cols, rel.exprs = cols, exprs
    rel.group = group if group else []
    if not group and not op.exprs:
        bd.ctx.error("wrong_arguments", "summarize needs an aggregate or a by clause", op.span)
    if not group:
        rel.group = []  # marks the SELECT as aggregated even without keys
    if post:
        # arg_max/arg_min: the aggregating SELECT yields one struct per group; a wrapping
        # SELECT unpacks its fields in the output order
        rel.cols = {c: t for c, t in cols.items() if c not in post or isinstance(post[c], exp.Null)}
        rel = bd.wrap(rel)
        final_cols: dict[str, str] = {}
        final_exprs: dict[str, exp.Expr] = {}
        for c, t in cols.items():
            if isinstance(post.get(c), exp.Null):
                continue
            final_cols[c] = t
            final_exprs[c] = post.get(c, sb.col(c))
        rel.cols, rel.exprs = final_cols, final_exprs
    return rel


def _single_arg_extreme(op: n.Operator) -> bool:
    if len(op.exprs) != 1 or not op.by:
        return False
    item = op.exprs[0]
    call = item.expr
    return (isinstance(call, n.Call) and call.name in ("arg_max", "arg_min") and len(call.args) >= 2
            and len(item.names) <= 1 and not isinstance(call.args[0], n.Star))


def summarize_latest(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    """`summarize arg_max(T, cols) by keys` alone: keep the top row of each group with a
    window (QUALIFY), which DuckDB runs faster than an aggregate over a row struct."""
    scope = Scope(env, rel)
    item = op.exprs[0]
    call = item.expr
    assert isinstance(call, n.Call)
    cols, exprs, keys = group_keys(bd, op.by, scope, keep_going=False)
    target = bd.scalar(call.args[0], scope)
    if target.type == "dynamic":
        raise bd.ctx.fail("type_mismatch", f"{call.name}(): cannot order by a dynamic value", call.args[0].span)
    # Names as Kusto.Language gives them: the target or a named column that collides with a
    # `by` key gets a number (`arg_max(Timestamp, *) by bin(Timestamp, 1h)` gives Timestamp and
    # Timestamp1; `arg_max(T, DeviceId) by DeviceId` DeviceId1); `*` adds the columns that are
    # neither keys nor the maximized column (even when the target is renamed).
    target_col = column_name(call.args[0])
    tname = item.names[0] if item.names else (target_col or
                                              ("max_" if call.name == "arg_max" else "min_") + "expr")
    tname = unique(cols, tname)
    cols[tname], exprs[tname] = target.type, target.sql
    for a in call.args[1:]:
        if isinstance(a, n.Star):
            for c, t in list(rel.cols.items()):
                if c != target_col and c not in cols:  # `*` skips the keys and the target
                    cols[c], exprs[c] = t, rel.exprs[c]
            continue
        if isinstance(a, n.NamedArg):
            v = bd.scalar(a.value, scope)
            cols.setdefault(a.name, v.type)
            exprs.setdefault(a.name, v.sql)
            continue
        v = bd.scalar(a, scope)
        name = unique(cols, column_name(a) or "Column1")
        cols[name], exprs[name] = v.type, v.sql
    desc = call.name == "arg_max"
    order = exp.Order(expressions=[exp.Ordered(this=target.sql.copy(), desc=desc, nulls_first=False)])
    window = exp.Window(this=sb.fn("row_number"), partition_by=[k.copy() for k in keys], order=order)
    rel.qualify = exp.EQ(this=window, expression=sb.num(1))
    rel.cols, rel.exprs = cols, exprs
    return rel


def aggregate(bd: Binder, item: n.NamedExpr, scope: Scope, cols: dict[str, str],
              exprs: dict[str, exp.Expr], post: dict[str, exp.Expr]) -> None:
    node = item.expr
    call = node
    if not (isinstance(call, n.Call) and call.name in F.AGGREGATES):
        # an expression over aggregates, e.g. `dcount(x) * 2` or `tostring(make_set(y))`
        bd.pending_name = None
        v = bd.scalar(node, replace(scope, allow_agg=True))
        if not v.agg:
            raise bd.ctx.fail("type_mismatch", "summarize needs an aggregate function here (count(), sum(), ...)", node.span)
        name = item.names[0] if item.names else bd.pending_name
        inner = node.args[0] if isinstance(node, n.Call) and node.args else None
        if not name and isinstance(node, n.Call) and node.name in FIRST_ARGUMENT_NAMED and \
                isinstance(inner, n.Call) and inner.name in F.AGGREGATES:
            name = _agg_name(inner, scope, cols)  # `tostring(make_set(X))` is set_X, as in Kusto
        name = name or unique(cols, "Column1")
        cols[name] = v.type
        exprs[name] = v.sql
        return
    if call.name in ("arg_max", "arg_min"):
        arg_extreme(bd, item, call, scope, cols, exprs, post)
        return
    if call.name in ("take_any", "any") and (len(call.args) > 1 or any(isinstance(a, n.Star) for a in call.args)):
        arg_extreme(bd, item, call, scope, cols, exprs, post)
        return
    if call.name == "percentiles":
        if len(call.args) < 2:
            raise bd.ctx.fail("wrong_arguments", f"percentiles() takes at least 2 arguments, got {len(call.args)}",
                                call.span)
        value = bd.scalar(call.args[0], scope)
        base = column_name(call.args[0]) or "expr"
        for p in call.args[1:]:
            pv = bd.scalar(p, scope)
            sql, t = F.agg_sql("percentile", [value, pv], bd.ctx, call)
            pname = str(pv.const).replace(".", "_") if pv.is_const else "p"
            name = unique(cols, f"percentile_{base}_{pname}")
            cols[name] = t
            exprs[name] = sql
        return
    v = bd.scalar(node, replace(scope, allow_agg=True))
    name = item.names[0] if item.names else _agg_name(call, scope, cols)
    if name in cols:
        bd.ctx.error("duplicate_column", f"column {name!r} is defined twice", item.span)
    cols[name] = v.type
    exprs[name] = v.sql


def arg_extreme(bd: Binder, item: n.NamedExpr, call: n.Call, scope: Scope, cols: dict[str, str],
                exprs: dict[str, exp.Expr], post: dict[str, exp.Expr]) -> None:
    assert scope.rel is not None
    any_row = call.name in ("take_any", "any")
    if len(call.args) < 2 and not any_row:
        raise bd.ctx.fail("wrong_arguments", f"{call.name}() needs the value to maximize and the columns to return", call.span)
    if any_row and isinstance(call.args[0], n.Star):
        call = n.Call(call.span, call.name, call.name_span, call.args[1:] + (call.args[0],)) if len(call.args) > 1 else call
    if any_row and isinstance(call.args[0], n.Star):
        target = V(sb.num(1), "long")
        call = n.Call(call.span, call.name, call.name_span, (n.Literal(call.span, 1, "long"),) + call.args)
    else:
        target = bd.scalar(call.args[0], scope)
    if target.type == "dynamic":
        raise bd.ctx.fail("type_mismatch", f"{call.name}(): cannot order by a dynamic value", call.args[0].span)
    wanted: list[tuple[str, V]] = []
    # Names as Kusto.Language gives them (see summarize_latest): a target or named column that
    # collides with a key or an earlier output gets a number; `*` skips keys and the target.
    taken = set(cols)

    def fresh(name: str) -> str:
        out = unique(dict.fromkeys(taken), name)
        taken.add(out)
        return out

    target_col = None if any_row else column_name(call.args[0])
    tname = item.names[0] if len(item.names) == 1 else (column_name(call.args[0]) or
                                               ("max_" if call.name == "arg_max" else "min_") + "expr")
    if not (any_row and isinstance(call.args[0], n.Literal)):
        wanted.append((fresh(tname), target))
    for a in call.args[1:]:
        if isinstance(a, n.Star):
            for c, t in scope.rel.cols.items():
                if c not in taken and c != target_col:
                    taken.add(c)
                    wanted.append((c, V(scope.rel.exprs[c], t)))
            continue
        if isinstance(a, n.NamedArg):
            wanted.append((fresh(a.name), bd.scalar(a.value, scope)))
            continue
        v = bd.scalar(a, scope)
        wanted.append((fresh(column_name(a) or "Column1"), v))
    if len(item.names) > 1:
        if len(item.names) > len(wanted):
            raise bd.ctx.fail("wrong_arguments", f"{call.name}() returns {len(wanted)} columns, {len(item.names)} names given", item.span)
        wanted = [(item.names[i], v) if i < len(item.names) else (nm, v) for i, (nm, v) in enumerate(wanted)]
    # One struct per row so every returned column comes from the same row.
    alias = f"__{call.name}_{len(post)}"
    struct = exp.Struct(expressions=[
        exp.PropertyEQ(this=sb.ident(f"c{i}"), expression=v.sql) for i, (_, v) in enumerate(wanted)
    ])
    cols[alias] = "dynamic"
    exprs[alias] = sb.fn("any_value", struct) if any_row else sb.fn(call.name, struct, target.sql.copy())
    post[alias] = exp.Null()  # marks the struct column: dropped from the output
    for i, (name, v) in enumerate(wanted):
        if name in cols:
            continue
        cols[name] = v.type
        post[name] = exp.Dot(this=sb.col(alias), expression=sb.ident(f"c{i}"))


def _agg_name(call: n.Call, scope: Scope, cols: dict[str, str]) -> str:
    """The name Kusto gives an unnamed aggregate: `count_`, `sum_X`, `set_X`, `percentile_X_95`."""
    prefix = F.AGG_PREFIX.get(call.name, call.name + "_")
    arg = column_name(call.args[0]) if call.args and call.name != "countif" else None
    if arg and scope.rel is not None and arg not in scope.rel.cols and scope.rel.aliases.get(arg) in scope.rel.cols:
        arg = scope.rel.aliases[arg]  # max(TimeGenerated) reads Timestamp: max_Timestamp
    if call.name == "percentile" and arg:
        p = call.args[1]
        arg = f"{arg}_{p.value}" if isinstance(p, n.Literal) else arg
    return unique(cols, prefix + (arg or ""))
