"""DuckDB against Spark (local) on the same KQL over the same Parquet, from 1M rows up: where
does Spark start to win on this machine?

For each size, synthetic DeviceProcessEvents rows over 30 days (server.demo.bulk_process_events)
are written as storage writes them (`<data>/DeviceProcessEvents/date=YYYY-MM-DD/*.parquet`). Each
hunting question is compiled for both targets (kql, `dialect="duckdb"` / `"spark"`) and run on
DuckDB (a view like storage's) and on one Spark session (`local[*]`, the table registered as the
Spark engine registers it), several repetitions each, interleaved; the answers must agree. The
script prints per size the median time of each engine and the ratio spark/duckdb (below 1: Spark
is faster), and the crossover size if there is one.

    .venv/bin/python -m benchmarks.engines                      # 1M and 5M rows
    .venv/bin/python -m benchmarks.engines --rows 1000000 5000000 20000000 50000000 --reps 3

Results also go to build/engines.json. Only ratios from one run mean anything: the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/engines.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb

from benchmarks._common import BUILD, create_storage_views, median, write_partitioned
from kql import CompileOptions, compile_kql
from schema import default_catalog

NOW = dt.datetime(2024, 6, 1, 0, 0, 0)
DAYS = 30
TABLE = "DeviceProcessEvents"

QUESTIONS = {
    "top devices, 7d": f"{TABLE} | where Timestamp > ago(7d) | summarize n = count() by DeviceName "
                       "| sort by n desc, DeviceName asc | take 10",
    "rare processes, 30d": f"{TABLE} | summarize Devices = dcount(DeviceId), n = count() by FileName "
                           "| where Devices < 60",
    "bypass powershell, 30d": f'{TABLE} | where FileName =~ "powershell.exe" and ProcessCommandLine has "bypass" '
                              "| summarize n = count() by DeviceName",
    "hourly timeline, 1d": f"{TABLE} | where Timestamp > ago(1d) | summarize n = count() by bin(Timestamp, 1h)",
}


def _norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    def v(x: Any) -> Any:
        if isinstance(x, dt.datetime) and x.tzinfo is not None:
            return x.astimezone(dt.UTC).replace(tzinfo=None)
        if isinstance(x, float):
            return round(x, 6)
        return x
    return sorted((tuple(v(x) for x in r) for r in rows), key=repr)


def run_size(rows: int, reps: int, spark: Any, work: Path) -> dict[str, Any]:
    from server.demo import bulk_process_events
    from server.query.spark import register_table

    catalog = default_catalog()
    tbl = catalog.tables[TABLE]
    data_dir = work / f"rows{rows}"
    t0 = time.perf_counter()
    con = duckdb.connect(":memory:")
    files: list[Path] = []
    chunk = 5_000_000  # generate big sizes in parts (memory)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        data = bulk_process_events(n, NOW - dt.timedelta(days=DAYS), NOW, seed=start + 1)
        files += write_partitioned(con, tbl, data, data_dir / f"part{start}", NOW)
        del data
    con.close()
    print(f"{rows:,} rows in {len(files)} files ({time.perf_counter() - t0:.0f} s to write)", file=sys.stderr)
    duck = duckdb.connect(":memory:")
    duck.execute("SET TimeZone = 'UTC'")
    duck.execute("SET parquet_metadata_cache = true")
    create_storage_views(duck, catalog, {TABLE: files})
    # Spark reads the same files; the partition folders sit under one base per part
    by_base: dict[Path, list[Path]] = {}
    for f in files:
        by_base.setdefault(f.parent.parent, []).append(f)
    frames = []
    for base, fs in by_base.items():
        register_table(spark, tbl, fs, None, base)
        frames.append(spark.table(TABLE))
    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f)
    union.createOrReplaceTempView(TABLE)
    out: dict[str, Any] = {"rows": rows, "questions": {}}
    for name, kql in QUESTIONS.items():
        sqls = {}
        for target in ("duckdb", "spark"):
            c = compile_kql(kql, catalog, CompileOptions(dialect=target, now=NOW, strings_never_null=True))
            assert c.sql, c.diagnostics
            sqls[target] = c.sql
        answers = {"duckdb": _norm(duck.execute(sqls["duckdb"]).fetchall()),
                   "spark": _norm([tuple(r) for r in spark.sql(sqls["spark"]).collect()])}
        assert answers["duckdb"] == answers["spark"], f"{name}: the engines disagree"
        times: dict[str, list[float]] = {"duckdb": [], "spark": []}
        for _ in range(reps):
            t = time.perf_counter()
            duck.execute(sqls["duckdb"]).fetchall()
            times["duckdb"].append(time.perf_counter() - t)
            t = time.perf_counter()
            spark.sql(sqls["spark"]).collect()
            times["spark"].append(time.perf_counter() - t)
        d, s = median(times["duckdb"]), median(times["spark"])
        out["questions"][name] = {"duckdb_s": round(d, 4), "spark_s": round(s, 4), "spark_over_duckdb": round(s / d, 2)}
        print(f"  {name:28s} duckdb {d * 1000:9.1f} ms   spark {s * 1000:9.1f} ms   spark/duckdb {s / d:6.2f}",
              file=sys.stderr)
    duck.close()
    d_all = sum(q["duckdb_s"] for q in out["questions"].values())
    s_all = sum(q["spark_s"] for q in out["questions"].values())
    out["spark_over_duckdb"] = round(s_all / d_all, 2)
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--master", default="local[*]")
    args = ap.parse_args(argv)
    from server.query.spark import spark_session

    spark = spark_session(args.master, {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "4g"},
                          app_name="quarry-bench")
    work = Path(tempfile.mkdtemp(prefix="quarry-engines-"))
    results = []
    try:
        for n in args.rows:
            results.append(run_size(n, args.reps, spark, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()
    crossover = next((r["rows"] for r in results if r["spark_over_duckdb"] < 1), None)
    print("size           spark/duckdb (sum of medians)", file=sys.stderr)
    for r in results:
        print(f"{r['rows']:>12,}   {r['spark_over_duckdb']:.2f}", file=sys.stderr)
    print("crossover: " + (f"Spark is faster from {crossover:,} rows" if crossover else
                           "none in the sizes measured (DuckDB faster at every size)"), file=sys.stderr)
    BUILD.mkdir(exist_ok=True)
    (BUILD / "engines.json").write_text(json.dumps({"results": results, "crossover_rows": crossover}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
