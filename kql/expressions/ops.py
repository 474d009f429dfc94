"""Scalar operators: and/or, arithmetic, comparisons, string predicates, in/has_any, between, matches regex."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Scope
from kql.lower import capabilities
from kql.regex import check, regex_arg
from kql.registry import Binder, expression
from kql.temporal import datetime_in_range, timespan_in_range, timespan_ok
from kql.terms import (
    fn_coalesce_false,
    has_all,
    has_all_subquery,
    has_any,
    has_any_subquery,
    has_term,
    has_terms_of_array,
    negate,
)
from kql.typed import (
    NUMERIC,
    STRINGY,
    UNKNOWN,
    V,
    as_string,
    const,
    json_to_string,
    num_result,
    to_type,
)


@expression(n.Binary)
def x_Binary(bd: Binder, node: n.Binary, scope: Scope) -> V:
    if node.op in ("and", "or"):
        a, b = bd.scalar(node.left, scope), bd.scalar(node.right, scope)
        for side, v in ((node.left, a), (node.right, b)):
            bd.expect_bool(v, side)
        cls = exp.And if node.op == "and" else exp.Or
        sa = sb.paren(a.sql) if isinstance(a.sql, exp.Or) and node.op == "and" else a.sql
        sb_ = sb.paren(b.sql) if isinstance(b.sql, exp.Or) and node.op == "and" else b.sql
        return V(cls(this=sa, expression=sb_), "bool", window=a.window or b.window, agg=a.agg or b.agg)
    a, b = bd.scalar(node.left, scope), bd.scalar(node.right, scope)
    window, agg = a.window or b.window, a.agg or b.agg
    if node.op in ("+", "-", "*", "/", "%"):
        return replace(arith(bd, node, a, b), window=window, agg=agg)
    return replace(compare(bd, node, a, b), window=window, agg=agg)


def arith(bd: Binder, node: n.Binary, a: V, b: V) -> V:
    op, ta, tb = node.op, a.type, b.type
    if a.is_const and b.is_const and a.const is not None and b.const is not None:
        folded = _fold(op, a, b)
        if folded is not None:
            return folded
    if UNKNOWN in (ta, tb):
        return V(_arith_sql(op, a.sql, b.sql), UNKNOWN)
    if ta == "dynamic":
        a, ta = V(to_type(a, "real"), "real"), "real"
    if tb == "dynamic":
        b, tb = V(to_type(b, "real"), "real"), "real"
    if ta in NUMERIC and tb in NUMERIC:
        return _numeric(op, a, b, num_result(ta, tb))
    if ta == "datetime" and tb == "datetime" and op == "-":
        return V(exp.Sub(this=a.sql, expression=b.sql), "timespan")
    # past Kusto's datetime/timespan range the result is null, as in Kusto (kql.temporal)
    if ta == "datetime" and tb == "timespan" and op in "+-":
        return V(datetime_in_range(_arith_sql(op, a.sql, b.sql)), "datetime")
    if ta == "timespan" and tb == "datetime" and op == "+":
        return V(datetime_in_range(exp.Add(this=b.sql, expression=a.sql)), "datetime")
    if ta == "timespan" and tb == "timespan":
        if op in "+-":
            return V(timespan_in_range(_arith_sql(op, a.sql, b.sql)), "timespan")
        if op == "/":
            return V(exp.Div(this=sb.fn("epoch_us", a.sql), expression=sb.fn("epoch_us", b.sql)), "real")
    if ta == "timespan" and tb in NUMERIC and op in "*/":
        us = _arith_sql(op, sb.fn("epoch_us", a.sql), b.sql)
        return V(timespan_in_range(sb.fn("to_microseconds", _try_long(us))), "timespan")
    if ta in NUMERIC and tb == "timespan" and op == "*":
        us = exp.Mul(this=sb.paren(a.sql), expression=sb.fn("epoch_us", b.sql))
        return V(timespan_in_range(sb.fn("to_microseconds", _try_long(us))), "timespan")
    bd.ctx.error("type_mismatch", f"cannot apply {op} to {ta} and {tb}", node.op_span)
    return V(exp.Null(), UNKNOWN)


def compare(bd: Binder, node: n.Binary, a: V, b: V) -> V:
    op = node.op
    ta, tb = a.type, b.type
    if op in ("=~", "!~"):
        la, lb = case_fold(bd, a), case_fold(bd, b)
        eq = exp.EQ(this=la, expression=lb)
        return V(eq if op == "=~" else negate(eq, a, b), "bool")
    # Align types: dynamic adapts to the other side; null literals take any type
    if ta == "dynamic" and tb != "dynamic" and tb != UNKNOWN:
        a, ta = V(to_type(a, tb), tb), tb
    elif tb == "dynamic" and ta != "dynamic" and ta != UNKNOWN:
        b, tb = V(to_type(b, ta), ta), ta
    if op in ("==", "!=") and _mixed_scalar(ta, tb):
        # Kusto accepts == and != between a number or bool and a string (not <, >, between):
        # a string literal is read as the other side's type, any other value compared as text.
        a, b = _convert_equality(a, b)
        ta, tb = a.type, b.type
    if not comparable(ta, tb, b) or not comparable(tb, ta, a):
        bd.ctx.error("type_mismatch", f"cannot compare {ta} with {tb}", node.span,
                       [f"the left side is {ta}, the right side is {tb}"] +
                       (["write datetime(2024-01-01) or ago(1d) for a time"] if "datetime" in (ta, tb) else []))
        return V(exp.false(), "bool")
    if ta == "dynamic" and tb == "dynamic":
        a, b = V(as_string(a), "string"), V(as_string(b), "string")
    if (ta == "bool") != (tb == "bool") and UNKNOWN not in (ta, tb) and not (a.is_const and a.const is None) and not (b.is_const and b.const is None):
        a = V(sb.cast(a.sql, "int"), "int") if ta == "bool" else a
        b = V(sb.cast(b.sql, "int"), "int") if tb == "bool" else b
    if op in ("==", "!=") and (ta in STRINGY or tb in STRINGY):
        # Kusto has no null strings: a missing string equals ""
        lit = b if b.is_const else a if a.is_const else None
        other = a if lit is b else b
        if lit is not None and lit.const == "":
            empty = F._isempty(V(other.sql, "string", notnull=other.notnull))
            return V(empty if op == "==" else exp.Not(this=empty), "bool")
    cls: type[exp.Binary] = {"==": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}[op]
    if op in ("==", "!="):
        known = (a.is_const and a.const is not None) or (b.is_const and b.const is not None)
        if op == "==" and known:
            # null == value is false, not null (null-values, "Equality and inequality of null
            # values"); the plain conjunct stays, so filters on it still reach the scan
            other = b if a.is_const and a.const is not None else a
            eq = exp.EQ(this=a.sql, expression=b.sql)
            if other.notnull or other.is_const:
                return V(eq, "bool")
            return V(exp.And(this=eq, expression=exp.Not(this=exp.Is(this=other.sql.copy(), expression=exp.Null()))), "bool")
        # Kusto: null != value is true, null == value is false, and null vs null is null
        # (and a missing string is "", unequal to any other)
        test: exp.Expr = (exp.NullSafeNEQ(this=a.sql, expression=b.sql) if op == "!=" else
                                fn_coalesce_false(exp.EQ(this=a.sql, expression=b.sql)))
        if known:
            return V(test, "bool")
        both_null = exp.And(this=exp.Is(this=a.sql.copy(), expression=exp.Null()),
                            expression=exp.Is(this=b.sql.copy(), expression=exp.Null()))
        return V(exp.Case(ifs=[exp.If(this=both_null, true=exp.Null())], default=test), "bool")
    return V(cls(this=a.sql, expression=b.sql), "bool")


_SCALAR_NONSTRING = NUMERIC | {"bool"}


def _mixed_scalar(ta: str, tb: str) -> bool:
    return (ta in _SCALAR_NONSTRING and tb in STRINGY) or (tb in _SCALAR_NONSTRING and ta in STRINGY)


def literal_as(text: str, t: str) -> V:
    """A string literal read as a value of type ``t`` (long, int, real, decimal or bool), the way
    Kusto converts it when comparing it with a column of that type; null when it does not read
    as one (then it equals nothing)."""
    value: Any = None
    s = text.strip()
    try:
        if t == "bool":
            low = s.lower()
            value = {"true": True, "false": False, "1": True, "0": False}.get(low)
        elif t in ("long", "int"):
            number = float(s)  # "5", "5.0" and "5e0" all read as 5; "5.5" as no integer
            value = int(number) if number.is_integer() else None
        else:
            value = float(s)
    except ValueError:
        value = None
    if value is None:
        return V(sb.null(t), t, None)
    return const(value, t)


def _convert_equality(a: V, b: V) -> tuple[V, V]:
    """Both sides of a number/bool vs string equality in one type."""
    def convert(s: V, other: V) -> V:
        if s.is_const and isinstance(s.const, str):
            return literal_as(s.const, other.type)
        return V(as_string(s), "string")
    if a.type in STRINGY:
        return (convert(a, b), b) if a.is_const else (V(as_string(a), "string"), V(as_string(b), "string"))
    return (a, convert(b, a)) if b.is_const else (V(as_string(a), "string"), V(as_string(b), "string"))


def comparable(ta: str, tb: str, other: V) -> bool:
    if UNKNOWN in (ta, tb) or ta == tb:
        return True
    if other.is_const and other.const is None:
        return True
    if ta in NUMERIC | {"bool"} and tb in NUMERIC | {"bool"}:
        return True  # Kusto compares bools with numbers as 1/0
    if ta in STRINGY and tb in STRINGY:
        return True
    return "dynamic" in (ta, tb)


def case_fold(bd: Binder, v: V) -> exp.Expr:
    if v.is_const and isinstance(v.const, str):
        return sb.s(v.const.lower())
    return sb.fn("lower", as_string(v))


@expression(n.StrOp)
def x_StrOp(bd: Binder, node: n.StrOp, scope: Scope) -> V:
    a, b = bd.scalar(node.left, scope), bd.scalar(node.right, scope)
    expect_string(bd, a, node.left, node.op)
    op = node.op
    neg = op.startswith("!")
    base = op.lstrip("!")
    pred = string_pred(bd, base, as_string(a), b, node)
    return V(negate(pred, a, b) if neg else pred, "bool", window=a.window, agg=a.agg)


def expect_string(bd: Binder, v: V, node: n.Node, op: str) -> None:
    if v.type not in STRINGY and v.type not in (UNKNOWN, "dynamic"):
        bd.ctx.error("type_mismatch", f"{op} needs a string on its left, this is a {v.type}", node.span,
                       ["convert it with tostring()"])


def string_pred(bd: Binder, base: str, a: exp.Expr, b: V, node: n.Node) -> exp.Expr:
    cs = base.endswith("_cs")
    kind = base[:-3] if cs else base
    if b.is_const and isinstance(b.const, str):
        lit: str = b.const
        # LIKE has no escape character unless ESCAPE is given, and DuckDB's fast paths skip
        # patterns with ESCAPE: escape only when the text holds a wildcard
        wild = "%" in lit or "_" in lit
        pat = sb.like_escape(lit) if wild else lit
        if kind == "contains":
            if cs:
                return sb.fn("contains", a, sb.s(lit))
            return sb.ilike(a, "%" + pat + "%", escaped=wild)
        if kind == "startswith":
            if cs:
                return sb.fn("starts_with", a, sb.s(lit))
            return sb.ilike(a, pat + "%", escaped=wild)
        if kind == "endswith":
            if cs:
                return sb.fn("ends_with", a, sb.s(lit))
            return sb.ilike(a, "%" + pat, escaped=wild)
        if kind in ("has", "hasprefix", "hassuffix"):
            return has_term(a, lit, cs, prefix=kind != "hassuffix", suffix=kind != "hasprefix")
    rhs = as_string(b)
    if kind == "contains":
        return sb.fn("contains", a, rhs) if cs else sb.fn("contains", sb.fn("lower", a), sb.fn("lower", rhs))
    if kind == "startswith":
        return sb.fn("starts_with", a, rhs) if cs else sb.fn("starts_with", sb.fn("lower", a), sb.fn("lower", rhs))
    if kind == "endswith":
        return sb.fn("ends_with", a, rhs) if cs else sb.fn("ends_with", sb.fn("lower", a), sb.fn("lower", rhs))
    # has with a computed term: build the word-boundary regex at run time
    left = sb.s("" if kind == "hassuffix" else "(?:^|[^0-9A-Za-z])")
    right = sb.s("" if kind == "hasprefix" else "(?:$|[^0-9A-Za-z])")
    flag = sb.s("" if cs else "(?i)")
    regex = exp.DPipe(this=exp.DPipe(this=exp.DPipe(this=flag, expression=left),
                                     expression=sb.fn("regexp_escape", rhs)), expression=right)
    return sb.fn("regexp_matches", a, regex)


def in_values(bd: Binder, items: tuple[n.Node, ...], scope: Scope) -> tuple[list[V], exp.Expr | None]:
    """The list of an `in`: constants, expanded dynamic arrays, or one tabular subquery."""
    vals: list[V] = []
    if len(items) == 1 and bd.is_tabular(items[0], scope.env):
        rel = bd.tabular(items[0], scope.env)
        sel = rel.select()
        if not sel.expressions:
            raise bd.ctx.fail("type_mismatch", "the subquery returns no columns", items[0].span)
        sel.set("expressions", [sel.expressions[0]])
        first = next(iter(rel.cols))
        if rel.cols[first] == "dynamic":
            # Kusto flattens arrays in the list: `x in (T | summarize make_set(y))` compares x
            # with the elements, not with the array (a non-array value is one element)
            c = sb.col(first)
            elems = exp.Case(
                ifs=[exp.If(this=exp.EQ(this=sb.fn("json_type", c), expression=sb.s("ARRAY")),
                            true=exp.Cast(this=sb.fn("json_extract", c.copy(), sb.s("$[*]")),
                                          to=exp.DataType.build("JSON[]")))],
                default=exp.Array(expressions=[c.copy()]))
            elem = V(sb.fn("unnest", elems), "dynamic")
            flat = exp.Select(expressions=[sb.alias(json_to_string(elem.sql), first)]).from_(
                exp.Subquery(this=sel, alias=exp.TableAlias(this=sb.ident(bd.ctx.alias()))))
            flat.meta["kql_flat"] = True
            return [], flat
        return [], sel
    for it in items:
        v = bd.scalar(it, scope)
        if v.is_const and isinstance(v.const, list):
            for x in v.const:
                vals.append(const(x, _py_type(x)))
        else:
            vals.append(v)
    return vals, None


@expression(n.InOp)
def x_InOp(bd: Binder, node: n.InOp, scope: Scope) -> V:
    a = bd.scalar(node.left, scope)
    op = node.op
    neg = op.startswith("!")
    base = op.lstrip("!")
    vals, sub = in_values(bd, node.items, scope)
    if base in ("has_any", "has_all"):
        expect_string(bd, a, node.left, op)
        if sub is not None:  # a tabular argument: a subquery, a let-bound table
            assert isinstance(sub, exp.Select)
            if base == "has_all":
                capabilities.check(bd.ctx, "feature", "has_all-of-a-table", node.span)
            found = (has_any_subquery(as_string(a), sub, bd.ctx) if base == "has_any"
                     else has_all_subquery(as_string(a), sub, bd.ctx))
            return V(sb.not_true(found) if neg else found, "bool")
        if len(vals) == 1 and vals[0].type == "dynamic" and not vals[0].is_const:
            # an array computed by the query (toscalar(... | summarize make_set(x)))
            capabilities.check(bd.ctx, "feature", "terms-from-a-computed-array", node.span)
            found = has_terms_of_array(as_string(a), vals[0].sql, base == "has_all")
            return V(sb.not_true(found) if neg else found, "bool")
        terms: list[str] = []
        for v in vals:
            if not (v.is_const and v.const is not None):
                raise bd.ctx.fail("unsupported", f"{base} needs constant terms or one array", node.span)
            terms.append(str(v.const))
        pred = has_any(as_string(a), terms) if base == "has_any" else has_all(as_string(a), terms)
        return V(negate(pred, a, *vals) if neg else pred, "bool")
    ci = base == "in~"
    if ci and a.type not in STRINGY | {"dynamic", UNKNOWN}:
        bd.ctx.warn("kusto_rejects", f"Kusto rejects in~ on a {a.type}: it compares strings "
                    "(Quarry compares the text of the value)", node.span, ["write in (...)"])
    if sub is not None:
        lhs = case_fold(bd, a) if ci else a.sql
        if sub.meta.get("kql_flat") and not ci:
            lhs = as_string(a)  # flattened array elements are compared as their text
        if ci:
            inner = exp.Select(expressions=[sb.fn("lower", sb.col(sub.expressions[0].alias_or_name))]).from_(
                exp.Subquery(this=sub, alias=exp.TableAlias(this=sb.ident(bd.ctx.alias()))))
            sub = inner
        member: exp.Expr = exp.In(this=lhs, query=exp.Subquery(this=sub))
        return V(sb.not_true(member) if neg else member, "bool")
    if not vals:
        return V(exp.true() if neg else exp.false(), "bool")
    if len(vals) == 1 and vals[0].type == "dynamic" and not vals[0].is_const:
        # a computed array, e.g. toscalar(... | summarize make_set(x))
        capabilities.check(bd.ctx, "feature", "in-computed-array", node.span)
        needle = case_fold(bd, a) if ci else a.sql
        hay = vals[0].sql
        if ci:
            hay = sb.fn("lower", sb.cast(hay, "string"))
            hay = sb.cast(hay, "dynamic")
        pred = sb.fn("coalesce", sb.fn("json_contains", hay, sb.fn("to_json", needle)), exp.false())
        return V(sb.not_true(pred) if neg else pred, "bool")
    if ci:
        lhs = case_fold(bd, a)
        rhs = [case_fold(bd, v) for v in vals]
    else:
        t = a.type
        lhs = a.sql if t != "dynamic" else as_string(a)
        if t in _SCALAR_NONSTRING:
            # Kusto accepts strings in the list of a number or bool: each literal is read as
            # the value's type (one that does not read as it matches nothing)
            vals = [literal_as(v.const, t) if v.is_const and isinstance(v.const, str) else v
                    for v in vals]
            if any(v.type in STRINGY for v in vals):  # a computed string: compare as text
                lhs = as_string(a)
                t = "string"
        rhs = [to_type(v, "string" if t == "dynamic" else t) if v.type != t else v.sql for v in vals]
    in_list: exp.Expr = exp.In(this=lhs, expressions=rhs)
    if not neg and not a.notnull and not a.is_const:
        # `in` is == against each element: a null value is in nothing (false, not null)
        in_list = exp.And(this=in_list, expression=exp.Not(this=exp.Is(this=lhs.copy(), expression=exp.Null())))
    return V(negate(in_list, a, *vals) if neg else in_list, "bool")


@expression(n.Between)
def x_Between(bd: Binder, node: n.Between, scope: Scope) -> V:
    v, lo, hi = (bd.scalar(x, scope) for x in (node.value, node.low, node.high))
    if v.type == "datetime" and hi.type == "timespan":
        hi = V(exp.Add(this=lo.sql.copy(), expression=hi.sql), "datetime")
    for bound in (lo, hi):
        if not comparable(v.type, bound.type, bound):
            bd.ctx.error("type_mismatch", f"between: cannot compare {v.type} with {bound.type}", node.span)
    value = to_type(v, lo.type) if v.type == "dynamic" else v.sql
    if node.negated:
        # not-between-operator: the rows where (expr < leftRange or expr > rightRange) is true, so
        # a null value is outside nothing (its predicate is null, which where drops)
        outside = exp.Or(this=exp.LT(this=value, expression=lo.sql),
                         expression=exp.GT(this=value.copy(), expression=hi.sql))
        return V(sb.paren(outside), "bool")
    return V(exp.Between(this=value, low=lo.sql, high=hi.sql), "bool")


@expression(n.Matches)
def x_Matches(bd: Binder, node: n.Matches, scope: Scope) -> V:
    a, p = bd.scalar(node.left, scope), bd.scalar(node.pattern, scope)
    if p.is_const and isinstance(p.const, str):
        problem = check(p.const)
        if problem:
            bd.ctx.warn("regex", f"the regular expression may be invalid: {problem}", node.pattern.span)
    return V(sb.fn("regexp_matches", as_string(a), regex_arg(p)), "bool")


def _py_type(x: Any) -> str:
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "long"
    if isinstance(x, float):
        return "real"
    if isinstance(x, str):
        return "string"
    if x is None:
        return UNKNOWN
    return "dynamic"


def _numeric(op: str, a: V, b: V, t: str) -> V:
    """Arithmetic on numbers, with Kusto's rules (learn.microsoft.com/kusto/query/numerical-operators):
    two integers (int or long) give a long, so int + int does not overflow at 2^31; integer
    division truncates toward zero; N % D is always in [0, abs(D)) (-14 % 12 is 10).
    An integer divided by zero is null (the docs say nothing; SQL engines raise an error)."""
    x, y = a.sql, b.sql
    if t in ("int", "long"):
        t = "long"
        x, y = (sb.cast(e, "long") if v.type == "int" else e for e, v in ((x, a), (y, b)))
        if op in "/%":
            y = exp.Nullif(this=y, expression=sb.num(0))
        if op == "/":
            return V(exp.IntDiv(this=sb.paren(x), expression=sb.paren(y)), t)
    if op == "%":
        d = sb.fn("abs", sb.paren(y))
        return V(exp.Mod(this=sb.paren(exp.Add(this=exp.Mod(this=sb.paren(x), expression=sb.paren(y)), expression=d)),
                         expression=d), t)
    return V(_arith_sql(op, x, y), t)


def _arith_sql(op: str, a: exp.Expr, b: exp.Expr) -> exp.Expr:
    cls: type[exp.Binary] = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul, "/": exp.Div, "%": exp.Mod}[op]
    out: exp.Expr = cls(this=sb.paren(a), expression=sb.paren(b))
    return out


def _try_long(e: exp.Expr) -> exp.Expr:
    """A BIGINT, or NULL when the value does not fit (a timespan past every range)."""
    return exp.TryCast(this=e, to=exp.DataType.build("BIGINT"))


def _span_const(value: timedelta) -> V:
    return const(value if timespan_ok(value) else None, "timespan")


def _fold(op: str, a: V, b: V) -> V | None:
    x, y = a.const, b.const
    try:
        if isinstance(x, datetime) and isinstance(y, timedelta) and op in "+-":
            r = x + y if op == "+" else x - y
            return const(r, "datetime")
        if isinstance(x, timedelta) and isinstance(y, timedelta) and op in "+-":
            return _span_const(x + y if op == "+" else x - y)
        if isinstance(x, timedelta) and isinstance(y, int | float) and not isinstance(y, bool) and op == "*":
            return _span_const(x * y)
        if isinstance(x, int | float) and isinstance(y, timedelta) and not isinstance(x, bool) and op == "*":
            return _span_const(y * x)
        if isinstance(x, datetime) and isinstance(y, datetime) and op == "-":
            return const(x - y, "timespan")
    except OverflowError:
        # beyond Python's range (years 1-9999), so beyond Kusto's: null, as Kusto gives
        return const(None, "datetime" if isinstance(x, datetime) or isinstance(y, datetime) else "timespan")
    return None
