"""mv-expand and mv-apply: dynamic arrays and bags to rows."""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Env, Scope
from kql.naming import column_name
from kql.registry import Binder, operator
from kql.relation import Rel
from kql.typed import (
    V,
    normalize_type,
    to_type,
)


@operator("mv-expand")
def op_mv_expand(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    rel = bd.wrap(rel) if not rel.open or rel.order else rel
    scope = Scope(env, rel)
    index_col = None
    bag_kind = "bag"
    for p in op.params:
        if p.name == "with_itemindex":
            index_col = str(p.value)
        elif p.name in ("kind", "bagexpansion"):
            bag_kind = str(p.value).lower()
        else:
            bd.ctx.error("unsupported", f"mv-expand {p.name} is not supported", p.span)
    new_cols = dict(rel.cols)
    new_exprs = dict(rel.exprs)
    types = list(op.extra or ())
    # An unnamed expression is named as Kusto names it: `split(X, ",")` and `todynamic(X)`
    # expand into X itself, `d.a` into d_a, anything else into Column1, Column2...
    named: list[n.NamedExpr] = []
    taken = set(rel.cols)
    auto = 0
    for item in op.exprs:
        if not item.names:
            name = column_name(item.expr)
            if not name and isinstance(item.expr, n.Call) and len(item.expr.args) == 1:
                name = column_name(item.expr.args[0])
            if not name:
                auto += 1
                while f"Column{auto}" in taken:
                    auto += 1
                name = f"Column{auto}"
            item = replace(item, names=(name,))
        taken.add(item.names[0])
        named.append(item)
    op = replace(op, exprs=tuple(named))
    for pos, item in enumerate(op.exprs):
        v = bd.scalar(item.expr, scope)
        name = item.names[0]
        arr = v.sql if v.type == "dynamic" else F._parse_json(bd.ctx, [v], n.Call(item.span, "todynamic", item.span, ()))
        elems = exp.Cast(this=sb.fn("json_extract", arr, sb.s("$[*]")), to=exp.DataType.build("JSON[]"))
        # a value that is not an array expands to itself (Kusto treats it as a one-item array)
        is_arr = exp.EQ(this=sb.fn("json_type", arr.copy()), expression=sb.s("ARRAY"))
        # a property bag expands to one row per property: {"k": v} (kind=bag) or ["k", v] (kind=array)
        is_bag = exp.EQ(this=sb.fn("json_type", arr.copy()), expression=sb.s("OBJECT"))
        k = sb.lambda_param("k", arr)
        key = exp.column(k)
        path = exp.DPipe(this=exp.DPipe(this=sb.s('$."'), expression=sb.fn("replace", key.copy(), sb.s('"'), sb.s('\\"'))),
                         expression=sb.s('"'))
        value = sb.fn("json_extract", arr.copy(), path)
        entry = sb.fn("json_object", key.copy(), value) if bag_kind == "bag" else sb.fn("json_array", key.copy(), value)
        props = sb.fn("list_transform", sb.fn("json_keys", arr.copy()),
                      exp.Lambda(this=entry, expressions=[exp.to_identifier(k)]))
        lst = exp.Case(ifs=[exp.If(this=is_arr, true=elems), exp.If(this=is_bag, true=props)],
                       default=exp.Array(expressions=[arr.copy()]))
        new_cols[name] = "dynamic"
        new_exprs[name] = sb.fn("unnest", lst)
        if index_col and pos == 0:
            count = sb.fn("len", lst.copy())
            new_cols[index_col] = "long"
            new_exprs[index_col] = sb.fn("unnest", sb.fn("range", count))
    rel.cols, rel.exprs = new_cols, new_exprs
    rel = bd.wrap(rel)
    # `to typeof(T)` gives the expanded column a scalar type
    for item, tname in zip(op.exprs, types, strict=False):
        name = item.names[0] if item.names else column_name(item.expr)
        if not name and isinstance(item.expr, n.Call) and len(item.expr.args) == 1:
            name = column_name(item.expr.args[0])
        if tname and name in rel.cols and normalize_type(tname) != "dynamic":
            t = normalize_type(tname)
            rel.cols[name] = t
            rel.exprs[name] = to_type(V(sb.col(name), "dynamic"), t)
    if op.operand is not None:
        rel.limit = bd.limit_value(op.operand, env)
    return rel


@operator("mv-apply")
def op_mv_apply(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    """mv-apply: for each row, mv-expand it into a subtable and run the subquery on that.

    Lowered to a LATERAL subquery: the subtable reads the outer row's columns (qualified
    with the outer alias) and unnests its arrays, so a `summarize` or `top` in the subquery
    works per input row, as Kusto's documentation describes. The result is the subquery's
    columns, after the outer row's columns the subquery does not return and that were not
    expanded (an expanded input column is replaced, per the documentation).
    """
    types, sub_ops = op.extra
    outer = bd.wrap(rel)
    o_alias = outer.src.alias
    inner = Rel(cols=dict(outer.cols), exprs={c: sb.col(c, o_alias) for c in outer.cols},
                src=exp.Subquery(this=exp.Select(expressions=[exp.Literal.number(1)]),
                                 alias=exp.TableAlias(this=sb.ident(bd.ctx.alias("_one")))),
                aliases=dict(outer.aliases), notnull=outer.notnull)
    expand = n.Operator(op.span, "mv-expand", params=op.params, exprs=op.exprs, operand=op.operand,
                        extra=types)
    sub = op_mv_expand(bd, inner, expand, env)
    expanded = set()
    for item in op.exprs:
        name = item.names[0] if item.names else column_name(item.expr)
        if name:
            expanded.add(name)
    for p in op.params:
        if p.name == "with_itemindex":
            expanded.add(str(p.value))
    for sub_op in sub_ops:
        sub = bd.operator(sub, sub_op, env)
    s_alias = bd.ctx.alias()
    cols: dict[str, str] = {}
    exprs: list[exp.Expr] = []
    for c, t in outer.cols.items():
        if c in sub.cols:
            cols[c] = sub.cols[c]
            exprs.append(sb.alias(sb.col(c, s_alias), c))
        elif c not in expanded:
            cols[c] = t
            exprs.append(sb.alias(sb.col(c, o_alias), c))
    for c, t in sub.cols.items():
        if c not in cols:
            cols[c] = t
            exprs.append(sb.alias(sb.col(c, s_alias), c))
    lateral = exp.Lateral(this=exp.Subquery(this=sub.select()), alias=exp.TableAlias(this=sb.ident(s_alias)))
    sel = exp.Select(expressions=exprs).from_(outer.src.copy(), copy=False)
    sel.append("joins", exp.Join(this=lateral))
    return bd.wrap_select(sel, cols)
