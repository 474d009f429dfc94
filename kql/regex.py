"""Regular expressions: Kusto's RE2 syntax as DuckDB's RE2 build accepts it.

Kusto documents RE2. DuckDB bundles an older RE2 that lacks a few forms Kusto accepts, so a
constant pattern is rewritten before it reaches DuckDB:

- named groups `(?<name>...)` become `(?P<name>...)` (both are RE2; DuckDB's knows only the
  second);
- `\\uXXXX` (.NET-style, common in queries) becomes `\\x{XXXX}`.

What neither RE2 has (lookahead/lookbehind `(?=` `(?!` `(?<=` `(?<!`, backreferences `\\1`,
possessive quantifiers `a++`, `(?x)` free spacing, `\\Z`) is an error in Kusto as in Quarry; DuckDB
reports it when the query runs. A pattern that is not a constant is passed as it is.
"""

from __future__ import annotations

import re

from sqlglot import exp

from kql import sqlbuild as sb
from kql.typed import V, as_string

_NAMED_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\(\?<(?=[A-Za-z_])")
_UNICODE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9A-Fa-f]{4})")


def re2(pattern: str) -> str:
    """``pattern`` with the RE2 forms DuckDB lacks rewritten (see the module's docstring)."""
    pattern = _NAMED_GROUP.sub(r"\1(?P<", pattern)
    return _UNICODE_ESCAPE.sub(lambda m: f"{m.group(1)}\\x{{{m.group(2)}}}", pattern)


def check(pattern: str) -> str | None:
    """Python's opinion of ``pattern`` (close to RE2 for the common forms): the error, or None."""
    try:
        re.compile(_NAMED_GROUP.sub(r"\1(?P<", pattern))
    except re.error as e:
        return str(e)
    return None


def regex_arg(v: V) -> exp.Expr:
    """A regex argument as SQL: a constant is rewritten by ``re2``, anything else passes."""
    if v.is_const and isinstance(v.const, str):
        return sb.s(re2(v.const))
    return as_string(v)
