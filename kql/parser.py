"""Parse KQL text into the syntax tree of ``kql.nodes`` (Lark LALR, built once and cached)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from kql import nodes as n
from kql.diagnostics import Diagnostic, make
from kql.literals import parse_datetime, parse_timespan

GRAMMAR = Path(__file__).with_name("grammar.lark")


def _paren_inner(token: Any) -> str:
    """The text between the parentheses of a `time(...)`/`datetime(...)` literal token."""
    text = str(token)
    return text[text.index("(") + 1 : -1].strip()

@cache
def _lark() -> Lark:
    return Lark(
        GRAMMAR.read_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        # Lark keeps the LALR tables in a temp file keyed by the grammar's hash: building them
        # takes ~0.4 s, loading ~15 ms, which `quarry check` pays on every invocation.
        cache=True,
    )


class KqlSyntaxError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


# ---------------------------------------------------------------- literal decoding

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def decode_string(raw: str) -> str:
    if raw[:1] in "hH" and len(raw) > 1 and raw[1] in "@\"'`":
        raw = raw[1:]  # obfuscated strings (h"...") only hide the value from logs
    if raw.startswith("@"):
        q = raw[1]
        return raw[2:-1].replace(q + q, q)
    if raw.startswith("```") or raw.startswith("'''"):
        return raw[3:-3]
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", body[i + 2 : i + 6]):
                code = int(body[i + 2 : i + 6], 16)
                low = body[i + 6 : i + 12]
                if 0xD800 <= code < 0xDC00 and re.fullmatch(r"\\u[dD][c-fC-F][0-9A-Fa-f]{2}", low):
                    # a UTF-16 surrogate pair (`\ud83d\ude00`) is one character; a lone
                    # surrogate stays one and kql.limits refuses the literal
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00)
                    i += 6
                out.append(chr(code))
                i += 6
                continue
            if nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", body[i + 2 : i + 4]):
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------- tree building


def _span(meta: Any) -> n.Span:
    if getattr(meta, "empty", True):
        return n.NO_SPAN
    return n.Span(meta.start_pos, meta.end_pos)


def _tspan(tok: Token) -> n.Span:
    return n.Span(tok.start_pos or 0, tok.end_pos or 0)


def _nodes(items: Any) -> tuple[Any, ...]:
    return tuple(i for i in items if i is not None)


def _balanced(op: str, items: list[n.Node]) -> n.Node:
    """A balanced tree keeps recursion depth logarithmic in the number of terms."""
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    left, right = _balanced(op, items[:mid]), _balanced(op, items[mid:])
    span = n.Span(left.span.start, right.span.end)
    return n.Binary(span, op, left, right, span)


class _MisplacedToken(Exception):
    """A token the grammar admits only to get past the lexer (see search_tables)."""

    def __init__(self, span: n.Span, found: str, expected: str) -> None:
        super().__init__(found)
        self.span, self.found, self.expected = span, found, expected


class _BadLiteral(Exception):
    """A literal the grammar accepts whose value is out of range."""

    def __init__(self, span: n.Span, message: str) -> None:
        super().__init__(message)
        self.span, self.message = span, message


@v_args(meta=True)
class Builder(Transformer[Token, n.Node]):
    # statements
    def start(self, meta: Any, ch: list[Any]) -> n.Query:
        return n.Query(_span(meta), _nodes(ch))

    def let_stmt(self, meta: Any, ch: list[Any]) -> n.Let:
        name, value = ch
        return n.Let(_span(meta), name.name, name.span, value)

    def fn_def(self, meta: Any, ch: list[Any]) -> n.FnDef:
        body = ch[-1]
        return n.FnDef(_span(meta), _nodes(ch[:-1]), body)

    def fn_body(self, meta: Any, ch: list[Any]) -> tuple[n.Node, ...]:
        return _nodes(ch)

    def param(self, meta: Any, ch: list[Any]) -> n.Param:
        name, typ, default = ch
        return n.Param(_span(meta), name.name, typ, default)

    def scalar_param(self, meta: Any, ch: list[Any]) -> str:
        return str(ch[0].name)

    def table_param_any(self, meta: Any, ch: list[Any]) -> None:
        return None

    def table_param_cols(self, meta: Any, ch: list[Any]) -> None:
        return None

    def col_decl(self, meta: Any, ch: list[Any]) -> tuple[str, str, n.Span]:
        return (ch[0].name, ch[1].name, ch[1].span)

    def set_stmt(self, meta: Any, ch: list[Any]) -> n.SetStmt:
        return n.SetStmt(_span(meta), ch[0].name)

    def declare_stmt(self, meta: Any, ch: list[Any]) -> n.DeclareParams:
        return n.DeclareParams(_span(meta), tuple(c for c in ch if c is not None))

    # pipelines and sources
    def pipe(self, meta: Any, ch: list[Any]) -> n.Pipe:
        return n.Pipe(_span(meta), ch[0], ch[1])

    def union_src(self, meta: Any, ch: list[Any]) -> n.Source:
        return n.Source(_span(meta), "union", params=ch[0], items=_nodes(ch[1:]))

    def print_src(self, meta: Any, ch: list[Any]) -> n.Source:
        return n.Source(_span(meta), "print", exprs=ch[0])

    def range_src(self, meta: Any, ch: list[Any]) -> n.Source:
        return n.Source(_span(meta), "range", items=tuple(ch[1:]), extra=ch[0].name)

    def datatable_src(self, meta: Any, ch: list[Any]) -> n.Source:
        cols = tuple(c for c in ch[:-1] if c is not None)
        values = ch[-1] or ()
        return n.Source(_span(meta), "datatable", items=tuple(values), extra=cols)

    def externaldata(self, meta: Any, ch: list[Any]) -> n.Source:
        return n.Source(_span(meta), "externaldata")

    def search_src(self, meta: Any, ch: list[Any]) -> n.Source:
        params, tables, pred = ch
        return n.Source(_span(meta), "search", params=params, items=tables or (), extra=pred)

    def find_src(self, meta: Any, ch: list[Any]) -> n.Source:
        params, tables, pred, proj = ch
        return n.Source(_span(meta), "find", params=params, items=tables or (), extra=(pred, proj))

    def search_tables(self, meta: Any, ch: list[Any]) -> tuple[n.Node, ...]:
        if ch and isinstance(ch[0], Token):
            if str(ch[0]) != "in":
                raise _MisplacedToken(_tspan(ch[0]), str(ch[0]), "in (tables)")
            ch = ch[1:]
        return _nodes(ch)

    def search_all(self, meta: Any, ch: list[Any]) -> n.Star:
        return n.Star(_span(meta))

    def find_project_smart(self, meta: Any, ch: list[Any]) -> None:
        return None  # the default output schema

    def find_project(self, meta: Any, ch: list[Any]) -> tuple[tuple[n.Name, n.Name | None], ...]:
        return tuple(ch)

    def find_column(self, meta: Any, ch: list[Any]) -> tuple[n.Name, n.Name | None]:
        return (ch[0], ch[1])

    def column_term(self, meta: Any, ch: list[Any]) -> n.ColumnTerm:
        return n.ColumnTerm(_span(meta), ch[0], ch[1])

    # operators
    def _op(self, meta: Any, kind: str, **kw: Any) -> n.Operator:
        return n.Operator(_span(meta), kind, **kw)

    def where_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "where", operand=ch[0])

    def project_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "project", exprs=ch[0])

    def project_away_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "project-away", names=tuple(ch))

    def project_keep_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "project-keep", names=tuple(ch))

    def project_rename_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "project-rename", renames=tuple(ch))

    def rename(self, meta: Any, ch: list[Any]) -> tuple[n.Name, n.Name]:
        return (ch[0], ch[1])

    def project_reorder_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "project-reorder", names=tuple(c[0] for c in ch), extra=ch)

    def reorder_item(self, meta: Any, ch: list[Any]) -> tuple[Any, str | None]:
        return (ch[0], str(ch[1]) if ch[1] is not None else None)

    def col_pattern(self, meta: Any, ch: list[Any]) -> n.Node:
        c = ch[0]
        if isinstance(c, Token):
            return n.WildName(_tspan(c), str(c))
        return c  # type: ignore[no-any-return]

    def extend_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "extend", exprs=ch[0])

    def summarize_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "summarize", params=ch[0], exprs=ch[1] or (), by=ch[2] or ())

    def sort_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "sort", sort=tuple(ch))

    def sort_item(self, meta: Any, ch: list[Any]) -> n.SortItem:
        expr, d, nulls = ch
        nl = None if nulls is None else str(nulls).split()[-1]
        return n.SortItem(_span(meta), expr, str(d) if d is not None else None, nl)

    def take_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "take", operand=ch[0])

    def top_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "top", operand=ch[0], sort=(ch[1],))

    def distinct_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        if isinstance(ch[0], Token):
            return self._op(meta, "distinct", extra="*")
        return self._op(meta, "distinct", exprs=ch[0])

    def count_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "count")

    def join_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "join", params=ch[0], operand=ch[1], conds=_nodes(ch[2:]))

    def lookup_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "lookup", params=ch[0], operand=ch[1], conds=_nodes(ch[2:]))

    def union_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "union", params=ch[0], conds=_nodes(ch[1:]))

    def wild_table(self, meta: Any, ch: list[Any]) -> n.WildName:
        return n.WildName(_span(meta), str(ch[0]))

    def mv_expand_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        items = [c for c in ch[1:-1] if c is not None]
        return self._op(meta, "mv-expand", params=ch[0], exprs=tuple(i[0] for i in items),
                        operand=ch[-1], extra=tuple(i[1] for i in items))

    def partition_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "partition", params=ch[0], names=(ch[1],),
                        extra=tuple(c for c in ch[2:] if isinstance(c, n.Operator)))

    def make_series_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        params, rest = ch[0], ch[1:]
        aggs = [c for c in rest if isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], n.NamedExpr)]
        axis, start, end, step, by = rest[len(aggs):]
        # extra: (defaults per aggregate, axis, from, to, step)
        return self._op(meta, "make-series", params=params, exprs=tuple(a[0] for a in aggs), by=by or (),
                        extra=(tuple(a[1] for a in aggs), axis, start, end, step))

    def make_series_in_range(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "other", extra=("make-series in range()", ""))

    def ms_agg(self, meta: Any, ch: list[Any]) -> tuple[n.NamedExpr, n.Node | None]:
        return (ch[0], ch[1])

    def parse_kv_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        keys = tuple(c for c in ch[1:] if isinstance(c, tuple) and isinstance(c[0], n.Name))
        params = tuple(c for c in ch[1:] if isinstance(c, n.OpParam))
        return self._op(meta, "parse-kv", operand=ch[0], params=params, extra=keys)

    def kv_key(self, meta: Any, ch: list[Any]) -> tuple[n.Name, str]:
        return (ch[0], ch[1].name)

    def kv_param(self, meta: Any, ch: list[Any]) -> n.OpParam:
        return n.OpParam(_span(meta), ch[0].name, getattr(ch[1], "value", ch[1]))

    def mv_apply_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        items = [c for c in ch[1:] if isinstance(c, tuple)]
        rest = [c for c in ch[1 + len(items):]]
        limit, ops = rest[0], tuple(c for c in rest[1:] if isinstance(c, n.Operator))
        # extra: (types of the expanded items, the subquery's operators)
        return self._op(meta, "mv-apply", params=ch[0], exprs=tuple(i[0] for i in items),
                        operand=limit, extra=(tuple(i[1] for i in items), ops))

    def mv_item(self, meta: Any, ch: list[Any]) -> tuple[n.NamedExpr, str | None]:
        return (ch[0], ch[1].name if ch[1] is not None else None)

    def parse_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "parse", params=ch[0], operand=ch[1], extra=tuple(ch[2:]))

    def parse_literal(self, meta: Any, ch: list[Any]) -> tuple[str, Any]:
        return ("lit", ch[0].value)

    def parse_column(self, meta: Any, ch: list[Any]) -> tuple[str, Any]:
        return ("col", (ch[0], ch[1].name if ch[1] is not None else "string"))

    def parse_star(self, meta: Any, ch: list[Any]) -> tuple[str, Any]:
        return ("star", None)

    def as_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "as", params=ch[0], names=(ch[1],))

    def serialize_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "serialize", exprs=ch[0] or ())

    def invoke_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        name = ch[0]
        return self._op(meta, "invoke", operand=n.Call(_span(meta), name.name, name.span, ch[1] or ()))

    def evaluate_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        params, name, args, schema = ch
        call = n.Call(_span(meta), name.name, name.span, args or ())
        return self._op(meta, "evaluate", params=params, operand=call, extra=schema)

    def evaluate_schema(self, meta: Any, ch: list[Any]) -> tuple[bool, tuple[tuple[str, str, n.Span], ...]]:
        # (keeps every input column (`*`), declared columns)
        star = bool(ch) and not isinstance(ch[0], tuple)
        return (star, tuple(c for c in ch if isinstance(c, tuple)))

    def search_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "search", params=ch[0], operand=ch[1])

    def top_nested_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "top-nested", extra=tuple(ch))

    def top_nested_level(self, meta: Any, ch: list[Any]) -> tuple[Any, ...]:
        count, of, others, by, direction = ch
        return (count, of, others, by, str(direction) if direction is not None else None, _span(meta))

    def getschema_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "getschema")

    def sample_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        return self._op(meta, "sample", operand=ch[0])

    def other_op(self, meta: Any, ch: list[Any]) -> n.Operator:
        text = str(ch[0])
        word = re.match(r"[\w-]+", text)
        return self._op(meta, "other", extra=(word.group(0) if word else text, text))

    def op_params(self, meta: Any, ch: list[Any]) -> tuple[n.OpParam, ...]:
        return tuple(ch)

    def op_param(self, meta: Any, ch: list[Any]) -> n.OpParam:
        key = str(ch[0]).rstrip("=").strip()
        val = ch[1]
        value = val.name if isinstance(val, n.Name) else getattr(val, "value", val)
        return n.OpParam(_span(meta), key, value)

    def named_list(self, meta: Any, ch: list[Any]) -> tuple[n.NamedExpr, ...]:
        return tuple(ch)

    def named_expr(self, meta: Any, ch: list[Any]) -> n.NamedExpr:
        return n.NamedExpr(_span(meta), (), ch[0])

    def assign(self, meta: Any, ch: list[Any]) -> n.NamedExpr:
        return n.NamedExpr(_span(meta), (ch[0].name,), ch[1])

    def bracket_target(self, meta: Any, ch: list[Any]) -> n.Name:
        return n.Name(_span(meta), ch[0].value, bracketed=True)

    def bracket_ref(self, meta: Any, ch: list[Any]) -> n.NamedExpr:
        return n.NamedExpr(_span(meta), (), ch[0])

    def tuple_assign(self, meta: Any, ch: list[Any]) -> n.NamedExpr:
        return n.NamedExpr(_span(meta), tuple(c.name for c in ch[:-1]), ch[-1])

    # expressions
    def or_(self, meta: Any, ch: list[Any]) -> n.Node:
        return _balanced("or", ch)

    def and_(self, meta: Any, ch: list[Any]) -> n.Node:
        return _balanced("and", ch)

    def compare(self, meta: Any, ch: list[Any]) -> n.Binary:
        op = "!=" if str(ch[1]) == "<>" else str(ch[1])
        return n.Binary(_span(meta), op, ch[0], ch[2], _tspan(ch[1]))

    def binop(self, meta: Any, ch: list[Any]) -> n.Binary:
        return n.Binary(_span(meta), str(ch[1]), ch[0], ch[2], _tspan(ch[1]))

    def strop(self, meta: Any, ch: list[Any]) -> n.StrOp:
        op = str(ch[1])
        if op.startswith("not"):  # notcontains: the old spelling of !contains
            op = "!" + op[3:]
        return n.StrOp(_span(meta), op, ch[0], ch[2], _tspan(ch[1]))

    def in_(self, meta: Any, ch: list[Any]) -> n.InOp:
        return n.InOp(_span(meta), str(ch[1]), ch[0], tuple(ch[2] or ()), _tspan(ch[1]))

    def between(self, meta: Any, ch: list[Any]) -> n.Between:
        return n.Between(_span(meta), str(ch[1]).startswith("!"), ch[0], ch[2], ch[3])

    def matches(self, meta: Any, ch: list[Any]) -> n.Matches:
        return n.Matches(_span(meta), ch[0], ch[1])

    def neg(self, meta: Any, ch: list[Any]) -> n.Node:
        op, operand = str(ch[0]), ch[1]
        if isinstance(operand, n.Literal) and operand.type in ("long", "real", "timespan"):
            value = operand.value if op == "+" else -operand.value
            return n.Literal(_span(meta), value, operand.type)
        return n.Neg(_span(meta), op, operand)

    def member(self, meta: Any, ch: list[Any]) -> n.Member:
        return n.Member(_span(meta), ch[0], ch[1].name)

    def index(self, meta: Any, ch: list[Any]) -> n.Index:
        return n.Index(_span(meta), ch[0], ch[1])

    def ref(self, meta: Any, ch: list[Any]) -> n.Node:
        node: n.Node = ch[0]
        return node

    def call(self, meta: Any, ch: list[Any]) -> n.Call:
        from kql.functions import ALIASES

        name = ch[0]
        return n.Call(_span(meta), ALIASES.get(name.name, name.name), name.span, tuple(ch[1] or ()))

    def paren(self, meta: Any, ch: list[Any]) -> n.Paren:
        return n.Paren(_span(meta), ch[0])

    def array(self, meta: Any, ch: list[Any]) -> n.ArrayLit:
        return n.ArrayLit(_span(meta), tuple(ch[0] or ()))

    def object(self, meta: Any, ch: list[Any]) -> n.ObjectLit:
        return n.ObjectLit(_span(meta), tuple(c for c in ch if c is not None))

    def pair(self, meta: Any, ch: list[Any]) -> tuple[str, n.Node]:
        return (ch[0].value, ch[1])

    def side_ref(self, meta: Any, ch: list[Any]) -> n.SideRef:
        return n.SideRef(_span(meta), str(ch[0])[1:], ch[1].name)

    def bracket_name(self, meta: Any, ch: list[Any]) -> n.Name:
        return n.Name(_span(meta), ch[0].value, bracketed=True)

    def args(self, meta: Any, ch: list[Any]) -> tuple[n.Node, ...]:
        return tuple(ch)

    def star_arg(self, meta: Any, ch: list[Any]) -> n.Star:
        return n.Star(_span(meta))

    def named_arg(self, meta: Any, ch: list[Any]) -> n.NamedArg:
        return n.NamedArg(_span(meta), ch[0].name, ch[1])

    def arg_list(self, meta: Any, ch: list[Any]) -> tuple[n.Node, ...]:
        return tuple(ch)

    def datatable_values(self, meta: Any, ch: list[Any]) -> tuple[n.Node, ...]:
        return tuple(c for c in ch if c is not None)

    def string(self, meta: Any, ch: list[Any]) -> n.Literal:
        return n.Literal(_span(meta), "".join(decode_string(str(t)) for t in ch), "string")

    def int_lit(self, meta: Any, ch: list[Any]) -> n.Literal:
        text = str(ch[0])
        # decimal digits are decimal even with leading zeros (Kusto: 010 is ten); 0x is hex
        value = int(text[2:], 16) if text[:2].lower() == "0x" else int(text, 10)
        if value >= 1 << 63:
            raise _BadLiteral(_span(meta), f"the number {text} does not fit in a long (64-bit signed integer)")
        return n.Literal(_span(meta), value, "long")

    def real_lit(self, meta: Any, ch: list[Any]) -> n.Literal:
        return n.Literal(_span(meta), float(str(ch[0])), "real")

    def bool_lit(self, meta: Any, ch: list[Any]) -> n.Literal:
        return n.Literal(_span(meta), str(ch[0]) == "true", "bool")

    def timespan(self, meta: Any, ch: list[Any]) -> n.Literal:
        td = parse_timespan(str(ch[0]))
        if td is None:
            raise _BadLiteral(_span(meta), f"the timespan {str(ch[0])} is out of range")
        return n.Literal(_span(meta), td, "timespan")

    def time_lit(self, meta: Any, ch: list[Any]) -> n.Node:
        inner = _paren_inner(ch[0])
        if inner == "null":
            return n.Literal(_span(meta), None, "timespan")
        td = parse_timespan(inner)
        if td is None:
            raise _BadLiteral(_span(meta), f"cannot read {inner!r} as a timespan (such as 1h, 30m, 1.02:03:04), "
                                           "or it is out of range")
        return n.Literal(_span(meta), td, "timespan")

    def datetime_lit(self, meta: Any, ch: list[Any]) -> n.Node:
        inner = _paren_inner(ch[0])
        if inner == "null":
            return n.Literal(_span(meta), None, "datetime")
        dt = parse_datetime(inner)
        if dt is None:
            raise _BadLiteral(_span(meta), f"cannot read {inner!r} as a datetime (such as 2024-01-31, "
                                           "2024-01-31T12:00:00Z or 01/31/2024 12:00)")
        return n.Literal(_span(meta), dt, "datetime")

    def name(self, meta: Any, ch: list[Any]) -> n.Name:
        return n.Name(_tspan(ch[0]), str(ch[0]))


# Lark terminal names in KQL words, for syntax errors.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "a number",
    "REAL": "a number",
    "TIMESPAN": "a timespan such as 1d",
    "VBAR": "'|'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "DOT": "'.'",
    "_SEMI": "';'",
    "EQUAL": "'='",
    "COLON": "':'",
    "STAR": "'*'",
    "CMP_OP": "a comparison (==, !=, <, >, =~ ...)",
    "STR_OP": "a string operator (has, contains, startswith ...)",
    "IN_OP": "in / !in / in~ / has_any",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'/' or '%'",
    "AND": "'and'",
    "OR": "'or'",
    "_BY": "'by'",
    "_ON": "'on'",
    "ORDER_DIR": "asc or desc",
    "NULLS_POS": "nulls first / nulls last",
    "$END": "the end of the query",
    "DATETIME_LIT": "datetime(...)",
    "PARAM_NAME": "an operator parameter such as kind=",
    "WILD_NAME": "a name pattern such as Device*",
    "BETWEEN_OP": "between",
    "MATCHES": "matches regex",
    "TIME_LIT": "time(...)",
    "DOLLAR_SIDE": "$left / $right",
    "EXTERNALDATA": "externaldata",
    "LBRACE": "'{'",
}


_EXPR_START = {"NAME", "STRING", "INT", "REAL", "TIMESPAN", "DATETIME_LIT", "TIME_LIT", "ADD_OP", "LPAR",
               "LSQB", "LBRACE", "DOLLAR_SIDE", "TRUE", "FALSE", "EXTERNALDATA", "UNION", "PRINT", "RANGE",
               "DATATABLE"}
_OPERATOR_WORDS = ("where", "project", "extend", "summarize", "join", "sort", "take", "top", "distinct",
                   "union", "mv-expand", "parse", "count")


def _keyword(e: str) -> str | None:
    if e not in _terminal_names():
        return None
    pat = _lark().get_terminal(e).pattern
    return str(pat.value) if pat.type == "str" else None


def _expected_words(expected: set[str]) -> list[str]:
    words: list[str] = []
    rest = set(expected) - {"OTHER_OP"}
    if {"NAME", "STRING", "INT"} <= rest:
        words.append("an expression")
        rest -= _EXPR_START
    keywords = {e for e in rest if (_keyword(e) or "") in _OPERATOR_WORDS}
    if len(keywords) > 5:
        words.append("a tabular operator (" + ", ".join(_OPERATOR_WORDS[:8]) + ", ...)")
        rest -= {e for e in rest if _keyword(e) and re.fullmatch(r"[a-z-]+", _keyword(e) or "")}
    for e in sorted(rest):
        w = _TERMINAL_WORDS.get(e)
        if w is None:
            kw = _keyword(e)
            w = f"'{kw}'" if kw is not None else e.lower().replace("_", " ")
        if w not in words:
            words.append(w)
    return words


def _did_you_mean(found: str, expected: set[str]) -> str | None:
    import difflib

    keywords = [k for k in (_keyword(e) for e in expected) if k and re.fullmatch(r"[a-z-]+", k)]
    close = difflib.get_close_matches(found, keywords, n=1, cutoff=0.6)
    return close[0] if close else None


@cache
def _terminal_names() -> frozenset[str]:
    return frozenset(t.name for t in _lark().terminals)


class _FlatBuilder(Transformer_NonRecursive, Builder):
    """Builder's rules, applied without recursion."""


def parse(text: str) -> n.Query:
    """Parse a whole query; raises KqlSyntaxError with a positioned diagnostic."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise KqlSyntaxError(_syntax_diagnostic(text, e)) from None
    try:
        # not Builder().transform: that recurses once per tree level, and `1+1+...` is as
        # deep as it is long (500 terms ended in RecursionError); kql.limits bounds the depth
        # the compiler then sees
        result = _FlatBuilder().transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, _MisplacedToken):
            bad = e.orig_exc
            raise KqlSyntaxError(make(text, "syntax", f"syntax error: unexpected {bad.found!r}; expected {bad.expected}",
                                      bad.span, [])) from None
        if isinstance(e.orig_exc, _BadLiteral):
            raise KqlSyntaxError(make(text, "syntax", e.orig_exc.message, e.orig_exc.span, [])) from None
        raise
    assert isinstance(result, n.Query)
    return result


def _syntax_diagnostic(text: str, e: UnexpectedInput) -> Diagnostic:
    pos = e.pos_in_stream if e.pos_in_stream is not None else len(text)
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            found = "the end of the query"
            span = n.Span(len(text), len(text))
        else:
            found = repr(str(tok))
            span = n.Span(tok.start_pos or pos, tok.end_pos or pos + 1)
        expected = set(e.expected)
        try:
            # LALR reports the state before its pending reductions: ask the parser what it
            # would really accept next, which is what a reader wants to see
            accepted = e.interactive_parser.accepts() if e.interactive_parser else set()
            expected = set(accepted) or expected
        except Exception:  # noqa: BLE001 - a better message is optional, the error is not
            pass
        words = _expected_words(expected)
        guess = _did_you_mean(str(tok), expected) if tok.type == "NAME" else None
        if guess:
            found += f" (did you mean '{guess}'?)"
    elif isinstance(e, UnexpectedCharacters):
        ch = text[pos] if pos < len(text) else ""
        found = f"character {ch!r}"
        span = n.Span(pos, pos + 1)
        words = _expected_words(set(e.allowed or ()))
    elif isinstance(e, UnexpectedEOF):
        found = "the end of the query"
        span = n.Span(len(text), len(text))
        words = _expected_words(set(e.expected))
    else:  # pragma: no cover - lark has no other kinds
        found, span, words = "input", n.Span(pos, pos + 1), []
    msg = f"syntax error: unexpected {found}"
    hints = []
    if (isinstance(e, UnexpectedToken) and e.token.type == "NAME" and "$END" in e.expected
            and (e.token.column or 0) == 1 and e.token.line > 1):
        hints.append("a second query seems to start here: statements are separated by ';', "
                     "and a query returns the result of its last statement")
    if words:
        shown = ", ".join(words[:12]) + (", ..." if len(words) > 12 else "")
        msg += f"; expected {shown}"
        hints.append("expected one of: " + ", ".join(words))
    return make(text, "syntax", msg, span, hints)
