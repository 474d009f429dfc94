"""What the console's editor completes and highlights, read from the compiler's own tables: the
tabular operators and sources (its registry, and the grammar's keywords), scalar and aggregate
functions with their argument counts and result types, and the scalar operators of the grammar.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

from kql import compiler  # noqa: F401  (importing the compiler fills the registry)
from kql import functions as F
from kql.registry import OPERATORS, SOURCES

# Words of the language that are neither operators nor functions (the grammar's keywords).
KEYWORDS = ("by", "on", "with", "kind", "asc", "desc", "nulls", "first", "last", "and", "or", "not",
            "let", "true", "false", "to", "step", "from", "in", "between", "withsource", "datatable",
            "declare", "query_parameters", "dynamic", "typeof")


def _terminal_words(grammar: str, name: str) -> list[str]:
    m = re.search(rf"^{name}(?:\.\d+)?:\s*(.+)$", grammar, flags=re.M)
    if not m:
        return []
    out: list[str] = []
    for group in re.findall(r"\(([^()?]*\|[^()]*)\)", m.group(1)):
        for alt in group.split("|"):
            word = re.sub(r"\\(.)", r"\1", alt)
            if re.fullmatch(r"[a-z_][\w-]*", word) and word not in out and word != "not":
                out.append(word)
    return out


@cache
def language() -> dict[str, Any]:
    grammar = resources.files("kql").joinpath("grammar.lark").read_text(encoding="utf-8")
    operators = sorted({k for k in OPERATORS if k != "other"} | set(SOURCES)
                       | {"render", "where", "filter", "order", "limit", "mvexpand"})
    ignored = _terminal_words(grammar, "OTHER_OP")
    string_ops = _terminal_words(grammar, "STR_OP")
    string_ops += ["!" + w for w in string_ops] + ["in", "!in", "in~", "!in~", "has_any", "has_all",
                                                   "between", "!between"]

    def sig(kind: str, name: str, s: Any) -> dict[str, Any]:
        return {"name": name, "kind": kind, "minArgs": s.min_args, "maxArgs": s.max_args, "returns": s.ret}

    functions = [sig("scalar", n, s) for n, s in F.SCALARS.items()]
    functions += [sig("aggregate", n, s) for n, s in F.AGGREGATES.items()]
    functions += [{"name": a, "kind": "alias", "aliasOf": t} for a, t in F.ALIASES.items()]
    return {
        "operators": operators,
        "unsupportedOperators": [w for w in ignored if w != "render"],
        "scalarOperators": sorted(set(string_ops)),
        "functions": sorted(functions, key=lambda f: f["name"]),
        "keywords": list(KEYWORDS),
        "renderVisualizations": ["timechart", "linechart", "areachart", "columnchart", "barchart",
                                 "piechart", "scatterchart"],
    }
