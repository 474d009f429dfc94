"""Small helpers that build sqlglot nodes. User values only ever become literals here."""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB

from schema.types import KQL_TYPES

# KQL type -> the DuckDB type name the compiler casts to: the one type map, schema/types.py
SQL_TYPES = {name: t.duckdb for name, t in KQL_TYPES.items()}


def ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def lambda_param(base: str, *outer: exp.Expr) -> str:
    """A DuckDB lambda parameter name that no identifier in ``outer`` uses.

    A lambda parameter shadows a column of the same name (quoted or not, any case), so a body
    that holds user expressions must not name its parameter like a column they read.
    """
    used = {i.name.lower() for e in outer for i in e.find_all(exp.Identifier)}
    name, n = base, 0
    while name.lower() in used:
        n += 1
        name = f"{base}{n}"
    return name


_DUCKDB = DuckDB()
_TYPED_FUNCTIONS = DuckDB.parser_class.FUNCTIONS


def fn(name: str, *args: exp.Expr) -> exp.Expr:
    """A call of DuckDB function `name`, as the typed sqlglot node DuckDB's own parser builds for
    it (exp.Lower, exp.RegexpLike, exp.JSONExtract...), so that other dialects render their own
    function; a name sqlglot does not know stays an anonymous call (kql/lower/ maps those per
    target). The DuckDB name is kept in meta["fn"] (see call_name)."""
    builder = _TYPED_FUNCTIONS.get(name.upper())
    node: exp.Expr
    if builder is None:
        node = exp.Anonymous(this=name, expressions=list(args))
    else:
        try:
            node = builder(list(args))
        except TypeError:
            node = builder(list(args), dialect=_DUCKDB)
    node.meta["fn"] = name
    return node


def call_name(e: exp.Expr) -> str | None:
    """The DuckDB function name a node was built from by ``fn`` (or an anonymous call's name)."""
    name = e.meta.get("fn") if e.meta else None
    if name is None and isinstance(e, exp.Anonymous):
        return str(e.name).lower()
    return str(name) if name is not None else None


def call_args(e: exp.Expr) -> list[exp.Expr]:
    """The arguments of a call node in call order (typed nodes keep them in arg_types order)."""
    if isinstance(e, exp.Anonymous):
        return list(e.expressions)
    out: list[exp.Expr] = []
    for key in e.arg_types:
        v = e.args.get(key)
        if isinstance(v, list):
            out += [x for x in v if isinstance(x, exp.Expr)]
        elif isinstance(v, exp.Expr):
            out.append(v)
    return out


def s(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def num(value: int | float) -> exp.Expr:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return cast(s(str(value)), "real")
    if value < 0:
        return exp.Neg(this=exp.Literal.number(-value))
    return exp.Literal.number(value)


@functools.cache
def _sql_type(kql_type: str) -> exp.DataType:
    # DataType.build parses its text with sqlglot's parser (~0.5 ms): `search *` casts thousands
    # of NULLs and spent 3.5 s of its 5.5 s there. Built once per type, copied per use.
    return exp.DataType.build(SQL_TYPES.get(kql_type, "VARCHAR"))


def cast(e: exp.Expr, kql_type: str) -> exp.Expr:
    return exp.Cast(this=e, to=_sql_type(kql_type).copy())


def try_cast(e: exp.Expr, kql_type: str) -> exp.Expr:
    return exp.TryCast(this=e, to=_sql_type(kql_type).copy())


def null(kql_type: str | None = None) -> exp.Expr:
    return cast(exp.Null(), kql_type) if kql_type else exp.Null()


def interval(td: timedelta) -> exp.Expr:
    us = td.days * 86_400_000_000 + td.seconds * 1_000_000 + td.microseconds
    neg = us < 0
    us = abs(us)
    for unit, size in (
        ("DAY", 86_400_000_000),
        ("HOUR", 3_600_000_000),
        ("MINUTE", 60_000_000),
        ("SECOND", 1_000_000),
        ("MILLISECOND", 1_000),
        ("MICROSECOND", 1),
    ):
        if us % size == 0:
            # whole days stay days: DuckDB compares 1 DAY and 24 HOUR as equal anyway
            e: exp.Expr = exp.Interval(this=s(str(us // size)), unit=exp.Var(this=unit))
            return exp.Neg(this=exp.Paren(this=e)) if neg else e
    raise AssertionError("unreachable")


def timestamp(dt: datetime) -> exp.Expr:
    return cast(s(dt.isoformat(sep=" ")), "datetime")


def literal(value: Any, kql_type: str) -> exp.Expr:
    if value is None:
        return null(kql_type)
    if kql_type == "bool":
        return exp.Boolean(this=bool(value))
    if kql_type in ("long", "int", "real", "decimal"):
        return num(value)
    if kql_type == "datetime":
        return timestamp(value)
    if kql_type == "timespan":
        return interval(value)
    if kql_type == "dynamic":
        import json

        return cast(s(json.dumps(value, default=str, separators=(",", ":"))), "dynamic")
    return s(str(value))


def and_all(conds: list[exp.Expr]) -> exp.Expr | None:
    out: exp.Expr | None = None
    for c in conds:
        out = c if out is None else exp.And(this=out, expression=c)
    return out


_OPERATORS = (exp.Binary, exp.Not, exp.Neg, exp.Between, exp.In, exp.Is, exp.Like, exp.ILike,
              exp.Escape, exp.Connector)


def paren(e: exp.Expr) -> exp.Expr:
    if isinstance(e, _OPERATORS):
        return exp.Paren(this=e)
    return e


def add_parens(tree: exp.Expr) -> exp.Expr:
    """sqlglot prints operator trees as built, without adding parentheses for precedence:
    wrap every operator operand that is itself an operator, so `(a OR b) AND c` stays so."""
    for node in list(tree.walk()):
        if isinstance(node, exp.Binary | exp.Not | exp.Neg | exp.Between | exp.Is | exp.In | exp.Escape | exp.Like | exp.ILike):
            for key in ("this", "expression", "low", "high"):
                child = node.args.get(key)
                if isinstance(child, _OPERATORS) and not isinstance(child, exp.Paren):
                    # A LIKE inside its own ESCAPE clause must stay bare
                    if isinstance(node, exp.Escape) and key == "this":
                        continue
                    node.set(key, exp.Paren(this=child))
    return tree


def not_true(pred: exp.Expr) -> exp.Expr:
    """Negation where a null input counts as "not matched" (Kusto has no three-valued logic
    for strings: an empty or missing string simply does not contain the term)."""
    return exp.Not(this=fn("coalesce", pred, exp.false()))


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def ilike(e: exp.Expr, pattern: str, escaped: bool) -> exp.Expr:
    node: exp.Expr = exp.ILike(this=e, expression=s(pattern))
    if escaped:
        node = exp.Escape(this=node, expression=s("\\"))
    return node


def like(e: exp.Expr, pattern: str, escaped: bool) -> exp.Expr:
    node: exp.Expr = exp.Like(this=e, expression=s(pattern))
    if escaped:
        node = exp.Escape(this=node, expression=s("\\"))
    return node


def alias(e: exp.Expr, name: str) -> exp.Expr:
    if isinstance(e, exp.Column) and e.name == name and not e.table:
        return e
    return exp.Alias(this=e, alias=ident(name))
