"""sort, take/sample, top, distinct, count, getschema, as, invoke, and render (a chart hint)."""

from __future__ import annotations

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.chart import RenderError, parse_render
from kql.context import Binding, Env, wrap_copy
from kql.diagnostics import name_hints
from kql.operators.filter_project import columns_added
from kql.registry import INVOKE_PLUGINS, Binder, operator
from kql.relation import Rel, is_notnull
from kql.typed import (
    UNKNOWN,
)


@operator("other")
def op_other(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    word, text = op.extra
    if word == "render":
        # The rows pass unchanged; the chart is a hint beside them (Kusto draws the last render).
        try:
            bd.ctx.render = parse_render(text)
        except RenderError as e:
            bd.ctx.render = None
            bd.ctx.warn("render", f"the chart cannot be drawn: {e}", op.span)
        return rel
    raise bd.ctx.fail("unsupported", f"the {word} operator is not supported", op.span)


@operator("sort")
def op_sort(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    if rel.limit is not None or rel.distinct:
        rel = bd.wrap(rel)
    rel.order = bd.order_items(rel, op.sort, env)
    return rel


@operator("take", "sample")
def op_take(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    assert op.operand is not None
    if rel.limit is not None:
        rel = bd.wrap(rel)
    rel.limit = bd.limit_value(op.operand, env)
    return rel




@operator("top")
def op_top(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    assert op.operand is not None
    if rel.limit is not None or rel.distinct:
        rel = bd.wrap(rel)
    rel.order = bd.order_items(rel, op.sort, env)
    rel.limit = bd.limit_value(op.operand, env)
    return rel


@operator("distinct")
def op_distinct(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    if op.extra != "*":
        rel = columns_added(bd, rel, op.exprs, env, keep_existing=False)
    elif not rel.open:
        rel = bd.wrap(rel)
    for c, t in rel.cols.items():
        if t == "string" and not is_notnull(rel, rel.exprs[c]):
            # a missing string is "": one distinct value, not two
            rel.exprs[c] = sb.fn("coalesce", rel.exprs[c], sb.s(""))
    rel.order = []
    rel.distinct = True
    return rel


@operator("count")
def op_count(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    sel = exp.Select(expressions=[sb.alias(exp.Count(this=exp.Star()), "Count")]).from_(
        exp.Subquery(this=rel.select(), alias=exp.TableAlias(this=sb.ident(bd.ctx.alias())))
    )
    return bd.wrap_select(sel, {"Count": "long"})


@operator("getschema")
def op_getschema(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    from schema.types import kql_type

    rows = []
    for i, (c, t) in enumerate(rel.cols.items()):
        dotnet = kql_type(t).dotnet if t != UNKNOWN else "Object"
        rows.append(exp.Tuple(expressions=[sb.s(c), sb.num(i), sb.s("System." + dotnet), sb.s(t)]))
    cols = {"ColumnName": "string", "ColumnOrdinal": "int", "DataType": "string", "ColumnType": "string"}
    alias = bd.ctx.alias("_gs")
    values = exp.Values(expressions=rows, alias=exp.TableAlias(this=sb.ident(alias), columns=[sb.ident(c) for c in cols]))
    return bd.wrap_select(exp.Select(expressions=[sb.col(c) for c in cols]).from_(values), cols)


@operator("as")
def op_as(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    rel = bd.wrap(rel)
    env.names[op.names[0].name] = Binding("rel", rel)
    return wrap_copy(rel, bd.ctx)


@operator("invoke")
def op_invoke(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    call = op.operand
    assert isinstance(call, n.Call)
    b = env.get(call.name)
    if (b is None or b.kind != "function") and call.name in INVOKE_PLUGINS:
        return INVOKE_PLUGINS[call.name](bd, rel, call, env)
    if (b is None or b.kind != "function") and call.name in F.UNSUPPORTED_FUNCTIONS:
        raise bd.ctx.fail("unsupported", f"{call.name}() {F.UNSUPPORTED_FUNCTIONS[call.name]}", call.name_span)
    if b is None or b.kind != "function":
        raise bd.ctx.fail("unknown_function", f"unknown function {call.name!r}", call.name_span,
                            name_hints(call.name, [k for k in env.all_names() if (env.get(k) or Binding('', None)).kind == 'function'], "functions"))
    fn: n.FnDef = b.value
    if not fn.params or fn.params[0].type is not None:
        raise bd.ctx.fail("wrong_arguments", f"{call.name}() takes no table as its first parameter", call.span)
    fenv = bd.fn_env(fn, b.env or env, call, env, pipe_input=bd.wrap(rel))
    return bd.fn_body_table(fn, fenv, call)
