"""Function calls: special forms, then the function table (argument kinds checked, result
typed, constants folded), aggregates and user-defined functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Binding, Scope
from kql.diagnostics import name_hints
from kql.known_functions import KUSTO_AGGREGATES, KUSTO_SCALARS
from kql.lower import capabilities
from kql.registry import Binder, expression
from kql.typed import (
    NOCONST,
    NUMERIC,
    STRINGY,
    UNKNOWN,
    V,
    const,
    normalize_type,
    to_type,
)
from schema.catalog import INGESTION_TIME_COLUMN


@expression(n.Call)
def x_Call(bd: Binder, node: n.Call, scope: Scope) -> V:
    name = node.name
    if name == "dynamic":
        if len(node.args) != 1:
            raise bd.ctx.fail("wrong_arguments", "dynamic() takes one value", node.span)
        value = bd.dynamic_literal(node.args[0], scope)
        return const(value, "dynamic")
    if name in ("long", "int", "real", "double", "bool", "string", "guid", "timespan", "decimal") and len(node.args) == 1:
        arg = node.args[0]
        t = normalize_type(name)
        if isinstance(arg, n.Name) and arg.name == "null":
            return const(None, t)
        if isinstance(arg, n.Name) and t == "real" and arg.name in ("nan", "inf"):
            return const(float(arg.name), t)
        v = bd.scalar(arg, scope)
        if v.is_const:
            return const(v.const, t) if v.const is None or t != "real" else const(float(v.const), t)
    if name in ("typeof", "gettype") and len(node.args) == 1 and isinstance(node.args[0], n.Name) and name == "typeof":
        tname = node.args[0].name
        try:
            from schema.types import kql_type

            kql_type(tname)
            return const(normalize_type(tname), "string")
        except KeyError:
            pass
    if name == "toscalar":
        if len(node.args) != 1:
            raise bd.ctx.fail("wrong_arguments", "toscalar() takes one tabular expression", node.span)
        if not bd.is_tabular(node.args[0], scope.env):
            return bd.scalar(node.args[0], scope)  # toscalar of a scalar is the scalar
        return bd.scalar_subquery(node.args[0], scope)
    if name == "ingestion_time":
        rel = scope.rel
        if rel is None or rel.base is None:
            raise bd.ctx.fail("unsupported", "ingestion_time() is only available directly on a table, before summarize, join or union", node.span)
        return V(sb.col(INGESTION_TIME_COLUMN), "datetime")
    if name == "column_ifexists" and len(node.args) == 2 and scope.rel is not None:
        # the name may be any constant: a literal, a let, a function's parameter
        first = bd.scalar(node.args[0], scope)
        if not (first.is_const and isinstance(first.const, str)):
            raise bd.ctx.fail("unsupported", "column_ifexists(): the column name must be a constant string",
                              node.args[0].span)
        cname = first.const
        if cname in scope.rel.cols:
            return V(scope.rel.exprs[cname].copy(), scope.rel.cols[cname])
        return bd.scalar(node.args[1], scope)
    if name in ("materialize",) and node.args:
        return bd.scalar(node.args[0], scope)
    b = scope.env.get(name)
    if b is not None and b.kind == "function":
        return call_user_scalar(bd, node, b, scope)
    capabilities.check(bd.ctx, "function", name, node.name_span)
    if name in F.AGGREGATES and (name not in F.SCALARS):
        return agg_call(bd, node, scope)
    sig = F.SCALARS.get(name)
    if sig is None:
        if name in F.UNSUPPORTED_FUNCTIONS:
            raise bd.ctx.fail("unsupported", f"{name}() {F.UNSUPPORTED_FUNCTIONS[name]}", node.name_span)
        if name in KUSTO_SCALARS or name in KUSTO_AGGREGATES:
            raise bd.ctx.fail("unsupported", f"{name}() is a Kusto function that Quarry does not implement",
                              node.name_span, ["docs/kql.md lists the functions Quarry implements"])
        known = list(F.SCALARS) + [k for k in scope.env.all_names()]
        raise bd.ctx.fail("unknown_function", f"unknown function {name!r}", node.name_span,
                            name_hints(name, known, "functions")[:1])
    if name in ("row_number", "prev", "next"):
        # window functions over the serialized row order
        args = check_args(bd, node, sig, scope)
        v = V(F.DIALECTS[bd.ctx.dialect][name](bd.ctx, args, node), args[0].type if name != "row_number" else "long", window=True)
        return v
    args = check_args(bd, node, sig, scope)
    builder = F.DIALECTS[bd.ctx.dialect].get(name)
    if builder is None:
        raise bd.ctx.fail("unsupported", f"{name}() is not available for the {bd.ctx.dialect} target", node.name_span)
    sql = builder(bd.ctx, args, node)
    t = result_type(bd, sig.ret, args, node)
    if name == "extract" and len(args) == 4 and args[3].is_const and isinstance(args[3].const, str):
        t = normalize_type(args[3].const)
    if name == "extract_json" and len(args) == 3 and args[2].is_const and isinstance(args[2].const, str):
        t = normalize_type(args[2].const)
    folded = fold_call(bd, name, args)
    return V(sql, t, folded, window=any(a.window for a in args), agg=any(a.agg for a in args))


def fold_call(bd: Binder, name: str, args: list[V]) -> Any:
    try:
        return _fold_call(bd, name, args)
    except OverflowError:  # the SQL builder reports it; no constant then
        return NOCONST


def _fold_call(bd: Binder, name: str, args: list[V]) -> Any:
    if name == "ago" and args[0].is_const and isinstance(args[0].const, timedelta):
        return bd.ctx.now - args[0].const
    if name == "now":
        if not args:
            return bd.ctx.now
        if args[0].is_const and isinstance(args[0].const, timedelta):
            return bd.ctx.now + args[0].const
    if name in ("tolower", "toupper") and args[0].is_const and isinstance(args[0].const, str):
        return args[0].const.lower() if name == "tolower" else args[0].const.upper()
    if name == "strcat" and all(a.is_const and isinstance(a.const, str) for a in args):
        return "".join(a.const for a in args)
    if name in ("startofday",) and len(args) == 1 and args[0].is_const and isinstance(args[0].const, datetime):
        return args[0].const.replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "pack_array" and all(a.is_const for a in args):
        return [_jsonable(a.const) for a in args]
    if name == "todatetime" and args[0].is_const:
        from kql.literals import parse_datetime

        if isinstance(args[0].const, datetime):
            return args[0].const
        if isinstance(args[0].const, str):
            return parse_datetime(args[0].const) or NOCONST
    return NOCONST


def result_type(bd: Binder, ret: str, args: list[V], node: n.Call) -> str:
    # result types of bin/floor/abs and round on integers, as Kusto.Language infers them:
    # bin(int(7), 2) and abs(int(-3)) are longs, bin(int(7), 2.5) a real, round(int(7), 1) an int
    if ret == "binned" and args:
        t = args[0].type
        if t in ("int", "long"):
            return "real" if len(args) > 1 and args[1].type in ("real", "decimal") else "long"
        return t
    if ret == "rounded" and args:
        return args[0].type if args[0].type in ("int", "long", UNKNOWN) else "real"
    if ret.startswith("arg"):
        i = int(ret[3:])
        return args[i].type if i < len(args) else UNKNOWN
    if ret == "common":
        vals = args
        if node.name in ("iff", "iif"):
            vals = args[1:]
        elif node.name == "case":
            vals = args[1::2] + [args[-1]]
        return bd.ctx.common_type(vals, node)
    return ret


KIND_OK: dict[str, Callable[[str], bool]] = {
    "str": lambda t: t in STRINGY or t in ("dynamic", UNKNOWN),
    "num": lambda t: t in NUMERIC or t in ("dynamic", UNKNOWN),
    "dt": lambda t: t in ("datetime", "dynamic", UNKNOWN),
    # bin/floor/abs: numbers and times
    "ord": lambda t: t in NUMERIC or t in ("datetime", "timespan", "dynamic", UNKNOWN),
    "ts": lambda t: t in ("timespan", "dynamic", UNKNOWN),
    "bool": lambda t: t in ("bool", "dynamic", UNKNOWN),
    "dyn": lambda t: t in ("dynamic", UNKNOWN) or t in STRINGY,
    "any": lambda t: True,
}


KIND_WORDS = {"str": "string", "num": "number", "dt": "datetime", "ts": "timespan", "bool": "bool",
              "ord": "number, datetime or timespan",
              "dyn": "dynamic", "any": "value"}


def check_args(bd: Binder, node: n.Call, sig: F.Sig, scope: Scope) -> list[V]:
    nargs = len(node.args)
    if nargs < sig.min_args or (sig.max_args >= 0 and nargs > sig.max_args):
        want = (f"{sig.min_args}" if sig.min_args == sig.max_args else
                f"{sig.min_args} to {sig.max_args}" if sig.max_args >= 0 else f"at least {sig.min_args}")
        raise bd.ctx.fail("wrong_arguments", f"{node.name}() takes {want} arguments, got {nargs}", node.span)
    out: list[V] = []
    kinds = list(sig.kinds)
    for i, a in enumerate(node.args):
        if isinstance(a, n.Star):
            raise bd.ctx.fail("syntax", f"{node.name}() does not take *", a.span)
        v = bd.scalar(a, scope)
        if kinds:
            k = kinds[i] if i < len(kinds) else (kinds[-2] if kinds[-1] == "*" and len(kinds) > 1 else kinds[-1])
            if k == "*":
                k = kinds[-2] if len(kinds) > 1 else "any"
            null_const = v.is_const and v.const is None
            if not null_const and not KIND_OK[k](v.type):
                bd.ctx.error("type_mismatch",
                               f"{node.name}(): argument {i + 1} must be a {KIND_WORDS[k]}, this is a {v.type}",
                               a.span)
                v = V(v.sql, UNKNOWN)
            elif v.type == "dynamic" and k in ("str", "num", "dt", "ts", "bool"):
                target = {"str": "string", "num": "real", "dt": "datetime", "ts": "timespan", "bool": "bool"}[k]
                v = V(to_type(v, target), target)
        out.append(v)
    return out


def agg_call(bd: Binder, node: n.Call, scope: Scope) -> V:
    if not scope.allow_agg:
        raise bd.ctx.fail("type_mismatch", f"{node.name}() is an aggregate: use it in summarize", node.name_span)
    sig = F.AGGREGATES[node.name]
    inner = replace(scope, allow_agg=False)
    if node.name == "count" and len(node.args) == 1 and isinstance(node.args[0], n.Star):
        args: list[V] = []
    else:
        args = check_args(bd, node, sig, inner)
    if node.name in ("sum", "sumif", "avg", "avgif", "stdev", "variance") and args and args[0].type not in NUMERIC | {UNKNOWN, "timespan"}:
        pass  # already reported by check_args
    sql, t = F.agg_sql(node.name, args, bd.ctx, node)
    return V(sql, t, agg=True)


def call_user_scalar(bd: Binder, node: n.Call, b: Binding, scope: Scope) -> V:
    fn: n.FnDef = b.value
    fenv = bd.fn_env(fn, b.env or scope.env, node, scope.env, caller_scope=scope)
    result: V | None = None
    for st in fn.body:
        if isinstance(st, n.Let):
            bd.let(st, fenv)
        elif bd.is_tabular(st, fenv):
            return bd.scalar_subquery(st, Scope(fenv))
        else:
            result = bd.scalar(st, Scope(fenv, scope.rel, allow_agg=scope.allow_agg))
    if result is None:
        raise bd.ctx.fail("type_mismatch", f"function {node.name!r} returns nothing", node.span)
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, datetime):
        return x.isoformat() + "Z"
    if isinstance(x, timedelta):
        return str(x)
    return x
