"""Run every query of ../shared/corpus/*.jsonl through the KQL compiler and through DuckDB.

For each corpus: how many queries are eligible (they read only catalog tables and use no
`externaldata`), the share of eligible queries that compile and the share that also execute over
a synthetic dataset with the full schema (server.demo.generate), and the 20 most frequent failure
reasons. Queries that are not eligible are counted separately, by reason.

Targets (issue 3): >= 90% of eligible community queries and >= 99% of eligible sigma queries
compile and execute.

    .venv/bin/python -m benchmarks.corpus                  # everything
    .venv/bin/python -m benchmarks.corpus --limit 200      # the first 200 of each corpus
    .venv/bin/python -m benchmarks.corpus --corpus sigma --timeout 2

When node and npm are there, Microsoft's Kusto.Language judges the same queries meanwhile and the
differential counts are printed too (Kusto accepts / Quarry runs, Kusto rejects / Quarry rejects
or warns, result columns agree; benchmarks/kusto_referee.py, benchmarks/differential.py).

Results go to build/kql_corpus.json (per query: id, source, status, reason, query) for the
compiler's engineer. The corpus is a measure, never a target to special-case: nothing here
rewrites a query.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/corpus.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb

from benchmarks._common import BUILD, REPO, interrupt_after, load_in_memory
from benchmarks.kusto_referee import (
    Referee,
    RefereeUnavailable,
    classify,
    format_summary,
)
from benchmarks.kusto_referee import summarize as summarize_verdicts
from kql import geoip
from schema import default_catalog
from schema.catalog import Catalog

CORPUS_DIR = REPO.parent / "shared" / "corpus"
if not CORPUS_DIR.exists():  # the shared directory sits beside the checkout: /work/shared
    CORPUS_DIR = Path("/work/shared/corpus")

NOW = dt.datetime(2024, 6, 1, 12, 0, 0)
TOP_REASONS = 20


@dataclass
class Outcome:
    corpus: str
    id: str
    source: str
    status: str  # ineligible | compile_error | crash | timeout | execute_error | ok
    reason: str
    compile_ms: float | None
    execute_ms: float | None
    query: str
    columns: list[tuple[str, str]] = field(default_factory=list)  # result (name, KQL type)
    warnings: list[str] = field(default_factory=list)  # codes of the compiler's warnings


# --- eligibility ------------------------------------------------------------------------------

_COMMENT = re.compile(r"//[^\n]*")
_STRINGS = re.compile(r'@"(?:[^"]|"")*"|@\'(?:[^\']|\'\')*\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _code_words(query: str) -> set[str]:
    """Identifiers outside comments and string literals."""
    text = _STRINGS.sub(" ", _COMMENT.sub(" ", query))
    return set(_WORD.findall(text))


def ineligible_reason(record: dict[str, Any], catalog: Catalog, known_tables: set[str]) -> str | None:
    query = record["query"]
    words = _code_words(query)
    if "externaldata" in words:
        return "externaldata"
    foreign = sorted(
        {t for t in record.get("tables") or [] if catalog.table(t) is None}
        | {w for w in words if w in known_tables and catalog.table(w) is None}
    )
    if foreign:
        return "tables outside the catalog"
    return None


def foreign_tables(record: dict[str, Any], catalog: Catalog, known_tables: set[str]) -> list[str]:
    words = _code_words(record["query"])
    return sorted(
        {t for t in record.get("tables") or [] if catalog.table(t) is None}
        | {w for w in words if w in known_tables and catalog.table(w) is None}
    )


# --- reasons ----------------------------------------------------------------------------------

_NUMBERS = re.compile(r"\b(line|column|col|offset|position|at)\s*\d+(:\d+)?", re.I)
_SQLPOS = re.compile(r"LINE \d+:.*", re.S)


def compile_reason(diag: Any) -> str:
    msg = _NUMBERS.sub(r"\1 N", str(diag.message)).split("\n")[0]
    return f"{diag.code}: {msg}"[:160]


def execute_reason(exc: BaseException) -> str:
    msg = _SQLPOS.sub("", str(exc)).strip().split("\n")[0]
    return f"execute: {type(exc).__name__}: {msg}"[:160]


class _CompileTimeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _CompileTimeout()


def read_corpus(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def build_dataset(catalog: Catalog, days: int, devices: int, seed: int) -> duckdb.DuckDBPyConnection:
    from server.demo import generate

    tables = generate(catalog, start=NOW - dt.timedelta(days=days), end=NOW, devices=devices, seed=seed)
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    geoip.register(con)  # as Storage does: geo_info_from_ip_address() when a database is set
    counts = load_in_memory(con, catalog, tables, NOW)
    total = sum(counts.values())
    print(f"dataset: {total:,} rows in {sum(1 for c in counts.values() if c)} tables "
          f"({days} days, {devices} devices)", file=sys.stderr)
    return con


def run_one(
    corpus: str,
    record: dict[str, Any],
    catalog: Catalog,
    known_tables: set[str],
    con: duckdb.DuckDBPyConnection,
    timeout_s: float,
    max_rows: int,
) -> Outcome:
    from kql import CompileOptions, compile_kql

    query = record["query"]
    base = {"corpus": corpus, "id": str(record.get("id")), "source": str(record.get("source")),
            "query": query}
    why = ineligible_reason(record, catalog, known_tables)
    if why:
        return Outcome(status="ineligible", reason=why, compile_ms=None, execute_ms=None, **base)

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    t0 = time.perf_counter()
    try:
        # evaluate bag_unpack/pivot learn their columns from the data, as the query runner does
        def probe(sql: str) -> list[Any]:
            pcur = con.cursor()
            try:
                with interrupt_after(pcur, timeout_s):
                    return pcur.execute(sql).fetchall()
            finally:
                pcur.close()

        compiled = compile_kql(query, catalog, CompileOptions(now=NOW, strings_never_null=True, probe=probe))
    except _CompileTimeout:
        return Outcome(status="timeout", reason="compile timeout", compile_ms=None,
                       execute_ms=None, **base)
    except Exception as exc:  # a crash is a compiler defect: record it, keep going
        return Outcome(status="crash", reason=f"crash: {type(exc).__name__}: {exc}"[:160],
                       compile_ms=None, execute_ms=None, **base)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    compile_ms = (time.perf_counter() - t0) * 1000
    if not compiled.ok:
        errors = [d for d in compiled.diagnostics if d.severity == "error"] or compiled.diagnostics
        return Outcome(status="compile_error", reason=compile_reason(errors[0]),
                       compile_ms=compile_ms, execute_ms=None, **base)
    if not compiled.sql:
        return Outcome(status="crash", reason="crash: ok compile without SQL",
                       compile_ms=compile_ms, execute_ms=None, **base)

    cur = con.cursor()
    t1 = time.perf_counter()
    try:
        with interrupt_after(cur, timeout_s) as fired:
            try:
                cur.execute(compiled.sql)
                cur.fetchmany(max_rows)
            except duckdb.Error as exc:
                if fired.is_set():
                    return Outcome(status="timeout", reason="execute timeout",
                                   compile_ms=compile_ms, execute_ms=None, **base)
                return Outcome(status="execute_error", reason=execute_reason(exc),
                               compile_ms=compile_ms, execute_ms=None, **base)
    finally:
        cur.close()
    return Outcome(status="ok", reason="", compile_ms=compile_ms,
                   execute_ms=(time.perf_counter() - t1) * 1000, columns=list(compiled.columns),
                   warnings=[d.code for d in compiled.diagnostics if d.severity == "warning"],
                   **base)


def summarize(corpus: str, outcomes: list[Outcome], target: float) -> dict[str, Any]:
    eligible = [o for o in outcomes if o.status != "ineligible"]
    ineligible = Counter(o.reason for o in outcomes if o.status == "ineligible")
    compiled = [o for o in eligible if o.status in ("ok", "execute_error") or
                (o.status == "timeout" and o.reason == "execute timeout")]
    executed = [o for o in eligible if o.status == "ok"]
    failures = Counter(o.reason for o in eligible if o.status != "ok")
    n = len(eligible)
    compile_ms = sorted(o.compile_ms for o in eligible if o.compile_ms is not None)
    return {
        "corpus": corpus,
        "queries": len(outcomes),
        "eligible": n,
        "ineligible": dict(ineligible.most_common()),
        "compiles": len(compiled),
        "executes": len(executed),
        "compile_share": len(compiled) / n if n else None,
        "execute_share": len(executed) / n if n else None,
        "target": target,
        "meets_target": (len(executed) / n >= target) if n else None,
        "median_compile_ms": compile_ms[len(compile_ms) // 2] if compile_ms else None,
        "status_counts": dict(Counter(o.status for o in outcomes)),
        "top_failures": failures.most_common(TOP_REASONS),
    }


def print_summary(s: dict[str, Any]) -> None:
    n = s["eligible"]
    pct = (lambda x: f"{100 * x:5.1f}%") if n else (lambda x: "  n/a")
    print(f"\n== {s['corpus']}: {s['queries']} queries, {n} eligible")
    for reason, count in s["ineligible"].items():
        print(f"   not eligible: {count:4d}  {reason}")
    if n:
        print(f"   compiles: {s['compiles']:4d}/{n} = {pct(s['compile_share'])}")
        print(f"   executes: {s['executes']:4d}/{n} = {pct(s['execute_share'])}"
              f"   (target {100 * s['target']:.0f}%: {'MET' if s['meets_target'] else 'NOT MET'})")
        if s["median_compile_ms"] is not None:
            print(f"   median compile time: {s['median_compile_ms']:.2f} ms")
    if s["top_failures"]:
        print(f"   top {TOP_REASONS} failure reasons:")
        for reason, count in s["top_failures"]:
            print(f"   {count:5d}  {reason}")


TARGETS = {"community": 0.90, "sigma": 0.99}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", choices=sorted(TARGETS),
                    help="which corpus (repeatable; default: all)")
    ap.add_argument("--limit", type=int, default=None, help="first N queries of each corpus")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per compile and per run")
    ap.add_argument("--max-rows", type=int, default=1000, help="rows fetched per query")
    ap.add_argument("--days", type=int, default=7, help="days of synthetic data before 'now'")
    ap.add_argument("--devices", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=BUILD / "kql_corpus.json")
    ap.add_argument("--corpus-dir", type=Path, default=CORPUS_DIR)
    args = ap.parse_args(argv)

    catalog = default_catalog()
    known_tables = set(json.loads((args.corpus_dir / "kql_tables.json").read_text())["tables"])
    known_tables |= set(catalog.tables)
    con = build_dataset(catalog, args.days, args.devices, args.seed)

    # Kusto.Language judges the same queries in one node process meanwhile (the differential
    # counts; benchmarks/differential.py has the whole comparison and its options)
    wanted = args.corpus or sorted(TARGETS)
    referee: Referee | None = None
    try:
        referee = Referee({f"{c}:{r['id']}": r["query"]
                           for c in wanted
                           for i, r in enumerate(read_corpus(args.corpus_dir / f"{c}.dev.jsonl"))
                           if args.limit is None or i < args.limit})
    except RefereeUnavailable as e:
        print(f"Kusto.Language referee unavailable, no differential counts: {e}", file=sys.stderr)

    summaries = []
    all_outcomes: list[Outcome] = []
    for corpus in wanted:
        path = args.corpus_dir / f"{corpus}.dev.jsonl"
        outcomes = []
        started = time.perf_counter()
        for i, record in enumerate(read_corpus(path)):
            if args.limit is not None and i >= args.limit:
                break
            outcomes.append(run_one(corpus, record, catalog, known_tables, con,
                                    args.timeout, args.max_rows))
        s = summarize(corpus, outcomes, TARGETS[corpus])
        s["seconds"] = round(time.perf_counter() - started, 1)
        s["foreign_tables"] = Counter(
            t for r in read_corpus(path) for t in foreign_tables(r, catalog, known_tables)
        ).most_common(15) if args.limit is None else None
        print_summary(s)
        if s["foreign_tables"]:
            print("   tables outside the catalog, most used: "
                  + ", ".join(f"{t} ({n})" for t, n in s["foreign_tables"][:8]))
        summaries.append(s)
        all_outcomes.extend(outcomes)

    if referee is not None:
        answers = referee.results()
        verdicts = [classify(o.corpus, o, None if o.status == "ineligible" else answers.get(f"{o.corpus}:{o.id}"))
                    for o in all_outcomes]
        print("\n== Kusto.Language differential (geo_info_from_ip_address() without a database here)")
        for corpus in wanted:
            print("   " + format_summary(corpus, summarize_verdicts(v for v in verdicts if v.corpus == corpus)))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    failures = [asdict(o) for o in all_outcomes if o.status not in ("ok", "ineligible")]
    args.json.write_text(json.dumps({
        "now": NOW.isoformat(),
        "summaries": summaries,
        "failures": failures,
        "ineligible": [{"corpus": o.corpus, "id": o.id, "reason": o.reason}
                       for o in all_outcomes if o.status == "ineligible"],
    }, indent=1), encoding="utf-8")
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
