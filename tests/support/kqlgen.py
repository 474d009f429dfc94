"""KQL text for fuzzing: random derivations of kql/grammar.lark and mutations of real queries.

Derivations walk the grammar's own rules (so they follow it as it changes), choosing each
expansion with Hypothesis (so failures shrink and runs are seeded), bounded in depth by going for
each rule's shortest expansion past a budget. Terminals are literal strings or drawn from a few
samples per regular-expression terminal (names from the catalog, numbers, strings...), which
keeps most derivations meaningful to the compiler, not just to the parser.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from lark.grammar import NonTerminal, Terminal

from kql.parser import _lark
from schema.catalog import default_catalog

CORPUS = Path("/work/shared/corpus")

_SAMPLES: dict[str, list[str]] = {
    "NAME": ["x", "y", "T", "Timestamp", "DeviceName", "ProcessId", "FileName", "ActionType",
             "DeviceProcessEvents", "DeviceNetworkEvents", "count", "kind", "$table"],
    "INT": ["0", "1", "2", "42", "9223372036854775807", "0x10", "100000000"],
    "REAL": ["0.5", "1e308", "2.5e-3"],
    "STRING": ['"a"', "'b'", '"\\ud800"', '@"c:\\x"', '"%"', '""', "h'secret'", '"\\u0000"'],
    "TIMESPAN": ["1d", "1h", "10675199d", "1tick", "0.5s"],
    "DATETIME_LIT": ["datetime(2024-01-01)", "datetime(9999-12-31)", "datetime(0001-01-01)", "datetime(null)"],
    "TIME_LIT": ["time(1.02:03:04)", "time(1d)"],
    "WILD_NAME": ["Dev*", "*Name"],
}


@cache
def _grammar() -> tuple[dict[str, list[list[Any]]], dict[str, Any], dict[str, int]]:
    lk = _lark()
    rules: dict[str, list[list[Any]]] = {}
    for r in lk.rules:
        rules.setdefault(r.origin.name, []).append(list(r.expansion))
    terminals = {t.name: t.pattern for t in lk.terminals}
    # each nonterminal's smallest derivation height (fixed point), to end derivations
    height: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        for name, options in rules.items():
            for option in options:
                hs = [height.get(s.name) if isinstance(s, NonTerminal) else 0 for s in option]
                if all(h is not None for h in hs):
                    h = 1 + max([h for h in hs if h is not None], default=0)
                    if h < height.get(name, 1 << 30):
                        height[name] = h
                        changed = True
    return rules, terminals, height


def _terminal(draw: Any, name: str, pattern: Any) -> str:
    if pattern.type == "str":
        return str(pattern.value)
    samples = _SAMPLES.get(name)
    if samples is None:
        # a keyword-like regular expression: its first alternative, made literal
        first = re.split(r"(?<!\\)\|", pattern.value.strip("()?:"))[0]
        text = re.sub(r"\\s[*+]|\(\?![^)]*\)|[()?:]|\\", " ", first).replace("~", "").strip()
        samples = [text or name.lower()]
    return str(draw(st.sampled_from(samples)))


@st.composite
def derivations(draw: Any, start: str = "start", budget: int = 14) -> str:
    rules, terminals, height = _grammar()
    out: list[str] = []
    stack: list[tuple[Any, int]] = [(NonTerminal(start), 0)]
    steps = 0
    while stack:
        sym, depth = stack.pop()
        steps += 1
        if isinstance(sym, Terminal):
            pattern = terminals.get(sym.name)
            if pattern is not None:
                out.append(_terminal(draw, sym.name, pattern))
            continue
        options = rules[sym.name]
        if depth >= budget or steps > 400:
            best = min(height.get(sym.name, 1), 1 << 30)
            options = [o for o in options if all(
                height.get(s.name, 0) < best for s in o if isinstance(s, NonTerminal))] or options[:1]
        option = draw(st.sampled_from(options))
        for s in reversed(option):
            stack.append((s, depth + 1))
    return " ".join(out)


@cache
def corpus() -> list[str]:
    queries: list[str] = []
    for f in sorted(CORPUS.glob("*.dev.jsonl")):
        queries += [json.loads(line)["query"] for line in f.read_text().splitlines() if line.strip()]
    if not queries:
        # no shared corpus (a plain clone): a few queries of our own to mutate
        table = next(iter(default_catalog().tables))
        queries = [f"{table} | where Timestamp > ago(1h) | summarize count() by DeviceName",
                   'print x = range(1, 5) | mv-expand x | extend y = strcat("a", x)']
    return queries


_FRAGMENTS = ["(", ")", "|", ",", ";", '"', "'", "[", "]", "{", "}", " and ", " or ", "\\", "\x00",
              "\ud800", " | take 1", " | mv-expand x", " | summarize make_list(x)", "1e308", "-",
              "datetime(9999-12-31)", " + 1d", "let ", "=", "..", "@", "$left", "//", "\n", "*"]


@st.composite
def mutations(draw: Any) -> str:
    """A corpus query with a few edits: cut, duplicate, insert a fragment, swap two parts."""
    text = draw(st.sampled_from(corpus()))
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 40)))
        kind = draw(st.sampled_from(["cut", "dup", "insert", "swap"]))
        if kind == "cut":
            text = text[:i] + text[j:]
        elif kind == "dup":
            text = text[:j] + text[i:j] * draw(st.integers(1, 3)) + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(_FRAGMENTS)) + text[i:]
        else:
            k = draw(st.integers(j, n))
            text = text[:i] + text[j:k] + text[i:j] + text[k:]
    return text


@st.composite
def queries(draw: Any) -> str:
    """A pipeline from the grammar: a table or a derived source, then a few derived operators
    (deriving from ``start`` alone mostly yields lone let statements)."""
    if draw(st.booleans()):
        head = draw(st.sampled_from(["DeviceProcessEvents", "DeviceNetworkEvents", "DeviceInfo"]))
    else:
        head = draw(derivations("source", budget=8))
    ops = draw(st.lists(derivations("operator", budget=8), max_size=4))
    return " | ".join([head, *ops])
