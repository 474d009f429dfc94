"""Compiled KQL against hand-written DuckDB SQL, over partitioned Parquet as storage writes it.

>= 1,000,000 synthetic DeviceProcessEvents rows (server.demo.bulk_process_events) over 30 days
are written as `<data>/DeviceProcessEvents/date=YYYY-MM-DD/*.parquet` (zstd, sorted by
Timestamp, a missing string stored as "" as `Storage.append` does) and read through a view built
like storage's; queries compile with `strings_never_null=True`, as the query runner does. For each hunting question the compiled
KQL and a hand-written SQL for the same question run interleaved in the same process, several
repetitions each; the script checks both return the same rows, then prints per query the medians
and their ratio, the median ratio (target <= 1.1) and the median compile time (target < 5 ms).

It also times `where Timestamp > ago(2h)` over the 30 days against the same query over one day
of data (target ratio <= 1.5): partition pruning should make the 29 older days free.

    .venv/bin/python -m benchmarks.query_speed                 # 1,000,000 rows, 7 repetitions
    .venv/bin/python -m benchmarks.query_speed --rows 200000 --reps 3   # a quick look

Only ratios measured within one run are reported: absolute times depend on the machine.
Results also go to build/kql_query_speed.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/query_speed.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb

from benchmarks._common import BUILD, create_storage_views, jsonable, median, write_partitioned
from schema import default_catalog

NOW = dt.datetime(2024, 6, 1, 0, 0, 0)
DAYS = 30
TABLE = "DeviceProcessEvents"


def ts(d: dt.datetime) -> str:
    return f"TIMESTAMP '{d.isoformat(sep=' ')}'"


def day(d: dt.datetime) -> str:
    return f"DATE '{d.date().isoformat()}'"


D7 = NOW - dt.timedelta(days=7)
D1 = NOW - dt.timedelta(days=1)
H2 = NOW - dt.timedelta(hours=2)
# Kusto terms are maximal alphanumeric runs: `has "x"` is a case-insensitive whole-term match.
TERM = "(?i)(^|[^[:alnum:]])({})([^[:alnum:]]|$)"


@dataclass
class Case:
    name: str
    kql: str
    sql: str
    ordered: bool = False
    compare: tuple[str, ...] | None = None  # compare only these columns (non-unique picks)


def cases(sha: str) -> list[Case]:
    p = f'"{TABLE}"'
    return [
        Case(
            "bypass powershell, 7d (=~, has)",
            f"{TABLE} | where Timestamp > ago(7d)\n"
            '| where FileName =~ "powershell.exe" and ProcessCommandLine has "bypass"\n'
            "| project Timestamp, DeviceName, AccountName, ProcessCommandLine",
            f"SELECT Timestamp, DeviceName, AccountName, ProcessCommandLine FROM {p} "
            f"WHERE date >= {day(D7)} AND Timestamp > {ts(D7)} AND lower(FileName) = 'powershell.exe' "
            f"AND ProcessCommandLine ILIKE '%bypass%' "
            f"AND regexp_matches(ProcessCommandLine, '{TERM.format('bypass')}')",
        ),
        Case(
            "top devices, 1d (count, sort, take)",
            f"{TABLE} | where Timestamp > ago(1d)\n"
            "| summarize n = count() by DeviceName | sort by n desc, DeviceName asc | take 10",
            f"SELECT DeviceName, count(*) AS n FROM {p} WHERE date >= {day(D1)} AND Timestamp > {ts(D1)} "
            "GROUP BY DeviceName ORDER BY n DESC, DeviceName ASC LIMIT 10",
            ordered=True,
        ),
        Case(
            "recon children of cmd/svchost, 30d (in~)",
            f"{TABLE}\n"
            '| where InitiatingProcessFileName in~ ("cmd.exe", "svchost.exe")'
            ' and FileName in~ ("whoami.exe", "ipconfig.exe", "rundll32.exe")\n'
            "| summarize n = count() by DeviceName, FileName",
            f"SELECT DeviceName, FileName, count(*) AS n FROM {p} "
            "WHERE lower(InitiatingProcessFileName) IN ('cmd.exe', 'svchost.exe') "
            "AND lower(FileName) IN ('whoami.exe', 'ipconfig.exe', 'rundll32.exe') "
            "GROUP BY DeviceName, FileName",
        ),
        Case(
            "hourly timeline, 1d (bin)",
            f"{TABLE} | where Timestamp > ago(1d) | summarize n = count() by bin(Timestamp, 1h)",
            f"SELECT date_trunc('hour', Timestamp) AS Timestamp, count(*) AS n FROM {p} "
            f"WHERE date >= {day(D1)} AND Timestamp > {ts(D1)} GROUP BY 1",
        ),
        Case(
            "rare processes, 30d (dcount)",
            f"{TABLE} | summarize Devices = dcount(DeviceId), n = count() by FileName | where Devices < 60",
            f"SELECT FileName, count(DISTINCT DeviceId) AS Devices, count(*) AS n FROM {p} "
            "GROUP BY FileName HAVING count(DISTINCT DeviceId) < 60",
        ),
        Case(
            "http in command lines, 7d (contains)",
            f"{TABLE} | where Timestamp > ago(7d) | where ProcessCommandLine contains \"http\"\n"
            "| summarize n = count() by FileName, DeviceName",
            f"SELECT FileName, DeviceName, count(*) AS n FROM {p} "
            f"WHERE date >= {day(D7)} AND Timestamp > {ts(D7)} AND ProcessCommandLine ILIKE '%http%' "
            "GROUP BY FileName, DeviceName",
        ),
        Case(
            "program files executables, 30d (startswith, endswith)",
            f"{TABLE} | where FolderPath startswith @\"C:\\Program Files\" and FileName endswith \".exe\"\n"
            "| summarize n = count() by FileName",
            f"SELECT FileName, count(*) AS n FROM {p} "
            "WHERE FolderPath ILIKE 'C:\\Program Files%' AND FileName ILIKE '%.exe' GROUP BY FileName",
        ),
        Case(
            "latest process per device, 1d (arg_max)",
            f"{TABLE} | where Timestamp > ago(1d)\n"
            "| summarize arg_max(Timestamp, FileName, ProcessCommandLine) by DeviceId",
            f"SELECT DeviceId, Timestamp, FileName, ProcessCommandLine FROM {p} "
            f"WHERE date >= {day(D1)} AND Timestamp > {ts(D1)} "
            "QUALIFY row_number() OVER (PARTITION BY DeviceId ORDER BY Timestamp DESC) = 1",
            compare=("DeviceId", "Timestamp"),
        ),
        Case(
            "busy accounts, 7d (!in~, dcount)",
            f"{TABLE} | where Timestamp > ago(7d)\n"
            '| where AccountName !in~ ("system", "local service", "network service")\n'
            "| summarize Processes = dcount(FileName), n = count() by AccountName | where Processes > 5",
            f"SELECT AccountName, count(DISTINCT FileName) AS Processes, "
            f"count(*) AS n FROM {p} WHERE date >= {day(D7)} AND Timestamp > {ts(D7)} "
            "AND lower(AccountName) NOT IN ('system', 'local service', 'network service') "
            "GROUP BY 1 HAVING count(DISTINCT FileName) > 5",
        ),
        Case(
            "credential-theft keywords, 30d (has_any)",
            f"{TABLE}\n"
            '| where ProcessCommandLine has_any ("mimikatz", "sekurlsa", "procdump", "lsass", "bypass")\n'
            "| summarize n = count() by DeviceName",
            f"SELECT DeviceName, count(*) AS n FROM {p} WHERE "
            "(ProcessCommandLine ILIKE '%mimikatz%' OR ProcessCommandLine ILIKE '%sekurlsa%' "
            "OR ProcessCommandLine ILIKE '%procdump%' OR ProcessCommandLine ILIKE '%lsass%' "
            "OR ProcessCommandLine ILIKE '%bypass%') AND regexp_matches(ProcessCommandLine, '"
            + TERM.format("mimikatz|sekurlsa|procdump|lsass|bypass") + "') GROUP BY DeviceName",
        ),
        Case(
            "devices that ran a hash, 30d (==, distinct)",
            f'{TABLE} | where SHA256 == "{sha}" | distinct DeviceName',
            f"SELECT DISTINCT DeviceName FROM {p} WHERE SHA256 = '{sha}'",
        ),
        Case(
            "recent activity, 2h (ago, pruning)",
            f"{TABLE} | where Timestamp > ago(2h) | summarize n = count() by DeviceName",
            f"SELECT DeviceName, count(*) AS n FROM {p} WHERE date >= {day(H2)} AND Timestamp > {ts(H2)} "
            "GROUP BY DeviceName",
        ),
    ]


PRUNING_KQL = f"{TABLE} | where Timestamp > ago(2h) | summarize n = count() by DeviceName"


def _norm(v: Any) -> Any:
    if isinstance(v, Decimal):
        v = float(v)
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else v
    return v


def result_rows(con: duckdb.DuckDBPyConnection, sql: str, case: Case) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    if case.compare:
        idx = [names.index(c) for c in case.compare]
        rows = [tuple(r[i] for i in idx) for r in rows]
        names = list(case.compare)
    rows = [tuple(_norm(v) for v in r) for r in rows]
    if not case.ordered:
        rows.sort(key=lambda r: tuple(repr(v) for v in r))
    return names, rows


def run_timed(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    t0 = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - t0


def compile_ms(kql: str, reps: int) -> tuple[float, Any]:
    from kql import CompileOptions, compile_kql

    catalog = default_catalog()
    compiled = None
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        # the data is laid out as storage writes it (no NULL strings), as the query runner compiles
        compiled = compile_kql(kql, catalog, CompileOptions(now=NOW, strings_never_null=True))
        times.append((time.perf_counter() - t0) * 1000)
    return median(times), compiled


def build_data(data_dir: Path, rows: int, seed: int) -> tuple[dict[str, list[Path]], str, int]:
    from server.demo import bulk_process_events

    catalog = default_catalog()
    tbl = catalog.tables[TABLE]
    t0 = time.perf_counter()
    data = bulk_process_events(rows, NOW - dt.timedelta(days=DAYS), NOW, seed=seed)
    con = duckdb.connect(":memory:")
    files = write_partitioned(con, tbl, data, data_dir, NOW)
    # A hash seen on a handful of devices, for the exact-match question.
    picked = con.execute(
        "SELECT SHA256 FROM read_parquet($1) WHERE SHA256 IS NOT NULL GROUP BY SHA256 "
        "ORDER BY count(DISTINCT DeviceId), SHA256 LIMIT 1", [[str(f) for f in files]]
    ).fetchone()
    assert picked is not None, "no SHA256 in the generated data"
    sha = str(picked[0])
    con.close()
    print(f"data: {data.num_rows:,} {TABLE} rows, {len(files)} day partitions under {data_dir} "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return {TABLE: files}, sha, data.num_rows


def open_views(files: dict[str, list[Path]], threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config={"threads": threads})
    con.execute("SET TimeZone = 'UTC'")
    # As Storage._open_database configures its database: footers are read once, not per query.
    con.execute("SET parquet_metadata_cache = true")
    create_storage_views(con, default_catalog(), files)
    return con


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions of each side")
    ap.add_argument("--compile-reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=None, help="keep the Parquet here")
    ap.add_argument("--json", type=Path, default=BUILD / "kql_query_speed.json")
    args = ap.parse_args(argv)

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="quarry-qspeed-")
        data_dir = Path(tmp)
    try:
        files, sha, nrows = build_data(data_dir, args.rows, args.seed)
        con = open_views(files, args.threads)
        results = []
        mismatches = 0
        print(f"\n{'question':52s} {'rows':>7s} {'kql ms':>8s} {'sql ms':>8s} {'ratio':>6s} {'compile ms':>10s}")
        for case in cases(sha):
            entry: dict[str, Any] = {"name": case.name, "kql": case.kql, "sql_hand": case.sql}
            try:
                cms, compiled = compile_ms(case.kql, args.compile_reps)
            except Exception as exc:  # a compiler crash is a finding, not the end of the run
                entry["error"] = f"crash: {type(exc).__name__}: {exc}"
                print(f"{case.name:52s}  COMPILER CRASH: {entry['error'][:80]}")
                results.append(entry)
                continue
            entry["compile_ms"] = cms
            if not compiled.ok:
                entry["error"] = "; ".join(f"{d.code}: {d.message}" for d in compiled.diagnostics)
                print(f"{case.name:52s}  COMPILE ERROR: {entry['error'][:80]}")
                results.append(entry)
                continue
            entry["sql_compiled"] = compiled.sql
            try:
                _, got = result_rows(con, compiled.sql, case)
            except duckdb.Error as exc:
                entry["error"] = f"execute: {exc}"
                print(f"{case.name:52s}  EXECUTE ERROR: {str(exc)[:80]}")
                results.append(entry)
                continue
            _, want = result_rows(con, case.sql, case)
            entry["rows"] = len(want)
            entry["equal"] = got == want
            if not entry["equal"]:
                mismatches += 1
                entry["diff_sample"] = {"compiled_only": [r for r in got if r not in want][:5],
                                        "hand_only": [r for r in want if r not in got][:5]}
            tk: list[float] = []
            th: list[float] = []
            for i in range(args.reps):  # interleaved, alternating which side goes first
                if i % 2 == 0:
                    tk.append(run_timed(con, compiled.sql))
                    th.append(run_timed(con, case.sql))
                else:
                    th.append(run_timed(con, case.sql))
                    tk.append(run_timed(con, compiled.sql))
            entry["kql_ms"] = median(tk) * 1000
            entry["sql_ms"] = median(th) * 1000
            entry["ratio"] = entry["kql_ms"] / entry["sql_ms"]
            flag = "" if entry["equal"] else "  ROWS DIFFER"
            print(f"{case.name:52s} {len(want):7d} {entry['kql_ms']:8.1f} {entry['sql_ms']:8.1f} "
                  f"{entry['ratio']:6.2f} {cms:10.2f}{flag}")
            results.append(entry)

        ratios = [r["ratio"] for r in results if "ratio" in r]
        compiles = [r["compile_ms"] for r in results if "compile_ms" in r]
        med_ratio = median(ratios)
        med_compile = median(compiles)

        # Pruning: the same compiled ago(2h) query over 30 days and over the last day only.
        pruning: dict[str, Any] = {"kql": PRUNING_KQL}
        try:
            _, pr = compile_ms(PRUNING_KQL, 1)
        except Exception as exc:
            pr = None
            pruning["error"] = f"crash: {type(exc).__name__}: {exc}"
        if pr is not None and pr.ok:
            last_day = max(files[TABLE], key=lambda p: p.parent.name)
            con1 = open_views({TABLE: [last_day]}, args.threads)
            t30: list[float] = []
            t1: list[float] = []
            for i in range(args.reps):
                pair = [(con, t30), (con1, t1)] if i % 2 == 0 else [(con1, t1), (con, t30)]
                for c, bucket in pair:
                    bucket.append(run_timed(c, pr.sql))
            same = sorted(con.execute(pr.sql).fetchall()) == sorted(con1.execute(pr.sql).fetchall())
            pruning.update(ms_30d=median(t30) * 1000, ms_1d=median(t1) * 1000, equal=same)
            pruning["ratio"] = pruning["ms_30d"] / pruning["ms_1d"]
            plan = "\n".join(r[1] for r in con.execute("EXPLAIN " + pr.sql).fetchall())
            pruning["plan_mentions_date_filter"] = "date" in plan.lower()
            con1.close()
        elif pr is not None:
            pruning["error"] = "; ".join(d.message for d in pr.diagnostics)

        print(f"\nrows: {nrows:,} over {DAYS} days; {len(ratios)}/{len(results)} questions ran; "
              f"{mismatches} with differing rows")
        print(f"median ratio compiled/hand-written: {med_ratio:.2f}  (target <= 1.1)")
        print(f"median compile time: {med_compile:.2f} ms  (target < 5 ms)")
        if "ratio" in pruning:
            print(f"ago(2h) over 30 days vs 1 day: {pruning['ms_30d']:.1f} ms / {pruning['ms_1d']:.1f} ms "
                  f"= {pruning['ratio']:.2f}  (target <= 1.5){'' if pruning['equal'] else '  ROWS DIFFER'}")
        else:
            print(f"ago(2h) pruning: {pruning.get('error')}")

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(jsonable({
            "rows": nrows, "days": DAYS, "reps": args.reps, "threads": args.threads,
            "median_ratio": med_ratio, "median_compile_ms": med_compile,
            "mismatches": mismatches, "pruning": pruning, "questions": results,
        }), indent=1), encoding="utf-8")
        print(f"results: {args.json}")
        con.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
