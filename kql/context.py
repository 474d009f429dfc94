"""What one compilation shares (``Ctx``: text, catalog, options, diagnostics) and the scopes
names are resolved in (``Env`` for let bindings, ``Scope`` for the columns a scalar sees)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.diagnostics import WARNING, Diagnostic, make
from kql.lower import render
from kql.relation import Rel, notnull_outputs, time_aliases
from kql.typed import NUMERIC, STRINGY, UNKNOWN, V, num_result
from schema.catalog import Catalog


class CompileError(Exception):
    """Stops lowering of one construct; the diagnostic is already recorded."""


@dataclass
class Binding:
    kind: str  # "scalar", "tabular", "function", "rel"
    value: Any
    env: Env | None = None


@dataclass
class Env:
    names: dict[str, Binding] = field(default_factory=dict)
    parent: Env | None = None

    def get(self, name: str) -> Binding | None:
        e: Env | None = self
        while e is not None:
            if name in e.names:
                return e.names[name]
            e = e.parent
        return None

    def child(self) -> Env:
        return Env({}, self)

    def all_names(self) -> list[str]:
        out: list[str] = []
        e: Env | None = self
        while e is not None:
            out += list(e.names)
            e = e.parent
        return out


@dataclass
class Scope:
    """Columns visible to a scalar expression, plus the let bindings."""

    env: Env
    rel: Rel | None = None
    sides: dict[str, Rel] | None = None  # for join conditions: $left / $right
    side_alias: dict[str, str] | None = None
    allow_agg: bool = False


class Ctx:
    """Everything one compilation shares: text, catalog, options and the diagnostics list."""

    def __init__(self, text: str, catalog: Catalog, now: datetime, dialect: str,
                 strings_never_null: bool = False,
                 probe: Callable[[str], Any] | None = None,
                 parameters: dict[str, Any] | None = None) -> None:
        self.text = text
        # the request's query parameter values, read by `declare query_parameters`
        self.parameters = dict(parameters or {})
        self.declared_params: set[str] = set()
        self.probe = probe
        # an output schema depended on data and there was no probe: no SQL can be produced
        self.needs_probe = False
        self.strings_never_null = strings_never_null
        self.catalog = catalog
        self.now = now
        self.dialect = dialect
        self.diagnostics: list[Diagnostic] = []
        self.tables: set[str] = set()
        # (name, SELECT) hoisted to a WITH on the final query, for inputs read more than once
        self.ctes: list[tuple[str, exp.Select]] = []
        # the last `render` operator's chart hint (kql.chart), returned as Compiled.render
        self.render: dict[str, Any] | None = None
        self._alias_n = 0

    def error(self, code: str, message: str, span: n.Span, hints: list[str] | None = None) -> None:
        self.diagnostics.append(make(self.text, code, message, span, hints or []))

    def warn(self, code: str, message: str, span: n.Span, hints: list[str] | None = None) -> None:
        self.diagnostics.append(make(self.text, code, message, span, hints or [], WARNING))

    def fail(self, code: str, message: str, span: n.Span, hints: list[str] | None = None) -> CompileError:
        self.error(code, message, span, hints)
        return CompileError(message)

    def run_probe(self, sel: exp.Select) -> list[tuple[Any, ...]] | None:
        """Run a SELECT the compiler built (with the WITHs hoisted so far) through the caller's
        probe, to learn a data-dependent output schema; None without a probe."""
        if self.probe is None:
            return None
        for name, body in self.ctes:
            sel = sel.with_(name, as_=body.copy(), materialized=True, copy=False)
        return [tuple(r) for r in self.probe(render(sb.add_parens(sel), self.dialect))]

    def alias(self, prefix: str = "_t") -> str:
        self._alias_n += 1
        return f"{prefix}{self._alias_n}"

    def common_type(self, vals: list[V], node: n.Node) -> str:
        types = [v.type for v in vals if v.type != UNKNOWN and not (v.is_const and v.const is None)]
        if not types:
            return vals[0].type if vals else UNKNOWN
        if all(t in NUMERIC for t in types):
            out = types[0]
            for t in types[1:]:
                out = num_result(out, t)
            return out
        if all(t == types[0] for t in types):
            return types[0]
        if "dynamic" in types and all(t in STRINGY or t == "dynamic" for t in types):
            return "string"
        if "dynamic" in types:
            return next(t for t in types if t != "dynamic")
        return "string"


def wrap_copy(rel: Rel, ctx: Ctx) -> Rel:
    sub = exp.Subquery(this=rel.select(), alias=exp.TableAlias(this=sb.ident(ctx.alias())))
    return Rel(cols=dict(rel.cols), exprs={c: sb.col(c) for c in rel.cols}, src=sub, name=rel.name,
               aliases=time_aliases(rel.cols), notnull=notnull_outputs(rel))
