"""Formatting and bitwise scalar functions: format_timespan, format_bytes, format_ipv4(_mask),
binary_* and bitset_count_ones, each as documented by Kusto (examples in
tests/kql/test_functions_format.py). kql/functions.py merges ``SIGNATURES`` and ``BUILDERS``
into its tables.

SQL is written as DuckDB text templates with ``:name`` placeholders, parsed once per call by
sqlglot and filled with the argument expressions (never with user text).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlglot
from sqlglot import exp

from kql import sqlbuild as sb
from kql.context import Ctx
from kql.nodes import Call
from kql.typed import V, as_string

Builder = Callable[["Ctx", list[V], "Call"], exp.Expr]


def sql_template(template: str, **args: exp.Expr) -> exp.Expr:
    """A DuckDB expression from ``template`` with each ``:name`` replaced by ``args[name]``."""
    tree = sqlglot.parse_one(template, read="duckdb")
    # Every argument in parentheses: a placeholder is an operand whose precedence the template
    # cannot know (sqlglot prints trees as built).
    filled = {k: v.copy() if isinstance(v, exp.Paren | exp.Literal | exp.Column) else exp.Paren(this=v.copy())
              for k, v in args.items()}
    return exp.replace_placeholders(tree, **filled)


_t = sql_template


def ipv4_in_cidr(ip_long: exp.Expr, cidr: exp.Expr) -> exp.Expr:
    """Run-time test: is the address ``ip_long`` (a number) inside the range ``cidr`` (text
    "a.b.c.d" or "a.b.c.d/n")? Null when the range is not valid."""
    text = _t("split_part(:c, '/', 1)", c=cidr)
    valid = _t(f"regexp_matches(:c, '{_IPV4}')", c=cidr)
    octets = [_t(f"CAST(split_part(:t, '.', {i}) AS BIGINT)", t=text) for i in (1, 2, 3, 4)]
    net = _t("CASE WHEN :v THEN :a * 16777216 + :b * 65536 + :c * 256 + :d END", v=valid,
             a=octets[0], b=octets[1], c=octets[2], d=octets[3])
    prefix = _t("coalesce(TRY_CAST(nullif(split_part(:c, '/', 2), '') AS BIGINT), 32)", c=cidr)
    size = _t("CAST(pow(2, 32 - :p) AS BIGINT)", p=prefix)
    return _t(":ip // :s = :n // :s", ip=ip_long, s=size, n=net)


# (min args, max args, argument kinds, result type), as kql.functions._sig takes them
SIGNATURES: dict[str, tuple[int, int, str, str]] = {
    "format_timespan": (2, 2, "ts str", "string"),
    "format_bytes": (1, 3, "num num str", "string"),
    "format_ipv4": (1, 2, "any num", "string"),
    "format_ipv4_mask": (1, 2, "any num", "string"),
    "binary_and": (2, 2, "num num", "long"),
    "binary_or": (2, 2, "num num", "long"),
    "binary_xor": (2, 2, "num num", "long"),
    "binary_not": (1, 1, "num", "long"),
    "binary_shift_left": (2, 2, "num num", "long"),
    "binary_shift_right": (2, 2, "num num", "long"),
    "bitset_count_ones": (1, 1, "num", "long"),
}

# --- format_timespan ----------------------------------------------------------------------------

# Format elements (Kusto docs, format_timespan "Supported format elements"): d..dddddddd days,
# h/hh or H/HH hours within the day, m/mm minutes, s/ss seconds, f..fffffff fractions,
# F..FFFFFFF fractions without trailing zeros; the separators (space / - : , . _ [ ]) and any
# other character are copied. A quoted run ('...' or "...") is copied without its quotes.
_TS_TOKEN = re.compile(r"d{1,8}|[hH]{1,2}|m{1,2}|s{1,2}|f{1,7}|F{1,7}|'[^']*'|\"[^\"]*\"|.", re.S)


def _format_timespan(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    fmt = a[1].const if a[1].is_const and isinstance(a[1].const, str) else None
    if fmt is None:
        ctx.error("unsupported", "format_timespan(): the format must be a constant string", node.span)
        return sb.null("string")
    us = _t("abs(epoch_us(:t))", t=a[0].sql)  # DuckDB timespans are microseconds
    parts: list[exp.Expr] = [_t("CASE WHEN epoch_us(:t) < 0 THEN '-' ELSE '' END", t=a[0].sql)]
    for tok in _TS_TOKEN.findall(fmt):
        c, n = tok[0], len(tok)
        if c == "d":
            # printf pads to at least n digits (lpad would cut a longer number)
            parts.append(_t(f"printf('%0{n}d', :us // 86400000000)", us=us))
        elif c in "hH":
            parts.append(_t(f"printf('%0{n}d', (:us // 3600000000) % 24)", us=us))
        elif c == "m" and n <= 2:
            parts.append(_t(f"printf('%0{n}d', (:us // 60000000) % 60)", us=us))
        elif c == "s" and n <= 2:
            parts.append(_t(f"printf('%0{n}d', (:us // 1000000) % 60)", us=us))
        elif c in "fF":
            # seven digits of 100 ns ticks; storage keeps microseconds, so the 7th is 0
            digits = _t(f"substr(lpad(CAST((:us % 1000000) * 10 AS VARCHAR), 7, '0'), 1, {n})", us=us)
            parts.append(digits if c == "f" else _t("rtrim(:x, '0')", x=digits))
        elif c in "'\"" and n >= 2:
            parts.append(sb.s(tok[1:-1]))
        else:
            parts.append(sb.s(tok))
    out = parts[0]
    for p in parts[1:]:
        out = exp.DPipe(this=out, expression=p, safe=True)
    return _t("CASE WHEN :t IS NULL THEN '' ELSE :x END", t=a[0].sql, x=out)


# --- format_bytes -------------------------------------------------------------------------------

_UNITS = ["Bytes", "KB", "MB", "GB", "TB", "PB", "EB"]


def _format_bytes(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    precision = 0
    if len(a) > 1:
        if not (a[1].is_const and isinstance(a[1].const, int)):
            ctx.error("unsupported", "format_bytes(): the precision must be a constant integer", node.args[1].span)
            return sb.null("string")
        precision = max(0, min(int(a[1].const), 15))
    unit = ""
    if len(a) > 2:
        if not (a[2].is_const and isinstance(a[2].const, str)):
            ctx.error("unsupported", "format_bytes(): the units must be a constant string", node.args[2].span)
            return sb.null("string")
        unit = a[2].const
    size = _t("CAST(:x AS DOUBLE)", x=a[0].sql)
    fmt = f"%.{precision}f"
    if unit:
        match = [u for u in _UNITS if u.lower() == unit.lower()]
        if not match:
            ctx.error("invalid_argument", f"format_bytes(): unknown units {unit!r}", node.args[2].span,
                      ["units: " + ", ".join(_UNITS)])
            return sb.null("string")
        scale = 1024 ** _UNITS.index(match[0])
        return _t(f"printf('{fmt} {match[0]}', :x / {scale})", x=size)
    # Units chosen by size: the largest whose value is at least 1.
    power = _t("CASE WHEN abs(:x) < 1024 THEN 0 ELSE least(6, CAST(floor(log(abs(:x)) / log(1024)) AS INTEGER)) END", x=size)
    units = exp.Array(expressions=[sb.s(u) for u in _UNITS])
    return _t(f"printf('{fmt} %s', :x / pow(1024, :p), :u[:p + 1])", x=size, p=power, u=units)


# --- format_ipv4, format_ipv4_mask --------------------------------------------------------------

_IPV4 = r"^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}(/(3[0-2]|[12]?\d))?$"


def _ipv4_parts(a: list[V]) -> tuple[exp.Expr, exp.Expr]:
    """(the address as a number, the prefix length in effect) for format_ipv4(_mask): a string
    "a.b.c.d" or "a.b.c.d/n", or a number in big-endian order; the prefix is the smaller of the
    argument and the address's own /n. Null when the input or prefix is not valid."""
    if a[0].type in ("long", "int", "real", "decimal"):
        num = _t("CASE WHEN :x BETWEEN 0 AND 4294967295 THEN CAST(:x AS BIGINT) END", x=a[0].sql)
        own: exp.Expr = sb.num(32)
    else:
        s = as_string(a[0])
        valid = _t(f"regexp_matches(:s, '{_IPV4}')", s=s)
        octets = [_t(f"CAST(split_part(split_part(:s, '/', 1), '.', {i}) AS BIGINT)", s=s) for i in (1, 2, 3, 4)]
        num = _t("CASE WHEN :v THEN :a * 16777216 + :b * 65536 + :c * 256 + :d END", v=valid,
                 a=octets[0], b=octets[1], c=octets[2], d=octets[3])
        own = _t("coalesce(TRY_CAST(nullif(split_part(:s, '/', 2), '') AS BIGINT), 32)", s=s)
    prefix = a[1].sql if len(a) > 1 else sb.num(32)
    eff = _t("CASE WHEN :p BETWEEN 0 AND 32 THEN least(:p, :o) END", p=prefix, o=own)
    return num, eff


def _masked_dotted(num: exp.Expr, eff: exp.Expr) -> exp.Expr:
    masked = _t("(:n // CAST(pow(2, 32 - :e) AS BIGINT)) * CAST(pow(2, 32 - :e) AS BIGINT)", n=num, e=eff)
    return _t("CAST(:m // 16777216 AS VARCHAR) || '.' || CAST((:m // 65536) % 256 AS VARCHAR) || '.' || "
              "CAST((:m // 256) % 256 AS VARCHAR) || '.' || CAST(:m % 256 AS VARCHAR)", m=masked)


def _format_ipv4(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    num, eff = _ipv4_parts(a)
    return _t("coalesce(:x, '')", x=_masked_dotted(num, eff))  # "" when conversion fails


def _format_ipv4_mask(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    num, eff = _ipv4_parts(a)
    return _t("coalesce(:x || '/' || CAST(:e AS VARCHAR), '')", x=_masked_dotted(num, eff), e=eff)


# --- binary_* -----------------------------------------------------------------------------------


def _wrap64(e: exp.Expr) -> exp.Expr:
    """A HUGEINT result as a two's-complement 64-bit long (Kusto's longs wrap; DuckDB's shifts
    raise an overflow error instead)."""
    low = _t("(:x) & CAST('18446744073709551615' AS HUGEINT)", x=e)
    return _t("CAST(CASE WHEN :v >= CAST('9223372036854775808' AS HUGEINT) "
              "THEN :v - CAST('18446744073709551616' AS HUGEINT) ELSE :v END AS BIGINT)", v=low)


def _shift(left: bool) -> Builder:
    # value << (shift % 64) / value >> (shift % 64); a negative shift is null (Kusto docs)
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        value = _t("CAST(:x AS BIGINT)", x=a[0].sql)
        n = _t("CAST(:n AS BIGINT)", n=a[1].sql)
        if left:
            shifted = _wrap64(_t("CAST(:v AS HUGEINT) << CAST(:n % 64 AS INTEGER)", v=value, n=n))
        else:
            shifted = _t(":v >> CAST(:n % 64 AS INTEGER)", v=value, n=n)  # arithmetic, like C#
        return _t("CASE WHEN :n >= 0 THEN :s END", n=n, s=shifted)
    return build


def _bin2(op: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        return _t(f"CAST(:a AS BIGINT) {op} CAST(:b AS BIGINT)", a=a[0].sql, b=a[1].sql)
    return build


BUILDERS: dict[str, Builder] = {
    "format_timespan": _format_timespan,
    "format_bytes": _format_bytes,
    "format_ipv4": _format_ipv4,
    "format_ipv4_mask": _format_ipv4_mask,
    "binary_and": _bin2("&"),
    "binary_or": _bin2("|"),
    "binary_xor": lambda c, a, n: _t("xor(CAST(:a AS BIGINT), CAST(:b AS BIGINT))", a=a[0].sql, b=a[1].sql),
    "binary_not": lambda c, a, n: _t("~CAST(:a AS BIGINT)", a=a[0].sql),
    "binary_shift_left": _shift(True),
    "binary_shift_right": _shift(False),
    "bitset_count_ones": lambda c, a, n: _t("CAST(bit_count(CAST(:a AS BIGINT)) AS BIGINT)", a=a[0].sql),
}
