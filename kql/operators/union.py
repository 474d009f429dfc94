"""union (operator and source): columns by name, withsource, wildcard table names."""

from __future__ import annotations

import fnmatch
import re

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import CompileError, Env
from kql.diagnostics import name_hints
from kql.limits import check_deadline
from kql.registry import Binder, operator, source
from kql.relation import Rel, time_aliases
from kql.typed import (
    UNKNOWN,
)


@source("union")
def src_union(bd: Binder, node: n.Source, env: Env) -> Rel:
    return union(bd, None, node.params, node.items, env, node.span)


@operator("union")
def op_union(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    return union(bd, rel, op.params, op.conds, env, op.span)


def union(bd: Binder, first: Rel | None, params: tuple[n.OpParam, ...], items: tuple[n.Node, ...],
          env: Env, span: n.Span) -> Rel:
    source_col = None
    for p in params:
        if p.name in ("withsource", "with_source"):
            source_col = str(p.value)
        elif p.name not in ("isfuzzy", "kind") and not p.name.startswith("hint."):
            bd.ctx.warn("ignored", f"union parameter {p.name} is ignored", p.span)
    rels: list[tuple[str, Rel]] = []
    if first is not None:
        rels.append((first.name or "union_arg0", first))
    for _i, item in enumerate(items):
        if isinstance(item, n.WildName):
            regex = re.compile(fnmatch.translate(item.pattern))
            matched = [t for t in bd.ctx.catalog.tables if regex.match(t)]
            if not matched:
                bd.ctx.error("unknown_table", f"no table matches {item.pattern!r}", item.span,
                               name_hints(item.pattern, list(bd.ctx.catalog.tables), "tables"))
            for t in matched:
                table = bd.ctx.catalog.table(t)
                assert table is not None
                rels.append((t, bd.base_rel(table)))
            continue
        try:
            r = bd.tabular(item, env)
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
                bd.ctx.warn("type_mismatch", f"column {c!r} is {cols[c]} in one table and {t} in another; using string", span)
                cols[c] = "string"
            cols.setdefault(c, t)
    selects: list[exp.Select] = []
    for label, r in rels:
        check_deadline()  # `search *` unions every table: the query's timeout covers it (kql.limits)
        inner = r.select()
        alias = bd.ctx.alias()
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
    alias = bd.ctx.alias()
    sub = exp.Subquery(this=u, alias=exp.TableAlias(this=sb.ident(alias)))
    return Rel(cols=cols, exprs={c: sb.col(c) for c in cols}, src=sub, aliases=time_aliases(cols))
