"""Storage engine benchmark: every figure is a ratio against a baseline measured in this run.

1. append: realistic DeviceProcessEvents in batches of 1,000 from several threads through
   ``Storage.append`` (WAL + group fsync + hot tail, flusher running) vs. the in-process baseline
   of writing the same rows to one zstd Parquet file with pyarrow.
2. connect overhead: ``connect()`` + a small query vs. the same query on an open connection.
3. tail: a hunting-style query over rows still in the hot tail (DuckDB table) vs. the same rows
   as an Arrow table registered on a plain connection (the alternative design) vs. Parquet.
4. compaction: the same query over many small flushed files vs. after ``compact()``.

    .venv/bin/python -m benchmarks.storage [--rows 300000] [--threads 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from schema.catalog import default_catalog
from server.demo.bulk import bulk_process_events
from server.settings import Settings
from server.storage import Backpressure, Storage

TABLE = "DeviceProcessEvents"
QUERY = (
    f'SELECT DeviceName, count(*) AS n FROM "{TABLE}" '
    "WHERE FileName IN ('powershell.exe', 'cmd.exe', 'zsh') AND ProcessCommandLine LIKE '%id%' "
    "GROUP BY DeviceName ORDER BY n DESC LIMIT 10"
)


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1_000)
    args = ap.parse_args()

    end = datetime.utcnow()
    rows = bulk_process_events(args.rows, end - timedelta(days=2), end, seed=1)
    batches = [rows.slice(i, args.batch) for i in range(0, rows.num_rows, args.batch)]

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        pq.write_table(rows, base / "baseline.parquet", compression="zstd")
        baseline = time.perf_counter() - t

        st = Storage(Settings(data_dir=base / "data"), default_catalog())
        st.start()
        nxt = iter(range(len(batches)))
        lock = threading.Lock()
        retries = 0

        def worker() -> None:
            nonlocal retries
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                while True:
                    try:
                        st.append(TABLE, batches[i])
                        break
                    except Backpressure as e:
                        with lock:
                            retries += 1
                        time.sleep(min(e.retry_after_s, 0.2))

        t = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        appended = time.perf_counter() - t
        print(f"rows: {rows.num_rows:,} in batches of {args.batch:,}, {args.threads} threads")
        print(f"baseline pyarrow -> Parquet (zstd): {rows.num_rows / baseline:,.0f} rows/s")
        print(
            f"Storage.append (durable, queryable): {rows.num_rows / appended:,.0f} rows/s "
            f"= {baseline / appended:.2f}x baseline speed; back-pressure retries: {retries}"
        )

        # Connect overhead, tail and Parquet, on rows still in the hot tail first.
        con = st.connect()
        in_tail = st.unflushed_rows
        warm = best_of(lambda: con.execute(QUERY).fetchall(), 20)
        fresh = best_of(lambda: st.connect().execute(QUERY).fetchall(), 20)
        print(
            f"connect() + query vs. query on an open connection: {fresh / warm:.2f}x "
            f"({(fresh - warm) * 1000:.2f} ms extra; {in_tail:,} rows in the tail)"
        )
        tail_rows = st.connect().execute(f'SELECT * FROM "{TABLE}"').to_arrow_table()
        plain = duckdb.connect()
        plain.register("arrow_tail", tail_rows)
        arrow_q = QUERY.replace(f'"{TABLE}"', "arrow_tail")
        t_tail = best_of(lambda: con.execute(QUERY).fetchall())
        t_arrow = best_of(lambda: plain.execute(arrow_q).fetchall())
        st.flush()
        con = st.connect()
        t_parquet = best_of(lambda: con.execute(QUERY).fetchall())
        files_flushed = len(list((base / "data" / TABLE).rglob("*.parquet")))
        print(
            f"query over the same {tail_rows.num_rows:,} rows: DuckDB hot tail 1.00, "
            f"registered Arrow {t_arrow / t_tail:.2f}x, Parquet ({files_flushed} files) "
            f"{t_parquet / t_tail:.2f}x"
        )

        # Compaction: many small files vs. one per date.
        st.close()
        small = Settings(data_dir=base / "small", query_timeout_s=0.0)
        st = Storage(small, default_catalog())
        st.start()
        per_file = max(1, rows.num_rows // 73)
        for i in range(0, rows.num_rows, per_file):
            st.append(TABLE, rows.slice(i, per_file))
            st.flush()
        before = len(list((base / "small" / TABLE).rglob("*.parquet")))
        con = st.connect()
        t_small = best_of(lambda: con.execute(QUERY).fetchall())
        st.compact()
        con = st.connect()
        t_big = best_of(lambda: con.execute(QUERY).fetchall())
        after = len(st.stats()["tables"][TABLE]) and st.stats()["tables"][TABLE]["files"]
        print(f"query over {before} small files vs. {after} compacted: {t_small / t_big:.2f}x slower")
        st.close()


if __name__ == "__main__":
    main()
