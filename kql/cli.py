"""`quarry check` and `quarry sql`: offline tools over the replicated schema (no server, no data)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from kql.api import CompileOptions, compile_kql
from kql.diagnostics import render
from kql.functions import DIALECTS
from kql.literals import parse_datetime


def _read(path: str | None) -> tuple[str, str]:
    if path is None or path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"quarry: cannot read {path}: {e}") from None


def _options(args: argparse.Namespace) -> CompileOptions:
    now: datetime | None = None
    if getattr(args, "now", None):
        now = parse_datetime(args.now)
        if now is None:
            raise SystemExit(f"quarry: --now: cannot read {args.now!r} as a datetime")
    # the SQL is for Quarry's storage, which stores a missing string as ""
    return CompileOptions(dialect=args.dialect, now=now, strings_never_null=True)


def _check(args: argparse.Namespace) -> int:
    from schema import default_catalog

    text, name = _read(args.file)
    result = compile_kql(text, default_catalog(), _options(args))
    if args.json:
        print(json.dumps({
            "ok": result.ok,
            "columns": [{"name": c, "type": t} for c, t in result.columns],
            "tables": sorted(result.tables),
            "diagnostics": [d.to_dict() for d in result.diagnostics],
        }, indent=2))
    else:
        if result.diagnostics:
            print(render(text, result.diagnostics, name), file=sys.stderr if not result.ok else sys.stdout)
        if result.ok:
            cols = ", ".join(f"{c}:{t}" for c, t in result.columns)
            print(f"{name}: ok ({len(result.columns)} columns: {cols})")
    return 0 if result.ok else 1


def _sql(args: argparse.Namespace) -> int:
    from schema import default_catalog

    text, name = _read(args.file)
    result = compile_kql(text, default_catalog(), _options(args))
    if not result.ok or result.sql is None:
        print(render(text, result.diagnostics, name), file=sys.stderr)
        return 1
    if result.diagnostics:
        print(render(text, result.diagnostics, name), file=sys.stderr)
    if args.pretty:
        import sqlglot

        print(sqlglot.transpile(result.sql, read=args.dialect, write=args.dialect, pretty=True)[0])
    else:
        print(result.sql)
    return 0


def add_kql_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("check", help="check a KQL query against the schema (offline); exit 1 on errors")
    c.add_argument("file", nargs="?", default="-", help="query file, or - for stdin")
    c.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    c.add_argument("--dialect", default="duckdb", choices=sorted(DIALECTS))
    c.add_argument("--now", help="fix now()/ago() (ISO datetime, UTC)")
    c.set_defaults(func=_check)

    s = sub.add_parser("sql", help="print the SQL a KQL query compiles to (offline)")
    s.add_argument("file", nargs="?", default="-", help="query file, or - for stdin")
    s.add_argument("--dialect", default="duckdb", choices=sorted(DIALECTS))
    s.add_argument("--now", help="fix now()/ago() (ISO datetime, UTC)")
    s.add_argument("--pretty", action="store_true", help="indent the SQL")
    s.set_defaults(func=_sql)
