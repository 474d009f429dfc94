"""``quarry query "KQL" --data-dir DIR [--format table|json|csv]``: run a query on a local data
directory with no server, through the same runner (and so the same diagnostics) as the API.

It opens the directory's storage (replaying its write-ahead log, so unflushed rows are seen);
do not point it at the directory of a running server, which owns that log.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from server.query.values import render_datetime, render_timespan, row_converter


def add_query_parser(sub: Any) -> None:
    q = sub.add_parser(
        "query",
        help="run a KQL query on a local data directory (no server)",
        description="Run a KQL query offline. Exit status: 0 ok, 1 query error, 2 usage error.",
    )
    q.add_argument("kql", help="the KQL text ('-' reads it from standard input)")
    q.add_argument("--data-dir", required=True, help="a Quarry data directory (e.g. from quarry demo)")
    q.add_argument("--format", choices=["table", "json", "csv"], default="table")
    q.add_argument("--max-rows", type=int, default=None, help="row cap (default: the max_rows setting)")
    q.add_argument("--timespan", default=None, help="ISO 8601 duration or interval restricting Timestamp")
    q.add_argument("--timeout", type=float, default=None, help="seconds before the query is stopped")
    q.add_argument("--engine", choices=["duckdb", "spark"], default=None,
                   help="engine to run on (default: QUARRY_ENGINE, else duckdb); spark needs quarry[spark]")
    q.set_defaults(func=run_query_command)


def _error_json(message: str, errors: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"ok": False, "error": message, "errors": errors}, option=orjson.OPT_INDENT_2)


def render_diagnostics(text: str, errors: list[dict[str, Any]]) -> str:
    """Errors as a person reads them: position, code, message, the line with a caret, hints."""
    lines = text.splitlines() or [""]
    out = []
    for e in errors:
        line, col = e.get("line"), e.get("column")
        where = f"{line}:{col}: " if line is not None else ""
        out.append(f"error: {where}[{e.get('code', 'error')}] {e.get('message', '')}")
        if isinstance(line, int) and 1 <= line <= len(lines) and isinstance(col, int):
            src = lines[line - 1]
            end_col = e.get("endColumn") if e.get("endLine") == line else None
            width = max(1, (end_col - col) if isinstance(end_col, int) and end_col > col else 1)
            out.append(f"  {src}")
            out.append("  " + " " * (col - 1) + "^" * width)
        out.extend(f"  hint: {h}" for h in e.get("hints") or [])
    return "\n".join(out)


def _cell(kql: str, v: Any) -> str:
    if v is None:
        return ""
    if kql == "datetime":
        return str(render_datetime(v))
    if kql == "timespan":
        return str(render_timespan(v))
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return str(v)


def _print_table(columns: list[tuple[str, str]], rows: list[list[Any]], out: TextIO) -> None:
    types = [t for _, t in columns]
    cells = [[_cell(t, v).replace("\n", "\\n") for t, v in zip(types, r, strict=True)] for r in rows]
    widths = [len(n) for n, _ in columns]
    for r in cells:
        widths = [max(w, min(len(c), 60)) for w, c in zip(widths, r, strict=True)]

    def fmt(values: list[str]) -> str:
        return "  ".join((v if len(v) <= 60 else v[:57] + "...").ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out.write(fmt([n for n, _ in columns]) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for r in cells:
        out.write(fmt(r) + "\n")


def run_query_command(args: argparse.Namespace) -> int:
    from schema.catalog import default_catalog
    from server.query.engines import make_runner
    from server.query.runner import QueryError
    from server.query.timerange import TimeRangeError, parse_timespan
    from server.settings import Settings
    from server.storage import Storage, StorageLocked

    text = sys.stdin.read() if args.kql == "-" else args.kql
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"error: data directory {data_dir} does not exist", file=sys.stderr)
        return 2
    catalog = default_catalog()
    # Opening storage creates _wal/ and a folder per table: not in a directory that is not ours.
    if not (data_dir / "_wal").is_dir() and not any((data_dir / t).is_dir() for t in catalog.tables):
        print(f"error: {data_dir} is not a Quarry data directory (no _wal/ or table folders); "
              "make one with 'quarry demo --no-serve --data-dir DIR'", file=sys.stderr)
        return 2
    settings = Settings(data_dir=data_dir, scheduler_enabled=False)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    tr = None
    if args.timespan:
        try:
            tr = parse_timespan(args.timespan, now)
        except TimeRangeError as e:
            print(f"error: invalid --timespan: {e}", file=sys.stderr)
            return 2
    storage = Storage(settings, catalog)
    try:
        storage.start()
    except StorageLocked:
        print(
            f"error: {settings.data_dir} is in use by another Quarry process (a running server?); "
            "query it through its HTTP API instead",
            file=sys.stderr,
        )
        return 1
    runner = make_runner(storage, catalog, settings, engine=args.engine)
    try:
        result = runner.run(text, time_range=tr, max_rows=args.max_rows, timeout_s=args.timeout, now=now)
    except QueryError as e:
        if args.format == "json":
            sys.stdout.write(_error_json(e.message, e.errors).decode() + "\n")
        else:
            print(render_diagnostics(text, e.errors) if e.errors else f"error: {e.message}", file=sys.stderr)
        return 1
    finally:
        runner.close()
        storage.close()

    convert = row_converter([t for _, t in result.columns])
    rows = [convert(r) for r in result.rows]
    out = sys.stdout
    if args.format == "json":
        body = {
            "columns": [{"name": n, "type": t} for n, t in result.columns],
            "rows": rows,
            "truncated": result.truncated,
            "warnings": result.warnings,
            "stats": result.stats.as_dict(),
        }
        out.write(orjson.dumps(body).decode() + "\n")
    elif args.format == "csv":
        w = csv.writer(out)
        w.writerow([n for n, _ in result.columns])
        types = [t for _, t in result.columns]
        for r in rows:
            w.writerow([_cell(t, v) for t, v in zip(types, r, strict=True)])
    else:
        _print_table(result.columns, rows, out)
        print(f"({len(rows)} rows, {result.stats.elapsedMs:.0f} ms)", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
