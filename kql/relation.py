"""Relations: what one tabular stage produces, an open SELECT plus its typed output columns.

A ``Rel`` is the compiler's relational node: ``cols`` is its output schema (ordered name -> KQL
type), ``exprs`` how each column is computed over ``src``. Operators fold into it while SQL allows
(filters, projections, grouping, ordering) so DuckDB sees one query block and can push filters
into the Parquet scan; otherwise the stage becomes a subquery (``Binder.wrap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from kql import sqlbuild as sb
from kql.typed import STRINGY
from schema.catalog import Table


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


def is_notnull(rel: Rel, e: exp.Expr) -> bool:
    """Is `e`, computed inside `rel`'s SELECT, a string that is never NULL?"""
    if isinstance(e, exp.Column):
        return not e.table and e.name in rel.notnull
    args = sb.call_args(e) if sb.call_name(e) == "coalesce" else []
    if args:
        last = args[-1]  # COALESCE(x, ''), e.g. a string group key
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
