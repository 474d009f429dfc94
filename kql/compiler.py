"""Check and lower: walk the syntax tree stage by stage carrying columns and types, resolve
names against the catalog, collect diagnostics, and build sqlglot expressions.

Checking and lowering happen in one walk: every scalar is lowered to a typed value ``V`` (SQL plus
KQL type), and every tabular expression to a ``Rel`` (an open SELECT plus its columns). A stage
folds into the current SELECT when SQL allows it (filters, projections, grouping, ordering) so
DuckDB sees one query block and can push filters into the Parquet scan; otherwise the current
SELECT becomes a subquery.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.bounded import guarded_grid
from kql.diagnostics import ERROR, WARNING, Diagnostic, make, name_hints
from kql.temporal import datetime_in_range, timespan_in_range, timespan_ok
from kql.typed import (
    NOCONST,
    NUMERIC,
    STRINGY,
    UNKNOWN,
    V,
    as_string,
    const,
    is_numeric,
    json_to_string,
    normalize_type,
    num_result,
    to_type,
)
from schema.catalog import DATE_PARTITION, INGESTION_TIME_COLUMN, Catalog, Table


class CompileError(Exception):
    """Stops lowering of one construct; the diagnostic is already recorded."""


# ---------------------------------------------------------------- relations


@dataclass
class Rel:
    cols: dict[str, str]  # ordered output columns: name -> KQL type
    exprs: dict[str, exp.Expr]  # how each column is computed inside this SELECT
    src: exp.Expr  # the FROM item
    where: list[exp.Expr] = field(default_factory=list)
    group: list[exp.Expr] | None = None
    order: list[exp.Expr] = field(default_factory=list)
    limit: exp.Expr | None = None
    distinct: bool = False
    windowed: bool = False
    base: Table | None = None  # src is this catalog table (system and partition columns visible)
    qualify: exp.Expr | None = None
    name: str | None = None  # table name, for union withsource
    # Sentinel's copies of the Device tables call the event time TimeGenerated; queries written
    # for Sentinel use it, so it resolves to Timestamp (kept through projections of Timestamp).
    aliases: dict[str, str] = field(default_factory=dict)
    # columns of `src` that are never NULL strings (see CompileOptions.strings_never_null)
    notnull: frozenset[str] = frozenset()
    # columns beyond `cols` may exist (an evaluate plugin whose columns depend on the data, with
    # no probe to learn them): references to unknown names are allowed, typed unknown
    open_schema: bool = False

    @property
    def open(self) -> bool:
        """Can a filter or projection still be folded into this SELECT?"""
        return (
            self.group is None
            and self.limit is None
            and not self.distinct
            and not self.windowed
            and self.qualify is None
        )

    def select(self) -> exp.Select:
        # Parts are copied once here (a Rel may be rendered twice, and sqlglot nodes know their
        # parent); the builder calls then take them as they are.
        sel = exp.Select(expressions=[sb.alias(self.exprs[c].copy(), c) for c in self.cols])
        sel = sel.from_(self.src.copy(), copy=False)
        cond = sb.and_all([w.copy() for w in self.where])
        if cond is not None:
            sel = sel.where(cond, copy=False)
        if self.group:
            sel = sel.group_by(*[g.copy() for g in self.group], copy=False)
        if self.qualify is not None:
            sel.set("qualify", exp.Qualify(this=self.qualify.copy()))
        if self.order:
            sel = sel.order_by(*[o.copy() for o in self.order], copy=False)
        if self.limit is not None:
            sel = sel.limit(self.limit.copy(), copy=False)
        if self.distinct:
            sel.set("distinct", exp.Distinct())
        return sel


# ---------------------------------------------------------------- bindings and scopes


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


_ROW_LIMIT_DEFAULT = None


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
        self.builders = F.DIALECTS[dialect]
        self.diagnostics: list[Diagnostic] = []
        self.tables: set[str] = set()
        # (name, SELECT) hoisted to a WITH on the final query, for inputs read more than once
        self.ctes: list[tuple[str, exp.Select]] = []
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
        from kql.sqlbuild import add_parens

        for name, body in self.ctes:
            sel = sel.with_(name, as_=body.copy(), materialized=True, copy=False)
        return [tuple(r) for r in self.probe(add_parens(sel).sql(dialect=self.dialect))]

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


# ---------------------------------------------------------------- the compiler


TIME_CMP = {">": ">=", ">=": ">=", "<": "<=", "<=": "<=", "==": "="}


class Compiler:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.pending_name: str | None = None

    # -------------------------------------------------------------- statements

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
        from kql.params import PARAM_TYPES, BadValue, read_value

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
            from kql.params import BadValue, read_value

            try:
                return const(read_value(t, d.const), t)
            except BadValue as e:
                self.ctx.error("type_mismatch", f"query parameter {p.name!r}: the default {e}", p.span)
                return None
        self.ctx.error("type_mismatch", f"query parameter {p.name!r} is {t} but its default is {d.type}", p.span)
        return None

    def let(self, stmt: n.Let, env: Env) -> None:
        value = stmt.value
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
                return bool(fn.body) and self.is_tabular(fn.body[-1], self._fn_env(fn, b.env, node, env, check=False))
        return False

    # -------------------------------------------------------------- tabular expressions

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
            return getattr(self, "src_" + node.kind)(node, env)  # type: ignore[no-any-return]
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
            from kql.known_tables import KNOWN_TABLES

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
            fenv = self._fn_env(fn, b.env or env, node, env)
            return self._fn_body_table(fn, fenv, node)
        raise self.ctx.fail("unknown_function", f"unknown tabular function {node.name!r}", node.name_span)

    def _fn_body_table(self, fn: n.FnDef, fenv: Env, call: n.Call) -> Rel:
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

    def _fn_env(self, fn: n.FnDef, closure: Env | None, call: n.Call, caller: Env,
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

    # -------------------------------------------------------------- sources

    def src_externaldata(self, node: n.Source, env: Env) -> Rel:
        raise self.ctx.fail("unsupported", "externaldata is not supported: Quarry does not fetch data from URLs", node.span)

    def src_search(self, node: n.Source, env: Env) -> Rel:
        from kql.search import search_source

        return search_source(self, node, env)

    def src_find(self, node: n.Source, env: Env) -> Rel:
        from kql.search import find_source

        return find_source(self, node, env)

    def op_search(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        from kql.search import search_operator

        return search_operator(self, rel, op, env)

    def op_top_nested(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        from kql.search import top_nested

        return top_nested(self, rel, op, env)

    def src_print(self, node: n.Source, env: Env) -> Rel:
        scope = Scope(env)
        cols: dict[str, str] = {}
        exprs: dict[str, exp.Expr] = {}
        for i, ne in enumerate(node.exprs):
            v = self.scalar(ne.expr, scope)
            # print has no input columns: a bare name is a let variable, which names nothing
            # (`print x` is print_0); `print d.a` is still d_a
            inferred = None if isinstance(ne.expr, n.Name) else self.column_name(ne.expr)
            name = ne.names[0] if ne.names else (inferred or f"print_{i}")
            cols[name] = v.type
            exprs[name] = v.sql
        sel = exp.Select(expressions=[sb.alias(exprs[c], c) for c in cols])
        return self.wrap_select(sel, cols)

    def src_range(self, node: n.Source, env: Env) -> Rel:
        scope = Scope(env)
        start, stop, step = (self.scalar(x, scope) for x in node.items)
        name = str(node.extra)
        # the table function streams its rows; unnest(generate_series(...)) built the whole list
        # first, out of reach of the memory limit and of interrupt()
        series = exp.Table(this=sb.fn("generate_series", start.sql, stop.sql, step.sql),
                           alias=exp.TableAlias(this=sb.ident("_range"), columns=[sb.ident(name)]))
        sel = exp.Select(expressions=[sb.alias(sb.col(name, "_range"), name)]).from_(series, copy=False)
        t = start.type if start.type != "int" else "long"
        return self.wrap_select(sel, {name: t})

    def src_datatable(self, node: n.Source, env: Env) -> Rel:
        decls: list[tuple[str, str, n.Span]] = list(node.extra)
        cols: dict[str, str] = {}
        for name, typ, span in decls:
            try:
                cols[name] = normalize_type(typ)
                from schema.types import kql_type

                kql_type(typ)
            except KeyError:
                raise self.ctx.fail("unknown_type", f"unknown type {typ!r}", span) from None
        values = [self.scalar(v, Scope(env)) for v in node.items]
        width = len(cols)
        if width == 0 or len(values) % width:
            raise self.ctx.fail(
                "wrong_arguments",
                f"datatable has {len(values)} values for {width} columns: the count must be a multiple",
                node.span,
            )
        names = list(cols)
        rows = []
        for r in range(0, len(values), width):
            row = [sb.cast(to_type(values[r + i], cols[names[i]]), cols[names[i]]) for i in range(width)]
            rows.append(exp.Tuple(expressions=row))
        if not rows:
            sel = exp.Select(expressions=[sb.alias(sb.null(t), c) for c, t in cols.items()]).where(exp.false())
            return self.wrap_select(sel, cols)
        alias = self.ctx.alias("_dt")
        values_node = exp.Values(
            expressions=rows,
            alias=exp.TableAlias(this=sb.ident(alias), columns=[sb.ident(c) for c in names]),
        )
        sel = exp.Select(expressions=[sb.col(c) for c in names]).from_(values_node)
        return self.wrap_select(sel, cols)

    def src_union(self, node: n.Source, env: Env) -> Rel:
        return self.union(None, node.params, node.items, env, node.span)

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

    # -------------------------------------------------------------- operators

    def operator(self, rel: Rel, op: n.Node, env: Env) -> Rel:
        assert isinstance(op, n.Operator)
        handler: Callable[[Rel, n.Operator, Env], Rel] | None = getattr(
            self, "op_" + op.kind.replace("-", "_"), None
        )
        if handler is None:
            raise self.ctx.fail("unsupported", f"the {op.kind} operator is not supported", op.span)
        return handler(rel, op, env)

    def op_evaluate(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        from kql.evaluate import evaluate

        return evaluate(self, rel, op, env)

    def op_other(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        word, text = op.extra
        if word == "render":
            self.ctx.warn("ignored", "render only draws charts in Defender's portal; the rows are returned as they are", op.span)
            return rel
        raise self.ctx.fail("unsupported", f"the {word} operator is not supported", op.span)

    def op_where(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        if not rel.open:
            rel = self.wrap(rel)
        assert op.operand is not None
        v = self.scalar(op.operand, Scope(env, rel))
        self.expect_bool(v, op.operand)
        if v.window:
            # SQL has no window functions in WHERE: compute the condition as a column first
            tmp = "__where"
            rel.cols[tmp], rel.exprs[tmp] = "bool", self.ordered_windows(v.sql, rel)
            rel = self.wrap(rel)
            del rel.cols[tmp]
            rel.where.append(sb.col(tmp))
            return rel
        rel.where.append(sb.paren(v.sql) if isinstance(v.sql, exp.Or) else v.sql)
        if rel.base is not None and rel.base.has_timestamp:
            rel.where += self.partition_conds(op.operand, rel, env)
        return rel

    @staticmethod
    def ordered_windows(e: exp.Expr, rel: Rel) -> exp.Expr:
        """row_number()/prev()/next() follow the serialized order: the current sort, if any."""
        if rel.order:
            for w in e.find_all(exp.Window):
                if not w.args.get("order"):
                    w.set("order", exp.Order(expressions=[o.copy() for o in rel.order]))
        return e

    def expect_bool(self, v: V, node: n.Node) -> None:
        if v.type not in ("bool", UNKNOWN, "dynamic"):
            self.ctx.error("type_mismatch", f"a filter must be a boolean condition, this is a {v.type}", node.span)

    def partition_conds(self, pred: n.Node, rel: Rel, env: Env) -> list[exp.Expr]:
        """Conditions on the date partition implied by conditions on Timestamp."""
        ts = rel.exprs.get("Timestamp")
        if not (isinstance(ts, exp.Column) and ts.name == "Timestamp"):
            return []
        out: list[exp.Expr] = []
        date = sb.col(DATE_PARTITION)

        def day(dt: datetime) -> exp.Expr:
            return exp.Cast(this=sb.s(dt.date().isoformat()), to=exp.DataType.build("DATE"))

        def walk(p: n.Node) -> None:
            if isinstance(p, n.Paren):
                walk(p.inner)
            elif isinstance(p, n.Binary) and p.op == "and":
                walk(p.left)
                walk(p.right)
            elif isinstance(p, n.Binary) and p.op in TIME_CMP:
                left, right, op = p.left, p.right, p.op
                if self._is_ts(right) and not self._is_ts(left):
                    left, right = right, left
                    op = {">": "<", "<": ">", ">=": "<=", "<=": ">="}.get(op, op)
                if self._is_ts(left):
                    dt = self.const_datetime(right, env)
                    if dt is not None:
                        cmp: type[exp.Binary] = {">=": exp.GTE, "<=": exp.LTE, "=": exp.EQ}[TIME_CMP[op]]
                        cond: exp.Expr = cmp(this=date.copy(), expression=day(dt))
                        out.append(cond)
            elif isinstance(p, n.Between) and not p.negated and self._is_ts(p.value):
                lo, hi = self.const_datetime(p.low, env), self.const_datetime(p.high, env)
                if lo is not None:
                    out.append(exp.GTE(this=date.copy(), expression=day(lo)))
                if hi is not None:
                    out.append(exp.LTE(this=date.copy(), expression=day(hi)))

        walk(pred)
        return out

    @staticmethod
    def _is_ts(node: n.Node) -> bool:
        return isinstance(node, n.Name) and node.name in ("Timestamp", "TimeGenerated")

    def const_datetime(self, node: n.Node, env: Env) -> datetime | None:
        try:
            saved = len(self.ctx.diagnostics)
            v = self.scalar(node, Scope(env))
            del self.ctx.diagnostics[saved:]
        except CompileError:
            return None
        if v.is_const and isinstance(v.const, datetime):
            return v.const  # type: ignore[no-any-return]
        return None

    def _columns_added(self, rel: Rel, items: tuple[n.NamedExpr, ...], env: Env,
                       keep_existing: bool) -> Rel:
        if not rel.open:
            rel = self.wrap(rel)
        scope = Scope(env, rel)
        # extend sees its own earlier assignments (Kusto evaluates them left to right)
        new_cols: dict[str, str] = rel.cols if keep_existing else {}
        new_exprs: dict[str, exp.Expr] = rel.exprs if keep_existing else {}
        windowed = False
        auto = 0
        for item in items:
            self.pending_name = None
            try:
                v = self.scalar(item.expr, scope)
            except CompileError:
                continue
            if not item.names and self.pending_name:
                item = replace(item, names=(self.pending_name,))
            windowed |= v.window
            if v.window:
                v = replace(v, sql=self.ordered_windows(v.sql, rel))
            if len(item.names) > 1:
                self.ctx.error("unsupported", "assigning to several columns at once is not supported", item.span)
                continue
            if item.names:
                name = item.names[0]
            else:
                name = self.column_name(item.expr) or ""
                if not name:
                    auto += 1
                    name = f"Column{auto}"
                    while name in new_cols:
                        auto += 1
                        name = f"Column{auto}"
            if name in new_cols and not keep_existing:
                self.ctx.error("duplicate_column", f"column {name!r} is projected twice", item.span)
            new_cols[name] = v.type
            new_exprs[name] = v.sql
        if windowed:
            rel.windowed = True
        rel.cols, rel.exprs = new_cols, new_exprs
        return rel

    def column_name(self, node: n.Node) -> str | None:
        if isinstance(node, n.Name):
            return node.name
        if isinstance(node, n.Paren):
            return self.column_name(node.inner)
        if isinstance(node, n.ArrayLit) and len(node.items) == 1 and isinstance(node.items[0], n.Literal):
            return str(node.items[0].value)
        if isinstance(node, n.Member):
            base = self.column_name(node.target)
            return f"{base}_{node.name}" if base else None
        if isinstance(node, n.Index) and isinstance(node.index, n.Literal) and isinstance(node.index.value, str):
            base = self.column_name(node.target)
            return f"{base}_{node.index.value}" if base else None
        return None

    def op_extend(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        return self._columns_added(rel, op.exprs, env, keep_existing=True)

    def op_project(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        return self._columns_added(rel, op.exprs, env, keep_existing=False)

    def op_serialize(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        return self._columns_added(rel, op.exprs, env, keep_existing=True) if op.exprs else rel

    def _match_cols(self, rel: Rel, pat: n.Node) -> list[str]:
        if isinstance(pat, n.WildName):
            regex = re.compile(fnmatch.translate(pat.pattern))
            return [c for c in rel.cols if regex.match(c)]
        assert isinstance(pat, n.Name)
        if pat.name in rel.cols:
            return [pat.name]
        if rel.aliases.get(pat.name) in rel.cols:
            return [rel.aliases[pat.name]]
        if rel.open_schema:
            return []
        self.unknown_column(pat.name, pat.span, rel)
        return []

    def unknown_column(self, name: str, span: n.Span, rel: Rel | None) -> None:
        cols = list(rel.cols) if rel else []
        self.ctx.error("unknown_column", f"unknown column {name!r}", span, name_hints(name, cols, "columns"))

    def op_project_away(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        drop: set[str] = set()
        for p in op.names:
            drop.update(self._match_cols(rel, p))
        rel.cols = {c: t for c, t in rel.cols.items() if c not in drop}
        return self._some_columns_left(rel, op)

    def _some_columns_left(self, rel: Rel, op: n.Operator) -> Rel:
        # SQL has no zero-column SELECT: say so here rather than fail inside DuckDB
        if not rel.cols:
            raise self.ctx.fail("invalid_argument", f"{op.kind} leaves no columns", op.span)
        return rel

    def op_project_keep(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        keep: set[str] = set()
        for p in op.names:
            keep.update(self._match_cols(rel, p))
        rel.cols = {c: t for c, t in rel.cols.items() if c in keep}
        return self._some_columns_left(rel, op)

    def op_project_rename(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        cols = list(rel.cols.items())
        exprs = dict(rel.exprs)
        for new, old in op.renames:
            idx = next((i for i, (c, _) in enumerate(cols) if c == old.name), None)
            if idx is None:
                self.unknown_column(old.name, old.span, rel)
                continue
            cols[idx] = (new.name, cols[idx][1])
            exprs[new.name] = exprs[old.name]
        rel.cols = dict(cols)
        rel.exprs = exprs
        return rel

    def op_project_reorder(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        first: list[str] = []
        for pat, direction in op.extra:
            matched = self._match_cols(rel, pat)
            if direction:
                matched = sorted(matched, reverse=direction == "desc")
            first += [c for c in matched if c not in first]
        rel.cols = {c: rel.cols[c] for c in first + [c for c in rel.cols if c not in first]}
        return rel

    def op_summarize(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        if not rel.open or rel.order:
            rel = self.wrap(rel) if not rel.open else rel
            rel.order = []
        if self._single_arg_extreme(op):
            return self.summarize_latest(rel, op, env)
        scope = Scope(env, rel)
        cols: dict[str, str] = {}
        exprs: dict[str, exp.Expr] = {}
        group: list[exp.Expr] = []
        auto = 0
        for item in op.by:
            try:
                v = self.scalar(item.expr, scope)
            except CompileError:
                continue
            name = item.names[0] if item.names else self.key_name(item.expr)
            if not name:
                auto += 1
                name = f"Column{auto}"
            if v.type in STRINGY and isinstance(v.sql, exp.Column) and not v.notnull:
                v = V(sb.fn("coalesce", v.sql, sb.s("")), v.type)  # a missing string is ""
            cols[name] = v.type
            exprs[name] = v.sql
            group.append(v.sql)
        post: dict[str, exp.Expr] = {}  # arg_max/arg_min unpacking needs a second SELECT
        for item in op.exprs:
            try:
                self.aggregate(item, scope, cols, exprs, post)
            except CompileError:
                continue
        rel.cols, rel.exprs = cols, exprs
        rel.group = group if group else []
        if not group and not op.exprs:
            self.ctx.error("wrong_arguments", "summarize needs an aggregate or a by clause", op.span)
        if not group:
            rel.group = []  # marks the SELECT as aggregated even without keys
        if post:
            # arg_max/arg_min: the aggregating SELECT yields one struct per group; a wrapping
            # SELECT unpacks its fields in the output order
            rel.cols = {c: t for c, t in cols.items() if c not in post or isinstance(post[c], exp.Null)}
            rel = self.wrap(rel)
            final_cols: dict[str, str] = {}
            final_exprs: dict[str, exp.Expr] = {}
            for c, t in cols.items():
                if isinstance(post.get(c), exp.Null):
                    continue
                final_cols[c] = t
                final_exprs[c] = post.get(c, sb.col(c))
            rel.cols, rel.exprs = final_cols, final_exprs
        return rel

    @staticmethod
    def _single_arg_extreme(op: n.Operator) -> bool:
        if len(op.exprs) != 1 or not op.by:
            return False
        item = op.exprs[0]
        call = item.expr
        return (isinstance(call, n.Call) and call.name in ("arg_max", "arg_min") and len(call.args) >= 2
                and len(item.names) <= 1 and not isinstance(call.args[0], n.Star))

    def summarize_latest(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        """`summarize arg_max(T, cols) by keys` alone: keep the top row of each group with a
        window (QUALIFY), which DuckDB runs faster than an aggregate over a row struct."""
        scope = Scope(env, rel)
        item = op.exprs[0]
        call = item.expr
        assert isinstance(call, n.Call)
        cols: dict[str, str] = {}
        exprs: dict[str, exp.Expr] = {}
        keys: list[exp.Expr] = []
        auto = 0
        for by in op.by:
            v = self.scalar(by.expr, scope)
            name = by.names[0] if by.names else self.key_name(by.expr)
            if not name:
                auto += 1
                name = f"Column{auto}"
            if v.type in STRINGY and isinstance(v.sql, exp.Column) and not v.notnull:
                v = V(sb.fn("coalesce", v.sql, sb.s("")), v.type)  # a missing string is ""
            cols[name], exprs[name] = v.type, v.sql
            keys.append(v.sql)
        target = self.scalar(call.args[0], scope)
        if target.type == "dynamic":
            raise self.ctx.fail("type_mismatch", f"{call.name}(): cannot order by a dynamic value", call.args[0].span)
        tname = item.names[0] if item.names else (self.column_name(call.args[0]) or
                                                  ("max_" if call.name == "arg_max" else "min_") + "expr")
        if tname not in cols:
            cols[tname], exprs[tname] = target.type, target.sql
        for a in call.args[1:]:
            if isinstance(a, n.Star):
                for c, t in list(rel.cols.items()):
                    if c not in cols:
                        cols[c], exprs[c] = t, rel.exprs[c]
                continue
            if isinstance(a, n.NamedArg):
                v = self.scalar(a.value, scope)
                cols.setdefault(a.name, v.type)
                exprs.setdefault(a.name, v.sql)
                continue
            v = self.scalar(a, scope)
            name = self.column_name(a) or self.unique(cols, "Column1")
            if name not in cols:
                cols[name], exprs[name] = v.type, v.sql
        desc = call.name == "arg_max"
        order = exp.Order(expressions=[exp.Ordered(this=target.sql.copy(), desc=desc, nulls_first=False)])
        window = exp.Window(this=sb.fn("row_number"), partition_by=[k.copy() for k in keys], order=order)
        rel.qualify = exp.EQ(this=window, expression=sb.num(1))
        rel.cols, rel.exprs = cols, exprs
        return rel

    def key_name(self, node: n.Node) -> str | None:
        name = self.column_name(node)
        if name:
            return name
        if isinstance(node, n.Call) and node.name in ("bin", "floor", "bin_at", "startofday", "startofweek",
                                                      "startofmonth", "tostring", "tolower", "toupper") and node.args:
            return self.column_name(node.args[0])
        return None

    def aggregate(self, item: n.NamedExpr, scope: Scope, cols: dict[str, str],
                  exprs: dict[str, exp.Expr], post: dict[str, exp.Expr]) -> None:
        node = item.expr
        call = node
        if not (isinstance(call, n.Call) and call.name in F.AGGREGATES):
            # an expression over aggregates, e.g. `dcount(x) * 2` or `tostring(make_set(y))`
            self.pending_name = None
            v = self.scalar(node, replace(scope, allow_agg=True))
            if not v.agg:
                raise self.ctx.fail("type_mismatch", "summarize needs an aggregate function here (count(), sum(), ...)", node.span)
            name = item.names[0] if item.names else (self.pending_name or self.unique(cols, "Column1"))
            cols[name] = v.type
            exprs[name] = v.sql
            return
        if call.name in ("arg_max", "arg_min"):
            self.arg_extreme(item, call, scope, cols, exprs, post)
            return
        if call.name in ("take_any", "any") and (len(call.args) > 1 or any(isinstance(a, n.Star) for a in call.args)):
            self.arg_extreme(item, call, scope, cols, exprs, post)
            return
        if call.name == "percentiles":
            if len(call.args) < 2:
                raise self.ctx.fail("wrong_arguments", f"percentiles() takes at least 2 arguments, got {len(call.args)}",
                                    call.span)
            value = self.scalar(call.args[0], scope)
            base = self.column_name(call.args[0]) or "expr"
            for p in call.args[1:]:
                pv = self.scalar(p, scope)
                sql, t = F.agg_sql("percentile", [value, pv], self.ctx, call)
                pname = str(pv.const).replace(".", "_") if pv.is_const else "p"
                name = self.unique(cols, f"percentile_{base}_{pname}")
                cols[name] = t
                exprs[name] = sql
            return
        v = self.scalar(node, replace(scope, allow_agg=True))
        if item.names:
            name = item.names[0]
        else:
            prefix = F.AGG_PREFIX.get(call.name, call.name + "_")
            arg = self.column_name(call.args[0]) if call.args and call.name != "countif" else None
            if arg and scope.rel is not None and arg not in scope.rel.cols and scope.rel.aliases.get(arg) in scope.rel.cols:
                arg = scope.rel.aliases[arg]  # max(TimeGenerated) reads Timestamp: max_Timestamp
            if call.name == "percentile" and arg:
                p = call.args[1]
                arg = f"{arg}_{p.value}" if isinstance(p, n.Literal) else arg
            name = self.unique(cols, prefix + (arg or ""))
        if name in cols:
            self.ctx.error("duplicate_column", f"column {name!r} is defined twice", item.span)
        cols[name] = v.type
        exprs[name] = v.sql

    @staticmethod
    def unique(cols: dict[str, str], name: str) -> str:
        if name not in cols:
            return name
        i = 1
        while f"{name}{i}" in cols:
            i += 1
        return f"{name}{i}"

    def arg_extreme(self, item: n.NamedExpr, call: n.Call, scope: Scope, cols: dict[str, str],
                    exprs: dict[str, exp.Expr], post: dict[str, exp.Expr]) -> None:
        assert scope.rel is not None
        any_row = call.name in ("take_any", "any")
        if len(call.args) < 2 and not any_row:
            raise self.ctx.fail("wrong_arguments", f"{call.name}() needs the value to maximize and the columns to return", call.span)
        if any_row and isinstance(call.args[0], n.Star):
            call = n.Call(call.span, call.name, call.name_span, call.args[1:] + (call.args[0],)) if len(call.args) > 1 else call
        if any_row and isinstance(call.args[0], n.Star):
            target = V(sb.num(1), "long")
            call = n.Call(call.span, call.name, call.name_span, (n.Literal(call.span, 1, "long"),) + call.args)
        else:
            target = self.scalar(call.args[0], scope)
        if target.type == "dynamic":
            raise self.ctx.fail("type_mismatch", f"{call.name}(): cannot order by a dynamic value", call.args[0].span)
        wanted: list[tuple[str, V]] = []
        tname = item.names[0] if len(item.names) == 1 else (self.column_name(call.args[0]) or
                                                   ("max_" if call.name == "arg_max" else "min_") + "expr")
        if not (any_row and isinstance(call.args[0], n.Literal)):
            wanted.append((tname, target))
        for a in call.args[1:]:
            if isinstance(a, n.Star):
                for c, t in scope.rel.cols.items():
                    if c not in cols and c not in (w[0] for w in wanted):
                        wanted.append((c, V(scope.rel.exprs[c], t)))
                continue
            if isinstance(a, n.NamedArg):
                wanted.append((a.name, self.scalar(a.value, scope)))
                continue
            v = self.scalar(a, scope)
            name = self.column_name(a) or self.unique(cols, "Column1")
            if name not in (w[0] for w in wanted) and name not in cols:
                wanted.append((name, v))
        if len(item.names) > 1:
            if len(item.names) > len(wanted):
                raise self.ctx.fail("wrong_arguments", f"{call.name}() returns {len(wanted)} columns, {len(item.names)} names given", item.span)
            wanted = [(item.names[i], v) if i < len(item.names) else (nm, v) for i, (nm, v) in enumerate(wanted)]
        # One struct per row so every returned column comes from the same row.
        alias = f"__{call.name}_{len(post)}"
        struct = exp.Struct(expressions=[
            exp.PropertyEQ(this=sb.ident(f"c{i}"), expression=v.sql) for i, (_, v) in enumerate(wanted)
        ])
        cols[alias] = "dynamic"
        exprs[alias] = sb.fn("any_value", struct) if any_row else sb.fn(call.name, struct, target.sql.copy())
        post[alias] = exp.Null()  # marks the struct column: dropped from the output
        for i, (name, v) in enumerate(wanted):
            if name in cols:
                continue
            cols[name] = v.type
            post[name] = exp.Dot(this=sb.col(alias), expression=sb.ident(f"c{i}"))

    def op_sort(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        if rel.limit is not None or rel.distinct:
            rel = self.wrap(rel)
        rel.order = self.order_items(rel, op.sort, env)
        return rel

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

    def _limit_value(self, node: n.Node, env: Env) -> exp.Expr:
        v = self.scalar(node, Scope(env))
        if v.type not in ("long", "int", UNKNOWN):
            self.ctx.error("type_mismatch", f"the row count must be a whole number, this is a {v.type}", node.span)
        elif v.is_const and isinstance(v.const, int) and v.const < 0:
            self.ctx.error("invalid_argument", f"the row count must not be negative, this is {v.const}", node.span)
        return v.sql

    def op_take(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        assert op.operand is not None
        if rel.limit is not None:
            rel = self.wrap(rel)
        rel.limit = self._limit_value(op.operand, env)
        return rel

    op_sample = op_take

    def op_top(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        assert op.operand is not None
        if rel.limit is not None or rel.distinct:
            rel = self.wrap(rel)
        rel.order = self.order_items(rel, op.sort, env)
        rel.limit = self._limit_value(op.operand, env)
        return rel

    def op_distinct(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        if op.extra != "*":
            rel = self._columns_added(rel, op.exprs, env, keep_existing=False)
        elif not rel.open:
            rel = self.wrap(rel)
        for c, t in rel.cols.items():
            if t == "string" and not is_notnull(rel, rel.exprs[c]):
                # a missing string is "": one distinct value, not two
                rel.exprs[c] = sb.fn("coalesce", rel.exprs[c], sb.s(""))
        rel.order = []
        rel.distinct = True
        return rel

    def op_count(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        sel = exp.Select(expressions=[sb.alias(exp.Count(this=exp.Star()), "Count")]).from_(
            exp.Subquery(this=rel.select(), alias=exp.TableAlias(this=sb.ident(self.ctx.alias())))
        )
        return self.wrap_select(sel, {"Count": "long"})

    def op_getschema(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        from schema.types import kql_type

        rows = []
        for i, (c, t) in enumerate(rel.cols.items()):
            dotnet = kql_type(t).dotnet if t != UNKNOWN else "Object"
            rows.append(exp.Tuple(expressions=[sb.s(c), sb.num(i), sb.s("System." + dotnet), sb.s(t)]))
        cols = {"ColumnName": "string", "ColumnOrdinal": "int", "DataType": "string", "ColumnType": "string"}
        alias = self.ctx.alias("_gs")
        values = exp.Values(expressions=rows, alias=exp.TableAlias(this=sb.ident(alias), columns=[sb.ident(c) for c in cols]))
        return self.wrap_select(exp.Select(expressions=[sb.col(c) for c in cols]).from_(values), cols)

    def op_as(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        rel = self.wrap(rel)
        env.names[op.names[0].name] = Binding("rel", rel)
        return wrap_copy(rel, self.ctx)

    def op_invoke(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        call = op.operand
        assert isinstance(call, n.Call)
        b = env.get(call.name)
        if (b is None or b.kind != "function") and call.name == "FileProfile":
            from kql.enrich import file_profile

            return file_profile(self, rel, call, env)
        if (b is None or b.kind != "function") and call.name in F.UNSUPPORTED_FUNCTIONS:
            raise self.ctx.fail("unsupported", f"{call.name}() {F.UNSUPPORTED_FUNCTIONS[call.name]}", call.name_span)
        if b is None or b.kind != "function":
            raise self.ctx.fail("unknown_function", f"unknown function {call.name!r}", call.name_span,
                                name_hints(call.name, [k for k in env.all_names() if (env.get(k) or Binding('', None)).kind == 'function'], "functions"))
        fn: n.FnDef = b.value
        if not fn.params or fn.params[0].type is not None:
            raise self.ctx.fail("wrong_arguments", f"{call.name}() takes no table as its first parameter", call.span)
        fenv = self._fn_env(fn, b.env or env, call, env, pipe_input=self.wrap(rel))
        return self._fn_body_table(fn, fenv, call)

    def op_union(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        return self.union(rel, op.params, op.conds, env, op.span)

    def union(self, first: Rel | None, params: tuple[n.OpParam, ...], items: tuple[n.Node, ...],
              env: Env, span: n.Span) -> Rel:
        source_col = None
        for p in params:
            if p.name in ("withsource", "with_source"):
                source_col = str(p.value)
            elif p.name not in ("isfuzzy", "kind") and not p.name.startswith("hint."):
                self.ctx.warn("ignored", f"union parameter {p.name} is ignored", p.span)
        rels: list[tuple[str, Rel]] = []
        if first is not None:
            rels.append((first.name or "union_arg0", first))
        for _i, item in enumerate(items):
            if isinstance(item, n.WildName):
                regex = re.compile(fnmatch.translate(item.pattern))
                matched = [t for t in self.ctx.catalog.tables if regex.match(t)]
                if not matched:
                    self.ctx.error("unknown_table", f"no table matches {item.pattern!r}", item.span,
                                   name_hints(item.pattern, list(self.ctx.catalog.tables), "tables"))
                for t in matched:
                    table = self.ctx.catalog.table(t)
                    assert table is not None
                    rels.append((t, self.base_rel(table)))
                continue
            try:
                r = self.tabular(item, env)
            except CompileError:
                continue
            label = item.name if isinstance(item, n.Name) else (r.name or f"union_arg{len(rels)}")
            rels.append((label, r))
        if not rels:
            raise CompileError("union of nothing")
        cols: dict[str, str] = {}
        if source_col:
            cols[source_col] = "string"
        for _, r in rels:
            for c, t in r.cols.items():
                if c in cols and cols[c] != t and UNKNOWN not in (cols[c], t):
                    self.ctx.warn("type_mismatch", f"column {c!r} is {cols[c]} in one table and {t} in another; using string", span)
                    cols[c] = "string"
                cols.setdefault(c, t)
        selects: list[exp.Select] = []
        for label, r in rels:
            inner = r.select()
            alias = self.ctx.alias()
            proj = []
            for c, t in cols.items():
                if c == source_col:
                    proj.append(sb.alias(sb.s(label), c))
                elif c in r.cols:
                    e: exp.Expr = sb.col(c)
                    if r.cols[c] != t:
                        e = sb.cast(e, t)
                    proj.append(sb.alias(e, c))
                else:
                    proj.append(sb.alias(sb.null(t), c))
            selects.append(exp.Select(expressions=proj).from_(
                exp.Subquery(this=inner, alias=exp.TableAlias(this=sb.ident(alias)))))
        u: exp.Expr = selects[0]
        for s_ in selects[1:]:
            u = exp.Union(this=u, expression=s_, distinct=False)
        alias = self.ctx.alias()
        sub = exp.Subquery(this=u, alias=exp.TableAlias(this=sb.ident(alias)))
        return Rel(cols=cols, exprs={c: sb.col(c) for c in cols}, src=sub, aliases=time_aliases(cols))

    def op_join(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        kind = "innerunique"
        for p in op.params:
            if p.name == "kind":
                kind = str(p.value).lower()
        assert op.operand is not None
        right = self.tabular(op.operand, env)
        return self.join(rel, right, kind, op, env, lookup=False)

    def op_lookup(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        kind = "leftouter"
        for p in op.params:
            if p.name == "kind":
                kind = str(p.value).lower()
        assert op.operand is not None
        right = self.tabular(op.operand, env)
        return self.join(rel, right, kind, op, env, lookup=True)

    JOIN_KINDS = {
        "innerunique": "INNER", "inner": "INNER", "leftouter": "LEFT", "rightouter": "RIGHT",
        "fullouter": "FULL", "leftanti": "ANTI", "anti": "ANTI", "leftantisemi": "ANTI",
        "leftsemi": "SEMI", "rightanti": "ANTI", "rightantisemi": "ANTI", "rightsemi": "SEMI",
    }

    def join(self, left: Rel, right: Rel, kind: str, op: n.Operator, env: Env, lookup: bool) -> Rel:
        if kind not in self.JOIN_KINDS:
            raise self.ctx.fail("invalid_argument", f"unknown join kind {kind!r}", op.span,
                                ["kinds: " + ", ".join(self.JOIN_KINDS)])
        keys: list[tuple[str, str, n.Node]] = []  # (left column, right column)
        for cond in op.conds:
            keys += self.join_keys(cond, left, right)
        if not op.conds:
            common = [c for c in left.cols if c in right.cols]
            if not common:
                raise self.ctx.fail("wrong_arguments", "join needs `on` columns", op.span)
            keys = [(c, c, op) for c in common]
        swap = kind.startswith("right") and kind in ("rightanti", "rightsemi", "rightantisemi")
        la, ra = self.ctx.alias("_l"), self.ctx.alias("_r")
        lsel: exp.Expr = left.select()
        if kind == "innerunique":
            # Kusto de-duplicates the left side on the join key before joining
            lrel = self.wrap(left)
            lrel.qualify = exp.EQ(
                this=exp.Window(this=sb.fn("row_number"), partition_by=[sb.col(k[0]) for k in keys]),
                expression=sb.num(1),
            )
            lsel = lrel.select()
        lsub = exp.Subquery(this=lsel, alias=exp.TableAlias(this=sb.ident(la)))
        rsub = exp.Subquery(this=right.select(), alias=exp.TableAlias(this=sb.ident(ra)))
        on = sb.and_all([exp.EQ(this=sb.col(lk, la), expression=sb.col(rk, ra)) for lk, rk, _ in keys])
        jt = self.JOIN_KINDS[kind]
        cols: dict[str, str] = {}
        proj: list[exp.Expr] = []
        if jt in ("ANTI", "SEMI"):
            keep, keep_alias = (right, ra) if swap else (left, la)
            for c, t in keep.cols.items():
                cols[c] = t
                proj.append(sb.alias(sb.col(c, keep_alias), c))
            a_sub, b_sub = (rsub, lsub) if swap else (lsub, rsub)
            sel = exp.Select(expressions=proj).from_(a_sub).join(b_sub, on=on, join_type=jt)
            return self.wrap_select(sel, cols)
        right_keys = {rk for lk, rk, _ in keys if lk == rk}

        def side(c: str, t: str, alias: str, nullable: bool) -> exp.Expr:
            # the unmatched side of an outer join is NULL; a Kusto string is never null, it is ""
            e: exp.Expr = sb.col(c, alias)
            return sb.fn("coalesce", e, sb.s("")) if nullable and t == "string" else e

        for c, t in left.cols.items():
            cols[c] = t
            proj.append(sb.alias(side(c, t, la, jt in ("RIGHT", "FULL")), c))
        for c, t in right.cols.items():
            if lookup and c in right_keys:
                continue
            name = c
            if name in cols:
                name = self.unique(cols, c)
            cols[name] = t
            proj.append(sb.alias(side(c, t, ra, jt in ("LEFT", "FULL")), name))
        sel = exp.Select(expressions=proj).from_(lsub).join(rsub, on=on, join_type=jt)
        return self.wrap_select(sel, cols)

    def join_keys(self, cond: n.Node, left: Rel, right: Rel) -> list[tuple[str, str, n.Node]]:
        if isinstance(cond, n.Name):
            ok = True
            if cond.name not in left.cols:
                self.ctx.error("unknown_column", f"unknown column {cond.name!r} on the left side of the join",
                               cond.span, name_hints(cond.name, list(left.cols), "columns"))
                ok = False
            if cond.name not in right.cols:
                self.ctx.error("unknown_column", f"unknown column {cond.name!r} on the right side of the join",
                               cond.span, name_hints(cond.name, list(right.cols), "columns"))
                ok = False
            return [(cond.name, cond.name, cond)] if ok else []
        if isinstance(cond, n.Binary) and cond.op == "and":
            return self.join_keys(cond.left, left, right) + self.join_keys(cond.right, left, right)
        if isinstance(cond, n.Binary) and cond.op == "==":
            sides = {}
            for part in (cond.left, cond.right):
                if isinstance(part, n.SideRef):
                    rel = left if part.side == "left" else right
                    if part.name not in rel.cols:
                        self.ctx.error("unknown_column", f"unknown column {part.name!r} on the {part.side} side of the join",
                                       part.span, name_hints(part.name, list(rel.cols), "columns"))
                        return []
                    sides[part.side] = part.name
                elif isinstance(part, n.Name):
                    sides.setdefault("left" if "left" not in sides else "right", part.name)
            if "left" in sides and "right" in sides:
                return [(sides["left"], sides["right"], cond)]
        self.ctx.error("unsupported", "join conditions must be column names or $left.A == $right.B", cond.span)
        return []

    def op_mv_expand(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        rel = self.wrap(rel) if not rel.open or rel.order else rel
        scope = Scope(env, rel)
        index_col = None
        bag_kind = "bag"
        for p in op.params:
            if p.name == "with_itemindex":
                index_col = str(p.value)
            elif p.name in ("kind", "bagexpansion"):
                bag_kind = str(p.value).lower()
            else:
                self.ctx.error("unsupported", f"mv-expand {p.name} is not supported", p.span)
        new_cols = dict(rel.cols)
        new_exprs = dict(rel.exprs)
        types = list(op.extra or ())
        for pos, item in enumerate(op.exprs):
            v = self.scalar(item.expr, scope)
            name = item.names[0] if item.names else self.column_name(item.expr)
            if not name and isinstance(item.expr, n.Call) and len(item.expr.args) == 1:
                # `mv-expand todynamic(X)` expands into X itself
                name = self.column_name(item.expr.args[0])
            if not name:
                raise self.ctx.fail("wrong_arguments", "mv-expand of an expression needs a name: Name = expr", item.span)
            arr = v.sql if v.type == "dynamic" else F._parse_json(self.ctx, [v], n.Call(item.span, "todynamic", item.span, ()))
            elems = exp.Cast(this=sb.fn("json_extract", arr, sb.s("$[*]")), to=exp.DataType.build("JSON[]"))
            # a value that is not an array expands to itself (Kusto treats it as a one-item array)
            is_arr = exp.EQ(this=sb.fn("json_type", arr.copy()), expression=sb.s("ARRAY"))
            # a property bag expands to one row per property: {"k": v} (kind=bag) or ["k", v] (kind=array)
            is_bag = exp.EQ(this=sb.fn("json_type", arr.copy()), expression=sb.s("OBJECT"))
            k = sb.lambda_param("k", arr)
            key = exp.column(k)
            path = exp.DPipe(this=exp.DPipe(this=sb.s('$."'), expression=sb.fn("replace", key.copy(), sb.s('"'), sb.s('\\"'))),
                             expression=sb.s('"'))
            value = sb.fn("json_extract", arr.copy(), path)
            entry = sb.fn("json_object", key.copy(), value) if bag_kind == "bag" else sb.fn("json_array", key.copy(), value)
            props = sb.fn("list_transform", sb.fn("json_keys", arr.copy()),
                          exp.Lambda(this=entry, expressions=[exp.to_identifier(k)]))
            lst = exp.Case(ifs=[exp.If(this=is_arr, true=elems), exp.If(this=is_bag, true=props)],
                           default=exp.Array(expressions=[arr.copy()]))
            new_cols[name] = "dynamic"
            new_exprs[name] = sb.fn("unnest", lst)
            if index_col and pos == 0:
                count = sb.fn("len", lst.copy())
                new_cols[index_col] = "long"
                new_exprs[index_col] = sb.fn("unnest", sb.fn("range", count))
        rel.cols, rel.exprs = new_cols, new_exprs
        rel = self.wrap(rel)
        # `to typeof(T)` gives the expanded column a scalar type
        for item, tname in zip(op.exprs, types, strict=False):
            name = item.names[0] if item.names else self.column_name(item.expr)
            if not name and isinstance(item.expr, n.Call) and len(item.expr.args) == 1:
                name = self.column_name(item.expr.args[0])
            if tname and name in rel.cols and normalize_type(tname) != "dynamic":
                t = normalize_type(tname)
                rel.cols[name] = t
                rel.exprs[name] = to_type(V(sb.col(name), "dynamic"), t)
        if op.operand is not None:
            rel.limit = self._limit_value(op.operand, env)
        return rel

    def op_mv_apply(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        """mv-apply: for each row, mv-expand it into a subtable and run the subquery on that.

        Lowered to a LATERAL subquery: the subtable reads the outer row's columns (qualified
        with the outer alias) and unnests its arrays, so a `summarize` or `top` in the subquery
        works per input row, as Kusto's documentation describes. The result is the subquery's
        columns, after the outer row's columns the subquery does not return and that were not
        expanded (an expanded input column is replaced, per the documentation).
        """
        types, sub_ops = op.extra
        outer = self.wrap(rel)
        o_alias = outer.src.alias
        inner = Rel(cols=dict(outer.cols), exprs={c: sb.col(c, o_alias) for c in outer.cols},
                    src=exp.Subquery(this=exp.Select(expressions=[exp.Literal.number(1)]),
                                     alias=exp.TableAlias(this=sb.ident(self.ctx.alias("_one")))),
                    aliases=dict(outer.aliases), notnull=outer.notnull)
        expand = n.Operator(op.span, "mv-expand", params=op.params, exprs=op.exprs, operand=op.operand,
                            extra=types)
        sub = self.op_mv_expand(inner, expand, env)
        expanded = set()
        for item in op.exprs:
            name = item.names[0] if item.names else self.column_name(item.expr)
            if name:
                expanded.add(name)
        for p in op.params:
            if p.name == "with_itemindex":
                expanded.add(str(p.value))
        for sub_op in sub_ops:
            sub = self.operator(sub, sub_op, env)
        s_alias = self.ctx.alias()
        cols: dict[str, str] = {}
        exprs: list[exp.Expr] = []
        for c, t in outer.cols.items():
            if c in sub.cols:
                cols[c] = sub.cols[c]
                exprs.append(sb.alias(sb.col(c, s_alias), c))
            elif c not in expanded:
                cols[c] = t
                exprs.append(sb.alias(sb.col(c, o_alias), c))
        for c, t in sub.cols.items():
            if c not in cols:
                cols[c] = t
                exprs.append(sb.alias(sb.col(c, s_alias), c))
        lateral = exp.Lateral(this=exp.Subquery(this=sub.select()), alias=exp.TableAlias(this=sb.ident(s_alias)))
        sel = exp.Select(expressions=exprs).from_(outer.src.copy(), copy=False)
        sel.append("joins", exp.Join(this=lateral))
        return self.wrap_select(sel, cols)

    def op_make_series(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        """make-series: per group, one array per aggregate over the bins start, start+step, ... < end.

        A bin with no rows holds the aggregate's `default` (0 unless given), as documented. Without
        `from`/`to` the bounds are the input's smallest axis value and just past its largest.
        Output: the by columns, the aggregate arrays, then the axis array (bin starts).
        """
        defaults, axis_node, start_node, end_node, step_node = op.extra
        for p in op.params:
            if not p.name.startswith("hint.") and p.name != "kind":
                self.ctx.error("unsupported", f"make-series {p.name} is not supported", p.span)
        inp = self.wrap(rel)
        scope = Scope(env, inp)
        axis = self.scalar(axis_node, scope)
        axis_name = self.column_name(axis_node)
        if not axis_name:
            raise self.ctx.fail("wrong_arguments", "make-series needs a column after on", axis_node.span)
        if axis.type not in ("datetime", "timespan") and not is_numeric(axis.type):
            raise self.ctx.fail("type_mismatch", f"make-series axis must be a datetime, timespan or number, not {axis.type}",
                                axis_node.span)
        step = self.scalar(step_node, scope)

        def bound(node: n.Node | None, agg: str) -> exp.Expr:
            if node is not None:
                v = self.scalar(node, scope)
                if v.type != axis.type and not (is_numeric(v.type) and is_numeric(axis.type)):
                    raise self.ctx.fail("type_mismatch", f"make-series bound is {v.type}, the axis is {axis.type}", node.span)
                return v.sql
            edge: exp.Expr = sb.fn(agg, axis.sql.copy())
            if agg == "max":
                edge = exp.Add(this=edge, expression=step.sql.copy())
            return exp.Subquery(this=exp.Select(expressions=[edge]).from_(inp.src.copy(), copy=False))

        start, end = bound(start_node, "min"), bound(end_node, "max")
        binned = self.wrap(inp)
        offset = V(exp.Sub(this=axis.sql.copy(), expression=start.copy()),
                   "timespan" if axis.type == "datetime" else axis.type)
        bin_col = "__series_bin"
        binned.cols[bin_col] = axis.type
        binned.exprs[bin_col] = exp.Add(this=F.bin_value(self.ctx, offset, step), expression=start.copy())
        binned.where += [exp.GTE(this=axis.sql.copy(), expression=start.copy()),
                         exp.LT(this=axis.sql.copy(), expression=end.copy())]
        summ = n.Operator(op.span, "summarize", exprs=op.exprs,
                          by=op.by + (n.NamedExpr(op.span, (bin_col,), n.Name(op.span, bin_col)),))
        agg = self.op_summarize(binned, summ, env)
        keys = [c for c in agg.cols if c != bin_col][:len(op.by)]
        values = [c for c in agg.cols if c != bin_col and c not in keys]
        agg_sel = agg.select()
        s_alias, k_alias, g_alias = self.ctx.alias(), self.ctx.alias(), self.ctx.alias()

        def sub(alias: str) -> exp.Expr:
            return exp.Subquery(this=agg_sel.copy(), alias=exp.TableAlias(this=sb.ident(alias)))

        key_exprs = [sb.alias(sb.col(k), k) for k in keys] or [sb.alias(exp.true(), "__series_group")]
        groups = exp.Subquery(this=exp.Select(expressions=key_exprs, distinct=exp.Distinct()).from_(sub(s_alias + "k"), copy=False),
                              alias=exp.TableAlias(this=sb.ident(k_alias)))
        bins = guarded_grid(start, end, step.sql, axis.type)  # at most query_max_array_elements bins
        grid = exp.Subquery(this=exp.Select(expressions=[sb.alias(sb.fn("unnest", bins), "t")]),
                            alias=exp.TableAlias(this=sb.ident(g_alias)))
        on = sb.and_all([exp.NullSafeEQ(this=sb.col(k, k_alias), expression=sb.col(k, s_alias)) for k in keys]
                        + [exp.EQ(this=sb.col(bin_col, s_alias), expression=sb.col("t", g_alias))])
        order = exp.Order(expressions=[exp.Ordered(this=sb.col("t", g_alias))])
        cols: dict[str, str] = {k: agg.cols[k] for k in keys}
        exprs: list[exp.Expr] = [sb.alias(sb.col(k, k_alias), k) for k in keys]
        for i, c in enumerate(values):
            dnode = defaults[i] if i < len(defaults) else None
            dflt = self.scalar(dnode, scope).sql if dnode is not None else sb.num(0)
            item = sb.fn("coalesce", sb.col(c, s_alias), dflt)
            lst = exp.ArrayAgg(this=exp.Order(this=item, expressions=order.expressions))
            exprs.append(sb.alias(sb.fn("to_json", lst), c))
            cols[c] = "dynamic"
        t: exp.Expr = sb.col("t", g_alias)
        if axis.type == "datetime":
            t = sb.fn("strftime", t, sb.s("%Y-%m-%dT%H:%M:%S.%f0Z"))  # Kusto's JSON form of a datetime
        exprs.append(sb.alias(sb.fn("to_json", exp.ArrayAgg(this=exp.Order(this=t, expressions=order.expressions))), axis_name))
        cols[axis_name] = "dynamic"
        sel = exp.Select(expressions=exprs).from_(groups, copy=False)
        sel = sel.join(grid, join_type="cross", copy=False)
        sel = sel.join(sub(s_alias), on=on, join_type="left", copy=False)
        sel = sel.group_by(*[sb.col(k, k_alias) for k in keys] or [sb.col("__series_group", k_alias)], copy=False)
        return self.wrap_select(sel, cols)

    def op_partition(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        """partition by Col (SubQuery): the subquery on the rows of each value of Col, results unioned.

        Lowered to a LATERAL subquery per distinct key (`hint.*` parameters change only how
        Kusto distributes the work, so they are accepted and ignored).
        """
        key = op.names[0]
        for p in op.params:
            if not p.name.startswith("hint."):
                self.ctx.error("unsupported", f"partition {p.name} is not supported", p.span)
        inp = self.wrap(rel)
        if key.name not in inp.cols:
            self.unknown_column(key.name, key.span, inp)
            raise CompileError()
        if inp.cols[key.name] == "dynamic":
            raise self.ctx.fail("type_mismatch", "partition needs a scalar key column, not dynamic", key.span)
        k_alias = self.ctx.alias()
        keys = exp.Subquery(this=exp.Select(expressions=[sb.alias(sb.col(key.name), key.name)], distinct=exp.Distinct())
                            .from_(inp.src.copy(), copy=False), alias=exp.TableAlias(this=sb.ident(k_alias)))
        part = self.wrap(inp)
        part.where.append(exp.NullSafeEQ(this=sb.col(key.name), expression=sb.col(key.name, k_alias)))
        sub = part
        for sub_op in op.extra:
            sub = self.operator(sub, sub_op, env)
        s_alias = self.ctx.alias()
        lateral = exp.Lateral(this=exp.Subquery(this=sub.select()), alias=exp.TableAlias(this=sb.ident(s_alias)))
        sel = exp.Select(expressions=[sb.alias(sb.col(c, s_alias), c) for c in sub.cols]).from_(keys, copy=False)
        sel.append("joins", exp.Join(this=lateral))
        return self.wrap_select(sel, sub.cols)

    def op_parse_kv(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        """parse-kv with given delimiters (optionally quotes) or a two-group regex.

        As documented: only the listed keys are extracted, the first occurrence of a key wins,
        spaces around keys and values are ignored, and a missing key gives "" for a string column
        and null for other types.
        """
        if not rel.open:
            rel = self.wrap(rel)
        assert op.operand is not None
        src = as_string(self.scalar(op.operand, Scope(env, rel)))
        opts: dict[str, list[str]] = {}
        for p in op.params:
            if p.name not in ("pair_delimiter", "kv_delimiter", "quote", "regex"):
                raise self.ctx.fail("unsupported", f"parse-kv {p.name} is not supported", p.span)
            opts.setdefault(p.name, []).append(str(p.value))
        if "regex" not in opts and not ("pair_delimiter" in opts and "kv_delimiter" in opts):
            raise self.ctx.fail("unsupported", "parse-kv needs pair_delimiter and kv_delimiter, or regex", op.span)
        if len(opts.get("pair_delimiter", [" "])[0]) != 1:
            raise self.ctx.fail("unsupported", "parse-kv with a pair_delimiter longer than one character is not supported",
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

    def op_parse(self, rel: Rel, op: n.Operator, env: Env) -> Rel:
        if not rel.open:
            rel = self.wrap(rel)
        assert op.operand is not None
        src = as_string(self.scalar(op.operand, Scope(env, rel)))
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

    # -------------------------------------------------------------- scalars

    def scalar(self, node: n.Node, scope: Scope) -> V:
        method: Callable[[Any, Scope], V] | None = getattr(self, "x_" + type(node).__name__, None)
        if method is None:
            raise self.ctx.fail("unsupported", f"{type(node).__name__} is not supported here", node.span)
        return method(node, scope)

    def x_Literal(self, node: n.Literal, scope: Scope) -> V:
        return const(node.value, node.type)

    def x_Paren(self, node: n.Paren, scope: Scope) -> V:
        if self.is_tabular(node.inner, scope.env):
            return self.scalar_subquery(node.inner, scope)
        v = self.scalar(node.inner, scope)
        return replace(v, sql=sb.paren(v.sql))

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

    def x_Name(self, node: n.Name, scope: Scope) -> V:
        rel = scope.rel
        if rel is not None and node.name in rel.cols:
            e = rel.exprs[node.name]
            return V(e.copy(), rel.cols[node.name], notnull=is_notnull(rel, e))
        if rel is not None and rel.aliases.get(node.name) in rel.cols:
            target = rel.aliases[node.name]
            return V(rel.exprs[target].copy(), rel.cols[target])
        b = scope.env.get(node.name)
        if b is not None:
            if b.kind == "scalar":
                v: V = b.value
                return V(v.sql.copy(), v.type, v.const)
            if b.kind in ("tabular", "rel"):
                return self.scalar_subquery(node, scope)
            raise self.ctx.fail("type_mismatch", f"{node.name!r} is a function: call it with ()", node.span)
        if node.name.lower() in ("true", "false"):
            return const(node.name.lower() == "true", "bool")
        if node.name == "null":
            return V(exp.Null(), UNKNOWN, None)
        if self.ctx.catalog.table(node.name) is not None:
            raise self.ctx.fail("type_mismatch", f"{node.name!r} is a table; a scalar is needed here", node.span)
        if rel is not None and rel.open_schema:
            return V(sb.col(node.name), UNKNOWN)  # a column the data will decide (no probe)
        names = list(rel.cols) if rel else []
        names += [k for k in scope.env.all_names() if k not in names]
        raise self.ctx.fail("unknown_column", f"unknown column or variable {node.name!r}", node.span,
                            name_hints(node.name, names, "columns" if rel else "names"))

    def x_ArrayLit(self, node: n.ArrayLit, scope: Scope) -> V:
        # `['Column Name']` is a bracketed column reference outside dynamic()
        if len(node.items) == 1 and isinstance(node.items[0], n.Literal) and isinstance(node.items[0].value, str):
            return self.x_Name(n.Name(node.span, node.items[0].value, bracketed=True), scope)
        raise self.ctx.fail("syntax", "an array literal must be written dynamic([...])", node.span)

    def x_SideRef(self, node: n.SideRef, scope: Scope) -> V:
        raise self.ctx.fail("syntax", f"${node.side} can only be used in a join condition", node.span)

    def x_NamedArg(self, node: n.NamedArg, scope: Scope) -> V:
        # `toint(Total = count())`: Kusto lets the name ride inside the call; it names the column
        self.pending_name = node.name
        return self.scalar(node.value, scope)

    def x_Star(self, node: n.Star, scope: Scope) -> V:
        raise self.ctx.fail("syntax", "* is not allowed here", node.span)

    def x_Neg(self, node: n.Neg, scope: Scope) -> V:
        v = self.scalar(node.operand, scope)
        if not (is_numeric(v.type) or v.type == "timespan"):
            self.ctx.error("type_mismatch", f"cannot negate a {v.type}", node.span)
        if node.op == "+":
            return v
        return V(exp.Neg(this=sb.paren(v.sql)), v.type, -v.const if v.is_const and v.const is not None else NOCONST)

    def x_Binary(self, node: n.Binary, scope: Scope) -> V:
        if node.op in ("and", "or"):
            a, b = self.scalar(node.left, scope), self.scalar(node.right, scope)
            for side, v in ((node.left, a), (node.right, b)):
                self.expect_bool(v, side)
            cls = exp.And if node.op == "and" else exp.Or
            sa = sb.paren(a.sql) if isinstance(a.sql, exp.Or) and node.op == "and" else a.sql
            sb_ = sb.paren(b.sql) if isinstance(b.sql, exp.Or) and node.op == "and" else b.sql
            return V(cls(this=sa, expression=sb_), "bool", window=a.window or b.window, agg=a.agg or b.agg)
        a, b = self.scalar(node.left, scope), self.scalar(node.right, scope)
        window, agg = a.window or b.window, a.agg or b.agg
        if node.op in ("+", "-", "*", "/", "%"):
            return replace(self.arith(node, a, b), window=window, agg=agg)
        return replace(self.compare(node, a, b), window=window, agg=agg)

    def arith(self, node: n.Binary, a: V, b: V) -> V:
        op, ta, tb = node.op, a.type, b.type
        if a.is_const and b.is_const and a.const is not None and b.const is not None:
            folded = _fold(op, a, b)
            if folded is not None:
                return folded
        if UNKNOWN in (ta, tb):
            return V(_arith_sql(op, a.sql, b.sql), UNKNOWN)
        if ta == "dynamic":
            a, ta = V(to_type(a, "real"), "real"), "real"
        if tb == "dynamic":
            b, tb = V(to_type(b, "real"), "real"), "real"
        if ta in NUMERIC and tb in NUMERIC:
            t = num_result(ta, tb)
            if op == "/" and t in ("long", "int"):
                # Kusto divides integers as integers, truncating toward zero
                return V(sb.cast(sb.fn("trunc", exp.Div(this=sb.paren(a.sql), expression=sb.paren(b.sql))), t), t)
            return V(_arith_sql(op, a.sql, b.sql), t)
        if ta == "datetime" and tb == "datetime" and op == "-":
            return V(exp.Sub(this=a.sql, expression=b.sql), "timespan")
        # past Kusto's datetime/timespan range the result is null, as in Kusto (kql.temporal)
        if ta == "datetime" and tb == "timespan" and op in "+-":
            return V(datetime_in_range(_arith_sql(op, a.sql, b.sql)), "datetime")
        if ta == "timespan" and tb == "datetime" and op == "+":
            return V(datetime_in_range(exp.Add(this=b.sql, expression=a.sql)), "datetime")
        if ta == "timespan" and tb == "timespan":
            if op in "+-":
                return V(timespan_in_range(_arith_sql(op, a.sql, b.sql)), "timespan")
            if op == "/":
                return V(exp.Div(this=sb.fn("epoch_us", a.sql), expression=sb.fn("epoch_us", b.sql)), "real")
        if ta == "timespan" and tb in NUMERIC and op in "*/":
            us = _arith_sql(op, sb.fn("epoch_us", a.sql), b.sql)
            return V(timespan_in_range(sb.fn("to_microseconds", exp.TryCast(this=us, to=exp.DataType.build("BIGINT")))), "timespan")
        if ta in NUMERIC and tb == "timespan" and op == "*":
            us = exp.Mul(this=sb.paren(a.sql), expression=sb.fn("epoch_us", b.sql))
            return V(timespan_in_range(sb.fn("to_microseconds", exp.TryCast(this=us, to=exp.DataType.build("BIGINT")))), "timespan")
        self.ctx.error("type_mismatch", f"cannot apply {op} to {ta} and {tb}", node.op_span)
        return V(exp.Null(), UNKNOWN)

    def compare(self, node: n.Binary, a: V, b: V) -> V:
        op = node.op
        ta, tb = a.type, b.type
        if op in ("=~", "!~"):
            la, lb = self.case_fold(a), self.case_fold(b)
            eq = exp.EQ(this=la, expression=lb)
            return V(eq if op == "=~" else negate(eq, a, b), "bool")
        # Align types: dynamic adapts to the other side; null literals take any type
        if ta == "dynamic" and tb != "dynamic" and tb != UNKNOWN:
            a, ta = V(to_type(a, tb), tb), tb
        elif tb == "dynamic" and ta != "dynamic" and ta != UNKNOWN:
            b, tb = V(to_type(b, ta), ta), ta
        if not self.comparable(ta, tb, b) or not self.comparable(tb, ta, a):
            self.ctx.error("type_mismatch", f"cannot compare {ta} with {tb}", node.span,
                           [f"the left side is {ta}, the right side is {tb}"] +
                           (["write datetime(2024-01-01) or ago(1d) for a time"] if "datetime" in (ta, tb) else []))
            return V(exp.false(), "bool")
        if ta == "dynamic" and tb == "dynamic":
            a, b = V(as_string(a), "string"), V(as_string(b), "string")
        if (ta == "bool") != (tb == "bool") and UNKNOWN not in (ta, tb) and not (a.is_const and a.const is None) and not (b.is_const and b.const is None):
            a = V(sb.cast(a.sql, "int"), "int") if ta == "bool" else a
            b = V(sb.cast(b.sql, "int"), "int") if tb == "bool" else b
        if op in ("==", "!=") and (ta in STRINGY or tb in STRINGY):
            # Kusto has no null strings: a missing string equals ""
            lit = b if b.is_const else a if a.is_const else None
            other = a if lit is b else b
            if lit is not None and lit.const == "":
                empty = F._isempty(V(other.sql, "string", notnull=other.notnull))
                return V(empty if op == "==" else exp.Not(this=empty), "bool")
        cls: type[exp.Binary] = {"==": exp.EQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE}[op]
        if op in ("==", "!="):
            known = (a.is_const and a.const is not None) or (b.is_const and b.const is not None)
            if op == "==" and known:
                return V(exp.EQ(this=a.sql, expression=b.sql), "bool")
            # Kusto: null != value is true, null == value is false, and null vs null is null
            # (and a missing string is "", unequal to any other)
            test: exp.Expr = (exp.NullSafeNEQ(this=a.sql, expression=b.sql) if op == "!=" else
                                    fn_coalesce_false(exp.EQ(this=a.sql, expression=b.sql)))
            if known:
                return V(test, "bool")
            both_null = exp.And(this=exp.Is(this=a.sql.copy(), expression=exp.Null()),
                                expression=exp.Is(this=b.sql.copy(), expression=exp.Null()))
            return V(exp.Case(ifs=[exp.If(this=both_null, true=exp.Null())], default=test), "bool")
        return V(cls(this=a.sql, expression=b.sql), "bool")

    @staticmethod
    def comparable(ta: str, tb: str, other: V) -> bool:
        if UNKNOWN in (ta, tb) or ta == tb:
            return True
        if other.is_const and other.const is None:
            return True
        if ta in NUMERIC | {"bool"} and tb in NUMERIC | {"bool"}:
            return True  # Kusto compares bools with numbers as 1/0
        if ta in STRINGY and tb in STRINGY:
            return True
        return "dynamic" in (ta, tb)

    def case_fold(self, v: V) -> exp.Expr:
        if v.is_const and isinstance(v.const, str):
            return sb.s(v.const.lower())
        return sb.fn("lower", as_string(v))

    def x_StrOp(self, node: n.StrOp, scope: Scope) -> V:
        a, b = self.scalar(node.left, scope), self.scalar(node.right, scope)
        self.expect_string(a, node.left, node.op)
        op = node.op
        neg = op.startswith("!")
        base = op.lstrip("!")
        pred = self.string_pred(base, as_string(a), b, node)
        return V(negate(pred, a, b) if neg else pred, "bool", window=a.window, agg=a.agg)

    def expect_string(self, v: V, node: n.Node, op: str) -> None:
        if v.type not in STRINGY and v.type not in (UNKNOWN, "dynamic"):
            self.ctx.error("type_mismatch", f"{op} needs a string on its left, this is a {v.type}", node.span,
                           ["convert it with tostring()"])

    def string_pred(self, base: str, a: exp.Expr, b: V, node: n.Node) -> exp.Expr:
        cs = base.endswith("_cs")
        kind = base[:-3] if cs else base
        if b.is_const and isinstance(b.const, str):
            lit: str = b.const
            # LIKE has no escape character unless ESCAPE is given, and DuckDB's fast paths skip
            # patterns with ESCAPE: escape only when the text holds a wildcard
            wild = "%" in lit or "_" in lit
            pat = sb.like_escape(lit) if wild else lit
            if kind == "contains":
                if cs:
                    return sb.fn("contains", a, sb.s(lit))
                return sb.ilike(a, "%" + pat + "%", escaped=wild)
            if kind == "startswith":
                if cs:
                    return sb.fn("starts_with", a, sb.s(lit))
                return sb.ilike(a, pat + "%", escaped=wild)
            if kind == "endswith":
                if cs:
                    return sb.fn("ends_with", a, sb.s(lit))
                return sb.ilike(a, "%" + pat, escaped=wild)
            if kind in ("has", "hasprefix", "hassuffix"):
                return has_term(a, lit, cs, prefix=kind != "hassuffix", suffix=kind != "hasprefix")
        rhs = as_string(b)
        if kind == "contains":
            return sb.fn("contains", a, rhs) if cs else sb.fn("contains", sb.fn("lower", a), sb.fn("lower", rhs))
        if kind == "startswith":
            return sb.fn("starts_with", a, rhs) if cs else sb.fn("starts_with", sb.fn("lower", a), sb.fn("lower", rhs))
        if kind == "endswith":
            return sb.fn("ends_with", a, rhs) if cs else sb.fn("ends_with", sb.fn("lower", a), sb.fn("lower", rhs))
        # has with a computed term: build the word-boundary regex at run time
        left = sb.s("" if kind == "hassuffix" else "(?:^|[^0-9A-Za-z])")
        right = sb.s("" if kind == "hasprefix" else "(?:$|[^0-9A-Za-z])")
        flag = sb.s("" if cs else "(?i)")
        regex = exp.DPipe(this=exp.DPipe(this=exp.DPipe(this=flag, expression=left),
                                         expression=sb.fn("regexp_escape", rhs)), expression=right)
        return sb.fn("regexp_matches", a, regex)

    def in_values(self, items: tuple[n.Node, ...], scope: Scope) -> tuple[list[V], exp.Expr | None]:
        """The list of an `in`: constants, expanded dynamic arrays, or one tabular subquery."""
        vals: list[V] = []
        if len(items) == 1 and self.is_tabular(items[0], scope.env):
            rel = self.tabular(items[0], scope.env)
            sel = rel.select()
            if not sel.expressions:
                raise self.ctx.fail("type_mismatch", "the subquery returns no columns", items[0].span)
            sel.set("expressions", [sel.expressions[0]])
            first = next(iter(rel.cols))
            if rel.cols[first] == "dynamic":
                # Kusto flattens arrays in the list: `x in (T | summarize make_set(y))` compares x
                # with the elements, not with the array (a non-array value is one element)
                c = sb.col(first)
                elems = exp.Case(
                    ifs=[exp.If(this=exp.EQ(this=sb.fn("json_type", c), expression=sb.s("ARRAY")),
                                true=exp.Cast(this=sb.fn("json_extract", c.copy(), sb.s("$[*]")),
                                              to=exp.DataType.build("JSON[]")))],
                    default=exp.Array(expressions=[c.copy()]))
                elem = V(sb.fn("unnest", elems), "dynamic")
                flat = exp.Select(expressions=[sb.alias(json_to_string(elem.sql), first)]).from_(
                    exp.Subquery(this=sel, alias=exp.TableAlias(this=sb.ident(self.ctx.alias()))))
                flat.meta["kql_flat"] = True
                return [], flat
            return [], sel
        for it in items:
            v = self.scalar(it, scope)
            if v.is_const and isinstance(v.const, list):
                for x in v.const:
                    vals.append(const(x, _py_type(x)))
            else:
                vals.append(v)
        return vals, None

    def x_InOp(self, node: n.InOp, scope: Scope) -> V:
        a = self.scalar(node.left, scope)
        op = node.op
        neg = op.startswith("!")
        base = op.lstrip("!")
        vals, sub = self.in_values(node.items, scope)
        if base in ("has_any", "has_all"):
            self.expect_string(a, node.left, op)
            if sub is not None:
                if base == "has_all":
                    raise self.ctx.fail("unsupported", "has_all with a tabular argument is not supported", node.span)
                assert isinstance(sub, exp.Select)
                found = has_any_subquery(as_string(a), sub, self.ctx)
                return V(sb.not_true(found) if neg else found, "bool")
            terms: list[str] = []
            for v in vals:
                if not (v.is_const and v.const is not None):
                    raise self.ctx.fail("unsupported", f"{base} needs constant terms", node.span)
                terms.append(str(v.const))
            pred = has_any(as_string(a), terms) if base == "has_any" else has_all(as_string(a), terms)
            return V(negate(pred, a, *vals) if neg else pred, "bool")
        ci = base == "in~"
        if sub is not None:
            lhs = self.case_fold(a) if ci else a.sql
            if sub.meta.get("kql_flat") and not ci:
                lhs = as_string(a)  # flattened array elements are compared as their text
            if ci:
                inner = exp.Select(expressions=[sb.fn("lower", sb.col(sub.expressions[0].alias_or_name))]).from_(
                    exp.Subquery(this=sub, alias=exp.TableAlias(this=sb.ident(self.ctx.alias()))))
                sub = inner
            member: exp.Expr = exp.In(this=lhs, query=exp.Subquery(this=sub))
            return V(sb.not_true(member) if neg else member, "bool")
        if not vals:
            return V(exp.true() if neg else exp.false(), "bool")
        if len(vals) == 1 and vals[0].type == "dynamic" and not vals[0].is_const:
            # a computed array, e.g. toscalar(... | summarize make_set(x))
            needle = self.case_fold(a) if ci else a.sql
            hay = vals[0].sql
            if ci:
                hay = sb.fn("lower", sb.cast(hay, "string"))
                hay = sb.cast(hay, "dynamic")
            pred = sb.fn("coalesce", sb.fn("json_contains", hay, sb.fn("to_json", needle)), exp.false())
            return V(sb.not_true(pred) if neg else pred, "bool")
        if ci:
            lhs = self.case_fold(a)
            rhs = [self.case_fold(v) for v in vals]
        else:
            t = a.type
            lhs = a.sql if t != "dynamic" else as_string(a)
            rhs = [to_type(v, "string" if t == "dynamic" else t) if v.type != t else v.sql for v in vals]
            if t in NUMERIC and any(v.type in STRINGY for v in vals):
                self.ctx.error("type_mismatch", f"in: the list has strings but the value is {t}", node.span)
        pred = exp.In(this=lhs, expressions=rhs)
        return V(negate(pred, a, *vals) if neg else pred, "bool")

    def x_ColumnTerm(self, node: n.ColumnTerm, scope: Scope) -> V:
        raise self.ctx.fail("syntax", f'{node.column.name}:"..." is search syntax: write {node.column.name} has "..."',
                            node.span)

    def x_Between(self, node: n.Between, scope: Scope) -> V:
        v, lo, hi = (self.scalar(x, scope) for x in (node.value, node.low, node.high))
        if v.type == "datetime" and hi.type == "timespan":
            hi = V(exp.Add(this=lo.sql.copy(), expression=hi.sql), "datetime")
        for bound in (lo, hi):
            if not self.comparable(v.type, bound.type, bound):
                self.ctx.error("type_mismatch", f"between: cannot compare {v.type} with {bound.type}", node.span)
        pred = exp.Between(this=to_type(v, lo.type) if v.type == "dynamic" else v.sql, low=lo.sql, high=hi.sql)
        return V(sb.not_true(pred) if node.negated else pred, "bool")

    def x_Matches(self, node: n.Matches, scope: Scope) -> V:
        a, p = self.scalar(node.left, scope), self.scalar(node.pattern, scope)
        if p.is_const and isinstance(p.const, str):
            try:
                re.compile(p.const)
            except re.error as e:
                self.ctx.warn("regex", f"the regular expression may be invalid: {e}", node.pattern.span)
        return V(sb.fn("regexp_matches", as_string(a), as_string(p)), "bool")

    def x_Member(self, node: n.Member, scope: Scope) -> V:
        target = self.scalar(node.target, scope)
        out = self.json_path(target, [("key", node.name)], node)
        return replace(out, agg=target.agg, window=target.window)

    def x_Index(self, node: n.Index, scope: Scope) -> V:
        target = self.scalar(node.target, scope)
        idx = self.scalar(node.index, scope)
        if idx.is_const and isinstance(idx.const, int | str):
            out = self.json_path(target, [("idx" if isinstance(idx.const, int) else "key", idx.const)], node)
            return replace(out, agg=target.agg, window=target.window)
        arr = self.dyn(target, node)
        if idx.type in NUMERIC:
            path: exp.Expr = exp.DPipe(this=exp.DPipe(this=sb.s("$["), expression=sb.cast(idx.sql, "string")),
                                             expression=sb.s("]"))
        else:
            # a runtime key: quoted in the JSON path; an empty or missing key yields null
            key = sb.fn("replace", sb.fn("replace", as_string(idx), sb.s("\\"), sb.s("\\\\")), sb.s('"'), sb.s('\\"'))
            path = exp.DPipe(this=exp.DPipe(this=sb.s('$."'), expression=key), expression=sb.s('"'))
            path = exp.Nullif(this=path, expression=sb.s('$.""'))
        return V(sb.fn("json_extract", arr, path), "dynamic", agg=target.agg, window=target.window)

    def dyn(self, v: V, node: n.Node) -> exp.Expr:
        if v.type == "dynamic":
            return v.sql
        if v.type in STRINGY or v.type == UNKNOWN:
            return F._parse_json(self.ctx, [v], n.Call(node.span, "todynamic", node.span, ()))
        self.ctx.error("type_mismatch", f"cannot index into a {v.type}", node.span)
        return v.sql

    def json_path(self, target: V, steps: list[tuple[str, Any]], node: n.Node) -> V:
        base = self.dyn(target, node)
        path = "$"
        if isinstance(base, exp.Anonymous) and base.name == "json_extract" and isinstance(base.expressions[1], exp.Literal):
            path = base.expressions[1].this
            base = base.expressions[0]
        for kind, key in steps:
            if kind == "idx":
                path += f"[#{key}]" if key < 0 else f"[{key}]"
            else:
                path += '."' + str(key).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if target.is_const and isinstance(target.const, dict | list):
            val = target.const
            try:
                for _kind, key in steps:
                    val = val[key]
                return const(val, "dynamic")  # dynamic access stays dynamic
            except (KeyError, IndexError, TypeError):
                return V(sb.null("dynamic"), "dynamic", None)
        return V(sb.fn("json_extract", base, sb.s(path)), "dynamic")

    def x_ObjectLit(self, node: n.ObjectLit, scope: Scope) -> V:
        raise self.ctx.fail("syntax", "a property bag must be written dynamic({...})", node.span)

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

    def x_Call(self, node: n.Call, scope: Scope) -> V:
        name = node.name
        if name == "dynamic":
            if len(node.args) != 1:
                raise self.ctx.fail("wrong_arguments", "dynamic() takes one value", node.span)
            value = self.dynamic_literal(node.args[0], scope)
            return const(value, "dynamic")
        if name in ("long", "int", "real", "double", "bool", "string", "guid", "timespan", "decimal") and len(node.args) == 1:
            arg = node.args[0]
            t = normalize_type(name)
            if isinstance(arg, n.Name) and arg.name == "null":
                return const(None, t)
            if isinstance(arg, n.Name) and t == "real" and arg.name in ("nan", "inf"):
                return const(float(arg.name), t)
            v = self.scalar(arg, scope)
            if v.is_const:
                return const(v.const, t) if v.const is None or t != "real" else const(float(v.const), t)
        if name in ("typeof", "gettype") and len(node.args) == 1 and isinstance(node.args[0], n.Name) and name == "typeof":
            tname = node.args[0].name
            try:
                from schema.types import kql_type

                kql_type(tname)
                return const(normalize_type(tname), "string")
            except KeyError:
                pass
        if name == "toscalar":
            if len(node.args) != 1:
                raise self.ctx.fail("wrong_arguments", "toscalar() takes one tabular expression", node.span)
            if not self.is_tabular(node.args[0], scope.env):
                return self.scalar(node.args[0], scope)  # toscalar of a scalar is the scalar
            return self.scalar_subquery(node.args[0], scope)
        if name == "ingestion_time":
            rel = scope.rel
            if rel is None or rel.base is None:
                raise self.ctx.fail("unsupported", "ingestion_time() is only available directly on a table, before summarize, join or union", node.span)
            return V(sb.col(INGESTION_TIME_COLUMN), "datetime")
        if (name == "column_ifexists" and len(node.args) == 2 and isinstance(node.args[0], n.Literal)
                and scope.rel is not None):
            cname = str(node.args[0].value)
            if cname in scope.rel.cols:
                return V(scope.rel.exprs[cname].copy(), scope.rel.cols[cname])
            return self.scalar(node.args[1], scope)
        if name in ("materialize",) and node.args:
            return self.scalar(node.args[0], scope)
        b = scope.env.get(name)
        if b is not None and b.kind == "function":
            return self.call_user_scalar(node, b, scope)
        if name in F.AGGREGATES and (name not in F.SCALARS):
            return self.agg_call(node, scope)
        sig = F.SCALARS.get(name)
        if sig is None:
            if name in F.UNSUPPORTED_FUNCTIONS:
                raise self.ctx.fail("unsupported", f"{name}() {F.UNSUPPORTED_FUNCTIONS[name]}", node.name_span)
            known = list(F.SCALARS) + [k for k in scope.env.all_names()]
            raise self.ctx.fail("unknown_function", f"unknown function {name!r}", node.name_span,
                                name_hints(name, known, "functions")[:1])
        if name in ("row_number", "prev", "next"):
            # window functions over the serialized row order
            args = self.check_args(node, sig, scope)
            v = V(self.ctx.builders[name](self.ctx, args, node), args[0].type if name != "row_number" else "long", window=True)
            return v
        args = self.check_args(node, sig, scope)
        builder = self.ctx.builders.get(name)
        if builder is None:
            raise self.ctx.fail("unsupported", f"{name}() is not available for the {self.ctx.dialect} target", node.name_span)
        sql = builder(self.ctx, args, node)
        t = self.result_type(sig.ret, args, node)
        if name == "extract" and len(args) == 4 and args[3].is_const and isinstance(args[3].const, str):
            t = normalize_type(args[3].const)
        if name == "extract_json" and len(args) == 3 and args[2].is_const and isinstance(args[2].const, str):
            t = normalize_type(args[2].const)
        folded = self.fold_call(name, args)
        return V(sql, t, folded, window=any(a.window for a in args), agg=any(a.agg for a in args))

    def fold_call(self, name: str, args: list[V]) -> Any:
        try:
            return self._fold_call(name, args)
        except OverflowError:  # the SQL builder reports it; no constant then
            return NOCONST

    def _fold_call(self, name: str, args: list[V]) -> Any:
        if name == "ago" and args[0].is_const and isinstance(args[0].const, timedelta):
            return self.ctx.now - args[0].const
        if name == "now":
            if not args:
                return self.ctx.now
            if args[0].is_const and isinstance(args[0].const, timedelta):
                return self.ctx.now + args[0].const
        if name in ("tolower", "toupper") and args[0].is_const and isinstance(args[0].const, str):
            return args[0].const.lower() if name == "tolower" else args[0].const.upper()
        if name == "strcat" and all(a.is_const and isinstance(a.const, str) for a in args):
            return "".join(a.const for a in args)
        if name in ("startofday",) and len(args) == 1 and args[0].is_const and isinstance(args[0].const, datetime):
            return args[0].const.replace(hour=0, minute=0, second=0, microsecond=0)
        if name == "pack_array" and all(a.is_const for a in args):
            return [_jsonable(a.const) for a in args]
        if name == "todatetime" and args[0].is_const:
            from kql.parser import parse_datetime

            if isinstance(args[0].const, datetime):
                return args[0].const
            if isinstance(args[0].const, str):
                return parse_datetime(args[0].const) or NOCONST
        return NOCONST

    def result_type(self, ret: str, args: list[V], node: n.Call) -> str:
        if ret.startswith("arg"):
            i = int(ret[3:])
            return args[i].type if i < len(args) else UNKNOWN
        if ret == "common":
            vals = args
            if node.name in ("iff", "iif"):
                vals = args[1:]
            elif node.name == "case":
                vals = args[1::2] + [args[-1]]
            return self.ctx.common_type(vals, node)
        return ret

    KIND_OK: dict[str, Callable[[str], bool]] = {
        "str": lambda t: t in STRINGY or t in ("dynamic", UNKNOWN),
        "num": lambda t: t in NUMERIC or t in ("dynamic", UNKNOWN),
        "dt": lambda t: t in ("datetime", "dynamic", UNKNOWN),
        # bin/floor/abs: numbers and times
        "ord": lambda t: t in NUMERIC or t in ("datetime", "timespan", "dynamic", UNKNOWN),
        "ts": lambda t: t in ("timespan", "dynamic", UNKNOWN),
        "bool": lambda t: t in ("bool", "dynamic", UNKNOWN),
        "dyn": lambda t: t in ("dynamic", UNKNOWN) or t in STRINGY,
        "any": lambda t: True,
    }
    KIND_WORDS = {"str": "string", "num": "number", "dt": "datetime", "ts": "timespan", "bool": "bool",
                  "ord": "number, datetime or timespan",
                  "dyn": "dynamic", "any": "value"}

    def check_args(self, node: n.Call, sig: F.Sig, scope: Scope) -> list[V]:
        nargs = len(node.args)
        if nargs < sig.min_args or (sig.max_args >= 0 and nargs > sig.max_args):
            want = (f"{sig.min_args}" if sig.min_args == sig.max_args else
                    f"{sig.min_args} to {sig.max_args}" if sig.max_args >= 0 else f"at least {sig.min_args}")
            raise self.ctx.fail("wrong_arguments", f"{node.name}() takes {want} arguments, got {nargs}", node.span)
        out: list[V] = []
        kinds = list(sig.kinds)
        for i, a in enumerate(node.args):
            if isinstance(a, n.Star):
                raise self.ctx.fail("syntax", f"{node.name}() does not take *", a.span)
            v = self.scalar(a, scope)
            if kinds:
                k = kinds[i] if i < len(kinds) else (kinds[-2] if kinds[-1] == "*" and len(kinds) > 1 else kinds[-1])
                if k == "*":
                    k = kinds[-2] if len(kinds) > 1 else "any"
                null_const = v.is_const and v.const is None
                if not null_const and not self.KIND_OK[k](v.type):
                    self.ctx.error("type_mismatch",
                                   f"{node.name}(): argument {i + 1} must be a {self.KIND_WORDS[k]}, this is a {v.type}",
                                   a.span)
                    v = V(v.sql, UNKNOWN)
                elif v.type == "dynamic" and k in ("str", "num", "dt", "ts", "bool"):
                    target = {"str": "string", "num": "real", "dt": "datetime", "ts": "timespan", "bool": "bool"}[k]
                    v = V(to_type(v, target), target)
            out.append(v)
        return out

    def agg_call(self, node: n.Call, scope: Scope) -> V:
        if not scope.allow_agg:
            raise self.ctx.fail("type_mismatch", f"{node.name}() is an aggregate: use it in summarize", node.name_span)
        sig = F.AGGREGATES[node.name]
        inner = replace(scope, allow_agg=False)
        if node.name == "count" and len(node.args) == 1 and isinstance(node.args[0], n.Star):
            args: list[V] = []
        else:
            args = self.check_args(node, sig, inner)
        if node.name in ("sum", "sumif", "avg", "avgif", "stdev", "variance") and args and args[0].type not in NUMERIC | {UNKNOWN, "timespan"}:
            pass  # already reported by check_args
        sql, t = F.agg_sql(node.name, args, self.ctx, node)
        return V(sql, t, agg=True)

    def call_user_scalar(self, node: n.Call, b: Binding, scope: Scope) -> V:
        fn: n.FnDef = b.value
        fenv = self._fn_env(fn, b.env or scope.env, node, scope.env, caller_scope=scope)
        result: V | None = None
        for st in fn.body:
            if isinstance(st, n.Let):
                self.let(st, fenv)
            elif self.is_tabular(st, fenv):
                return self.scalar_subquery(st, Scope(fenv))
            else:
                result = self.scalar(st, Scope(fenv, scope.rel, allow_agg=scope.allow_agg))
        if result is None:
            raise self.ctx.fail("type_mismatch", f"function {node.name!r} returns nothing", node.span)
        return result


# ---------------------------------------------------------------- helpers


def wrap_copy(rel: Rel, ctx: Ctx) -> Rel:
    sub = exp.Subquery(this=rel.select(), alias=exp.TableAlias(this=sb.ident(ctx.alias())))
    return Rel(cols=dict(rel.cols), exprs={c: sb.col(c) for c in rel.cols}, src=sub, name=rel.name,
               aliases=time_aliases(rel.cols), notnull=notnull_outputs(rel))


def negate(pred: exp.Expr, *operands: V) -> exp.Expr:
    """NOT of a string predicate: a plain NOT when no operand can be NULL (a stored catalog
    string, non-null constants), else NOT COALESCE(pred, false) so a missing string counts as
    "not matched"."""
    if all(v.notnull or (v.is_const and v.const is not None) for v in operands):
        return exp.Not(this=exp.Paren(this=pred))
    return sb.not_true(pred)


def is_notnull(rel: Rel, e: exp.Expr) -> bool:
    """Is `e`, computed inside `rel`'s SELECT, a string that is never NULL?"""
    if isinstance(e, exp.Column):
        return not e.table and e.name in rel.notnull
    if isinstance(e, exp.Anonymous) and e.name.lower() == "coalesce" and e.expressions:
        last = e.expressions[-1]  # COALESCE(x, ''), e.g. a string group key
        return isinstance(last, exp.Literal) and last.is_string
    return False


def notnull_outputs(rel: Rel) -> frozenset[str]:
    """The output columns of `rel` that are never-NULL strings (for the SELECT that wraps it)."""
    return frozenset(c for c, t in rel.cols.items() if t in STRINGY and is_notnull(rel, rel.exprs[c]))


def time_aliases(cols: dict[str, str]) -> dict[str, str]:
    """Sentinel's copies of the Device tables name the event time TimeGenerated."""
    if cols.get("Timestamp") == "datetime" and "TimeGenerated" not in cols:
        return {"TimeGenerated": "Timestamp"}
    return {}


def _jsonable(x: Any) -> Any:
    if isinstance(x, datetime):
        return x.isoformat() + "Z"
    if isinstance(x, timedelta):
        return str(x)
    return x


def _py_type(x: Any) -> str:
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "long"
    if isinstance(x, float):
        return "real"
    if isinstance(x, str):
        return "string"
    if x is None:
        return UNKNOWN
    return "dynamic"


def _arith_sql(op: str, a: exp.Expr, b: exp.Expr) -> exp.Expr:
    cls: type[exp.Binary] = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul, "/": exp.Div, "%": exp.Mod}[op]
    out: exp.Expr = cls(this=sb.paren(a), expression=sb.paren(b))
    return out


def _span_const(value: timedelta) -> V:
    return const(value if timespan_ok(value) else None, "timespan")


def _fold(op: str, a: V, b: V) -> V | None:
    x, y = a.const, b.const
    try:
        if isinstance(x, datetime) and isinstance(y, timedelta) and op in "+-":
            r = x + y if op == "+" else x - y
            return const(r, "datetime")
        if isinstance(x, timedelta) and isinstance(y, timedelta) and op in "+-":
            return _span_const(x + y if op == "+" else x - y)
        if isinstance(x, timedelta) and isinstance(y, int | float) and not isinstance(y, bool) and op == "*":
            return _span_const(x * y)
        if isinstance(x, int | float) and isinstance(y, timedelta) and not isinstance(x, bool) and op == "*":
            return _span_const(y * x)
        if isinstance(x, datetime) and isinstance(y, datetime) and op == "-":
            return const(x - y, "timespan")
    except OverflowError:
        # beyond Python's range (years 1-9999), so beyond Kusto's: null, as Kusto gives
        return const(None, "datetime" if isinstance(x, datetime) or isinstance(y, datetime) else "timespan")
    return None


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
