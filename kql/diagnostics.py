"""Diagnostics: what went wrong, where (1-based line/column, 0-based offsets), and hints."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from kql.nodes import Span

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    code: str  # syntax, unknown_table, unknown_column, unknown_function, type_mismatch, ...
    message: str
    severity: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int
    end: int
    hints: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "start": self.start,
            "end": self.end,
            "hints": list(self.hints),
        }


def line_col(text: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def make(
    text: str,
    code: str,
    message: str,
    span: Span,
    hints: list[str] | tuple[str, ...] = (),
    severity: str = ERROR,
) -> Diagnostic:
    line, col = line_col(text, span.start)
    end_line, end_col = line_col(text, max(span.end, span.start))
    return Diagnostic(
        code, message, severity, line, col, end_line, end_col, span.start, span.end, tuple(hints)
    )


def did_you_mean(name: str, candidates: list[str], limit: int = 3) -> list[str]:
    """Close names first (case-insensitive), as "did you mean" hints."""
    lowered = {c.lower(): c for c in candidates}
    exact = [lowered[name.lower()]] if name.lower() in lowered else []
    close = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.6)
    out: list[str] = []
    for c in exact + [lowered[x] for x in close]:
        if c not in out:
            out.append(c)
    return out[:limit]


def name_hints(name: str, candidates: list[str], what: str) -> list[str]:
    hints = []
    close = did_you_mean(name, candidates)
    if close:
        hints.append("did you mean " + " or ".join(repr(c) for c in close) + "?")
    if candidates:
        shown = ", ".join(candidates[:40]) + (", ..." if len(candidates) > 40 else "")
        hints.append(f"{what} available here: {shown}")
    return hints


def render(text: str, diags: list[Diagnostic], source_name: str = "<query>") -> str:
    """Human-readable diagnostics with the source line and a caret under the problem."""
    lines = text.split("\n")
    out: list[str] = []
    for d in diags:
        out.append(f"{source_name}:{d.line}:{d.column}: {d.severity}[{d.code}]: {d.message}")
        if 1 <= d.line <= len(lines):
            src = lines[d.line - 1].replace("\t", " ")
            out.append("  " + src)
            width = d.end_column - d.column if d.end_line == d.line else len(src) - d.column + 1
            out.append("  " + " " * (d.column - 1) + "^" * max(1, width))
        for h in d.hints:
            out.append(f"  hint: {h}")
    return "\n".join(out)
