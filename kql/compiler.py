"""The compiler core: statements, names and dispatch.

Binding and lowering happen in one walk: every scalar becomes a typed value ``V`` (SQL plus KQL
type) and every tabular expression a ``Rel`` (kql/relation.py: an open SELECT plus its typed
output columns). The core resolves statements (let, declare query_parameters), table and
function names, and dispatches each operator, source and scalar form through the tables of
kql/registry.py, which the operator families (kql/operators/), expression families
(kql/expressions/) and plugins (evaluate, search, FileProfile) fill when imported below.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

# The families register their handlers in kql.registry when imported.
from kql import enrich as _enrich  # noqa: F401  (invoke FileProfile)
from kql import enrich_network as _enrich_network  # noqa: F401  (AssignedIPAddresses, DeviceFromIP)
from kql import evaluate as _evaluate  # noqa: F401
from kql import nodes as n
from kql import search as _search  # noqa: F401  (search, find, top-nested)
from kql import sqlbuild as sb
from kql.context import Binding, CompileError, Ctx, Env, Scope, wrap_copy
from kql.diagnostics import ERROR, name_hints
from kql.expressions import basic as _basic  # noqa: F401
from kql.expressions import calls as _calls  # noqa: F401
from kql.expressions import ops as _ops  # noqa: F401
from kql.known_tables import KNOWN_TABLES
from kql.limits import check_deadline
from kql.lower import capabilities
from kql.operators import filter_project as _filter_project  # noqa: F401
from kql.operators import join as _join  # noqa: F401
from kql.operators import mvexpand as _mvexpand  # noqa: F401
from kql.operators import parse as _parse  # noqa: F401
from kql.operators import series as _series  # noqa: F401
from kql.operators import shape as _shape  # noqa: F401
from kql.operators import sources as _sources  # noqa: F401
from kql.operators import summarize as _summarize  # noqa: F401
from kql.operators import union as _union  # noqa: F401
from kql.params import PARAM_TYPES, BadValue, read_value
from kql.registry import EXPRESSIONS, OPERATORS, SOURCES, TABLE_FUNCTIONS
from kql.relation import Rel, notnull_outputs, time_aliases
from kql.typed import STRINGY, UNKNOWN, V, as_string, const, normalize_type
from schema.catalog import Table

__all__ = ["CompileError", "Compiler", "Ctx", "Env", "Rel", "Scope"]


class Compiler:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.pending_name: str | None = None

    def query(self, q: n.Query) -> Rel | None:
        env = Env()
        result: Rel | None = None
        result_node: n.Node | None = None
        for stmt in q.statements:
            try:
                if isinstance(stmt, n.Let):
                    self.let(stmt, env)
                elif isinstance(stmt, n.SetStmt):
                    continue  # request options (e.g. truncation limits) do not change results
                elif isinstance(stmt, n.DeclareParams):
                    self.declare_params(stmt, env)
                else:
                    if result is not None and result_node is not None:
                        self.ctx.warn(
                            "multiple_results",
                            "only the last tabular statement is returned",
                            result_node.span,
                        )
                    result = self.tabular(stmt, env)
                    result_node = stmt
            except CompileError:
                continue
        if result is None and not any(d.severity == ERROR for d in self.ctx.diagnostics):
            self.ctx.error("no_result", "the query has no tabular expression to return", q.span)
        return result

    def declare_params(self, stmt: n.DeclareParams, env: Env) -> None:
        """Bind each declared parameter like a scalar `let`, to the request's value (or the
        default) as a typed literal. A request value the query does not declare is ignored, as
        Kusto does: clients may send one parameter set to many queries."""
        seen = self.ctx.declared_params
        for p in stmt.params:
            if p.type is None:
                self.ctx.error("invalid_argument", f"query parameter {p.name!r} must have a scalar type "
                               f"({', '.join(PARAM_TYPES)}), not a table", p.span)
                continue
            t = normalize_type(p.type)
            if t not in PARAM_TYPES:
                self.ctx.error("unknown_type", f"query parameter {p.name!r}: unknown type {p.type!r}", p.span,
                               name_hints(p.type, list(PARAM_TYPES), "types"))
                continue
            if p.name in seen:
                self.ctx.error("invalid_argument", f"query parameter {p.name!r} is declared twice", p.span)
                continue
            seen.add(p.name)
            if p.name in self.ctx.parameters:
                raw = self.ctx.parameters[p.name]
                try:
                    value = read_value(t, raw)
                except BadValue as e:
                    self.ctx.error("invalid_parameter", f"query parameter {p.name!r} ({t}): {e}", p.span)
                    v = const(None, t)  # bound all the same: uses need no second error
                else:
                    v = const("" if value is None and t == "string" else value, t)
            elif p.default is not None:
                v = self._param_default(p, t, p.default, env) or const(None, t)
            else:
                self.ctx.error("missing_parameter", f"query parameter {p.name!r} ({t}) has no value: the "
                               "request does not pass it and the declaration has no default", p.span,
                               [f"pass {p.name!r} in the request's parameters, or declare a default: "
                                f"{p.name}:{t} = ..."])
                v = const(None, t)
            env.names[p.name] = Binding("scalar", v, env)

    def _param_default(self, p: n.Param, t: str, node: n.Node, env: Env) -> V | None:
        """The declared default as a `t` literal, or None after reporting why it is not one."""
        if t == "dynamic":
            # as for user-defined functions, Kusto allows no default for a dynamic parameter
            self.ctx.error("invalid_argument", f"query parameter {p.name!r}: a dynamic query "
                           "parameter cannot have a default value", node.span)
            return None
        try:
            d = self.scalar(node, Scope(env))
        except CompileError:
            return None
        if not d.is_const:
            self.ctx.error("invalid_argument", f"query parameter {p.name!r}: the default must be a "
                           f"{t} literal", node.span)
            return None
        if d.const is None:
            return const(None, t)
        if d.type == t or (t == "long" and d.type == "int"):
            return const(d.const, t)
        if t in ("real", "decimal") and d.type in ("long", "int", "real", "decimal"):
            return const(float(d.const), t)
        if (t, d.type) in (("int", "long"), ("guid", "string")):
            # Narrowing conversions: the literal must fit (int range, guid syntax), read as the
            # parameter values themselves are.
            try:
                return const(read_value(t, d.const), t)
            except BadValue as e:
                self.ctx.error("type_mismatch", f"query parameter {p.name!r}: the default {e}", p.span)
                return None
        self.ctx.error("type_mismatch", f"query parameter {p.name!r} is {t} but its default is {d.type}", p.span)
        return None

    def let(self, stmt: n.Let, env: Env) -> None:
        value = stmt.value
        if stmt.name in env.names:
            # Kusto rejects a second `let` of a name in one scope (Kusto.Language KS201); Quarry
            # lets the later one win, as a script read top to bottom would
            self.ctx.warn("kusto_rejects", f"Kusto rejects declaring {stmt.name!r} twice in one scope: "
                          "the later value is used", stmt.name_span)
        if isinstance(value, n.FnDef):
            env.names[stmt.name] = Binding("function", value, env)
        elif self.is_tabular(value, env):
            # check it now so errors surface even if it is never used (each use compiles it
            # again, so what this check hoists into WITH is dropped)
            hoisted = len(self.ctx.ctes)
            self.tabular(value, env)
            del self.ctx.ctes[hoisted:]
            env.names[stmt.name] = Binding("tabular", value, env)
        else:
            v = self.scalar(value, Scope(env))
            env.names[stmt.name] = Binding("scalar", v, env)

    def is_tabular(self, node: n.Node, env: Env) -> bool:
        if isinstance(node, n.Pipe | n.Source):
            return True
        if isinstance(node, n.Paren):
            return self.is_tabular(node.inner, env)
        if isinstance(node, n.Name):
            b = env.get(node.name)
            if b is not None:
                return b.kind in ("tabular", "rel") or (b.kind == "function" and not b.value.params)
            return self.ctx.catalog.table(node.name) is not None
        if isinstance(node, n.Call):
            if node.name in ("materialize", "table", "view"):
                return True
            b = env.get(node.name)
            if b is not None and b.kind == "function":
                fn: n.FnDef = b.value
                return bool(fn.body) and self.is_tabular(fn.body[-1], self.fn_env(fn, b.env, node, env, check=False))
            return b is None and node.name in TABLE_FUNCTIONS
        return False

    def tabular(self, node: n.Node, env: Env) -> Rel:
        if isinstance(node, n.DeclareParams):  # only the query's own statements may declare
            raise self.ctx.fail("unsupported", "declare query_parameters must be a statement of the query "
                                "itself, not inside a function body", node.span)
        if isinstance(node, n.Pipe):
            rel = self.tabular(node.source, env)
            try:
                return self.operator(rel, node.op, env)
            except CompileError:
                # already reported; go on with the input so later stages are checked too
                return rel
        if isinstance(node, n.Paren):
            return self.tabular(node.inner, env)
        if isinstance(node, n.Name):
            return self.table_ref(node, env)
        if isinstance(node, n.Source):
            rule = SOURCES.get(node.kind)
            if rule is None:
                raise self.ctx.fail("unsupported", f"the {node.kind} source is not supported", node.span)
            capabilities.check(self.ctx, "source", node.kind, node.span)
            return rule(self, node, env)
        if isinstance(node, n.Call):
            return self.tabular_call(node, env)
        raise self.ctx.fail("type_mismatch", "expected a table here (a table name or a tabular expression)", node.span)

    def table_ref(self, node: n.Name, env: Env) -> Rel:
        b = env.get(node.name)
        if b is not None:
            if b.kind == "tabular":
                return self.tabular(b.value, b.env or env)
            if b.kind == "rel":
                rel: Rel = b.value
                return wrap_copy(rel, self.ctx)
            if b.kind == "function" and not b.value.params:
                return self.tabular_call(n.Call(node.span, node.name, node.span, ()), env)
            raise self.ctx.fail("type_mismatch", f"{node.name!r} is a {b.kind}, not a table", node.span)
        table = self.ctx.catalog.table(node.name)
        if table is None:
            hints = name_hints(node.name, list(self.ctx.catalog.tables), "tables")
            if node.name in KNOWN_TABLES:
                raise self.ctx.fail("unsupported", f"table {node.name!r} is not in Quarry's catalog (Quarry replicates the Defender device tables)", node.span, hints)
            raise self.ctx.fail("unknown_table", f"unknown table {node.name!r}", node.span, hints)
        return self.base_rel(table)

    def base_rel(self, table: Table) -> Rel:
        self.ctx.tables.add(table.name)
        src = exp.Table(this=sb.ident(table.name))
        return Rel(
            cols={c.name: c.type.name for c in table.columns},
            exprs={c.name: sb.col(c.name) for c in table.columns},
            src=src,
            base=table,
            name=table.name,
            aliases=time_aliases({c.name: c.type.name for c in table.columns}),
            notnull=frozenset(c.name for c in table.columns if c.type.name in STRINGY)
            if self.ctx.strings_never_null else frozenset(),
        )

    def tabular_call(self, node: n.Call, env: Env) -> Rel:
        if node.name in ("materialize", "view") and len(node.args) == 1:
            return self.tabular(node.args[0], env)
        if node.name == "table" and len(node.args) == 1 and isinstance(node.args[0], n.Literal):
            return self.table_ref(n.Name(node.args[0].span, str(node.args[0].value)), env)
        b = env.get(node.name)
        if b is not None and b.kind == "function":
            fn: n.FnDef = b.value
            fenv = self.fn_env(fn, b.env or env, node, env)
            return self.fn_body_table(fn, fenv, node)
        if b is None and node.name in TABLE_FUNCTIONS:
            return TABLE_FUNCTIONS[node.name](self, node, env)
        raise self.ctx.fail("unknown_function", f"unknown tabular function {node.name!r}", node.name_span)

    def fn_body_table(self, fn: n.FnDef, fenv: Env, call: n.Call) -> Rel:
        """Run a user function's body in its environment; its last tabular statement is the result."""
        result: Rel | None = None
        for st in fn.body:
            if isinstance(st, n.Let):
                self.let(st, fenv)
            else:
                result = self.tabular(st, fenv)
        if result is None:
            raise self.ctx.fail("type_mismatch", f"function {call.name!r} returns no table", call.span)
        return result

    def fn_env(self, fn: n.FnDef, closure: Env | None, call: n.Call, caller: Env,
                check: bool = True, pipe_input: Rel | None = None, caller_scope: Scope | None = None) -> Env:
        fenv = (closure or caller).child()
        args = list(call.args)
        params = list(fn.params)
        if pipe_input is not None and params and params[0].type is None:
            fenv.names[params[0].name] = Binding("rel", pipe_input)
            params = params[1:]
        if check and len(args) > len(params):
            self.ctx.error("wrong_arguments", f"{call.name}() takes {len(params)} arguments, got {len(args)}", call.span)
        for i, p in enumerate(params):
            arg = args[i] if i < len(args) else p.default
            if arg is None:
                if check:
                    self.ctx.error("wrong_arguments", f"{call.name}(): missing argument {p.name!r}", call.span)
                fenv.names[p.name] = Binding("scalar", const(None, normalize_type(p.type or "string")))
                continue
            if not check:
                fenv.names[p.name] = Binding("scalar", V(exp.Null(), UNKNOWN))
                continue
            if p.type is None:
                fenv.names[p.name] = Binding("rel", self.tabular(arg, caller))
            else:
                v = self.scalar(arg, caller_scope or Scope(caller))
                fenv.names[p.name] = Binding("scalar", v)
        return fenv

    def wrap_select(self, sel: exp.Select, cols: dict[str, str], name: str | None = None,
                    aliases: dict[str, str] | None = None,
                    notnull: frozenset[str] = frozenset()) -> Rel:
        alias = self.ctx.alias()
        sub = exp.Subquery(this=sel, alias=exp.TableAlias(this=sb.ident(alias)))
        return Rel(cols=dict(cols), exprs={c: sb.col(c) for c in cols}, src=sub, name=name,
                   aliases=time_aliases(cols), notnull=notnull)

    def wrap(self, rel: Rel) -> Rel:
        out = self.wrap_select(rel.select(), rel.cols, rel.name, rel.aliases, notnull_outputs(rel))
        out.open_schema = rel.open_schema
        return out

    def operator(self, rel: Rel, op: n.Node, env: Env) -> Rel:
        assert isinstance(op, n.Operator)
        check_deadline()  # the query's timeout covers its compilation (kql.limits)
        rule = OPERATORS.get(op.kind)
        if rule is None:
            raise self.ctx.fail("unsupported", f"the {op.kind} operator is not supported", op.span)
        capabilities.check(self.ctx, "operator", op.kind, op.span)
        return rule(self, rel, op, env)

    def scalar(self, node: n.Node, scope: Scope) -> V:
        rule = EXPRESSIONS.get(type(node))
        if rule is None:
            raise self.ctx.fail("unsupported", f"{type(node).__name__} is not supported here", node.span)
        return rule(self, node, scope)

    def scalar_subquery(self, node: n.Node, scope: Scope) -> V:
        rel = self.tabular(node, scope.env)
        first = next(iter(rel.cols), None)
        if first is None:
            raise self.ctx.fail("type_mismatch", "the subquery returns no columns", node.span)
        sel = rel.select()
        sel.set("expressions", [sel.expressions[0]])
        if rel.limit is None:
            sel = sel.limit(1)
        return V(exp.Subquery(this=sel), rel.cols[first])

    def dynamic_literal(self, node: n.Node, scope: Scope) -> Any:
        if isinstance(node, n.ArrayLit):
            return [self.dynamic_literal(x, scope) for x in node.items]
        if isinstance(node, n.ObjectLit):
            return {k: self.dynamic_literal(v, scope) for k, v in node.items}
        if isinstance(node, n.Name) and node.name == "null":
            return None
        v = self.scalar(node, scope)
        if not v.is_const:
            raise self.ctx.fail("syntax", "dynamic() takes constants only", node.span)
        c = v.const
        if isinstance(c, datetime):
            return c.isoformat() + "Z"
        if isinstance(c, timedelta):
            return str(c)
        return c

    def unknown_column(self, name: str, span: n.Span, rel: Rel | None) -> None:
        cols = list(rel.cols) if rel else []
        self.ctx.error("unknown_column", f"unknown column {name!r}", span, name_hints(name, cols, "columns"))

    def expect_bool(self, v: V, node: n.Node) -> None:
        if v.type not in ("bool", UNKNOWN, "dynamic"):
            self.ctx.error("type_mismatch", f"a filter must be a boolean condition, this is a {v.type}", node.span)

    def order_items(self, rel: Rel, items: tuple[n.SortItem, ...], env: Env) -> list[exp.Expr]:
        scope = Scope(env, rel)
        out: list[exp.Expr] = []
        for it in items:
            try:
                v = self.scalar(it.expr, scope)
            except CompileError:
                continue
            if v.type == "dynamic":
                v = V(as_string(v), "string")
            desc = (it.direction or "desc") == "desc"
            # Kusto: nulls first when ascending, last when descending, unless stated
            nulls_first = (it.nulls == "first") if it.nulls else not desc
            expr = v.sql
            if rel.group is not None and not isinstance(it.expr, n.Name | n.Call):
                expr = v.sql
            out.append(exp.Ordered(this=expr, desc=desc, nulls_first=nulls_first))
        return out

    def limit_value(self, node: n.Node, env: Env) -> exp.Expr:
        v = self.scalar(node, Scope(env))
        if v.type not in ("long", "int", UNKNOWN):
            self.ctx.error("type_mismatch", f"the row count must be a whole number, this is a {v.type}", node.span)
        elif v.is_const and isinstance(v.const, int) and v.const < 0:
            self.ctx.error("invalid_argument", f"the row count must not be negative, this is {v.const}", node.span)
        return v.sql

    def const_datetime(self, node: n.Node, env: Env) -> datetime | None:
        # A probe without the relation's columns: whatever it reports is not the query's
        # problem (`Timestamp < M` with M a column is simply not a constant bound).
        saved = len(self.ctx.diagnostics)
        try:
            v = self.scalar(node, Scope(env))
        except CompileError:
            return None
        finally:
            del self.ctx.diagnostics[saved:]
        if v.is_const and isinstance(v.const, datetime):
            return v.const  # type: ignore[no-any-return]
        return None
