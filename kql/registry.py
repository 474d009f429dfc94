"""The compiler's dispatch tables: operators, tabular sources, scalar expression forms, and the
plugins of `evaluate` and `invoke`.

Each operator family (kql/operators/*.py), expression family (kql/expressions/*.py) and plugin
(kql/evaluate.py, kql/search.py, kql/enrich.py) registers its handlers here when imported; the
compiler core imports the families and dispatches through these tables. A handler receives the
``Binder`` (the core's interface, a Protocol) so that nothing below the core imports it: modules
import only downward (tests/kql/test_import_layers.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlglot import exp

from kql import nodes as n
from kql.context import Ctx, Env, Scope
from kql.relation import Rel
from kql.typed import V
from schema.catalog import Table


class Binder(Protocol):
    """What operator, expression and plugin handlers may ask of the compiler core."""

    ctx: Ctx
    # a name given inside a call (`toint(Total = count())`), for the column the call makes
    pending_name: str | None

    def tabular(self, node: n.Node, env: Env) -> Rel: ...
    def operator(self, rel: Rel, op: n.Node, env: Env) -> Rel: ...
    def scalar(self, node: n.Node, scope: Scope) -> V: ...
    def scalar_subquery(self, node: n.Node, scope: Scope) -> V: ...
    def dynamic_literal(self, node: n.Node, scope: Scope) -> Any: ...
    def is_tabular(self, node: n.Node, env: Env) -> bool: ...
    def let(self, stmt: n.Let, env: Env) -> None: ...
    def base_rel(self, table: Table) -> Rel: ...
    def wrap(self, rel: Rel) -> Rel: ...
    def wrap_select(self, sel: exp.Select, cols: dict[str, str], name: str | None = None,
                    aliases: dict[str, str] | None = None, notnull: frozenset[str] = frozenset()) -> Rel: ...
    def fn_env(self, fn: n.FnDef, closure: Env | None, call: n.Call, caller: Env, check: bool = True,
               pipe_input: Rel | None = None, caller_scope: Scope | None = None) -> Env: ...
    def fn_body_table(self, fn: n.FnDef, fenv: Env, call: n.Call) -> Rel: ...
    def unknown_column(self, name: str, span: n.Span, rel: Rel | None) -> None: ...
    def expect_bool(self, v: V, node: n.Node) -> None: ...
    def order_items(self, rel: Rel, items: tuple[n.SortItem, ...], env: Env) -> list[exp.Expr]: ...
    def limit_value(self, node: n.Node, env: Env) -> exp.Expr: ...
    def const_datetime(self, node: n.Node, env: Env) -> datetime | None: ...


OperatorRule = Callable[[Binder, Rel, n.Operator, Env], Rel]
SourceRule = Callable[[Binder, n.Source, Env], Rel]
ExpressionRule = Callable[[Binder, Any, Scope], V]
# evaluate <plugin>(...): (binder, input, the evaluate operator, the plugin call, env)
EvaluateRule = Callable[[Binder, Rel, n.Operator, n.Call, Env], Rel]
# invoke <plugin>(...): (binder, input, the call, env)
InvokeRule = Callable[[Binder, Rel, n.Call, Env], Rel]
TableFunctionRule = Callable[[Binder, n.Call, Env], Rel]

OPERATORS: dict[str, OperatorRule] = {}  # by Operator.kind: "where", "mv-expand", ...
SOURCES: dict[str, SourceRule] = {}  # by Source.kind: "print", "range", "union", ...
EXPRESSIONS: dict[type[n.Node], ExpressionRule] = {}  # by syntax node class
EVALUATE_PLUGINS: dict[str, EvaluateRule] = {}
INVOKE_PLUGINS: dict[str, InvokeRule] = {}
TABLE_FUNCTIONS: dict[str, TableFunctionRule] = {}  # built-in tabular functions: AssignedIPAddresses()


def _registrar(table: dict[Any, Any], what: str, keys: tuple[Any, ...]) -> Callable[[Any], Any]:
    def register(rule: Any) -> Any:
        for key in keys:
            assert key not in table, f"{what} {key} registered twice"
            table[key] = rule
        return rule
    return register


def operator(*kinds: str) -> Callable[[OperatorRule], OperatorRule]:
    return _registrar(OPERATORS, "operator", kinds)


def source(*kinds: str) -> Callable[[SourceRule], SourceRule]:
    return _registrar(SOURCES, "source", kinds)


def expression(*node_types: type[n.Node]) -> Callable[[Any], Any]:
    return _registrar(EXPRESSIONS, "expression", node_types)


def evaluate_plugin(name: str) -> Callable[[EvaluateRule], EvaluateRule]:
    return _registrar(EVALUATE_PLUGINS, "evaluate plugin", (name,))


def invoke_plugin(name: str) -> Callable[[InvokeRule], InvokeRule]:
    return _registrar(INVOKE_PLUGINS, "invoke plugin", (name,))


def table_function(name: str) -> Callable[[TableFunctionRule], TableFunctionRule]:
    return _registrar(TABLE_FUNCTIONS, "table function", (name,))
