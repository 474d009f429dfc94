"""The KQL syntax tree: small frozen dataclasses, each with its source span. No semantics here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Span:
    start: int  # 0-based offsets into the query text, end exclusive
    end: int


NO_SPAN = Span(0, 0)


@dataclass(frozen=True)
class Node:
    span: Span


# ---------------------------------------------------------------- scalar expressions


@dataclass(frozen=True)
class Literal(Node):
    value: Any  # python value: str, int, float, bool, datetime, timedelta, None
    type: str  # KQL type name


@dataclass(frozen=True)
class Name(Node):
    name: str
    bracketed: bool = False


@dataclass(frozen=True)
class SideRef(Node):
    side: str  # "left" | "right"
    name: str


@dataclass(frozen=True)
class Call(Node):
    name: str
    name_span: Span
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Star(Node):
    pass


@dataclass(frozen=True)
class NamedArg(Node):
    name: str
    value: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # "+", "-", "*", "/", "%", "==", "!=", "<", ... "=~", "!~", "and", "or"
    left: Node
    right: Node
    op_span: Span


@dataclass(frozen=True)
class StrOp(Node):
    op: str  # "contains", "!has_cs", ...
    left: Node
    right: Node
    op_span: Span


@dataclass(frozen=True)
class InOp(Node):
    op: str  # "in", "!in", "in~", "!in~", "has_any", "has_all", ...
    left: Node
    items: tuple[Node, ...]
    op_span: Span


@dataclass(frozen=True)
class ColumnTerm(Node):
    """`Col:"term"` inside a search predicate: `Col has "term"` (with the term's wildcards)."""

    column: Name
    term: Literal


@dataclass(frozen=True)
class Between(Node):
    negated: bool
    value: Node
    low: Node
    high: Node


@dataclass(frozen=True)
class Matches(Node):
    left: Node
    pattern: Node


@dataclass(frozen=True)
class Neg(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Member(Node):
    target: Node
    name: str


@dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node


@dataclass(frozen=True)
class ArrayLit(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class ObjectLit(Node):
    items: tuple[tuple[str, Node], ...]


@dataclass(frozen=True)
class Paren(Node):
    inner: Node


# ---------------------------------------------------------------- tabular


@dataclass(frozen=True)
class Pipe(Node):
    source: Node
    op: Node


@dataclass(frozen=True)
class NamedExpr(Node):
    names: tuple[str, ...]  # () when unnamed
    expr: Node


@dataclass(frozen=True)
class SortItem(Node):
    expr: Node
    direction: str | None
    nulls: str | None


@dataclass(frozen=True)
class OpParam(Node):
    name: str
    value: Any


@dataclass(frozen=True)
class Operator(Node):
    """A pipeline stage. `kind` is the KQL operator name; fields hold its parts."""

    kind: str
    params: tuple[OpParam, ...] = ()
    exprs: tuple[NamedExpr, ...] = ()
    by: tuple[NamedExpr, ...] = ()
    sort: tuple[SortItem, ...] = ()
    names: tuple[Name, ...] = ()
    renames: tuple[tuple[Name, Name], ...] = ()
    operand: Node | None = None
    conds: tuple[Node, ...] = ()
    extra: Any = None


@dataclass(frozen=True)
class Source(Node):
    """A pipeline source that is not an expression: union, print, range, datatable..."""

    kind: str
    params: tuple[OpParam, ...] = ()
    items: tuple[Node, ...] = ()
    exprs: tuple[NamedExpr, ...] = ()
    columns: tuple[tuple[str, str], ...] = ()
    extra: Any = None


@dataclass(frozen=True)
class WildName(Node):
    pattern: str


# ---------------------------------------------------------------- statements


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: str | None  # scalar type name, or None for a tabular parameter
    default: Node | None


@dataclass(frozen=True)
class FnDef(Node):
    params: tuple[Param, ...]
    body: tuple[Node, ...]  # statements; the last is the result expression


@dataclass(frozen=True)
class Let(Node):
    name: str
    name_span: Span
    value: Node


@dataclass(frozen=True)
class SetStmt(Node):
    name: str


@dataclass(frozen=True)
class DeclareParams(Node):
    """`declare query_parameters(Name:type [= default], ...)`: values come with the request."""

    params: tuple[Param, ...]


@dataclass(frozen=True)
class Query(Node):
    statements: tuple[Node, ...]
