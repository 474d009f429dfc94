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
    if isinstance(node, n.ArrayLit) and len(node.items) == 1 and isinstance(node.items[0], n.Literal):
        return str(node.items[0].value)
    if isinstance(node, n.Member):
        base = column_name(node.target)
        return f"{base}_{node.name}" if base else None
    if isinstance(node, n.Index) and isinstance(node.index, n.Literal) and isinstance(node.index.value, str):
        base = column_name(node.target)
        return f"{base}_{node.index.value}" if base else None
    return None


# summarize keys through these functions keep the name of their first argument
_KEY_FUNCTIONS = ("bin", "floor", "bin_at", "startofday", "startofweek", "startofmonth", "tostring", "tolower",
                  "toupper")


def key_name(node: n.Node) -> str | None:
    """The name of a summarize/by key: as column_name, and `bin(T, 1h)` is named `T`."""
    name = column_name(node)
    if name:
        return name
    if isinstance(node, n.Call) and node.name in _KEY_FUNCTIONS and node.args:
        return column_name(node.args[0])
    return None


def unique(cols: dict[str, str] | dict[str, object], name: str) -> str:
    """`name`, or `name1`, `name2`... when the name is taken."""
    if name not in cols:
        return name
    i = 1
    while f"{name}{i}" in cols:
        i += 1
    return f"{name}{i}"
