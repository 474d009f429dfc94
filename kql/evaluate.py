"""`evaluate` plugins: bag_unpack, pivot (data-dependent output columns) and ipv4_lookup.

bag_unpack and pivot have output columns that depend on the data, as in Kusto. Unless the query
declares them (`evaluate bag_unpack(d) : (A:string, B:long)`), the compiler learns them from the
data through ``CompileOptions.probe``: it builds a small SQL query over the input (the distinct
top-level keys of the bag, the distinct pivot values), the caller runs it where the main query
will run (same connection, same time-range views) and the compiler lowers the plugin to plain SQL
with those columns. Without a probe (offline `quarry check`) the output columns are unknown: a
`data_dependent_schema` warning, later references to columns not known are allowed, and the
result has no SQL (``Compiled.needs_probe``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlglot import exp

from kql import functions as F
from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import CompileError, Env, Scope
from kql.expressions.basic import dyn, json_path
from kql.lower import capabilities
from kql.registry import EVALUATE_PLUGINS, Binder, evaluate_plugin, operator
from kql.relation import Rel
from kql.typed import STRINGY, V, as_string, normalize_type, to_type
from schema.types import kql_type

# More columns than this from one plugin is almost surely a mistake (a bag of per-row ids, a
# pivot over timestamps) and would make a result nobody can read.
MAX_DATA_COLUMNS = 500

# json_type() of a value -> the KQL type of a column whose values all have that type
_JSON_TYPES = {"VARCHAR": "string", "BIGINT": "long", "UBIGINT": "long", "DOUBLE": "real",
               "BOOLEAN": "bool"}

# aggregates whose value over no rows is 0, not null (a pivot cell without rows)
_ZERO_WHEN_EMPTY = {"count", "countif", "dcount", "dcountif", "count_distinct"}

_PIVOT_AGGREGATES = {"min", "max", "take_any", "any", "sum", "dcount", "avg", "stdev", "variance",
                     "make_list", "make_bag", "make_set", "count"}


@operator("evaluate")
def evaluate(c: Binder, rel: Rel, op: n.Operator, env: Env) -> Rel:
    call = op.operand
    assert isinstance(call, n.Call)
    plugin = EVALUATE_PLUGINS.get(call.name)
    if plugin is not None:
        capabilities.check(c.ctx, "plugin", call.name, call.name_span)
        return plugin(c, rel, op, call, env)
    raise c.ctx.fail("unsupported", f"the evaluate plugin {call.name}() is not supported", op.span)


# ---------------------------------------------------------------- arguments


def _split_args(c: Binder, call: n.Call, names: list[str]) -> dict[str, n.Node]:
    """Positional and named arguments by parameter name (names matched case-insensitively)."""
    out: dict[str, n.Node] = {}
    lower = {p.lower(): p for p in names}
    pos = 0
    for a in call.args:
        if isinstance(a, n.NamedArg):
            key = lower.get(a.name.lower())
            if key is None:
                raise c.ctx.fail("invalid_argument", f"{call.name}() has no parameter {a.name!r}; "
                                 f"parameters: {', '.join(names)}", a.span)
            out[key] = a.value
            continue
        if pos >= len(names):
            raise c.ctx.fail("wrong_arguments", f"{call.name}() takes at most {len(names)} arguments", a.span)
        out[names[pos]] = a
        pos += 1
    return out


def _const(c: Binder, node: n.Node, env: Env, what: str, kind: type) -> Any:
    if isinstance(node, n.Call) and node.name == "dynamic":
        value = c.dynamic_literal(node.args[0], Scope(env)) if node.args else None
    else:
        v = c.scalar(node, Scope(env))
        if not v.is_const:
            raise c.ctx.fail("invalid_argument", f"{what} must be a constant", node.span)
        value = v.const
    if not isinstance(value, kind):
        raise c.ctx.fail("invalid_argument", f"{what} must be a {kind.__name__ if kind is not list else 'dynamic array'}", node.span)
    return value


def _column_arg(c: Binder, node: n.Node, rel: Rel, what: str) -> str:
    name = node.name if isinstance(node, n.Name) else None
    if name is None and isinstance(node, n.ArrayLit) and len(node.items) == 1 and isinstance(node.items[0], n.Literal):
        name = str(node.items[0].value)
    if name is None:
        raise c.ctx.fail("invalid_argument", f"{what} must be a column name", node.span)
    if name not in rel.cols:
        if rel.open_schema:
            raise c.ctx.fail("unsupported", f"{what} {name!r} is not known before the data is read", node.span)
        c.unknown_column(name, node.span, rel)
        raise _stop()
    return name


def _stop() -> Exception:
    return CompileError("reported")


def _schema(c: Binder, op: n.Operator) -> tuple[bool, list[tuple[str, str]]] | None:
    if op.extra is None:
        return None
    star, decls = op.extra
    out: list[tuple[str, str]] = []
    for name, typ, span in decls:
        try:
            kql_type(typ)
            out.append((name, normalize_type(typ)))
        except KeyError:
            raise c.ctx.fail("unknown_type", f"unknown type {typ!r}", span) from None
    return star, out


def _probe(c: Binder, sel: exp.Select, what: str, node: n.Node) -> list[tuple[Any, ...]] | None:
    """Run ``sel`` through the caller's probe; None when there is none (schema unknown)."""
    rows = c.ctx.run_probe(sel)
    if rows is None:
        c.ctx.needs_probe = True
        c.ctx.warn("data_dependent_schema", f"the columns {what} produces depend on the data: they are "
                   "learned when the query runs (declare them with `: (Name:type, ...)` to check them here)",
                   node.span)
        return None
    if len(rows) > MAX_DATA_COLUMNS:
        raise c.ctx.fail("too_many_columns", f"{what} would produce more than {MAX_DATA_COLUMNS} columns "
                         "from this data; narrow the input first", node.span)
    return rows


def _open_result(c: Binder, rel: Rel, cols: dict[str, str]) -> Rel:
    """The output when the data-dependent columns are unknown: the known ones, schema open."""
    rel = c.wrap(rel) if not rel.open else rel
    rel.cols = dict(cols)
    rel.exprs = {k: rel.exprs.get(k, sb.col(k)) for k in cols}
    rel.open_schema = True
    return rel


# ---------------------------------------------------------------- bag_unpack


@evaluate_plugin("bag_unpack")
def bag_unpack(c: Binder, rel: Rel, op: n.Operator, call: n.Call, env: Env) -> Rel:
    args = _split_args(c, call, ["Column", "OutputColumnPrefix", "columnsConflict", "ignoredProperties"])
    if "Column" not in args:
        raise c.ctx.fail("wrong_arguments", "bag_unpack() needs the column to unpack", call.span)
    if not rel.open:
        rel = c.wrap(rel)
    column = _column_arg(c, args["Column"], rel, "bag_unpack's column")
    prefix = _const(c, args["OutputColumnPrefix"], env, "the column prefix", str) if "OutputColumnPrefix" in args else ""
    conflict = _const(c, args["columnsConflict"], env, "columnsConflict", str) if "columnsConflict" in args else "error"
    if conflict not in ("error", "replace_source", "keep_source"):
        raise c.ctx.fail("invalid_argument", "columnsConflict must be 'error', 'replace_source' or 'keep_source'",
                         args["columnsConflict"].span)
    ignored = set(map(str, _const(c, args["ignoredProperties"], env, "ignoredProperties", list))) \
        if "ignoredProperties" in args else set()
    bag = c.scalar(args["Column"], Scope(env, rel))
    if bag.type != "dynamic":
        raise c.ctx.fail("type_mismatch", f"bag_unpack() unpacks a dynamic column; {column!r} is {bag.type}",
                         args["Column"].span, [f"parse it first: extend {column} = parse_json({column})"])
    # the bag is parsed once, in a column of its own, and every slot is read from that column
    tmp = "__bag"
    rel.cols[tmp], rel.exprs[tmp] = "dynamic", dyn(c, bag, args["Column"])
    inputs = {k: t for k, t in rel.cols.items() if k not in (column, tmp)}

    declared = _schema(c, op)
    slots: list[tuple[str, str, str]] = []  # (output name, slot key, type)
    from_input: dict[str, str] = {}  # output name -> declared type of a column taken from the input
    if declared is not None:
        star, decls = declared
        if star:
            from_input.update(inputs)
        for name, typ in decls:
            if name in inputs and conflict != "replace_source":
                from_input[name] = typ
            else:
                key = name[len(prefix):] if prefix and name.startswith(prefix) else name
                slots.append((name, key, typ))
                from_input.pop(name, None)
    else:
        probe = _probe(c, _bag_probe(c, rel, tmp), "bag_unpack", op)
        if probe is None:
            rel.cols.pop(tmp)
            rel.exprs.pop(tmp)
            keep = {k: t for k, t in rel.cols.items() if k != column}
            return _open_result(c, rel, keep)
        from_input.update(inputs)
        for key, types in probe:
            key = str(key)
            if key in ignored:
                continue
            name = prefix + key
            if name in inputs:
                if conflict == "error":
                    raise c.ctx.fail("duplicate_column", f"bag_unpack: slot {key!r} clashes with the input column "
                                     f"{name!r}; pass columnsConflict='replace_source' or 'keep_source'", call.span)
                if conflict == "keep_source":
                    continue
                from_input.pop(name)
            kinds = {_JSON_TYPES.get(str(t), "dynamic") for t in (types or []) if t != "NULL"}
            slots.append((name, key, kinds.pop() if len(kinds) == 1 else "dynamic"))
        slots.sort(key=lambda s: s[0])
    rel = c.wrap(rel)
    cols: dict[str, str] = {}
    exprs: dict[str, exp.Expr] = {}
    for name, typ in from_input.items():
        v = V(sb.col(name), rel.cols[name])
        cols[name], exprs[name] = typ, (v.sql if typ == v.type else to_type(v, typ))
    src = V(sb.col(tmp), "dynamic")
    for name, key, typ in slots:
        v = json_path(c, src, [("key", key)], op)
        cols[name], exprs[name] = typ, (v.sql if typ == "dynamic" else to_type(v, typ))
    rel.cols, rel.exprs = cols, exprs
    return rel


def _bag_probe(c: Binder, rel: Rel, tmp: str) -> exp.Select:
    """SELECT key, list(DISTINCT json_type(value)) over the bags' top-level slots."""
    inner = replace(rel, cols={tmp: "dynamic"}, exprs={tmp: rel.exprs[tmp]}).select()
    sub = exp.Subquery(this=inner, alias=exp.TableAlias(this=sb.ident("_p")))
    each = exp.Table(this=exp.Anonymous(this="json_each", expressions=[exp.column(sb.ident(tmp), table=sb.ident("_p"))]),
                     alias=exp.TableAlias(this=sb.ident("_j")))
    key = exp.column(sb.ident("key"), table=sb.ident("_j"))
    value = exp.column(sb.ident("value"), table=sb.ident("_j"))
    types = exp.ArrayAgg(this=exp.Distinct(expressions=[sb.fn("json_type", value)]))
    is_obj = exp.EQ(this=sb.fn("json_type", exp.column(sb.ident(tmp), table=sb.ident("_p"))), expression=sb.s("OBJECT"))
    sel = exp.Select(expressions=[key, types]).from_(sub).join(each, join_type="CROSS").where(is_obj)
    return sel.group_by(key.copy()).order_by(key.copy()).limit(MAX_DATA_COLUMNS + 1)


# ---------------------------------------------------------------- pivot


def _names_in(node: Any, out: set[str]) -> None:
    if isinstance(node, n.Name):
        out.add(node.name)
    elif isinstance(node, n.Node):
        for f in node.__dataclass_fields__:
            v = getattr(node, f)
            if isinstance(v, tuple):
                for x in v:
                    _names_in(x, out)
            else:
                _names_in(v, out)


@evaluate_plugin("pivot")
def pivot(c: Binder, rel: Rel, op: n.Operator, call: n.Call, env: Env) -> Rel:
    if not call.args:
        raise c.ctx.fail("wrong_arguments", "pivot() needs the column to pivot", call.span)
    if not rel.open:
        rel = c.wrap(rel)
    pcol = _column_arg(c, call.args[0], rel, "the pivot column")
    rest = list(call.args[1:])
    agg: n.Call = n.Call(call.span, "count", call.span, ())
    if rest and isinstance(rest[0], n.Call):
        agg = rest.pop(0)  # type: ignore[assignment]
        fname = F.ALIASES.get(agg.name, agg.name)
        if fname not in _PIVOT_AGGREGATES:
            raise c.ctx.fail("unsupported", f"pivot() aggregates with {', '.join(sorted(_PIVOT_AGGREGATES))}(); "
                             f"not {agg.name}()", agg.span)
    keys = [_column_arg(c, a, rel, "a pivot key") for a in rest]
    if not rest:
        used: set[str] = set()
        _names_in(agg, used)
        keys = [k for k in rel.cols if k != pcol and k not in used]
    # 1) one row per (keys, pivot value) with the aggregate; 2) one row per keys, one column per
    # pivot value, each the aggregate of its row (NULL, or 0 for counts, where there is none)
    pv, av = "__pivot", "__agg"
    by = tuple(n.NamedExpr(call.span, (), n.Name(call.span, k)) for k in keys)
    by += (n.NamedExpr(call.span, (pv,), n.Call(call.span, "tostring", call.span, (call.args[0],))),)
    summ = n.Operator(op.span, "summarize", exprs=(n.NamedExpr(agg.span, (av,), agg),), by=by)
    grouped = c.operator(rel, summ, env)
    agg_type = grouped.cols[av]
    grouped = c.wrap(grouped)

    declared = _schema(c, op)
    if declared is not None:
        _star, decls = declared
        values = [(name, typ) for name, typ in decls if name not in keys]
        out_keys = {name: typ for name, typ in decls if name in keys}
    else:
        sel = exp.Select(expressions=[sb.col(pv)]).from_(grouped.src.copy()).distinct().order_by(sb.col(pv))
        sel = sel.limit(MAX_DATA_COLUMNS + 1)
        probe = _probe(c, sel, "pivot", op)
        out_keys = {k: grouped.cols[k] for k in keys}
        if probe is None:
            return _open_result(c, grouped, out_keys)
        values = [(str(r[0]) if r[0] is not None else "", agg_type) for r in probe]
        clash = [v for v, _ in values if v in out_keys]
        if clash:
            raise c.ctx.fail("duplicate_column", f"pivot: the value {clash[0]!r} is also the name of a key column",
                             call.span)
    zero = F.ALIASES.get(agg.name, agg.name) in _ZERO_WHEN_EMPTY
    cols: dict[str, str] = {}
    exprs: dict[str, exp.Expr] = {}
    for k, t in out_keys.items():
        cols[k], exprs[k] = t, (sb.col(k) if t == grouped.cols[k] else to_type(V(sb.col(k), grouped.cols[k]), t))
    for value, typ in values:
        if not value:
            raise c.ctx.fail("invalid_argument", "pivot: an empty pivot value cannot name a column", call.args[0].span)
        cell: exp.Expr = exp.Filter(this=sb.fn("any_value", sb.col(av)),
                                    expression=exp.Where(this=exp.EQ(this=sb.col(pv), expression=sb.s(value))))
        if zero:
            cell = sb.fn("coalesce", cell, sb.num(0))
        cols[value] = typ
        exprs[value] = cell if typ == agg_type else to_type(V(cell, agg_type), typ)
    grouped.cols, grouped.exprs = cols, exprs
    grouped.group = [sb.col(k) for k in out_keys]
    return grouped


# ---------------------------------------------------------------- ipv4_lookup


@evaluate_plugin("ipv4_lookup")
def ipv4_lookup(c: Binder, rel: Rel, op: n.Operator, call: n.Call, env: Env) -> Rel:
    """`evaluate ipv4_lookup(Table, SourceKey, LookupKey [, return_unmatched])`: join each row to
    the lookup rows whose IPv4 range (CIDR or single address) contains its address."""
    args = _split_args(c, call, ["LookupTable", "SourceIPv4Key", "IPv4LookupKey", "return_unmatched"])
    for p in ("LookupTable", "SourceIPv4Key", "IPv4LookupKey"):
        if p not in args:
            raise c.ctx.fail("wrong_arguments", f"ipv4_lookup() needs {p}", call.span)
    unmatched = _const(c, args["return_unmatched"], env, "return_unmatched", bool) if "return_unmatched" in args else False
    if not rel.open:
        rel = c.wrap(rel)
    right = c.tabular(args["LookupTable"], env)
    if not right.open:
        right = c.wrap(right)
    src = c.scalar(args["SourceIPv4Key"], Scope(env, rel))
    rng = c.scalar(args["IPv4LookupKey"], Scope(env, right))
    for v, node in ((src, args["SourceIPv4Key"]), (rng, args["IPv4LookupKey"])):
        if v.type not in STRINGY and v.type != "dynamic":
            raise c.ctx.fail("type_mismatch", f"ipv4_lookup() keys are IPv4 strings, not {v.type}", node.span)
    la, ra = c.ctx.alias("_l"), c.ctx.alias("_r")
    lsel, rsel = rel.select(), right.select()
    lsel.select(sb.alias(F.ipv4_to_long(as_string(src)), "__ip"), copy=False)
    # the range as [low, high] longs: "a.b.c.d/p" (or a single address, /32)
    text = as_string(rng)
    base = F.ipv4_to_long(sb.fn("split_part", text, sb.s("/"), sb.num(1)))
    bits = exp.Sub(this=sb.num(32), expression=sb.fn("coalesce", exp.Nullif(
        this=sb.try_cast(sb.fn("split_part", text.copy(), sb.s("/"), sb.num(2)), "long"),
        expression=sb.num(-1)), sb.num(32)))
    size = exp.BitwiseLeftShift(this=sb.cast(sb.num(1), "long"), expression=exp.Paren(this=bits))
    low = exp.Mul(this=exp.IntDiv(this=base, expression=size), expression=size.copy())
    rsel.select(sb.alias(low, "__lo"), copy=False)
    rsel.select(sb.alias(exp.Sub(this=exp.Add(this=low.copy(), expression=size.copy()), expression=sb.num(1)), "__hi"),
                copy=False)
    ip = exp.column(sb.ident("__ip"), table=sb.ident(la))
    cond = exp.Between(this=ip, low=exp.column(sb.ident("__lo"), table=sb.ident(ra)),
                       high=exp.column(sb.ident("__hi"), table=sb.ident(ra)))
    kind = "LEFT" if unmatched else None
    sel = exp.Select()
    cols: dict[str, str] = {}
    for k, t in rel.cols.items():
        cols[k] = t
        sel = sel.select(sb.alias(exp.column(sb.ident(k), table=sb.ident(la)), k), copy=False)
    for k, t in right.cols.items():
        name = k
        i = 1
        while name in cols:
            name = f"{k}{i}"
            i += 1
        cols[name] = t
        sel = sel.select(sb.alias(exp.column(sb.ident(k), table=sb.ident(ra)), name), copy=False)
    sel = sel.from_(exp.Subquery(this=lsel, alias=exp.TableAlias(this=sb.ident(la))), copy=False)
    sel = sel.join(exp.Subquery(this=rsel, alias=exp.TableAlias(this=sb.ident(ra))), on=cond,
                   join_type=kind, copy=False)
    return c.wrap_select(sel, cols)
