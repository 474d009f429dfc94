"""Size limits on a query, checked before the compiler and the engine see it.

A query that is too big or too deeply nested is refused with a positioned ``too_complex``
diagnostic naming the limit, instead of being handed on: the compiler recurses over the syntax
tree (a deep tree ends in RecursionError), and DuckDB's optimizer is quadratic in the number of
conjuncts over one column (2,000 `and`-ed comparisons took 7.6 s and 2.3 GB here; 10,000
crashed the process). The parser itself builds the tree without recursion and in linear time,
so the text-size limit bounds the time spent before these checks.

The walk below is iterative for the same reason. ``KqlLimits`` travels in ``CompileOptions``;
``current()`` gives the limits of the compilation running on this thread (or task) to the
function builders, which bound the arrays that ``range()``, ``make_list()``/``make_set()`` and
``make-series`` produce.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kql import nodes as n
from kql.diagnostics import Diagnostic, make

# Kusto's own bound: range() returns at most 2^20 values, and make_list()/make_set() default
# (and cap) maxSize at 1,048,576 (the range function and make_list pages of the KQL reference).
KUSTO_MAX_ARRAY = 1_048_576


@dataclass(frozen=True)
class KqlLimits:
    # UTF-8 bytes of the query text (the largest corpus query is 37 KB)
    max_query_bytes: int = 131_072
    # nesting of the syntax tree: parentheses, function calls, unary/binary operators that are
    # not and/or (those are balanced), sub-queries, and each stage of a pipeline (the compiler
    # recurses along the pipeline: about 90 stages is as far as it goes; the corpus reaches 35)
    max_depth: int = 100
    # syntax nodes in the whole query
    max_nodes: int = 50_000
    # syntax nodes in one scalar expression (a `where` predicate, an `extend` item...); the
    # literal items of an `in (...)` list count as list items instead
    max_expression_nodes: int = 6_000
    # items of one list: `in (...)`, an array literal, a datatable's values, an operator's
    # columns, a function's arguments
    max_list_items: int = 10_000
    # elements an array-producing function or operator may produce per value (range(),
    # make_list/make_set, make-series bins); more are cut, as Kusto does
    max_array_elements: int = KUSTO_MAX_ARRAY


_current: contextvars.ContextVar[KqlLimits | None] = contextvars.ContextVar("kql_limits", default=None)
_DEFAULT = KqlLimits()


def current() -> KqlLimits:
    """The limits of the compilation running here (the defaults outside one)."""
    return _current.get() or _DEFAULT


_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("kql_deadline", default=None)


@contextmanager
def using(limits: KqlLimits, deadline: float | None = None) -> Iterator[None]:
    token = _current.set(limits)
    dtoken = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(dtoken)
        _current.reset(token)


class CompileDeadline(Exception):
    """The compilation ran past its deadline (the query's timeout)."""


def check_deadline() -> None:
    """Called by the compiler at each operator: a compile cannot be interrupted from outside (it
    is Python on a worker thread), so it stops itself once the query's time is up."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise CompileDeadline()


class TooComplex(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _fail(text: str, message: str, span: n.Span, setting: str) -> TooComplex:
    hint = f"the limit is the server setting {setting}; simplify the query or split it"
    return TooComplex(make(text, "too_complex", message, span, [hint]))


def check_text(text: str, limits: KqlLimits) -> None:
    """Before parsing: the size of the text, and characters no engine can take."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_query_bytes:
        raise _fail(text, f"the query text is {size:,} bytes; the limit is {limits.max_query_bytes:,} "
                    "bytes (query_max_bytes)", n.Span(0, min(len(text), 1)), "query_max_bytes")
    bad = find_surrogate(text)
    if bad >= 0:
        raise TooComplex(make(text, "invalid_text", "the query text holds a lone UTF-16 surrogate "
                              f"(U+{ord(text[bad]):04X}), which is not a character", n.Span(bad, bad + 1),
                              ["send the query as valid Unicode text"]))


def find_surrogate(text: str) -> int:
    """Index of the first lone surrogate in ``text`` (a JSON ``"\\ud800"`` decodes to one), or -1.
    Such a string cannot be encoded as UTF-8, so it must never reach the engine or a response."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return int(e.start)
    return -1


def bad_value_path(value: Any, path: str = "") -> str | None:
    """Where in a JSON-like value (a query parameter) a string holds a lone surrogate, or None."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            if find_surrogate(v) >= 0:
                return where or "value"
        elif isinstance(v, Mapping):
            for k, item in v.items():
                key = str(k)
                if find_surrogate(key) >= 0:
                    return f"{where}.<key>" if where else "<key>"
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(v, list | tuple):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(v))
    return None


# Nodes that hold tabular parts: an expression ends where one of these starts.
_TABULAR = (n.Query, n.Pipe, n.Operator, n.Source, n.Let, n.FnDef, n.DeclareParams, n.SetStmt,
            n.NamedExpr, n.SortItem, n.OpParam, n.Param)
# and/or chains are balanced by the parser: their depth does not grow with their length
_FLAT = ("and", "or")


def _children(node: Any) -> Iterator[tuple[Any, bool]]:
    """(child, counts as a list item) for each syntax node directly below ``node``."""
    for f in dataclasses.fields(node):
        if f.name == "span" or f.name.endswith("_span"):
            continue
        value = getattr(node, f.name)
        if isinstance(value, n.Node):
            yield value, False
        elif isinstance(value, tuple | list):
            for item in value:
                if isinstance(item, n.Node):
                    yield item, True
                elif isinstance(item, tuple | list):  # renames, object literal items, datatable rows
                    for sub in item:
                        if isinstance(sub, n.Node):
                            yield sub, True


def _list_size(node: Any) -> tuple[int, n.Span] | None:
    """The longest list directly in ``node``, with the node's span."""
    best = 0
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, tuple | list) and len(value) > best:
            best = len(value)
    return (best, node.span) if best else None


def check_tree(text: str, tree: n.Node, limits: KqlLimits) -> None:
    """Depth, node counts and list lengths of a parsed query; raises ``TooComplex``."""
    total = 0
    # (node, depth, root of the scalar expression it belongs to or None)
    stack: list[tuple[Any, int, Any]] = [(tree, 1, None)]
    expr_nodes: dict[int, int] = {}
    while stack:
        node, depth, root = stack.pop()
        total += 1
        if total > limits.max_nodes:
            raise _fail(text, f"the query has more than {limits.max_nodes:,} syntax elements "
                        "(query_max_nodes)", node.span, "query_max_nodes")
        if depth > limits.max_depth:
            raise _fail(text, f"the query is nested more than {limits.max_depth} levels deep here "
                        "(query_max_depth)", node.span, "query_max_depth")
        size = _list_size(node)
        if size is not None and size[0] > limits.max_list_items:
            raise _fail(text, f"this list has {size[0]:,} items; the limit is "
                        f"{limits.max_list_items:,} (query_max_list_items)", size[1], "query_max_list_items")
        if (isinstance(node, n.Literal) and isinstance(node.value, str | list | dict)
                and bad_value_path(node.value) is not None):
            # `"\ud800"` in KQL decodes to a lone surrogate: no engine or response can take it
            raise TooComplex(make(text, "invalid_text", "this string literal holds a lone UTF-16 "
                                  "surrogate (a \\uD800-\\uDFFF escape without its pair), which "
                                  "is not a character", node.span, []))
        if root is _LIST_ITEM:
            pass  # a literal item of an in-list: bounded by max_list_items
        elif not isinstance(node, _TABULAR):
            if root is None:
                root = node
            count = expr_nodes.get(id(root), 0) + 1
            expr_nodes[id(root)] = count
            if count > limits.max_expression_nodes:
                raise _fail(text, f"this expression has more than {limits.max_expression_nodes:,} "
                            "terms (query_max_expression_nodes)", root.span, "query_max_expression_nodes")
        else:
            root = None
        flat = isinstance(node, n.Binary) and node.op in _FLAT
        in_list = isinstance(node, n.InOp)
        for child, listed in _children(node):
            child_root = root
            if in_list and listed and isinstance(child, n.Literal):
                # a literal of an in-list is a list item, bounded by max_list_items
                child_root = _LIST_ITEM
            grow = 0 if flat and isinstance(child, n.Binary) and child.op == node.op else 1
            stack.append((child, depth + grow, child_root))
    expr_nodes.clear()


# the root of a literal in-list item: not counted against max_expression_nodes
_LIST_ITEM = object()
