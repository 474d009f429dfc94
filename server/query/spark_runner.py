"""The query runner for ``QUARRY_ENGINE=spark``: the DuckDB runner's compile step for the
`spark` target, then Spark execution over storage's snapshot (Parquet files plus hot tail).

Limits as on DuckDB: the row cap is a ``limit`` on the DataFrame (a plan node, not SQL text),
the time range a filter on each table's DataFrame plus the choice of its date partitions, the
timeout a cancelled Spark job group, and one Spark session per process.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from schema.catalog import DATE_PARTITION, Catalog
from server.query.runner import (
    Connector,
    QueryError,
    QueryExecutionError,
    QueryLimits,
    QueryResult,
    QueryRunner,
    QueryTimeout,
    _result,
    utcnow,
)
from server.query.spark import register_table, spark_session
from server.query.timerange import TimeRange


class SparkQueryRunner(QueryRunner):
    dialect = "spark"

    def __init__(self, storage: Connector, catalog: Catalog, limits: QueryLimits | None = None, *,
                 metrics: Any | None = None, clock: Callable[[], dt.datetime] = utcnow,
                 master: str = "local[*]", conf: Mapping[str, str] | None = None) -> None:
        super().__init__(storage, catalog, limits, metrics=metrics, clock=clock)
        self.spark = spark_session(master, conf)
        # temporary views are per session: queries with different time ranges each get their own
        self._views_lock = threading.Lock()

    def run(self, text: str, *, time_range: TimeRange | None = None, max_rows: int | None = None,
            timeout_s: float | None = None, now: dt.datetime | None = None,
            deadline: float | None = None, parameters: Mapping[str, Any] | None = None,
            on_connection: Callable[[Any], None] | None = None) -> QueryResult:
        # on_connection gets the query's stop handle (``interrupt()``): here the job group's cancel.
        started = time.perf_counter()
        outcome = "execution_error"
        rows_out = 0
        try:
            # the query's timeout covers its compilation (the compiler stops at the deadline)
            ends = time.monotonic() + (self.limits.timeout_s if timeout_s is None else timeout_s)
            prepared = self.compile(text, now, parameters=parameters, deadline=ends)
            cap = self.limits.max_rows if max_rows is None else max(0, min(max_rows, self.limits.max_rows))
            with self._slot(deadline):
                session = self.spark.newSession()  # its own temporary views
                files = self._register(session, prepared.tables, time_range)
                if prepared.needs_probe:
                    def probe(sql: str) -> list[Any]:
                        return [tuple(r) for r in session.sql(sql).collect()]
                    prepared = self.compile(text, prepared.now, probe, parameters=prepared.parameters)
                table = self._execute_spark(session, prepared.sql, cap + 1, timeout_s, on_connection)
            rows = [tuple(_plain(v) for v in r.values()) for r in table.to_pylist()]
            result = _result(prepared, rows, cap, started, files)
            outcome = "truncated" if result.truncated else "ok"
            rows_out = len(result.rows)
            return result
        except QueryError as e:
            outcome = getattr(e, "outcome", "execution_error")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe_query(outcome, time.perf_counter() - started, rows_out)

    def _register(self, session: Any, tables: set[str], tr: TimeRange | None) -> int:
        """Each table the query reads, as a view over its snapshot: only the date partitions of
        the time range, and its rows filtered to the range. Returns the Parquet files read."""
        from pyspark.sql import functions as F

        snapshot = getattr(self.storage, "snapshot", None)
        if snapshot is None:
            raise QueryExecutionError("the Spark engine needs Quarry's storage (it reads its Parquet files)")
        data_dir = getattr(self.storage, "data_dir", None)
        total = 0
        for name in sorted(tables):
            table = self.catalog.tables[name]
            scoped = tr is not None and table.has_timestamp
            days = (tr.start.date(), tr.end.date() if tr.end else None) if scoped and tr else None
            files, tail = snapshot(name, days)
            total += register_table(session, table, files, tail, data_dir / name if data_dir else None)
            if scoped and tr is not None:
                df = session.table(f"`{name}`")
                cond = (F.col("Timestamp") >= F.lit(tr.start)) & (F.col(DATE_PARTITION) >= F.lit(tr.start.date()))
                if tr.end is not None:
                    cond = cond & (F.col("Timestamp") < F.lit(tr.end)) & (F.col(DATE_PARTITION) <= F.lit(tr.end.date()))
                df.where(cond).createOrReplaceTempView(name)
        return total

    def _execute_spark(self, session: Any, sql: str, limit: int, timeout_s: float | None,
                       on_stop: Callable[[Any], None] | None = None) -> Any:
        """Run one SELECT with the row cap as a plan node, cancelled at the timeout or when the
        caller's stop handle (given to ``on_stop``) is interrupted."""
        timeout = self.limits.timeout_s if timeout_s is None else timeout_s
        sc = session.sparkContext
        group = "quarry-" + uuid.uuid4().hex
        fired = threading.Event()

        def cancel() -> None:
            fired.set()
            sc.cancelJobGroup(group)

        timer = threading.Timer(timeout, cancel)
        sc.setJobGroup(group, "quarry query", interruptOnCancel=True)
        if on_stop is not None:
            on_stop(_JobGroupStop(sc, group))
        timer.start()
        try:
            return session.sql(sql).limit(limit).toArrow()
        except Exception as e:
            if fired.is_set():
                raise QueryTimeout(f"the query exceeded the timeout period of {timeout:g} s and was stopped; "
                                   "narrow the time range or filter earlier") from None
            raise QueryExecutionError(f"the query failed on Spark: {str(e).splitlines()[0][:500]}") from None
        finally:
            timer.cancel()
            sc.setLocalProperty("spark.jobGroup.id", None)


class _JobGroupStop:
    """A Spark query's stop handle, shaped as DuckDB's connection for the API's disconnect hook."""

    def __init__(self, sc: Any, group: str) -> None:
        self.sc, self.group = sc, group

    def interrupt(self) -> None:
        self.sc.cancelJobGroup(self.group)


def _plain(v: Any) -> Any:
    """Spark's values as DuckDB gives them to server.query.values: naive UTC datetimes."""
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(dt.UTC).replace(tzinfo=None)
    return v
