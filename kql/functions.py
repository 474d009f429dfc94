"""Scalar and aggregate functions: KQL signatures (checked by the compiler) in one table, and
the SQL each one becomes per target dialect in another (``DIALECTS``).

A signature is (min args, max args, argument kinds, result type). Kinds: ``str``, ``num``,
``dt`` (datetime), ``ts`` (timespan), ``bool``, ``dyn``, ``any``; ``*`` repeats the last kind.
A result type is a KQL type name, ``arg0``/``arg1`` (the type of that argument), or ``common``
(the common type of the value arguments).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlglot import exp

from kql import functions_format, geoip
from kql import sqlbuild as sb
from kql.bounded import bounded_range, cap_list
from kql.context import Ctx
from kql.literals import parse_datetime, parse_timespan
from kql.lower import capabilities
from kql.nodes import Call
from kql.regex import re2, regex_arg
from kql.temporal import datetime_in_range
from kql.terms import has_term
from kql.typed import (
    NUMERIC,
    STRINGY,
    UNKNOWN,
    V,
    as_string,
    json_to_string,
    normalize_type,
    to_type,
)


@dataclass(frozen=True)
class Sig:
    min_args: int
    max_args: int  # -1: any number
    kinds: tuple[str, ...]
    ret: str


def _sig(min_a: int, max_a: int, kinds: str, ret: str) -> Sig:
    return Sig(min_a, max_a, tuple(kinds.split()) if kinds else (), ret)


# fmt: off
SCALARS: dict[str, Sig] = {
    "ago": _sig(1, 1, "ts", "datetime"),
    "now": _sig(0, 1, "ts", "datetime"),
    "bin": _sig(2, 2, "ord ord", "binned"),
    "floor": _sig(1, 2, "ord ord", "binned"),
    "bin_at": _sig(3, 3, "ord ord ord", "arg0"),
    "startofday": _sig(1, 2, "dt num", "datetime"),
    "startofweek": _sig(1, 2, "dt num", "datetime"),
    "startofmonth": _sig(1, 2, "dt num", "datetime"),
    "startofyear": _sig(1, 2, "dt num", "datetime"),
    "endofday": _sig(1, 2, "dt num", "datetime"),
    "endofweek": _sig(1, 2, "dt num", "datetime"),
    "endofmonth": _sig(1, 2, "dt num", "datetime"),
    "datetime_diff": _sig(3, 3, "str dt dt", "long"),
    "datetime_add": _sig(3, 3, "str num dt", "datetime"),
    "datetime_part": _sig(2, 2, "str dt", "long"),
    "format_datetime": _sig(2, 2, "dt str", "string"),
    "dayofweek": _sig(1, 1, "dt", "timespan"),
    "dayofmonth": _sig(1, 1, "dt", "int"),
    "dayofyear": _sig(1, 1, "dt", "int"),
    "hourofday": _sig(1, 1, "dt", "int"),
    "monthofyear": _sig(1, 1, "dt", "int"),
    "getmonth": _sig(1, 1, "dt", "int"),
    "getyear": _sig(1, 1, "dt", "int"),
    "todatetime": _sig(1, 1, "any", "datetime"),
    "totimespan": _sig(1, 1, "any", "timespan"),
    "unixtime_seconds_todatetime": _sig(1, 1, "num", "datetime"),
    "unixtime_milliseconds_todatetime": _sig(1, 1, "num", "datetime"),
    "tolower": _sig(1, 1, "str", "string"),
    "toupper": _sig(1, 1, "str", "string"),
    "strcat": _sig(1, -1, "any *", "string"),
    "strcat_delim": _sig(2, -1, "str any *", "string"),
    "strlen": _sig(1, 1, "str", "long"),
    "substring": _sig(2, 3, "str num num", "string"),
    "split": _sig(2, 3, "str str num", "dynamic"),
    "extract": _sig(3, 4, "str num str any", "string"),
    "extract_all": _sig(2, 3, "str any str", "dynamic"),
    "replace_string": _sig(3, 3, "str str str", "string"),
    "replace_regex": _sig(3, 3, "str str str", "string"),
    "replace": _sig(3, 3, "str str str", "string"),
    "trim": _sig(2, 2, "str str", "string"),
    "trim_start": _sig(2, 2, "str str", "string"),
    "trim_end": _sig(2, 2, "str str", "string"),
    "indexof": _sig(2, 5, "any any num num num", "long"),
    "reverse": _sig(1, 1, "str", "string"),
    "parse_path": _sig(1, 1, "str", "dynamic"),
    "parse_url": _sig(1, 1, "str", "dynamic"),
    "base64_decode_tostring": _sig(1, 1, "str", "string"),
    "base64_decode_toarray": _sig(1, 1, "str", "dynamic"),
    "unicode_codepoints_to_string": _sig(1, 1, "dyn", "string"),
    "base64_encode_tostring": _sig(1, 1, "str", "string"),
    "url_decode": _sig(1, 1, "str", "string"),
    "url_encode": _sig(1, 1, "str", "string"),
    "tostring": _sig(1, 1, "any", "string"),
    "toint": _sig(1, 1, "any", "int"),
    "tolong": _sig(1, 1, "any", "long"),
    "toreal": _sig(1, 1, "any", "real"),
    "todouble": _sig(1, 1, "any", "real"),
    "todecimal": _sig(1, 1, "any", "real"),
    "tobool": _sig(1, 1, "any", "bool"),
    "toboolean": _sig(1, 1, "any", "bool"),
    "toguid": _sig(1, 1, "any", "guid"),
    "parse_json": _sig(1, 1, "any", "dynamic"),
    "todynamic": _sig(1, 1, "any", "dynamic"),
    "array_length": _sig(1, 1, "dyn", "long"),
    "bag_keys": _sig(1, 1, "dyn", "dynamic"),
    "bag_has_key": _sig(2, 2, "dyn str", "bool"),
    "pack": _sig(0, -1, "str any *", "dynamic"),
    "bag_pack": _sig(0, -1, "str any *", "dynamic"),
    "pack_array": _sig(0, -1, "any *", "dynamic"),
    "set_has_element": _sig(2, 2, "dyn any", "bool"),
    "array_index_of": _sig(2, 5, "dyn any num num num", "long"),
    "strcat_array": _sig(2, 2, "dyn str", "string"),
    "extract_json": _sig(2, 3, "str str any", "string"),
    "iff": _sig(3, 3, "bool any any", "common"),
    "iif": _sig(3, 3, "bool any any", "common"),
    "case": _sig(3, -1, "any *", "common"),
    "coalesce": _sig(1, -1, "any *", "common"),
    "isempty": _sig(1, 1, "any", "bool"),
    "isnotempty": _sig(1, 1, "any", "bool"),
    "isnull": _sig(1, 1, "any", "bool"),
    "isnotnull": _sig(1, 1, "any", "bool"),
    "not": _sig(1, 1, "bool", "bool"),
    "round": _sig(1, 2, "num num", "rounded"),
    "abs": _sig(1, 1, "ord", "binned"),
    "log": _sig(1, 1, "num", "real"),
    "log10": _sig(1, 1, "num", "real"),
    "log2": _sig(1, 1, "num", "real"),
    "exp": _sig(1, 1, "num", "real"),
    "sqrt": _sig(1, 1, "num", "real"),
    "pow": _sig(2, 2, "num num", "real"),
    "power": _sig(2, 2, "num num", "real"),
    "ceiling": _sig(1, 1, "num", "arg0"),
    "max_of": _sig(1, -1, "any *", "common"),
    "min_of": _sig(1, -1, "any *", "common"),
    "rand": _sig(0, 1, "num", "real"),
    "ipv4_is_private": _sig(1, 1, "str", "bool"),
    "ipv4_is_in_range": _sig(2, 2, "str str", "bool"),
    "has_any_index": _sig(2, 2, "str any", "long"),
    "ipv4_is_in_any_range": _sig(2, -1, "str any *", "bool"),
    "parse_ipv4": _sig(1, 1, "str", "long"),
    "countof": _sig(2, 3, "str str str", "long"),
    "hash_sha256": _sig(1, 1, "str", "string"),
    "hash_md5": _sig(1, 1, "str", "string"),
    "string_size": _sig(1, 1, "str", "long"),
    "translate": _sig(3, 3, "str str str", "string"),
    "tohex": _sig(1, 2, "num num", "string"),
    "new_guid": _sig(0, 0, "", "guid"),
    "gettype": _sig(1, 1, "any", "string"),
    "typeof": _sig(1, 1, "any", "string"),
    "row_number": _sig(0, 2, "num any", "long"),
    "parse_version": _sig(1, 1, "str", "decimal"),
    "set_difference": _sig(2, -1, "dyn dyn *", "dynamic"),
    "set_union": _sig(2, -1, "dyn dyn *", "dynamic"),
    "set_intersect": _sig(2, -1, "dyn dyn *", "dynamic"),
    "array_concat": _sig(1, -1, "dyn *", "dynamic"),
    "array_sort_asc": _sig(1, 1, "dyn", "dynamic"),
    "array_sort_desc": _sig(1, 1, "dyn", "dynamic"),
    "array_slice": _sig(3, 3, "dyn num num", "dynamic"),
    "ipv4_is_match": _sig(2, 3, "str str num", "bool"),
    "indexof_regex": _sig(2, 2, "str str", "long"),
    "range": _sig(2, 3, "any any any", "dynamic"),
    "isascii": _sig(1, 1, "str", "bool"),
    "parse_command_line": _sig(2, 2, "str str", "dynamic"),
    "prev": _sig(1, 3, "any num any", "arg0"),
    "next": _sig(1, 3, "any num any", "arg0"),
}

AGGREGATES: dict[str, Sig] = {
    "count": _sig(0, 1, "any", "long"),
    "countif": _sig(1, 1, "bool", "long"),
    "dcount": _sig(1, 2, "any num", "long"),
    "count_distinct": _sig(1, 1, "any", "long"),
    "dcountif": _sig(2, 3, "any bool num", "long"),
    "sum": _sig(1, 1, "num", "sum"),
    "sumif": _sig(2, 2, "num bool", "sum"),
    "avg": _sig(1, 1, "num", "real"),
    "avgif": _sig(2, 2, "num bool", "real"),
    "min": _sig(1, 1, "any", "arg0"),
    "max": _sig(1, 1, "any", "arg0"),
    "minif": _sig(2, 2, "any bool", "arg0"),
    "maxif": _sig(2, 2, "any bool", "arg0"),
    "make_set": _sig(1, 2, "any num", "dynamic"),
    "makeset": _sig(1, 2, "any num", "dynamic"),
    "make_set_if": _sig(2, 3, "any bool num", "dynamic"),
    "make_list": _sig(1, 2, "any num", "dynamic"),
    "makelist": _sig(1, 2, "any num", "dynamic"),
    "make_list_if": _sig(2, 3, "any bool num", "dynamic"),
    "make_bag": _sig(1, 2, "dyn num", "dynamic"),
    "take_any": _sig(1, -1, "any *", "arg0"),
    "any": _sig(1, -1, "any *", "arg0"),
    "take_anyif": _sig(2, 2, "any bool", "arg0"),
    "percentile": _sig(2, 2, "any num", "arg0"),
    "percentiles": _sig(2, -1, "any num *", "arg0"),
    "stdev": _sig(1, 1, "num", "real"),
    "variance": _sig(1, 1, "num", "real"),
    "arg_max": _sig(2, -1, "any any *", "arg0"),
    "arg_min": _sig(2, -1, "any any *", "arg0"),
    "binary_all_or": _sig(1, 1, "num", "long"),
    "binary_all_and": _sig(1, 1, "num", "long"),
}

# Older or alternative spellings Kusto still accepts, mapped to one name.
ALIASES: dict[str, str] = {
    "extractjson": "extract_json", "pack_dictionary": "bag_pack", "base64_decodestring": "base64_decode_tostring",
    "make_string": "unicode_codepoints_to_string", "notempty": "isnotempty",
    "argmax": "arg_max", "argmin": "arg_min", "todouble": "toreal", "make_dictionary": "make_bag",
    "parsejson": "parse_json",
}

# Default output column name per aggregate (Kusto: `count_`, `sum_X`, `dcount_X`, `set_X`...).
AGG_PREFIX: dict[str, str] = {
    "count": "count_", "countif": "countif_", "dcount": "dcount_", "count_distinct": "count_distinct_",
    "dcountif": "dcountif_", "sum": "sum_", "sumif": "sumif_", "avg": "avg_", "avgif": "avgif_",
    "min": "min_", "max": "max_", "minif": "minif_", "maxif": "maxif_", "make_set": "set_",
    "makeset": "set_", "make_set_if": "set_", "make_list": "list_", "makelist": "list_",
    "make_list_if": "list_", "make_bag": "bag_", "take_any": "any_", "any": "any_",
    "take_anyif": "any_", "stdev": "stdev_", "variance": "variance_", "percentile": "percentile_",
    "binary_all_or": "binary_all_or_", "binary_all_and": "binary_all_and_",
}
# fmt: on

Builder = Callable[["Ctx", list[V], "Call"], exp.Expr]

# ---------------------------------------------------------------- helpers for builders


def _const_str(ctx: Ctx, v: V, node: Call, what: str) -> str | None:
    if v.is_const and isinstance(v.const, str):
        return v.const
    ctx.error("unsupported", f"{node.name}(): {what} must be a constant string", node.span)
    return None


def _cint(v: V, default: int = 0) -> int:
    return int(v.const) if v.is_const and v.const is not None else default


def _epoch_origin() -> exp.Expr:
    return sb.cast(sb.s("0001-01-01 00:00:00"), "datetime")


def bin_value(ctx: Ctx, value: V, size: V) -> exp.Expr:
    if value.type == "datetime":
        return sb.fn("time_bucket", size.sql, value.sql, _epoch_origin())
    if value.type == "timespan":
        us = sb.fn("epoch_us", value.sql)
        width = sb.fn("epoch_us", size.sql)
        return sb.fn("to_microseconds", sb.cast(exp.Mul(this=sb.fn("floor", exp.Div(this=us, expression=width)), expression=width), "long"))
    q = exp.Mul(
        this=sb.fn("floor", exp.Div(this=sb.paren(value.sql), expression=sb.paren(size.sql))),
        expression=sb.paren(size.sql),
    )
    if value.type in ("long", "int"):
        # Kusto.Language: an integer binned by an integer is a long, by a real a real
        return q if size.type in ("real", "decimal") else sb.cast(q, "long")
    return q


_DT_PARTS = {
    "year": "year", "quarter": "quarter", "month": "month", "week": "week", "day": "day",
    "hour": "hour", "minute": "minute", "second": "second", "millisecond": "millisecond",
    "microsecond": "microsecond", "nanosecond": "microsecond", "dayofyear": "doy",
    "weekofyear": "week", "weekday": "dow",
}


def _part(ctx: Ctx, v: V, node: Call) -> str:
    text = _const_str(ctx, v, node, "the period")
    if text is None:
        return "day"
    p = _DT_PARTS.get(text.lower())
    if p is None:
        ctx.error("invalid_argument", f"{node.name}(): unknown period {text!r}", node.args[0].span,
                  ["periods: " + ", ".join(_DT_PARTS)])
        return "day"
    return p


_FMT = [("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("hh", "%I"),
        ("mm", "%M"), ("ss", "%S"), ("fffffff", "%f0"), ("ffffff", "%f"), ("fff", "%g"), ("tt", "%p"),
        ("M", "%-m"), ("d", "%-d"), ("H", "%-H"), ("h", "%-I"), ("m", "%-M"), ("s", "%-S")]


def kusto_format_to_strftime(fmt: str) -> str:
    out, i = [], 0
    while i < len(fmt):
        for k, v in _FMT:
            if fmt.startswith(k, i):
                out.append(v)
                i += len(k)
                break
        else:
            out.append(fmt[i].replace("%", "%%"))
            i += 1
    return "".join(out)


def _startof(unit: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        dt = a[0].sql
        offset = _cint(a[1]) if len(a) > 1 else 0
        if unit == "week":
            # Kusto weeks start on Sunday; DuckDB's date_trunc('week') is ISO (Monday)
            day = exp.Interval(this=sb.s("1"), unit=exp.Var(this="DAY"))
            start: exp.Expr = exp.Sub(
                this=sb.cast(sb.fn("date_trunc", sb.s("week"), exp.Add(this=dt, expression=day)), "datetime"),
                expression=day.copy(),
            )
        else:
            start = sb.cast(sb.fn("date_trunc", sb.s(unit), dt), "datetime")
        if offset:
            start = exp.Add(this=start, expression=exp.Mul(
                this=exp.Interval(this=sb.s("1"), unit=exp.Var(this=unit.upper())), expression=sb.num(offset)))
        return start
    return build


def _endof(unit: str) -> Builder:
    start = _startof(unit)

    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        one = exp.Interval(this=sb.s("1"), unit=exp.Var(this=unit.upper()))
        tick = exp.Interval(this=sb.s("1"), unit=exp.Var(this="MICROSECOND"))
        return exp.Sub(this=exp.Add(this=start(ctx, a, node), expression=one), expression=tick)
    return build


def ipv4_to_long(e: exp.Expr) -> exp.Expr:
    parts = [sb.try_cast(sb.fn("split_part", e.copy(), sb.s("."), sb.num(i)), "long") for i in (1, 2, 3, 4)]
    total: exp.Expr = parts[3]
    for i, p in enumerate(parts[:3]):
        total = exp.Add(this=exp.Mul(this=p, expression=sb.num(256 ** (3 - i))), expression=total)
    valid = sb.fn("regexp_full_match", e.copy(), sb.s(r"(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}"))
    return exp.Case(ifs=[exp.If(this=valid, true=total)])


def _in_ranges(ip: exp.Expr, cidrs: list[str]) -> exp.Expr:
    n = ipv4_to_long(ip)
    conds: list[exp.Expr] = []
    for c in cidrs:
        net = ipaddress.ip_network(c.strip(), strict=False)
        conds.append(exp.Between(this=n.copy(), low=sb.num(int(net.network_address)),
                                 high=sb.num(int(net.broadcast_address))))
    out = conds[0]
    for cond in conds[1:]:
        out = exp.Or(this=out, expression=cond)
    return sb.fn("coalesce", exp.Paren(this=out), exp.false())


def _ipv4_in_range(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    ranges: list[str] = []
    for v in a[1:]:
        if v.is_const and isinstance(v.const, str):
            ranges.append(v.const)
        elif v.is_const and isinstance(v.const, list):
            ranges.extend(str(x) for x in v.const)
        else:
            return _ipv4_in_runtime_ranges(ctx, a, node)
    try:
        return _in_ranges(as_string(a[0]), ranges)
    except ValueError as e:
        ctx.error("invalid_argument", f"{node.name}(): {e}", node.span)
        return exp.false()


def _ipv4_in_runtime_ranges(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    """ipv4_is_in_(any_)range with ranges known only at run time (a column, a `toscalar(...
    make_set(...))` array): each range string, or each element of a dynamic array, tested in SQL."""
    ip = ipv4_to_long(as_string(a[0]))
    tests: list[exp.Expr] = []
    for v in a[1:]:
        if v.type == "dynamic":
            if v.sql.find(exp.Subquery) is not None:  # a toscalar(...) array, tested in a lambda
                capabilities.check(ctx, "feature", "subquery-in-lambda", node.span)
            r = sb.lambda_param("r", ip, v.sql)
            each = exp.Lambda(this=functions_format.ipv4_in_cidr(ip.copy(), exp.column(r)),
                              expressions=[exp.to_identifier(r)])
            elems = exp.Cast(this=sb.fn("json_extract_string", v.sql, sb.s("$[*]")),
                             to=exp.DataType.build("VARCHAR[]"))
            tests.append(sb.fn("list_bool_or", sb.fn("list_transform", elems, each)))
        else:
            tests.append(functions_format.ipv4_in_cidr(ip.copy(), as_string(v)))
    out = tests[0]
    for t in tests[1:]:
        out = exp.Or(this=sb.paren(out), expression=sb.paren(t))
    return sb.fn("coalesce", sb.paren(out), exp.false())


def _has_any_index(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    """The 0-based index of the first term of the array the text `has`, else -1."""
    if not (a[1].is_const and isinstance(a[1].const, list)):
        ctx.error("unsupported", f"{node.name}(): the values must be a constant array", node.span)
        return sb.num(-1)
    src = as_string(a[0])
    ifs = [exp.If(this=has_term(src.copy(), str(t).lower() if isinstance(t, bool) else str(t)), true=sb.num(i))
           for i, t in enumerate(a[1].const) if t is not None]
    return exp.Case(ifs=ifs, default=sb.num(-1)) if ifs else sb.num(-1)


def _extract(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    pattern = regex_arg(a[0])
    out = sb.fn("regexp_extract", as_string(a[2]), pattern, a[1].sql)
    if len(a) == 4 and a[3].is_const and isinstance(a[3].const, str):
        return sb.try_cast(exp.Nullif(this=out, expression=sb.s("")), a[3].const)
    return out


def _extract_all(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    src = as_string(a[-1])
    pat = re2(_const_str(ctx, a[0], node, "the regular expression") or "")
    try:
        groups = re.compile(pat).groups
    except re.error:
        groups = 1
    return sb.fn("to_json", sb.fn("regexp_extract_all", src, sb.s(pat), sb.num(1 if groups else 0)))


def _trim(kind: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        pat = _const_str(ctx, a[0], node, "the regular expression") or ""
        parts = []
        if kind in ("both", "start"):
            parts.append(f"^(?:{pat})+")
        if kind in ("both", "end"):
            parts.append(f"(?:{pat})+$")
        return sb.fn("regexp_replace", as_string(a[1]), sb.s("|".join(parts)), sb.s(""), sb.s("g"))
    return build


def _base64_decode_toarray(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # the decoded bytes as a JSON array of longs; text that is not base64 gives null
    b = sb.fn("try", sb.fn("from_base64", as_string(a[0])))
    i = sb.lambda_param("i", b)
    byte = exp.Cast(this=exp.DPipe(this=sb.s("0x"), expression=sb.fn(
        "substr", sb.fn("hex", b.copy()), exp.Cast(this=exp.Add(this=exp.Mul(this=exp.column(i), expression=sb.num(2)),
                                                              expression=sb.num(1)), to=exp.DataType.build("INT")),
        sb.num(2))), to=exp.DataType.build("BIGINT"))
    lst = sb.fn("list_transform", sb.fn("range", sb.fn("octet_length", b)),
                exp.Lambda(this=byte, expressions=[exp.to_identifier(i)]))
    return sb.fn("to_json", lst)


def _unicode_codepoints_to_string(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    codes = exp.TryCast(this=a[0].sql, to=exp.DataType.build("BIGINT[]"))
    chars = sb.fn("list_transform", codes, exp.Lambda(
        this=sb.fn("chr", exp.Cast(this=exp.column("x"), to=exp.DataType.build("INT"))), expressions=[exp.to_identifier("x")]))
    return sb.fn("array_to_string", chars, sb.s(""))


def _parse_path(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    p = as_string(a[0])

    def rx(pattern: str, src: exp.Expr | None = None) -> exp.Expr:
        return sb.fn("regexp_extract", (src or p).copy(), sb.s(pattern), sb.num(1))

    fname = rx(r"([^\\/]*)$")
    return sb.fn(
        "json_object",
        sb.s("Scheme"), rx(r"^([A-Za-z][A-Za-z0-9+.-]*)://"),
        sb.s("RootPath"), rx(r"^([A-Za-z]:\\|\\\\[^\\]+\\[^\\]+|/)"),
        sb.s("DirectoryPath"), rx(r"^(.*)[\\/][^\\/]*$"),
        sb.s("DirectoryName"), rx(r"([^\\/]*)[\\/][^\\/]*$"),
        sb.s("Filename"), fname,
        sb.s("Extension"), rx(r"\.([^.\\/]*)$", fname.copy()),
        sb.s("AlternateDataStreamName"), rx(r":([^:\\/]*)$", fname.copy()),
    )


_URL_RE = r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?(?:([^:@/]*)(?::([^@/]*))?@)?([^:/?#]*)(?::(\d+))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$"


def _parse_url(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    u = as_string(a[0])
    keys = ["Scheme", "Username", "Password", "Host", "Port", "Path", "Query", "Fragment"]
    args: list[exp.Expr] = []
    for i, k in enumerate(keys, start=1):
        if k == "Query":
            continue
        args += [sb.s(k), sb.fn("regexp_extract", u.copy(), sb.s(_URL_RE), sb.num(i))]
    # Query Parameters as a bag: split "a=1&b=2" into a JSON object
    query = sb.fn("regexp_extract", u.copy(), sb.s(_URL_RE), sb.num(7))
    pairs = sb.fn("string_split", query, sb.s("&"))
    lam_keys = sb.fn("list_transform", pairs, exp.Lambda(
        this=sb.fn("split_part", exp.column("p"), sb.s("="), sb.num(1)), expressions=[exp.to_identifier("p")]))
    lam_vals = sb.fn("list_transform", pairs.copy(), exp.Lambda(
        this=sb.fn("split_part", exp.column("p"), sb.s("="), sb.num(2)), expressions=[exp.to_identifier("p")]))
    params = sb.fn("to_json", sb.fn("map_from_entries", sb.fn("list_zip", lam_keys, lam_vals)))
    args += [sb.s("Query Parameters"), params]
    return sb.fn("json_object", *args)


def _strcat(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    return sb.fn("concat", *[as_string(v) for v in a])


def _from_end(src: exp.Expr, start: exp.Expr) -> exp.Expr:
    """A zero-based start position; a negative one counts from the end of `src` (substring() and
    indexof() docs), stopping at the first character."""
    neg = exp.LT(this=sb.paren(start), expression=sb.num(0))
    back = sb.fn("greatest", exp.Add(this=sb.fn("length", src), expression=sb.paren(start.copy())), sb.num(0))
    return exp.Case(ifs=[exp.If(this=neg, true=back)], default=start.copy())


def _substring(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # substring("123456", -2, 2) is "56": a negative start counts from the end
    src = as_string(a[0])
    start = exp.Add(this=sb.paren(_from_end(src.copy(), a[1].sql)), expression=sb.num(1))
    args = [src, start] + ([sb.fn("greatest", a[2].sql, sb.num(0))] if len(a) > 2 else [])
    return sb.fn("substr", *args)


def _split(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    parts = sb.fn("string_split", as_string(a[0]), as_string(a[1]))
    if len(a) == 3:
        idx = exp.Add(this=sb.paren(a[2].sql), expression=sb.num(1))
        return sb.fn("to_json", exp.Array(expressions=[sb.fn("list_extract", parts, idx)]))
    return sb.fn("to_json", parts)


def _to_json_value(v: V) -> exp.Expr:
    if v.type == "dynamic":
        return v.sql
    return sb.fn("to_json", v.sql)


def _parse_json(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    v = a[0]
    if v.type == "dynamic":
        return v.sql
    if v.type in STRINGY or v.type == UNKNOWN:
        # Kusto: text that is not JSON becomes a dynamic string
        return sb.fn("coalesce", sb.try_cast(v.sql, "dynamic"), sb.fn("to_json", v.sql.copy()))
    return sb.fn("to_json", v.sql)


def _nonnull_string(v: V) -> exp.Expr:
    """tostring(v): a null becomes "" (a stored catalog string needs nothing)."""
    if v.notnull and v.type in STRINGY:
        return v.sql
    return sb.fn("coalesce", as_string(v), sb.s(""))


def _isempty(v: V) -> exp.Expr:
    if v.type in STRINGY and v.notnull:
        return exp.EQ(this=v.sql, expression=sb.s(""))
    if v.type in STRINGY:
        return exp.Paren(this=exp.Or(this=exp.Is(this=v.sql, expression=exp.Null()),
                                     expression=exp.EQ(this=v.sql.copy(), expression=sb.s(""))))
    if v.type == "dynamic":
        return exp.Paren(this=exp.Or(
            this=exp.Is(this=v.sql, expression=exp.Null()),
            expression=exp.In(this=sb.cast(v.sql.copy(), "string"),
                              expressions=[sb.s(""), sb.s('""'), sb.s("null")])))
    return exp.Is(this=v.sql, expression=exp.Null())


def _case(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    target = ctx.common_type(a[1::2] + [a[-1]], node)
    ifs = [exp.If(this=a[i].sql, true=to_type(a[i + 1], target)) for i in range(0, len(a) - 1, 2)]
    return exp.Case(ifs=ifs, default=to_type(a[-1], target))


def _iff(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    target = ctx.common_type(a[1:], node)
    return exp.Case(ifs=[exp.If(this=a[0].sql, true=to_type(a[1], target))], default=to_type(a[2], target))


def _coalesce(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    target = ctx.common_type(a, node)
    vals = [to_type(v, target) for v in a]
    if target in STRINGY:
        # Kusto's coalesce skips empty strings as well as nulls
        vals = [exp.Nullif(this=x, expression=sb.s("")) for x in vals]
    return sb.fn("coalesce", *vals)


def _todatetime(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    v = a[0]
    if v.type == "datetime":
        return v.sql
    if v.type in NUMERIC:
        # Kusto reads a number as .NET ticks (100 ns) since 0001-01-01
        return sb.fn("make_timestamp", sb.cast(exp.Sub(
            this=exp.Div(this=sb.paren(v.sql), expression=sb.num(10)), expression=sb.num(62135596800000000)), "long"))
    if v.is_const and isinstance(v.const, str):
        parsed = parse_datetime(v.const)
        return sb.timestamp(parsed) if parsed is not None else sb.null("datetime")
    return string_to_datetime(as_string(v))


def string_to_datetime(s_: exp.Expr) -> exp.Expr:
    """Kusto reads ISO 8601 (an offset is converted to UTC) and US-style dates."""
    has_offset = sb.fn("regexp_matches", s_, sb.s(r"(?:[+-]\d\d:?\d\d|[Zz])$"))
    with_offset = sb.fn("timezone", sb.s("UTC"), exp.TryCast(this=s_.copy(), to=exp.DataType.build("TIMESTAMPTZ")))
    plain = sb.try_cast(s_.copy(), "datetime")
    us = sb.fn("try_strptime", s_.copy(), exp.Array(expressions=[
        sb.s("%m/%d/%Y %H:%M:%S"), sb.s("%m/%d/%Y %H:%M"), sb.s("%m/%d/%Y %I:%M:%S %p"), sb.s("%m/%d/%Y")]))
    return exp.Case(ifs=[exp.If(this=has_offset, true=with_offset)], default=sb.fn("coalesce", plain, us))


def _totimespan(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    v = a[0]
    if v.type == "timespan":
        return v.sql
    if v.is_const and isinstance(v.const, str):
        td = parse_timespan(v.const)
        return sb.interval(td) if td is not None else sb.null("timespan")
    if v.type in NUMERIC:  # ticks
        return sb.fn("to_microseconds", sb.cast(exp.Div(this=sb.paren(v.sql), expression=sb.num(10)), "long"))
    return sb.try_cast(as_string(v), "timespan")


def _tobool(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    v = a[0]
    if v.type == "bool":
        return v.sql
    if v.type in NUMERIC:
        return exp.NEQ(this=v.sql, expression=sb.num(0))
    return sb.try_cast(as_string(v), "bool")


def _cast_to(t: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        v = a[0]
        if v.type == t:
            return v.sql
        if v.type == "dynamic":
            return sb.try_cast(json_to_string(v.sql), t)
        if t in ("int", "long") and v.type in ("real", "decimal"):
            return sb.try_cast(sb.fn("trunc", v.sql), t)  # Kusto truncates toward zero
        if t in ("int", "long") and v.type == "timespan":
            return sb.try_cast(exp.Div(this=sb.fn("epoch_us", v.sql), expression=sb.num(0.1)), t)
        return sb.try_cast(v.sql, t)
    return build


def _dayofweek(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    return sb.fn("to_days", sb.cast(sb.fn("dayofweek", a[0].sql), "int"))


def _format_datetime(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    fmt = _const_str(ctx, a[1], node, "the format") or "yyyy-MM-dd HH:mm:ss"
    return sb.fn("strftime", a[0].sql, sb.s(kusto_format_to_strftime(fmt)))


def _datetime_diff(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    return sb.fn("date_diff", sb.s(_part(ctx, a[0], node)), a[2].sql, a[1].sql)


def _datetime_add(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    part = _part(ctx, a[0], node)
    if part in ("doy", "dow"):
        part = "day"
    unit = exp.Interval(this=sb.s("1"), unit=exp.Var(this=part.upper()))
    # past year 9999 (or before year 1) the result is null, as in Kusto
    return datetime_in_range(exp.Add(this=a[2].sql, expression=exp.Mul(this=unit, expression=sb.paren(a[1].sql))))


def _shifted_now(ctx: Ctx, delta: timedelta, node: Call) -> exp.Expr:
    try:
        return sb.timestamp(ctx.now + delta)
    except OverflowError:
        raise ctx.fail("invalid_argument", f"{node.name}(): the time is out of the datetime range "
                       "(years 1 to 9999)", node.span) from None


def _ago(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    if a[0].is_const and isinstance(a[0].const, timedelta):
        return _shifted_now(ctx, -a[0].const, node)
    return exp.Sub(this=sb.timestamp(ctx.now), expression=a[0].sql)


def _now(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    if a and a[0].is_const and isinstance(a[0].const, timedelta):
        return _shifted_now(ctx, a[0].const, node)
    return sb.timestamp(ctx.now)


def _round(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # Kusto rounds the decimal value half away from zero (round(2.15, 1) == 2.2); binary
    # doubles would give 2.1, so round as a DECIMAL
    dec = exp.Cast(this=a[0].sql, to=exp.DataType.build("DECIMAL(38, 12)"))
    rounded = sb.fn("round", dec, a[1].sql if len(a) > 1 else sb.num(0))
    # an integer stays an integer of its type (Kusto.Language: round(int(7), 1) is an int,
    # round(1234, -2) the long 1200)
    return sb.cast(rounded, a[0].type if a[0].type in ("int", "long") else "real")


MAX_INDEXOF_OCCURRENCE = 8


def _indexof(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    """indexof(string, match[, start[, length[, occurrence]]]) as its docs' examples show: a negative
    start counts from the end; `length` characters are examined from the start (-1: all), the match
    lying wholly inside them; the n-th occurrence is searched from just after the previous one with
    the same length; null when length < -1 or occurrence < 0. Non-strings are cast to strings."""
    src, needle = as_string(a[0]), as_string(a[1])
    start = _from_end(src.copy(), a[2].sql) if len(a) >= 3 else sb.num(0)
    length = a[3].sql if len(a) >= 4 else sb.num(-1)
    occurrence = 1
    if len(a) == 5:
        c = a[4].const if a[4].is_const else None
        if isinstance(c, int) and c < 0:
            return sb.null("long")
        if not (isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_INDEXOF_OCCURRENCE):
            raise ctx.fail("unsupported", f"indexof(): the occurrence must be a constant from 0 to "
                           f"{MAX_INDEXOF_OCCURRENCE}", node.args[4].span if len(node.args) > 4 else node.span)
        occurrence = max(c, 1)

    def search(frm: exp.Expr) -> exp.Expr:
        unlimited = exp.EQ(this=sb.paren(length.copy()), expression=sb.num(-1))
        sub = exp.Case(ifs=[exp.If(this=unlimited, true=sb.fn("substr", src.copy(), exp.Add(this=sb.paren(frm.copy()), expression=sb.num(1))))],
                       default=sb.fn("substr", src.copy(), exp.Add(this=sb.paren(frm.copy()), expression=sb.num(1)),
                                     sb.fn("greatest", length.copy(), sb.num(0))))
        pos = sb.fn("strpos", sub, needle.copy())
        return exp.Case(ifs=[exp.If(this=exp.EQ(this=pos, expression=sb.num(0)), true=sb.num(-1))],
                        default=exp.Add(this=exp.Sub(this=pos.copy(), expression=sb.num(1)), expression=sb.paren(frm.copy())))

    result = search(start)
    for _ in range(occurrence - 1):
        prev = result
        result = exp.Case(ifs=[exp.If(this=exp.EQ(this=sb.paren(prev), expression=sb.num(-1)), true=sb.num(-1))],
                          default=search(exp.Add(this=sb.paren(prev.copy()), expression=sb.num(1))))
    bad = exp.LT(this=sb.paren(length.copy()), expression=sb.num(-1))
    return exp.Case(ifs=[exp.If(this=bad, true=sb.null("long"))], default=result)


def _bag_pack(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    if len(a) % 2:
        raise ctx.fail("wrong_arguments", f"{node.name}() takes key, value pairs: got {len(a)} arguments", node.span)
    args: list[exp.Expr] = []
    for i, v in enumerate(a):
        args.append(as_string(v) if i % 2 == 0 else _to_json_value(v))
    return sb.fn("json_object", *args)


def _set_has_element(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    return sb.fn("coalesce", sb.fn("json_contains", sb.cast(a[0].sql, "dynamic"), _to_json_value(a[1])), exp.false())


def _array_index_of(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    """array_index_of(array, value[, start[, length[, occurrence]]]) as its docs' example shows: a
    negative start counts from the end; `length` values are examined (-1: all); the n-th occurrence
    is searched from just after the previous one; null when length < -1 or occurrence < 0, and
    when the value is not an array."""
    arr = _json_list(a[0])
    value = _to_json_value(a[1])
    n_ = sb.fn("len", arr.copy())
    if len(a) >= 3:
        neg = exp.LT(this=sb.paren(a[2].sql), expression=sb.num(0))
        start: exp.Expr = exp.Case(ifs=[exp.If(this=neg, true=sb.fn("greatest", exp.Add(this=n_, expression=sb.paren(a[2].sql.copy())), sb.num(0)))],
                                   default=a[2].sql.copy())
    else:
        start = sb.num(0)
    length = a[3].sql if len(a) >= 4 else sb.num(-1)
    occurrence = 1
    if len(a) == 5:
        c = a[4].const if a[4].is_const else None
        if isinstance(c, int) and c < 0:
            return sb.null("long")
        if not (isinstance(c, int) and not isinstance(c, bool) and c <= MAX_INDEXOF_OCCURRENCE):
            raise ctx.fail("unsupported", f"array_index_of(): the occurrence must be a constant from 0 to "
                           f"{MAX_INDEXOF_OCCURRENCE}", node.args[4].span if len(node.args) > 4 else node.span)
        occurrence = max(c, 1)

    def search(frm: exp.Expr) -> exp.Expr:
        unlimited = exp.EQ(this=sb.paren(length.copy()), expression=sb.num(-1))
        last = exp.Case(ifs=[exp.If(this=unlimited, true=sb.fn("len", arr.copy()))],
                        default=exp.Add(this=sb.paren(frm.copy()), expression=sb.fn("greatest", length.copy(), sb.num(0))))
        window = sb.fn("list_slice", arr.copy(), exp.Add(this=sb.paren(frm.copy()), expression=sb.num(1)), last)
        pos = sb.fn("coalesce", sb.fn("list_position", window, value.copy()), sb.num(0))
        return exp.Case(ifs=[exp.If(this=exp.EQ(this=pos, expression=sb.num(0)), true=sb.num(-1))],
                        default=exp.Add(this=exp.Sub(this=pos.copy(), expression=sb.num(1)), expression=sb.paren(frm.copy())))

    result = search(start)
    for _ in range(occurrence - 1):
        prev = result
        result = exp.Case(ifs=[exp.If(this=exp.EQ(this=sb.paren(prev), expression=sb.num(-1)), true=sb.num(-1))],
                          default=search(exp.Add(this=sb.paren(prev.copy()), expression=sb.num(1))))
    irrelevant = exp.Or(this=exp.Is(this=arr.copy(), expression=exp.Null()),
                        expression=exp.LT(this=sb.paren(length.copy()), expression=sb.num(-1)))
    return exp.Case(ifs=[exp.If(this=irrelevant, true=sb.null("long"))], default=result)


def _strcat_array(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    arr = _json_list(a[0])
    strs = sb.fn("list_transform", arr, exp.Lambda(
        this=sb.fn("json_extract_string", exp.column("x"), sb.s("$")), expressions=[exp.to_identifier("x")]))
    # not an array: "" (a Kusto string is never null)
    return sb.fn("coalesce", sb.fn("array_to_string", strs, as_string(a[1])), sb.s(""))


def _countof(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    src, sub = as_string(a[0]), as_string(a[1])
    if len(a) == 3 and a[2].is_const and a[2].const == "regex":
        return sb.fn("len", sb.fn("regexp_extract_all", src, regex_arg(a[1])))
    removed = sb.fn("length", sb.fn("replace", src.copy(), sub, sb.s("")))
    return exp.IntDiv(this=exp.Sub(this=sb.fn("length", src), expression=removed), expression=sb.fn("length", sub.copy()))


def _minmax_of(name: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        target = ctx.common_type(a, node)
        return sb.fn(name, *[to_type(v, target) for v in a])
    return build


def _typeof(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    return sb.s(a[0].type)


def _row_number(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    if len(a) > 1:
        # restart needs a running group number over the serialized order; not lowered yet
        raise ctx.fail("unsupported", "row_number(): the restart argument is not supported", node.args[1].span)
    rn: exp.Expr = exp.Window(this=sb.fn("row_number"))
    if a:  # StartingIndex: the first row gets it
        rn = exp.Add(this=rn, expression=exp.Sub(this=sb.paren(sb.cast(a[0].sql, "long")), expression=sb.num(1)))
    return rn


def _prevnext(name: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        args = [a[0].sql] + [v.sql for v in a[1:]]
        return exp.Window(this=sb.fn(name, *args))
    return build


def str_arg(v: V) -> exp.Expr:
    """A string argument where a missing (NULL) string must act as "" (Kusto has no null strings)."""
    e = as_string(v)
    if (isinstance(e, exp.Column) and not v.notnull) or v.type == "dynamic":
        return sb.fn("coalesce", e, sb.s(""))
    return e


def _simple(name: str, conv: Callable[[V], exp.Expr] = str_arg) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        return sb.fn(name, *[conv(v) for v in a])
    return build


def _raw(name: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        return sb.fn(name, *[v.sql for v in a])
    return build


def _bin(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    if len(a) == 1:
        return sb.fn("floor", a[0].sql)
    return bin_value(ctx, a[0], a[1])


def _rewrite(v: V) -> exp.Expr:
    """A replace_regex rewrite pattern: \\0-\\9 are groups and \\\\ a backslash; any other
    backslash is taken literally (RE2, which DuckDB uses, would reject the query)."""
    if v.is_const and isinstance(v.const, str):
        return sb.s(re.sub(r"\\(?![0-9\\])", r"\\\\", v.const.replace("\\\\", "\0")).replace("\0", "\\\\"))
    return as_string(v)


def _json_extract(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # text that is not JSON ("" included) gives null rather than failing the query
    src = a[1].sql if a[1].type == "dynamic" else sb.try_cast(as_string(a[1]), "dynamic")
    out = sb.fn("json_extract_string", src, as_string(a[0]))
    if len(a) == 3 and a[2].is_const and isinstance(a[2].const, str) and normalize_type(a[2].const) != "string":
        return sb.try_cast(out, normalize_type(a[2].const))  # extract_json(path, json, typeof(T))
    return sb.fn("coalesce", out, sb.s(""))  # a string result: a missing value is ""


DUCKDB: dict[str, Builder] = {
    "ago": _ago,
    "now": _now,
    "bin": _bin,
    "floor": _bin,
    "bin_at": lambda c, a, n: exp.Add(this=bin_value(c, V(exp.Sub(this=a[0].sql, expression=a[2].sql), "timespan" if a[0].type == "datetime" else a[0].type), a[1]), expression=a[2].sql),
    "startofday": _startof("day"),
    "startofweek": _startof("week"),
    "startofmonth": _startof("month"),
    "startofyear": _startof("year"),
    "endofday": _endof("day"),
    "endofweek": _endof("week"),
    "endofmonth": _endof("month"),
    "datetime_diff": _datetime_diff,
    "datetime_add": _datetime_add,
    "datetime_part": lambda c, a, n: sb.fn("date_part", sb.s(_part(c, a[0], n)), a[1].sql),
    "format_datetime": _format_datetime,
    "dayofweek": _dayofweek,
    "dayofmonth": _raw("dayofmonth"),
    "dayofyear": _raw("dayofyear"),
    "hourofday": _raw("hour"),
    "monthofyear": _raw("month"),
    "getmonth": _raw("month"),
    "getyear": _raw("year"),
    "todatetime": _todatetime,
    "totimespan": _totimespan,
    "unixtime_seconds_todatetime": lambda c, a, n: sb.fn("make_timestamp", sb.cast(exp.Mul(this=sb.cast(a[0].sql, "real"), expression=sb.num(1000000)), "long")),
    "unixtime_milliseconds_todatetime": lambda c, a, n: sb.fn("make_timestamp", sb.cast(exp.Mul(this=sb.cast(a[0].sql, "real"), expression=sb.num(1000)), "long")),
    "tolower": _simple("lower"),
    "toupper": _simple("upper"),
    "strcat": _strcat,
    # every argument keeps its slot: tostring(null) is "" (concat_ws would skip NULLs)
    "strcat_delim": lambda c, a, n: sb.fn("concat_ws", *[_nonnull_string(v) for v in a]),
    "strlen": _simple("length"),
    "substring": _substring,
    "split": _split,
    "extract": _extract,
    "extract_all": _extract_all,
    "replace_string": _simple("replace"),
    "replace_regex": lambda c, a, n: sb.fn("regexp_replace", as_string(a[0]), regex_arg(a[1]), _rewrite(a[2]), sb.s("g")),
    "replace": lambda c, a, n: sb.fn("regexp_replace", as_string(a[2]), as_string(a[0]), _rewrite(a[1]), sb.s("g")),
    "trim": _trim("both"),
    "trim_start": _trim("start"),
    "trim_end": _trim("end"),
    "indexof": _indexof,
    "reverse": _simple("reverse"),
    "parse_path": _parse_path,
    "base64_decode_toarray": _base64_decode_toarray,
    "unicode_codepoints_to_string": _unicode_codepoints_to_string,
    "parse_url": _parse_url,
    "base64_decode_tostring": lambda c, a, n: sb.fn("try", sb.fn("decode", sb.fn("from_base64", as_string(a[0])))),
    "base64_encode_tostring": lambda c, a, n: sb.fn("to_base64", sb.fn("encode", as_string(a[0]))),
    "url_decode": lambda c, a, n: sb.fn("try", sb.fn("url_decode", as_string(a[0]))),
    "url_encode": _simple("url_encode"),
    "tostring": lambda c, a, n: _nonnull_string(a[0]),
    "toint": _cast_to("int"),
    "tolong": _cast_to("long"),
    "toreal": _cast_to("real"),
    "todouble": _cast_to("real"),
    "todecimal": _cast_to("real"),
    "tobool": _tobool,
    "toboolean": _tobool,
    "toguid": lambda c, a, n: sb.cast(exp.TryCast(this=as_string(a[0]), to=exp.DataType.build("UUID")), "string"),
    "parse_json": _parse_json,
    "todynamic": _parse_json,
    "bag_has_key": lambda c, a, n: exp.Not(this=exp.Is(this=sb.fn("json_extract", sb.cast(a[0].sql, "dynamic"), exp.DPipe(this=sb.s('$."'), expression=exp.DPipe(this=as_string(a[1]), expression=sb.s('"')))), expression=exp.Null())),
    "pack": _bag_pack,
    "bag_pack": _bag_pack,
    "pack_array": lambda c, a, n: sb.fn("json_array", *[_to_json_value(v) for v in a]),
    "set_has_element": _set_has_element,
    "array_index_of": _array_index_of,
    "strcat_array": _strcat_array,
    "extract_json": _json_extract,
    "iff": _iff,
    "iif": _iff,
    "case": _case,
    "coalesce": _coalesce,
    "isempty": lambda c, a, n: _isempty(a[0]),
    "isnotempty": lambda c, a, n: exp.Not(this=_isempty(a[0])),
    # Kusto strings are never null: isnull("") is false, so a stored NULL string is not null either
    "isnull": lambda c, a, n: exp.false() if a[0].type == "string" else exp.Is(this=a[0].sql, expression=exp.Null()),
    "isnotnull": lambda c, a, n: exp.true() if a[0].type == "string" else exp.Not(this=exp.Is(this=a[0].sql, expression=exp.Null())),
    "not": lambda c, a, n: exp.Not(this=sb.paren(a[0].sql)),
    "round": _round,
    "abs": lambda c, a, n: sb.fn("to_microseconds", sb.fn("abs", sb.fn("epoch_us", a[0].sql))) if a[0].type == "timespan" else sb.fn("abs", sb.cast(a[0].sql, "long") if a[0].type == "int" else a[0].sql),
    "log": _raw("ln"),
    "log10": _raw("log10"),
    "log2": _raw("log2"),
    "exp": _raw("exp"),
    "sqrt": _raw("sqrt"),
    "pow": _raw("pow"),
    "power": _raw("pow"),
    "ceiling": _raw("ceil"),
    "max_of": _minmax_of("greatest"),
    "min_of": _minmax_of("least"),
    "rand": lambda c, a, n: exp.Mul(this=sb.fn("random"), expression=a[0].sql) if a else sb.fn("random"),
    "ipv4_is_private": lambda c, a, n: _in_ranges(as_string(a[0]), ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]),
    "ipv4_is_in_range": _ipv4_in_range,
    "has_any_index": _has_any_index,
    "ipv4_is_in_any_range": _ipv4_in_range,
    "parse_ipv4": lambda c, a, n: ipv4_to_long(as_string(a[0])),
    "countof": _countof,
    "hash_sha256": _simple("sha256"),
    "hash_md5": _simple("md5"),
    "string_size": lambda c, a, n: sb.fn("octet_length", sb.fn("encode", as_string(a[0]))),
    "translate": lambda c, a, n: sb.fn("translate", as_string(a[2]), as_string(a[0]), as_string(a[1])),
    "tohex": lambda c, a, n: sb.fn("lower", sb.fn("to_hex", a[0].sql)),
    "new_guid": lambda c, a, n: sb.cast(sb.fn("uuid"), "string"),
    "gettype": _typeof,
    "typeof": _typeof,
    "row_number": _row_number,
    "prev": _prevnext("lag"),
    "next": _prevnext("lead"),
}

def _array_length(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # array-length-function: null when the value is not an array
    d = sb.cast(a[0].sql, "dynamic")
    is_array = exp.EQ(this=sb.fn("json_type", d), expression=sb.s("ARRAY"))
    return exp.Case(ifs=[exp.If(this=is_array, true=sb.fn("json_array_length", d.copy()))])


def _bag_keys(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # bag-keys-function example: null, 'a' and [] give null; {} gives []
    d = sb.cast(a[0].sql, "dynamic")
    is_bag = exp.EQ(this=sb.fn("json_type", d), expression=sb.s("OBJECT"))
    return exp.Case(ifs=[exp.If(this=is_bag, true=sb.fn("to_json", sb.fn("json_keys", d.copy())))])


def _json_list(v: V) -> exp.Expr:
    """The elements of a dynamic array; null when the value is not an array (a bag, a scalar or
    null): Kusto's array functions give null for those (array-length-function, "Returns")."""
    d = sb.cast(v.sql, "dynamic") if v.type != "dynamic" else v.sql
    is_array = exp.EQ(this=sb.fn("json_type", d), expression=sb.s("ARRAY"))
    return exp.Case(ifs=[exp.If(this=is_array, true=exp.Cast(this=d.copy(), to=exp.DataType.build("JSON[]")))])


def _array_slice(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    """array_slice(arr, start, end): both inclusive; a negative index is array_length + index;
    out-of-bounds indices are ignored (array-slice-function)."""
    arr = _json_list(a[0])

    def index(e: exp.Expr) -> exp.Expr:
        neg = exp.LT(this=sb.paren(e), expression=sb.num(0))
        return exp.Case(ifs=[exp.If(this=neg, true=exp.Add(this=sb.fn("len", arr.copy()), expression=sb.paren(e.copy())))],
                        default=e.copy())

    lo = sb.fn("greatest", index(a[1].sql), sb.num(0))
    hi = index(a[2].sql)
    # DuckDB's list_slice reads a negative bound from the end: an end before the start is empty
    empty = exp.LT(this=hi, expression=lo)
    sliced = sb.fn("list_slice", arr.copy(), exp.Add(this=lo.copy(), expression=sb.num(1)),
                   exp.Add(this=hi.copy(), expression=sb.num(1)))
    return sb.fn("to_json", exp.Case(ifs=[exp.If(this=exp.Is(this=arr.copy(), expression=exp.Null()), true=exp.Null()),
                                          exp.If(this=empty, true=exp.Cast(this=exp.Array(expressions=[]), to=exp.DataType.build("JSON[]")))],
                                     default=sliced))


def _set_op(kind: str) -> Builder:
    def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
        out: exp.Expr = sb.fn("list_distinct", _json_list(a[0]))
        for other in a[1:]:
            if kind == "union":
                out = sb.fn("list_distinct", sb.fn("list_concat", out, _json_list(other)))
                continue
            other_list = _json_list(other)
            x = sb.lambda_param("x", other_list)
            lam = exp.to_identifier(x)
            has = sb.fn("list_contains", other_list, exp.column(x))
            cond = exp.Not(this=has) if kind == "difference" else has
            out = sb.fn("list_filter", out, exp.Lambda(this=cond, expressions=[lam]))
        return sb.fn("to_json", out)
    return build


def _parse_version(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # Kusto: up to four numeric parts, 8 digits each, as one comparable decimal
    s_ = as_string(a[0])
    valid = sb.fn("regexp_full_match", s_, sb.s(r"\d{1,8}(\.\d{1,8}){0,3}"))
    total: exp.Expr = sb.num(0)
    for i in range(4):
        part = sb.fn("coalesce", exp.TryCast(this=exp.Nullif(this=sb.fn("split_part", s_.copy(), sb.s("."), sb.num(i + 1)), expression=sb.s("")), to=exp.DataType.build("HUGEINT")), sb.num(0))
        total = exp.Add(this=total, expression=exp.Mul(this=part, expression=exp.Cast(this=sb.num(10 ** (8 * (3 - i))), to=exp.DataType.build("HUGEINT"))))
    return exp.Case(ifs=[exp.If(this=valid, true=total)])


def _ipv4_is_match(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    if len(a) == 3:
        ctx.error("unsupported", "ipv4_is_match() with a prefix argument is not supported", node.span)
        return exp.false()
    if a[1].is_const and isinstance(a[1].const, str):
        return _ipv4_in_range(ctx, a, node)
    return exp.EQ(this=ipv4_to_long(as_string(a[0])), expression=ipv4_to_long(as_string(a[1])))


def _indexof_regex(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    src, pat = as_string(a[0]), regex_arg(a[1])
    pos = exp.Sub(this=sb.fn("strpos", src, sb.fn("regexp_extract", src.copy(), pat)), expression=sb.num(1))
    return exp.Case(ifs=[exp.If(this=sb.fn("regexp_matches", src.copy(), pat.copy()), true=pos)], default=sb.num(-1))


def _parse_command_line(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    # Windows rules (CommandLineToArgvW), simplified: blanks split arguments except inside
    # double quotes; the quotes themselves are dropped. Backslash escapes are not interpreted.
    args = sb.fn("regexp_extract_all", str_arg(a[0]), sb.s(r'(?:[^\s"]+|"[^"]*"?)+'))
    unquoted = sb.fn("list_transform", args, exp.Lambda(
        this=sb.fn("replace", exp.column("x"), sb.s('"'), sb.s("")), expressions=[exp.to_identifier("x")]))
    return sb.fn("to_json", unquoted)


DUCKDB.update({
    "array_length": _array_length,
    "bag_keys": _bag_keys,
    "parse_command_line": _parse_command_line,
    "parse_version": _parse_version,
    "set_difference": _set_op("difference"),
    "set_union": _set_op("union"),
    "set_intersect": _set_op("intersect"),
    "array_concat": lambda c, a, n: sb.fn("to_json", sb.fn("list_concat", *[_json_list(v) for v in a])) if len(a) > 1 else sb.cast(a[0].sql, "dynamic"),
    "array_sort_asc": lambda c, a, n: sb.fn("to_json", sb.fn("list_sort", _json_list(a[0]))),
    "array_sort_desc": lambda c, a, n: sb.fn("to_json", sb.fn("list_reverse_sort", _json_list(a[0]))),
    "array_slice": _array_slice,
    "ipv4_is_match": _ipv4_is_match,
    "indexof_regex": _indexof_regex,
    # integer arguments as BIGINT: array_length() arithmetic can be HUGEINT, which generate_series refuses
    # at most query_max_array_elements values (Kusto: 1,048,576; the array is cut), see kql.bounded
    "range": lambda c, a, n: sb.fn("to_json", bounded_range([
        exp.Cast(this=v.sql, to=exp.DataType.build("BIGINT")) if v.type in ("long", "int") else v.sql for v in a],
        a[0].type)),
    "isascii": lambda c, a, n: sb.fn("regexp_full_match", as_string(a[0]), sb.s(r"[\x00-\x7F]*")),
})

# Formatting and bitwise functions live in their own module (kql/functions_format.py).
SCALARS.update({k: _sig(*v) for k, v in functions_format.SIGNATURES.items()})
DUCKDB.update(functions_format.BUILDERS)
SCALARS["geo_info_from_ip_address"] = _sig(1, 1, "str", "dynamic")
DUCKDB["geo_info_from_ip_address"] = geoip.build


# One builder table serves every target: the builders make sqlglot trees in DuckDB's terms and
# kql/lower/ renders them per engine (kql/lower/capabilities.py refuses what an engine cannot do).
DIALECTS: dict[str, dict[str, Builder]] = {"duckdb": DUCKDB, "spark": DUCKDB}

# Functions that exist in Kusto but that Quarry cannot offer (data from outside, plugins...).
UNSUPPORTED_FUNCTIONS = {
    "SeenBy": "needs Microsoft's device inventory service",
    "parse_xml": "is not supported yet",
    "series_decompose_anomalies": "time series functions are not supported",
}


AggBuilder = Callable[[list[V]], tuple[exp.Expr, str]]


def _flt(e: exp.Expr, cond: exp.Expr) -> exp.Expr:
    return exp.Filter(this=e, expression=exp.Where(this=cond))


def _notnull(v: V) -> exp.Expr:
    return exp.Not(this=exp.Is(this=v.sql, expression=exp.Null()))


def _sum(a: list[V], cond: exp.Expr | None = None) -> tuple[exp.Expr, str]:
    t0 = a[0].type
    rt = "real" if t0 in ("real", "decimal") else ("timespan" if t0 == "timespan" else "long")
    e = sb.fn("sum", a[0].sql)
    if cond is not None:
        e = _flt(e, cond)
    return (sb.cast(e, "long") if rt == "long" else e), rt


def _collect(distinct: bool, conditional: bool) -> AggBuilder:
    """make_set / make_list (and _if): nulls are not collected; an empty result is []."""
    def build(a: list[V]) -> tuple[exp.Expr, str]:
        cond = _notnull(a[0])
        if conditional:
            cond = exp.And(this=cond, expression=a[1].sql)
        limit = a[2] if conditional and len(a) > 2 else (a[1] if not conditional and len(a) > 1 else None)
        inner: exp.Expr = _flt(sb.fn("list", exp.Distinct(expressions=[a[0].sql]) if distinct else a[0].sql), cond)
        # maxSize defaults to, and is capped at, query_max_array_elements (Kusto: 1,048,576)
        inner = cap_list(inner, limit.sql if limit is not None else None)
        return sb.fn("coalesce", sb.fn("to_json", inner), sb.cast(sb.s("[]"), "dynamic")), "dynamic"
    return build


def _make_bag(a: list[V]) -> tuple[exp.Expr, str]:
    bags = _flt(sb.fn("list", sb.cast(a[0].sql, "dynamic")), _notnull(a[0]))
    merged = sb.fn("list_reduce", bags, exp.Lambda(
        this=sb.fn("json_merge_patch", exp.column("x"), exp.column("y")),
        expressions=[exp.to_identifier("x"), exp.to_identifier("y")]))
    return sb.fn("coalesce", merged, sb.cast(sb.s("{}"), "dynamic")), "dynamic"


def _zero_default(build: AggBuilder) -> AggBuilder:
    """Kusto's default value of count/countif/dcount/sum/sumif/stdev/variance (and their _if forms)
    is 0 when nothing is aggregated: no input rows, or only nulls, which these ignore
    (learn.microsoft.com/kusto/query/summarize-operator, "Default values of aggregations")."""
    def wrapped(a: list[V]) -> tuple[exp.Expr, str]:
        e, t = build(a)
        zero = sb.interval(timedelta(0)) if t == "timespan" else sb.cast(sb.num(0), t)
        return sb.fn("coalesce", e, zero), t
    return wrapped


def _avg(a: list[V], cond: exp.Expr | None = None) -> tuple[exp.Expr, str]:
    """avg() divides the sum of the non-null values by their count: with none, 0/0 is NaN
    (summarize-operator, the example of aggregates over an empty table)."""
    e = sb.fn("avg", sb.cast(a[0].sql, "real"))
    if cond is not None:
        e = _flt(e, cond)
    return sb.fn("coalesce", e, sb.cast(sb.s("NaN"), "real")), "real"


def _spread(fn: str) -> AggBuilder:
    """stdev/variance: 0 when no value is aggregated (the documented default), else the sample
    statistic (null for a single value, as in SQL)."""
    def build(a: list[V]) -> tuple[exp.Expr, str]:
        none = exp.EQ(this=sb.fn("count", a[0].sql), expression=sb.num(0))
        return exp.Case(ifs=[exp.If(this=none, true=sb.cast(sb.num(0), "real"))],
                        default=sb.fn(fn, a[0].sql)), "real"
    return build


def _percentile(a: list[V]) -> tuple[exp.Expr, str]:
    # Kusto's percentile is nearest-rank: a value of the input, as quantile_disc gives
    p = exp.Div(this=sb.cast(a[1].sql, "real"), expression=sb.num(100.0))
    return sb.fn("quantile_disc", a[0].sql, p), a[0].type


def _dcount(a: list[V]) -> exp.Expr:
    return exp.Count(this=exp.Distinct(expressions=[a[0].sql]))


DUCKDB_AGGREGATES: dict[str, AggBuilder] = {
    "count": lambda a: (sb.fn("count", a[0].sql), "long") if a else (exp.Count(this=exp.Star()), "long"),
    "countif": _zero_default(lambda a: (sb.fn("count_if", a[0].sql), "long")),
    "dcount": lambda a: (_dcount(a), "long"),
    "count_distinct": lambda a: (_dcount(a), "long"),
    "dcountif": lambda a: (_flt(_dcount(a), a[1].sql), "long"),
    "sum": _zero_default(lambda a: _sum(a)),
    "sumif": _zero_default(lambda a: _sum(a, a[1].sql)),
    "avg": lambda a: _avg(a),
    "avgif": lambda a: _avg(a, a[1].sql),
    "min": lambda a: (sb.fn("min", a[0].sql), a[0].type),
    "max": lambda a: (sb.fn("max", a[0].sql), a[0].type),
    "minif": lambda a: (_flt(sb.fn("min", a[0].sql), a[1].sql), a[0].type),
    "maxif": lambda a: (_flt(sb.fn("max", a[0].sql), a[1].sql), a[0].type),
    "make_set": _collect(True, False),
    "makeset": _collect(True, False),
    "make_set_if": _collect(True, True),
    "make_list": _collect(False, False),
    "makelist": _collect(False, False),
    "make_list_if": _collect(False, True),
    "make_bag": _make_bag,
    "take_any": lambda a: (sb.fn("any_value", a[0].sql), a[0].type),
    "any": lambda a: (sb.fn("any_value", a[0].sql), a[0].type),
    "take_anyif": lambda a: (_flt(sb.fn("any_value", a[0].sql), a[1].sql), a[0].type),
    "percentile": _percentile,
    "stdev": _spread("stddev_samp"),
    "variance": _spread("var_samp"),
    "binary_all_or": lambda a: (sb.fn("bit_or", a[0].sql), "long"),
    "binary_all_and": lambda a: (sb.fn("bit_and", a[0].sql), "long"),
}

# arg_max/arg_min and percentiles are lowered by the compiler (they yield several columns).
AGGREGATE_DIALECTS: dict[str, dict[str, AggBuilder]] = {"duckdb": DUCKDB_AGGREGATES, "spark": DUCKDB_AGGREGATES}


def agg_sql(name: str, a: list[V], ctx: Ctx, node: Call) -> tuple[exp.Expr, str]:
    """SQL and KQL result type of an aggregate call, from the target dialect's table."""
    if name == "count" and a and a[0].type not in ("bool", UNKNOWN):
        # Kusto's count() takes no argument or a predicate; Quarry counts the non-null values
        ctx.warn("kusto_rejects", f"Kusto rejects count() of a {a[0].type}: it takes no argument "
                 "or a bool predicate (Quarry counts the values that are not null)", node.span,
                 ["write count() or countif(isnotnull(x))"])
    return AGGREGATE_DIALECTS[ctx.dialect][name](a)
