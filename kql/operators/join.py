"""join and lookup: Kusto join kinds as SQL joins (innerunique de-duplicates the left side)."""

from __future__ import annotations

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Env
from kql.diagnostics import name_hints
from kql.naming import unique
from kql.registry import Binder, operator
from kql.relation import Rel


@operator("join")
def op_join(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    return _join_operator(bd, rel, op, env, lookup=False)


@operator("lookup")
def op_lookup(bd: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    return _join_operator(bd, rel, op, env, lookup=True)


def _join_operator(bd: Binder, rel: Rel, op: n.Operator, env: Env, lookup: bool) -> Rel:
    kind = "leftouter" if lookup else "innerunique"  # the documented defaults
    for p in op.params:
        if p.name == "kind":
            kind = str(p.value).lower()
    assert op.operand is not None
    right = bd.tabular(op.operand, env)
    return join(bd, rel, right, kind, op, env, lookup=lookup)


JOIN_KINDS = {
    "innerunique": "INNER", "inner": "INNER", "leftouter": "LEFT", "rightouter": "RIGHT",
    "fullouter": "FULL", "leftanti": "ANTI", "anti": "ANTI", "leftantisemi": "ANTI",
    "leftsemi": "SEMI", "rightanti": "ANTI", "rightantisemi": "ANTI", "rightsemi": "SEMI",
}


def join(bd: Binder, left: Rel, right: Rel, kind: str, op: n.Operator, env: Env, lookup: bool) -> Rel:
    if kind not in JOIN_KINDS:
        raise bd.ctx.fail("invalid_argument", f"unknown join kind {kind!r}", op.span,
                            ["kinds: " + ", ".join(JOIN_KINDS)])
    keys: list[tuple[str, str, n.Node]] = []  # (left column, right column)
    for cond in op.conds:
        keys += join_keys(bd, cond, left, right)
    if not op.conds:
        common = [c for c in left.cols if c in right.cols]
        if not common:
            raise bd.ctx.fail("wrong_arguments", "join needs `on` columns", op.span)
        keys = [(c, c, op) for c in common]
    swap = kind.startswith("right") and kind in ("rightanti", "rightsemi", "rightantisemi")
    la, ra = bd.ctx.alias("_l"), bd.ctx.alias("_r")
    lsel: exp.Expr = left.select()
    if kind == "innerunique":
        # Kusto de-duplicates the left side on the join key before joining
        lrel = bd.wrap(left)
        lrel.qualify = exp.EQ(
            this=exp.Window(this=sb.fn("row_number"), partition_by=[sb.col(k[0]) for k in keys]),
            expression=sb.num(1),
        )
        lsel = lrel.select()
    lsub = exp.Subquery(this=lsel, alias=exp.TableAlias(this=sb.ident(la)))
    rsub = exp.Subquery(this=right.select(), alias=exp.TableAlias(this=sb.ident(ra)))
    on = sb.and_all([exp.EQ(this=sb.col(lk, la), expression=sb.col(rk, ra)) for lk, rk, _ in keys])
    jt = JOIN_KINDS[kind]
    cols: dict[str, str] = {}
    proj: list[exp.Expr] = []
    if jt in ("ANTI", "SEMI"):
        keep, keep_alias = (right, ra) if swap else (left, la)
        for c, t in keep.cols.items():
            cols[c] = t
            proj.append(sb.alias(sb.col(c, keep_alias), c))
        a_sub, b_sub = (rsub, lsub) if swap else (lsub, rsub)
        sel = exp.Select(expressions=proj).from_(a_sub).join(b_sub, on=on, join_type=jt)
        return bd.wrap_select(sel, cols)
    # lookup does not repeat the right side's key columns (Kusto docs; Kusto.Language agrees,
    # also for $left.A == $right.B); join keeps them (a same-named one as A1)
    right_keys = {rk for lk, rk, _ in keys if lk == rk or lookup}

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
            name = unique(cols, c)
        cols[name] = t
        proj.append(sb.alias(side(c, t, ra, jt in ("LEFT", "FULL")), name))
    sel = exp.Select(expressions=proj).from_(lsub).join(rsub, on=on, join_type=jt)
    return bd.wrap_select(sel, cols)


def join_keys(bd: Binder, cond: n.Node, left: Rel, right: Rel) -> list[tuple[str, str, n.Node]]:
    if isinstance(cond, n.Name):
        ok = True
        if cond.name not in left.cols:
            bd.ctx.error("unknown_column", f"unknown column {cond.name!r} on the left side of the join",
                           cond.span, name_hints(cond.name, list(left.cols), "columns"))
            ok = False
        if cond.name not in right.cols:
            bd.ctx.error("unknown_column", f"unknown column {cond.name!r} on the right side of the join",
                           cond.span, name_hints(cond.name, list(right.cols), "columns"))
            ok = False
        return [(cond.name, cond.name, cond)] if ok else []
    if isinstance(cond, n.Binary) and cond.op == "and":
        return join_keys(bd, cond.left, left, right) + join_keys(bd, cond.right, left, right)
    if isinstance(cond, n.Binary) and cond.op == "==":
        sides = {}
        for part in (cond.left, cond.right):
            if isinstance(part, n.SideRef):
                rel = left if part.side == "left" else right
                if part.name not in rel.cols:
                    bd.ctx.error("unknown_column", f"unknown column {part.name!r} on the {part.side} side of the join",
                                   part.span, name_hints(part.name, list(rel.cols), "columns"))
                    return []
                sides[part.side] = part.name
            elif isinstance(part, n.Name):
                sides.setdefault("left" if "left" not in sides else "right", part.name)
        if "left" in sides and "right" in sides:
            return [(sides["left"], sides["right"], cond)]
    bd.ctx.error("unsupported", "join conditions must be column names or $left.A == $right.B", cond.span)
    return []
