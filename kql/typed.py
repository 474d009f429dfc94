"""Typed SQL values: what the checker knows about each lowered scalar expression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from kql import sqlbuild as sb

NUMERIC = frozenset({"long", "int", "real", "decimal"})
STRINGY = frozenset({"string", "guid"})
UNKNOWN = "unknown"  # after an error: suppresses follow-on type errors


class _NoConst:
    def __repr__(self) -> str:
        return "NOCONST"


NOCONST: Any = _NoConst()


@dataclass(frozen=True)
class V:
    sql: exp.Expr
    type: str
    const: Any = NOCONST  # the python value when known at compile time
    window: bool = False  # uses a window function (prevents folding later filters)
    agg: bool = False
    # never NULL at run time: a stored catalog string (storage writes "" for a missing string,
    # see CompileOptions.strings_never_null) or a value already coalesced to ""
    notnull: bool = False

    @property
    def is_const(self) -> bool:
        return self.const is not NOCONST


def const(value: Any, kql_type: str) -> V:
    return V(sb.literal(value, kql_type), kql_type, value)


def normalize_type(t: str) -> str:
    from schema.types import TYPE_ALIASES

    t = t.lower()
    return TYPE_ALIASES.get(t, t)


def is_numeric(t: str) -> bool:
    return t in NUMERIC or t == UNKNOWN


def num_result(a: str, b: str) -> str:
    if UNKNOWN in (a, b):
        return UNKNOWN
    if "real" in (a, b) or "decimal" in (a, b):
        return "real"
    if "long" in (a, b):
        return "long"
    return "int" if a == b == "int" else "long"


def as_string(v: V) -> exp.Expr:
    """A value used where a string is needed: dynamic becomes its unquoted string form."""
    if v.type == "dynamic":
        return json_to_string(v.sql)
    if v.type in STRINGY or v.type == UNKNOWN:
        return v.sql
    if v.type == "bool":
        # Kusto prints booleans as true/false, DuckDB's cast does the same
        return sb.cast(v.sql, "string")
    if v.type == "datetime":
        return sb.fn("strftime", v.sql, sb.s("%Y-%m-%dT%H:%M:%S.%fZ"))
    return sb.cast(v.sql, "string")


def json_to_string(e: exp.Expr) -> exp.Expr:
    if sb.call_name(e) == "json_extract":
        return sb.fn("json_extract_string", *[a.copy() for a in sb.call_args(e)])
    return sb.fn("json_extract_string", e, sb.s("$"))


def to_type(v: V, target: str) -> exp.Expr:
    """Implicit conversion of a dynamic value to a scalar type (Kusto's dynamic comparisons)."""
    if v.type == target or v.type == UNKNOWN:
        return v.sql
    if v.type == "dynamic":
        if target in STRINGY:
            return json_to_string(v.sql)
        return sb.try_cast(json_to_string(v.sql), target)
    if target in STRINGY:
        return as_string(v)
    if target in NUMERIC and v.type in NUMERIC:
        return v.sql
    return sb.try_cast(v.sql, target)
