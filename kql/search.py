"""`search`, `find` and `top-nested`, lowered onto the operators the compiler already has.

- search (Kusto docs, "search operator"): `[T |] search [kind=case_sensitive] [in (Tables)]
  Predicate` is `union withsource=$table Tables | where Predicate'`, where a bare string in the
  predicate is a term over every string column (`"x"` has, `"*x"` hassuffix, `"x*"` hasprefix,
  `"*x*"` contains, `"a*b"` a regex `\\ba.*b\\b`) and `Col:"x"` is the same on one column. Without
  tables it searches every catalog table.
- find ("find operator"): `find [withsource=C] [in (Tables)] where Predicate [project-smart |
  project Col[:type], ...]`: the tables that have at least one column of the predicate, unioned
  with a `source_` column, filtered; project-smart keeps the predicate's columns and the columns
  common to every table, and packs the rest of each row (non-null values) into `pack_`.
- top-nested ("top-nested operator"): each level groups by its expression within the groups the
  previous levels kept, ranks by its aggregation (descending by default) and keeps N of them;
  `with others` is not supported.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Env, Scope
from kql.naming import column_name
from kql.operators.union import union
from kql.registry import Binder, operator, source
from kql.relation import Rel
from kql.typed import STRINGY, normalize_type


def _term_pred(term: n.Literal, column: n.Node, cs: bool, span: n.Span) -> n.Node:
    text = str(term.value)
    suffix = "_cs" if cs else ""
    if text == "*":
        return n.Literal(span, True, "bool")
    core = text.strip("*")
    lead, trail = text.startswith("*"), text.endswith("*")
    if "*" in core:
        regex = r"\b" + ".*".join(re.escape(p) for p in core.split("*")) + r"\b"
        return n.Matches(span, column, n.Literal(term.span, ("" if cs else "(?i)") + regex, "string"))
    op = {(False, False): "has", (True, False): "hassuffix", (False, True): "hasprefix",
          (True, True): "contains"}[(lead, trail)]
    return n.StrOp(span, op + suffix, column, n.Literal(term.span, core, "string"), span)


def _not_null(pred: n.Node) -> n.Node:
    """A missing (NULL) string matches no term: false, never null (so `not(...)` is true)."""
    return n.Call(pred.span, "coalesce", pred.span, (n.Paren(pred.span, pred), n.Literal(pred.span, False, "bool")))


def _balanced_or(items: list[n.Node]) -> n.Node:
    """A balanced OR keeps recursion depth logarithmic in the number of columns."""
    if len(items) == 1:
        return items[0]
    mid = len(items) // 2
    left, right = _balanced_or(items[:mid]), _balanced_or(items[mid:])
    return n.Binary(left.span, "or", left, right, left.span)


def search_predicate(node: n.Node, string_cols: list[str], cs: bool) -> n.Node:
    """The search predicate as an ordinary `where` predicate."""
    if isinstance(node, n.Star):
        return n.Literal(node.span, True, "bool")
    if isinstance(node, n.Literal) and isinstance(node.value, str):
        terms = [_term_pred(node, n.Name(node.span, c), cs, node.span) for c in string_cols]
        if not terms:
            return n.Literal(node.span, False, "bool")
        return _not_null(_balanced_or(terms))
    if isinstance(node, n.ColumnTerm):
        return _not_null(_term_pred(node.term, node.column, cs, node.span))
    if isinstance(node, n.Binary) and node.op in ("and", "or"):
        return n.Binary(node.span, node.op, search_predicate(node.left, string_cols, cs),
                        search_predicate(node.right, string_cols, cs), node.op_span)
    if isinstance(node, n.Paren):
        return n.Paren(node.span, search_predicate(node.inner, string_cols, cs))
    if isinstance(node, n.Call) and node.name == "not" and len(node.args) == 1:
        return n.Call(node.span, "not", node.name_span, (search_predicate(node.args[0], string_cols, cs),))
    return node


def _case_sensitive(compiler: Binder, params: tuple[n.OpParam, ...]) -> tuple[bool, tuple[n.OpParam, ...]]:
    cs = False
    rest = []
    for p in params:
        if p.name == "kind":
            value = str(p.value).lower()
            if value not in ("default", "case_insensitive", "case_sensitive"):
                raise compiler.ctx.fail("invalid_argument", f"search kind={p.value} is not one of default, "
                                        "case_insensitive, case_sensitive", p.span)
            cs = value == "case_sensitive"
        else:
            rest.append(p)
    return cs, tuple(rest)


def _where(compiler: Binder, rel: Rel, pred: n.Node, env: Env, span: n.Span) -> Rel:
    return compiler.operator(rel, n.Operator(span, "where", operand=pred), env)


def _all_tables(compiler: Binder, span: n.Span) -> tuple[n.Node, ...]:
    return tuple(n.Name(span, t) for t in sorted(compiler.ctx.catalog.tables))


@source("search")
def search_source(compiler: Binder, node: n.Source, env: Env) -> Rel:
    cs, params = _case_sensitive(compiler, node.params)
    tables = node.items or _all_tables(compiler, node.span)
    withsource = n.OpParam(node.span, "withsource", "$table")
    rel = union(compiler, None, (*params, withsource), tables, env, node.span)
    strings = [c for c, t in rel.cols.items() if t in STRINGY and c != "$table"]
    return _where(compiler, rel, search_predicate(node.extra, strings, cs), env, node.span)


@operator("search")
def search_operator(compiler: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    cs, params = _case_sensitive(compiler, op.params)
    for p in params:
        compiler.ctx.warn("ignored", f"search parameter {p.name} is ignored", p.span)
    assert op.operand is not None
    strings = [c for c, t in rel.cols.items() if t in STRINGY]
    label = rel.name or ""
    rel = _where(compiler, rel, search_predicate(op.operand, strings, cs), env, op.span)
    if not rel.open:
        rel = compiler.wrap(rel)
    # the output always starts with $table: the source table's name
    rel.cols = {"$table": "string", **{c: t for c, t in rel.cols.items() if c != "$table"}}
    rel.exprs = {"$table": sb.s(label), **{c: e for c, e in rel.exprs.items() if c != "$table"}}
    return rel


def _columns_of(node: n.Node) -> set[str]:
    out: set[str] = set()

    def walk(x: object) -> None:
        if isinstance(x, n.Name):
            out.add(x.name)
        elif isinstance(x, n.Node):
            for v in vars(x).values():
                walk(v)
        elif isinstance(x, tuple | list):
            for v in x:
                walk(v)

    walk(node)
    return out


@source("find")
def find_source(compiler: Binder, node: n.Source, env: Env) -> Rel:
    pred, proj = node.extra
    ctx = compiler.ctx
    source_col = "source_"
    params = []
    for p in node.params:
        if p.name in ("withsource", "with_source"):
            source_col = str(p.value)
        else:
            params.append(p)
    names: list[str] = []
    for item in node.items or _all_tables(compiler, node.span):
        if isinstance(item, n.WildName):
            regex = re.compile(fnmatch.translate(item.pattern))
            names += [t for t in sorted(ctx.catalog.tables) if regex.match(t)]
        elif isinstance(item, n.Name) and ctx.catalog.table(item.name) is not None:
            names.append(item.name)
        else:
            raise ctx.fail("unsupported", "find reads catalog tables (names or wildcards); use union for "
                           "tabular expressions", item.span)
    used = _columns_of(pred) - set(env.all_names())
    tables = [t for t in names if used & set(ctx.catalog.tables[t].column_names) or not used]
    if not tables:
        raise ctx.fail("unknown_column", f"no table of the find has any of the columns {', '.join(sorted(used))}",
                       pred.span)
    common = set.intersection(*(set(ctx.catalog.tables[t].column_names) for t in tables))
    items = tuple(n.Name(node.span, t) for t in tables)
    rel = union(compiler, None, (*params, n.OpParam(node.span, "withsource", source_col)), items, env, node.span)
    strings = [c for c, t in rel.cols.items() if t in STRINGY and c != source_col]
    rel = _where(compiler, rel, search_predicate(pred, strings, False), env, node.span)
    if not rel.open:
        rel = compiler.wrap(rel)
    cols: dict[str, str] = {source_col: "string"}
    exprs: dict[str, exp.Expr] = {source_col: rel.exprs[source_col]}
    if proj is not None:  # project Col[:type], ...: a column a table lacks is null
        for name, typ in proj:
            t = typ.name if typ is not None else rel.cols.get(name.name)
            if t is None:
                raise ctx.fail("unknown_column", f"no table of the find has a column {name.name!r}", name.span)
            t = normalize_type(t)
            e = rel.exprs.get(name.name, sb.null(t))
            cols[name.name] = t
            exprs[name.name] = e if rel.cols.get(name.name) == t else sb.try_cast(e, t)
    else:  # project-smart
        keep = [c for c in rel.cols if c != source_col and (c in used or c in common)]
        for c in keep:
            cols[c], exprs[c] = rel.cols[c], rel.exprs[c]
        rest = [c for c in rel.cols if c != source_col and c not in keep]
        pairs: list[exp.Expr] = []
        for c in rest:
            pairs += [sb.s(c), rel.exprs[c].copy()]
        # json_merge_patch drops the null members: each row packs only what its table has
        packed = sb.fn("json_merge_patch", sb.cast(sb.s("{}"), "dynamic"), sb.fn("json_object", *pairs)) if pairs \
            else sb.cast(sb.s("{}"), "dynamic")
        cols["pack_"], exprs["pack_"] = "dynamic", packed
    rel.cols, rel.exprs = cols, exprs
    return rel


@operator("top-nested")
def top_nested(compiler: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    ctx = compiler.ctx
    levels = op.extra
    if len(levels) > 1:
        raise ctx.fail("unsupported", "top-nested with more than one level is not supported", op.span)
    count, of, others, by, direction, span = levels[0]
    if others is not None:
        raise ctx.fail("unsupported", "top-nested ... with others is not supported", span)
    if not rel.open or rel.order:
        rel = compiler.wrap(rel)
        rel.order = []
    scope = Scope(env, rel)
    key = compiler.scalar(of.expr, scope)
    name = of.names[0] if of.names else column_name(of.expr)
    if not name:
        raise ctx.fail("wrong_arguments", "top-nested of an expression needs a name: Name = expr", of.span)
    agg_name = by.names[0] if by.names else f"aggregated_{name}"
    agg = compiler.scalar(by.expr, replace(scope, allow_agg=True))
    if not agg.agg:
        raise ctx.fail("type_mismatch", "top-nested needs an aggregation after by (count(), sum(x), ...)", by.span)
    if key.type in STRINGY and isinstance(key.sql, exp.Column) and not key.notnull:
        key_sql: exp.Expr = sb.fn("coalesce", key.sql, sb.s(""))  # a missing string is ""
    else:
        key_sql = key.sql
    rel.cols = {name: key.type, agg_name: agg.type}
    rel.exprs = {name: key_sql, agg_name: agg.sql}
    rel.group = [key_sql.copy()]
    rel = compiler.wrap(rel)
    desc = (direction or "desc").lower() == "desc"
    rel.order = [exp.Ordered(this=sb.col(agg_name), desc=desc, nulls_first=not desc)]
    if count is not None:
        rel.limit = compiler.limit_value(count, env)
    return rel
