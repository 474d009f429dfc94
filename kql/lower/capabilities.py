"""What each target cannot do, as data: checked while the query is bound, so an unsupported
operator, plugin or function is a clear diagnostic (code ``unsupported_target``, at the place it
is written) before any lowering starts, never wrong SQL or an engine error.

Keys are ``operator:<kind>``, ``source:<kind>``, ``plugin:<name>`` and ``function:<name>``; the
value says why. DuckDB, the default target, can do everything the compiler emits.
"""

from __future__ import annotations

from kql import nodes as n
from kql.context import CompileError, Ctx

UNSUPPORTED: dict[str, dict[str, str]] = {
    "duckdb": {},
    "spark": {},
}


def check(ctx: Ctx, kind: str, name: str, span: n.Span) -> None:
    """Report (and stop at) a construct ``ctx.dialect`` cannot run."""
    why = UNSUPPORTED.get(ctx.dialect, {}).get(f"{kind}:{name}")
    if why is not None:
        raise _fail(ctx, kind, name, why, span)


def _fail(ctx: Ctx, kind: str, name: str, why: str, span: n.Span) -> CompileError:
    shown = f"{name}()" if kind in ("function", "plugin") else name
    return ctx.fail("unsupported_target", f"{shown} cannot run on the {ctx.dialect} engine: {why}", span,
                    ["run the query on the default engine (duckdb)"])
