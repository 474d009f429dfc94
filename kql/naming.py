"""Kusto's naming rules for columns a query does not name itself.

`extend x.a` names its column `x_a`, `summarize count() by bin(Timestamp, 1h)` keys it
`Timestamp`, and a name already taken gets a number (`count_1`). Pure functions of the syntax
tree: the operator families and plugins share them.
"""

from __future__ import annotations

from kql import nodes as n


def column_name(node: n.Node) -> str | None:
    """The column name Kusto infers for an expression, or None when it makes one up (Column1)."""
    if isinstance(node, n.Name):
        return node.name
    if isinstance(node, n.Paren):
        return column_name(node.inner)
    if isinstance(node, n.NamedArg):  # `by bin(Hour = Timestamp, 1h)` is named Hour
        return node.name
    if isinstance(node, n.ArrayLit) and len(node.items) == 1 and isinstance(node.items[0], n.Literal):
        return str(node.items[0].value)
    if isinstance(node, n.Member):
        base = column_name(node.target)
        return f"{base}_{node.name}" if base else None
    if isinstance(node, n.Index) and isinstance(node.index, n.Literal) and isinstance(node.index.value, str):
        base = column_name(node.target)
        return f"{base}_{node.index.value}" if base else None
    if isinstance(node, n.Call) and node.args:
        base = column_name(node.args[0])
        if not base:
            return None
        if node.name in FIRST_ARGUMENT_NAMED:
            return base
        if node.name in _PREFIXED:
            return _PREFIXED[node.name] + base
        if node.name in _SUFFIXED:
            return base + _SUFFIXED[node.name]
    return None


# Functions whose unnamed result takes the name of their first argument when that has one
# (`project tostring(X)` is X, `summarize by bin(T, 1h)` is T, `mv-expand split(X, ",")` is X):
# Kusto.Language's naming, asked function by function through kusto-check. Any other function
# call is ColumnN (`tolower(X)`, `strcat(...)`, `startofweek(T)`).
FIRST_ARGUMENT_NAMED = frozenset({
    "bin", "floor", "bin_at", "startofday", "format_datetime", "format_timespan", "format_bytes",
    "todatetime", "totimespan", "tostring", "toint", "tolong", "toreal", "todouble", "todecimal",
    "tobool", "toboolean", "toguid", "parse_json", "todynamic", "parsejson", "split", "round", "abs",
    "log", "log10", "log2", "exp", "sqrt", "pow", "ceiling", "rand", "tohex", "binary_and",
    "binary_or", "binary_xor", "binary_not", "binary_shift_left", "binary_shift_right",
    "bitset_count_ones",
})
_PREFIXED = {"strlen": "strlen_", "string_size": "string_size_", "gettype": "type_"}
_SUFFIXED = {"array_sort_asc": "_sorted", "array_sort_desc": "_sorted"}


def key_name(node: n.Node) -> str | None:
    """The name of a summarize/by key: as column_name (`bin(T, 1h)` is named `T`)."""
    return column_name(node)


def unique(cols: dict[str, str] | dict[str, object], name: str) -> str:
    """`name`, or `name1`, `name2`... when the name is taken."""
    if name not in cols:
        return name
    i = 1
    while f"{name}{i}" in cols:
        i += 1
    return f"{name}{i}"
