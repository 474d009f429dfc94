"""parse and parse-kv: text to typed columns with regular expressions."""

from __future__ import annotations

import re
from typing import Any

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Env, Scope
from kql.registry import Binder, operator
from kql.relation import Rel
from kql.typed import (
    STRINGY,
    as_string,
    normalize_type,
)


@operator("parse-kv")
def op_parse_kv(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    """parse-kv with given delimiters (optionally quotes) or a two-group regex.

    As documented: only the listed keys are extracted, the first occurrence of a key wins,
    spaces around keys and values are ignored, and a missing key gives "" for a string column
    and null for other types.
    """
    if not rel.open:
        rel = bd.wrap(rel)
    assert op.operand is not None
    src = as_string(bd.scalar(op.operand, Scope(env, rel)))
    opts: dict[str, list[str]] = {}
    for p in op.params:
        if p.name not in ("pair_delimiter", "kv_delimiter", "quote", "regex"):
            raise bd.ctx.fail("unsupported", f"parse-kv {p.name} is not supported", p.span)
        opts.setdefault(p.name, []).append(str(p.value))
    if "regex" not in opts and not ("pair_delimiter" in opts and "kv_delimiter" in opts):
        raise bd.ctx.fail("unsupported", "parse-kv needs pair_delimiter and kv_delimiter, or regex", op.span)
    if len(opts.get("pair_delimiter", [" "])[0]) != 1:
        raise bd.ctx.fail("unsupported", "parse-kv with a pair_delimiter longer than one character is not supported",
                            op.span)
    for (nm, tname) in op.extra:
        typ = normalize_type(tname)
        if "regex" in opts:
            pat = sb.s(opts["regex"][0])
            keys = sb.fn("regexp_extract_all", src.copy(), pat, sb.num(1))
            vals = sb.fn("regexp_extract_all", src.copy(), pat.copy(), sb.num(2))
            e: exp.Expr = sb.fn("list_extract", vals, sb.fn("list_position", keys, sb.s(nm.name)))
        else:
            pd, kv = re.escape(opts["pair_delimiter"][0]), re.escape(opts["kv_delimiter"][0])
            head = f"(?:^|{pd})\\s*{re.escape(nm.name)}\\s*{kv}\\s*"
            plain = sb.fn("regexp_extract", src.copy(), sb.s(head + f"([^{pd}]*)"), sb.num(1))
            e = sb.fn("trim", plain)
            for q in opts.get("quote", []):
                open_q, close_q = re.escape(q[0]), re.escape(q[-1])
                quoted_pat = head + f"{open_q}([^{close_q}]*){close_q}"
                e = exp.Case(ifs=[exp.If(this=sb.fn("regexp_matches", src.copy(), sb.s(quoted_pat)),
                                         true=sb.fn("regexp_extract", src.copy(), sb.s(quoted_pat), sb.num(1)))],
                             default=e)
            e = exp.Case(ifs=[exp.If(this=sb.fn("regexp_matches", src.copy(), sb.s(head)), true=e)], default=exp.Null())
        if typ in STRINGY:
            e = sb.fn("coalesce", e, sb.s(""))
        elif typ == "datetime":
            e = F.string_to_datetime(exp.Nullif(this=e, expression=sb.s("")))
        else:
            e = sb.try_cast(exp.Nullif(this=e, expression=sb.s("")), typ)
        rel.cols[nm.name] = typ
        rel.exprs[nm.name] = e
    return rel


@operator("parse")
def op_parse(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    if not rel.open:
        rel = bd.wrap(rel)
    assert op.operand is not None
    src = as_string(bd.scalar(op.operand, Scope(env, rel)))
    kind = "simple"
    for p in op.params:
        if p.name == "kind":
            kind = str(p.value)
    parts: list[tuple[str, Any]] = list(op.extra)
    regex = ["^"]
    names: list[tuple[str, str]] = []
    for i, (k, val) in enumerate(parts):
        last = i == len(parts) - 1
        if k == "lit":
            regex.append(val if kind == "regex" else re.escape(val))
        elif k == "star":
            regex.append(".*?" if not last else ".*")
        else:
            nm, typ = val
            t = normalize_type(typ)
            names.append((nm.name, t))
            # simple mode: a typed column only takes text of its type (parse-operator)
            if kind != "regex" and t in ("long", "int"):
                regex.append(r"(-?\d+)")
            elif kind != "regex" and t in ("real", "decimal"):
                regex.append(r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
            else:
                regex.append("(.*?)" if not last else "(.*)")
    regex.append("$")
    pattern = "(?s)" + "".join(regex)
    for i, (nm, typ) in enumerate(names, start=1):
        e = sb.fn("regexp_extract", src.copy(), sb.s(pattern), sb.num(i))
        if typ == "datetime":
            e = F.string_to_datetime(exp.Nullif(this=e, expression=sb.s("")))
        elif typ not in STRINGY:
            e = sb.try_cast(exp.Nullif(this=e, expression=sb.s("")), typ)
        rel.cols[nm] = typ
        rel.exprs[nm] = e
    if op.kind == "parse-where":
        rel.where.append(sb.fn("regexp_matches", src.copy(), sb.s(pattern)))
    return rel
