"""Kusto's term matching (`has`, `has_any`, `has_all`, `has_any_index`) and the NOT of a string
predicate, as SQL: shared by the string operators and the function table."""

from __future__ import annotations

import re

from sqlglot import exp

from kql import sqlbuild as sb
from kql.context import Ctx
from kql.typed import V


def negate(pred: exp.Expr, *operands: V) -> exp.Expr:
    """NOT of a string predicate: a plain NOT when no operand can be NULL (a stored catalog
    string, non-null constants), else NOT COALESCE(pred, false) so a missing string counts as
    "not matched"."""
    if all(v.notnull or (v.is_const and v.const is not None) for v in operands):
        return exp.Not(this=exp.Paren(this=pred))
    return sb.not_true(pred)


_WORD = re.compile(r"[0-9A-Za-z]")


def _term_regex(term: str, cs: bool, prefix: bool = True, suffix: bool = True) -> str:
    """Kusto terms are runs of ASCII letters and digits: a match must not continue a run on
    either side (only where the term itself starts or ends with such a character)."""
    body = re.escape(term)
    left = "(?:^|[^0-9A-Za-z])" if prefix and term and _WORD.match(term[0]) else ""
    right = "(?:$|[^0-9A-Za-z])" if suffix and term and _WORD.match(term[-1]) else ""
    return ("" if cs else "(?i)") + left + body + right


def has_term(a: exp.Expr, term: str, cs: bool = False, prefix: bool = True,
             suffix: bool = True) -> exp.Expr:
    if not term:
        return exp.true()
    # cheap substring test first; the regex only runs on rows that contain the text
    wild = "%" in term or "_" in term
    pre = sb.fn("contains", a, sb.s(term)) if cs else sb.ilike(
        a, "%" + (sb.like_escape(term) if wild else term) + "%", escaped=wild)
    if not (_WORD.match(term[0]) or _WORD.match(term[-1])):
        return pre
    return exp.And(this=pre, expression=sb.fn("regexp_matches", a.copy(), sb.s(_term_regex(term, cs, prefix, suffix))))


def has_any(a: exp.Expr, terms: list[str]) -> exp.Expr:
    terms = [t for t in dict.fromkeys(terms)]
    if not terms:
        return exp.false()
    if len(terms) <= 3:
        out = has_term(a, terms[0])
        for t in terms[1:]:
            out = exp.Or(this=out, expression=has_term(a.copy(), t))
        return exp.Paren(this=out)
    alts = "|".join(_term_regex(t, True) for t in terms if t)
    return sb.fn("regexp_matches", a, sb.s("(?i)(?:" + alts + ")"))


def fn_coalesce_false(e: exp.Expr) -> exp.Expr:
    return sb.fn("coalesce", e, exp.false())


def has_any_subquery(a: exp.Expr, sub: exp.Select, ctx: Ctx) -> exp.Expr:
    """has_any over a tabular list: one regex of all the terms, built once by a scalar subquery."""
    inner = sub.expressions[0].alias_or_name
    term = sb.col(inner)
    piece = exp.DPipe(this=exp.DPipe(this=sb.s("(?:^|[^0-9A-Za-z])"), expression=sb.fn("regexp_escape", sb.cast(term, "string"))),
                      expression=sb.s("(?:$|[^0-9A-Za-z])"))
    agg = sb.fn("string_agg", piece, sb.s("|"))
    pattern = exp.DPipe(this=exp.DPipe(this=sb.s("(?i)(?:"), expression=agg), expression=sb.s(")"))
    build = exp.Select(expressions=[pattern]).from_(
        exp.Subquery(this=sub, alias=exp.TableAlias(this=sb.ident(ctx.alias()))))
    return sb.fn("coalesce", sb.fn("regexp_matches", a, exp.Subquery(this=build)), exp.false())


def has_all(a: exp.Expr, terms: list[str]) -> exp.Expr:
    out: exp.Expr = exp.true()
    for i, t in enumerate(dict.fromkeys(terms)):
        term = has_term(a.copy(), t)
        out = term if i == 0 else exp.And(this=out, expression=term)
    return exp.Paren(this=out)


def term_piece(term: exp.Expr) -> exp.Expr:
    """A regex, built at run time, matching the text ``term`` as a whole term (has)."""
    return exp.DPipe(this=exp.DPipe(this=sb.s("(?i)(?:^|[^0-9A-Za-z])"),
                                    expression=sb.fn("regexp_escape", sb.cast(term, "string"))),
                     expression=sb.s("(?:$|[^0-9A-Za-z])"))


def has_all_subquery(a: exp.Expr, sub: exp.Select, ctx: Ctx) -> exp.Expr:
    """has_all over a tabular list: every term of the subquery's first column is in ``a``."""
    inner = sub.expressions[0].alias_or_name
    every = sb.fn("bool_and", sb.fn("regexp_matches", a, term_piece(sb.col(inner))))
    check = exp.Select(expressions=[every]).from_(
        exp.Subquery(this=sub, alias=exp.TableAlias(this=sb.ident(ctx.alias()))))
    return sb.fn("coalesce", exp.Subquery(this=check), exp.true())


def has_terms_of_array(a: exp.Expr, arr: exp.Expr, every: bool) -> exp.Expr:
    """has_any / has_all over a dynamic array known only at run time (a `toscalar(... |
    summarize make_set(x))`, a column): a test per element."""
    t = sb.lambda_param("t", a, arr)
    test = exp.Lambda(this=sb.fn("regexp_matches", a.copy(), term_piece(exp.column(t))),
                      expressions=[exp.to_identifier(t)])
    elems = exp.Cast(this=sb.fn("json_extract_string", arr, sb.s("$[*]")), to=exp.DataType.build("VARCHAR[]"))
    agg = sb.fn("list_bool_and" if every else "list_bool_or", sb.fn("list_transform", elems, test))
    return sb.fn("coalesce", agg, exp.true() if every else exp.false())
