"""The ``render`` operator's chart hint: the compiler binds ``render`` to this hint (Compiled.render;
the rows are unchanged) for the console and any client of ``POST /api/query`` to draw. The
grammar keeps the operator's text whole, so its visualization and properties are read here.

Properties follow Kusto's render operator: ``render <visualization> [with (name = value, ...)]``
where ``ycolumns`` and ``series`` take comma-separated column names and the rest take a name,
string, number or bool (https://learn.microsoft.com/kusto/query/render-operator).
"""

from __future__ import annotations

import re
from typing import Any

VISUALIZATIONS = (
    "timechart", "linechart", "areachart", "stackedareachart", "columnchart", "barchart",
    "piechart", "scatterchart", "table", "card", "anomalychart", "ladderchart", "pivotchart",
    "timepivot", "treemap",
)
LIST_PROPS = ("ycolumns", "series", "anomalycolumns")
SCALAR_PROPS = ("title", "xcolumn", "kind", "legend", "xtitle", "ytitle", "xaxis", "yaxis", "ymin",
                "ymax", "accumulate", "ysplit")
KINDS = ("default", "stacked", "stacked100", "unstacked", "map")

_HEAD = re.compile(r"\s*render\s+([A-Za-z_]\w*)\s*", re.S)
_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[^,()=\s]+|=|,|\))', re.S)


class RenderError(ValueError):
    pass


def _value(tok: str) -> str:
    if len(tok) >= 2 and tok[0] == tok[-1] and tok[0] in "\"'":
        return re.sub(r"\\(.)", r"\1", tok[1:-1])
    return tok


def parse_render(text: str) -> dict[str, Any]:
    """The hint of one ``render ...`` operator's text: ``{"visualization": ..., <properties>}``
    (``ycolumns``/``series`` as lists). Raises RenderError saying what is wrong."""
    m = _HEAD.match(text)
    if not m:
        raise RenderError("expected 'render <visualization>'")
    vis = m.group(1).lower()
    if vis not in VISUALIZATIONS:
        raise RenderError(f"unknown render visualization '{m.group(1)}'; expected one of {', '.join(VISUALIZATIONS)}")
    out: dict[str, Any] = {"visualization": vis}
    rest = text[m.end():].strip()
    if not rest:
        return out
    wm = re.match(r"with\s*\(", rest)
    if not wm:
        raise RenderError("expected 'with (name = value, ...)' after the visualization")
    pos, body = 0, rest[wm.end():]
    current: str | None = None
    expect_value = False
    while True:
        tm = _TOKEN.match(body, pos)
        if not tm:
            raise RenderError("the render properties are not closed with ')'")
        tok, pos = tm.group(1), tm.end()
        if tok == ")":
            break
        if tok == ",":
            continue
        nxt = _TOKEN.match(body, pos)
        if nxt and nxt.group(1) == "=":  # name = value
            name = tok.lower()
            if name not in LIST_PROPS and name not in SCALAR_PROPS:
                raise RenderError(f"unknown render property '{tok}'")
            current, pos, expect_value = name, nxt.end(), True
            continue
        if current is None:
            raise RenderError(f"expected a property name before '{tok}'")
        value = _value(tok)
        if current in LIST_PROPS:
            out.setdefault(current, []).append(value)
        elif expect_value:
            out[current] = value
        else:
            raise RenderError(f"property '{current}' takes one value")
        expect_value = False
    if body[pos:].strip():
        raise RenderError("unexpected text after the render properties")
    kind = out.get("kind")
    if kind is not None and str(kind).lower() not in KINDS:
        raise RenderError(f"unknown render kind '{kind}'; expected one of {', '.join(KINDS)}")
    return out
