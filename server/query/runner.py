"""The query runner: KQL in, rows out, within the service's limits.

Used by the hunting API, ``quarry query`` and detections. One query:

1. compiles the KQL (``kql.compile_kql``) with a fixed ``now``, so ``ago()`` is one instant;
2. waits up to ``queue_wait_s`` for one of ``max_concurrent`` slots, else ``QueryRejected``
   (the API answers 429 with Retry-After);
3. opens a fresh ``Storage.connect()`` connection (locked down: reads only the data directory);
4. restricts event tables to the requested time range with temporary views that shadow them;
5. runs the SQL with a timer that calls ``interrupt()`` on that same connection at the timeout
   (DuckDB has no statement timeout), fetching at most ``max_rows + 1`` rows so it knows whether
   the result was cut.

All DuckDB work is synchronous and meant for worker threads; ``run_async`` / the export iterator
run it on the runner's own thread pool, so a heavy query never blocks the event loop (and ingest,
which answers on the loop or on the default pool, keeps answering).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import duckdb
import orjson
import pyarrow as pa
from sqlglot import exp

from kql.limits import KqlLimits
from schema.catalog import DATE_PARTITION, Catalog
from server.query.timerange import TimeRange
from server.storage.repair import redact

log = logging.getLogger("quarry.query")
_T = TypeVar("_T")


class Connector(Protocol):
    def connect(self) -> duckdb.DuckDBPyConnection: ...


@dataclass(frozen=True)
class QueryLimits:
    timeout_s: float = 200.0
    max_rows: int = 100_000
    max_concurrent: int = 4
    queue_wait_s: float = 2.0
    memory_limit: str | None = "4GB"
    # Rows per Arrow record batch when streaming an export.
    export_batch_rows: int = 65_536
    # The compiler's size limits (query text, depth, lists...): see kql.limits
    kql: KqlLimits = field(default_factory=KqlLimits)

    @classmethod
    def from_settings(cls, settings: Any) -> QueryLimits:
        return cls(
            timeout_s=float(settings.query_timeout_s),
            max_rows=int(settings.max_rows),
            max_concurrent=int(settings.max_concurrent_queries),
            queue_wait_s=float(settings.query_queue_wait_s),
            memory_limit=settings.query_memory_limit or None,
            kql=settings.kql_limits(),
        )


@dataclass
class QueryStats:
    elapsedMs: float = 0.0  # noqa: N815 (the API's field names)
    compileMs: float = 0.0  # noqa: N815
    rowsReturned: int = 0  # noqa: N815
    partitionsScanned: int = 0  # noqa: N815

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsedMs": round(self.elapsedMs, 3),
            "compileMs": round(self.compileMs, 3),
            "rowsReturned": self.rowsReturned,
            "partitionsScanned": self.partitionsScanned,
        }


@dataclass
class QueryResult:
    columns: list[tuple[str, str]]  # (name, KQL type)
    rows: list[tuple[Any, ...]]  # raw DuckDB values; server.query.values renders them
    truncated: bool
    stats: QueryStats
    warnings: list[str] = field(default_factory=list)
    # the query's `render` chart hint (kql.chart), None without one
    render: dict[str, Any] | None = None


class QueryError(Exception):
    """A query that could not run. ``status`` and ``code`` are what the API answers."""

    status = 400
    code = "query_error"

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors if errors is not None else [{"code": self.code, "message": message}]


class CompileFailed(QueryError):
    status = 400
    code = "compile_error"
    outcome = "compile_error"


class QueryTimeout(QueryError):
    status = 504
    code = "timeout"
    outcome = "timeout"


class QueryRejected(QueryError):
    """No concurrency slot freed up within the queue wait."""

    status = 429
    code = "too_many_queries"
    outcome = "rejected"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueryResourceLimit(QueryError):
    status = 400
    code = "resource_limit"
    outcome = "resource_limit"


class QueryUnavailable(QueryError):
    status = 503
    code = "unavailable"
    outcome = "execution_error"


class QueryExecutionError(QueryError):
    status = 400
    code = "execution_error"
    outcome = "execution_error"


def diagnostic_dict(d: Any) -> dict[str, Any]:
    """A compiler Diagnostic as an error entry of the API's one error shape."""
    out: dict[str, Any] = {"code": getattr(d, "code", "error"), "message": getattr(d, "message", str(d))}
    for name in ("severity", "line", "column", "end_line", "end_column", "start", "end"):
        value = getattr(d, name, None)
        if value is not None:
            out[_camel(name)] = value
    out["hints"] = list(getattr(d, "hints", None) or [])
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _is_error(d: Any) -> bool:
    return str(getattr(d, "severity", "error")).lower().endswith("error")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class _Prepared:
    sql: str
    columns: list[tuple[str, str]]
    tables: set[str]
    compile_ms: float
    warnings: list[str]
    # `evaluate bag_unpack/pivot`: the columns depend on the data; compile again with a probe on
    # the query's connection (after its time-range views) to get the SQL
    needs_probe: bool = False
    now: dt.datetime | None = None
    # the request's query parameters, kept for the probe's second compilation
    parameters: Mapping[str, Any] | None = None
    render: dict[str, Any] | None = None


def _result(prepared: _Prepared, rows: list[tuple[Any, ...]], cap: int, started: float,
            partitions: int) -> QueryResult:
    """The answer of a run on any engine: rows fetched up to ``cap + 1`` are cut to the row cap
    with a warning saying so (the extra row tells that the cap cut the result)."""
    truncated = len(rows) > cap
    if truncated:
        rows = rows[:cap]
        prepared.warnings.append(
            f"the result was truncated to {cap} rows (the row limit); "
            "use summarize, project or take to reduce it, or the export endpoint for all rows"
        )
    stats = QueryStats(elapsedMs=(time.perf_counter() - started) * 1000, compileMs=prepared.compile_ms,
                       rowsReturned=len(rows), partitionsScanned=partitions)
    return QueryResult(prepared.columns, rows, truncated, stats, prepared.warnings, prepared.render)


class QueryRunner:
    # the compiler target this runner executes (server/query/spark_runner.py: "spark")
    dialect = "duckdb"

    def __init__(
        self,
        storage: Connector,
        catalog: Catalog,
        limits: QueryLimits | None = None,
        *,
        metrics: Any | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.storage = storage
        self.catalog = catalog
        self.limits = limits or QueryLimits()
        self.metrics = metrics
        self.clock = clock
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrent)
        # Our own pool, so queries waiting for a slot or running long never take the threads
        # that ingest and the rest of the app use (anyio's default pool).
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.limits.max_concurrent + 8, thread_name_prefix="quarry-query"
        )
        # Connections of running queries and exports, so close() can interrupt them.
        self._live: set[duckdb.DuckDBPyConnection] = set()
        self._live_changed = threading.Condition()
        self._closed = False

    @property
    def running(self) -> int:
        """Queries and exports holding a connection now."""
        with self._live_changed:
            return len(self._live)

    def close(self, wait_s: float = 5.0) -> None:
        """Refuse new queries, stop the running ones with ``interrupt()`` and wait up to ``wait_s``
        for them to let go of their connections: storage cannot close its database under a busy
        connection, and a heavy query would otherwise run on until its own timeout."""
        deadline = time.monotonic() + wait_s
        with self._live_changed:
            self._closed = True
            # Again and again: interrupt() stops only the statement running at that moment, and
            # a query may be between two (its time-range views, then the query itself).
            while self._live and time.monotonic() < deadline:
                for con in self._live:
                    con.interrupt()
                self._live_changed.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- compile -----------------------------------------------------------------------------

    def compile(self, text: str, now: dt.datetime | None = None,
                probe: Callable[[str], list[Any]] | None = None,
                parameters: Mapping[str, Any] | None = None, deadline: float | None = None) -> _Prepared:
        """Compile or raise ``CompileFailed`` carrying every diagnostic."""
        from kql import CompileOptions, compile_kql

        if not isinstance(text, str) or not text.strip():
            raise CompileFailed(
                "the query is empty",
                [{"code": "syntax", "message": "the query is empty", "line": 1, "column": 1, "hints": []}],
            )
        t0 = time.perf_counter()
        now = now or self.clock()
        try:
            # storage stores a missing string as "": no COALESCE on stored string columns
            with _gc_paused():
                compiled = compile_kql(
                    text, self.catalog,
                    CompileOptions(now=now, strings_never_null=True, probe=probe, parameters=parameters,
                                   limits=self.limits.kql, dialect=self.dialect, deadline=deadline),
                )
        except QueryError:
            raise  # the probe's own failure (timeout, execution error)
        except RecursionError:
            raise CompileFailed(
                "the query is nested too deeply to compile",
                [{"code": "too_complex", "message": "the query is nested too deeply", "hints": []}],
            ) from None
        except Exception:
            # A compiler bug must not turn a user's query into a 500: say what failed, log why.
            log.exception("the compiler failed on a query")
            raise CompileFailed(
                "internal error while compiling the query",
                [{"code": "internal_compiler_error", "message": "the compiler failed on this query; "
                  "this is a Quarry bug, please report the query", "hints": []}],
            ) from None
        compile_ms = (time.perf_counter() - t0) * 1000
        if any(getattr(d, "code", "") == "timeout" for d in compiled.diagnostics):
            raise self._map_error(duckdb.InterruptException("timeout"), True)
        errors = [d for d in compiled.diagnostics if _is_error(d)]
        if not errors and compiled.ok and compiled.needs_probe:
            return _Prepared("", list(compiled.columns), set(compiled.tables), compile_ms, [],
                             needs_probe=True, now=now, parameters=parameters, render=compiled.render)
        if errors or not compiled.ok or compiled.sql is None:
            entries = [diagnostic_dict(d) for d in errors] or [
                {"code": "compile_error", "message": "the query could not be compiled", "hints": []}
            ]
            first = entries[0]
            where = f" at line {first['line']}, column {first['column']}" if "line" in first else ""
            raise CompileFailed(f"query has {len(entries)} error(s): {first['message']}{where}", entries)
        warnings = [str(getattr(d, "message", d)) for d in compiled.diagnostics if not _is_error(d)]
        return _Prepared(
            sql=compiled.sql,
            columns=[(str(n), str(t)) for n, t in compiled.columns],
            tables=set(compiled.tables),
            compile_ms=compile_ms,
            warnings=warnings,
            render=compiled.render,
        )

    # -- run ---------------------------------------------------------------------------------

    def run(
        self,
        text: str,
        *,
        time_range: TimeRange | None = None,
        max_rows: int | None = None,
        timeout_s: float | None = None,
        now: dt.datetime | None = None,
        deadline: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        on_connection: Callable[[Any], None] | None = None,
    ) -> QueryResult:
        """Compile and run ``text``; blocking (call from a worker thread). ``parameters`` are
        the values for ``declare query_parameters`` (see ``CompileOptions.parameters``).
        ``on_connection`` gets the query's stop handle (its DuckDB connection, or for Spark the job
        group's) once it has one, so a caller can stop the query with ``interrupt()`` (the API
        does when its client goes away)."""
        started = time.perf_counter()
        outcome = "execution_error"
        rows_out = 0
        try:
            # One deadline for the whole query: compiling (on this worker thread, never on the
            # event loop) and waiting for a slot use up the time the engine then gets.
            ends = time.monotonic() + (self.limits.timeout_s if timeout_s is None else timeout_s)
            prepared = self.compile(text, now, parameters=parameters, deadline=ends)
            cap = self.limits.max_rows if max_rows is None else max(0, min(max_rows, self.limits.max_rows))
            with self._slot(deadline), self._connection() as con:
                if on_connection is not None:
                    on_connection(con)
                self._restrict(con, prepared.tables, time_range)
                prepared = self._probed(con, text, prepared, self._left(ends))
                partitions = self._partitions(con, prepared.sql, prepared.tables)
                rows = self._execute(con, _limited(prepared.sql, cap + 1), self._left(ends), cap + 1)
            result = _result(prepared, rows, cap, started, partitions)
            outcome = "truncated" if result.truncated else "ok"
            rows_out = len(result.rows)
            return result
        except QueryError as e:
            outcome = getattr(e, "outcome", "execution_error")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe_query(outcome, time.perf_counter() - started, rows_out)

    async def run_async(self, text: str, **kwargs: Any) -> QueryResult:
        # The queue wait starts now, not when a pool thread picks the job up.
        kwargs.setdefault("deadline", time.monotonic() + self.limits.queue_wait_s)
        return await self.in_pool(lambda: self.run(text, **kwargs))

    async def in_pool(self, fn: Callable[[], _T]) -> _T:
        """Run blocking query work (DuckDB, rendering big results) on the runner's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn)

    def submit(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the runner's threads without waiting for it (cleanup that must not be
        awaited, such as closing an export from a cancelled response). RuntimeError once the
        runner is closed."""
        self._pool.submit(fn)

    # -- export ------------------------------------------------------------------------------

    def export_batches(
        self,
        text: str,
        *,
        time_range: TimeRange | None = None,
        now: dt.datetime | None = None,
        deadline: float | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> tuple[list[tuple[str, str]], ExportStream]:
        """Compile now (so compile errors surface before any byte is sent), then return the
        columns and an ``ExportStream`` of Arrow record batches over the whole result, no row cap.

        The stream first yields ``None`` once the query is running (prime it with ``next``
        before sending headers), then the batches. It holds a concurrency slot and the
        connection until it is exhausted or closed; ``close()`` may be called from any thread,
        also while another thread is inside ``next`` (it interrupts the query). The timeout
        applies to the whole export, time spent waiting for a slow reader included."""
        prepared = self.compile(text, now, parameters=parameters,
                                deadline=time.monotonic() + self.limits.timeout_s)
        stream: ExportStream

        def generate() -> Generator[pa.RecordBatch | None, None, None]:
            started = time.perf_counter()
            outcome, rows = "execution_error", 0
            try:
                with self._slot(deadline), self._connection() as con:
                    stream.con = con
                    self._restrict(con, prepared.tables, time_range)
                    ready = self._probed(con, text, prepared, None)
                    # data-dependent columns (evaluate bag_unpack/pivot) are known from here on,
                    # before the first yield the caller waits for
                    columns[:] = ready.columns
                    with self._timer(con, None) as fired:
                        try:
                            # A relation's reader streams; a DB-API result's would copy it all.
                            reader = con.sql(_wrap(ready.sql)).to_arrow_reader(
                                self.limits.export_batch_rows
                            )
                            # The query runs and holds its slot: the caller primes the generator
                            # up to here, so a 429 or an execution error is still an HTTP status.
                            yield None
                            for batch in reader:
                                rows += batch.num_rows
                                yield batch
                                # interrupt() only stops a statement that is running: a timer
                                # that fired while we waited on a slow reader ends it here
                                if fired.is_set():
                                    raise self._map_error(duckdb.InterruptException("timeout"), True)
                        except (duckdb.Error, pa.ArrowException) as e:
                            # Arrow's reader reports DuckDB's interrupt as an ArrowException.
                            if stream.cancelled and not fired.is_set():
                                outcome = "cancelled"
                                return
                            raise self._map_error(e, fired.is_set()) from None
                        finally:
                            stream.con = None
                outcome = "ok"
            except GeneratorExit:
                outcome = "cancelled"  # closed by its reader before the end (client gone)
                raise
            except QueryError as e:
                outcome = getattr(e, "outcome", "execution_error")
                raise
            finally:
                if self.metrics is not None:
                    self.metrics.observe_query(outcome, time.perf_counter() - started, rows)

        columns = list(prepared.columns)
        stream = ExportStream(generate())
        return columns, stream

    # -- pieces ------------------------------------------------------------------------------

    def _probed(self, con: duckdb.DuckDBPyConnection, text: str, prepared: _Prepared,
                timeout_s: float | None) -> _Prepared:
        """Compile again with a probe that runs the compiler's schema queries on ``con`` (its
        time-range views apply, and the query's timeout), when the columns depend on the data."""
        if not prepared.needs_probe:
            return prepared

        def probe(sql: str) -> list[Any]:
            return self._execute(con, sql, timeout_s, 100_000)

        budget = self.limits.timeout_s if timeout_s is None else timeout_s
        again = self.compile(text, prepared.now, probe=probe, parameters=prepared.parameters,
                             deadline=time.monotonic() + budget)
        again.compile_ms += prepared.compile_ms
        if again.needs_probe or not again.sql:
            raise CompileFailed("the query's columns could not be learned from the data", [
                {"code": "compile_error", "message": "the query's columns could not be learned", "hints": []}])
        return again

    def _left(self, ends: float) -> float:
        """Seconds left before ``ends``; QueryTimeout when none are (compiling took them)."""
        left = ends - time.monotonic()
        if left <= 0:
            raise self._map_error(duckdb.InterruptException("timeout"), True)
        return left

    def _slot(self, deadline: float | None) -> _Slot:
        return _Slot(self._slots, self.limits.queue_wait_s, deadline)

    def _connection(self) -> _Closing:
        if self._closed:
            raise QueryUnavailable("the server is shutting down")
        try:
            con = self.storage.connect()
        except (duckdb.Error, RuntimeError) as e:  # RuntimeError: StorageClosed
            log.warning("cannot open a query connection: %s", e)
            raise QueryUnavailable(f"storage is not available: {e}") from None
        with self._live_changed:
            closing = self._closed  # close() may have run since the check above
            if not closing:
                self._live.add(con)
        if closing:
            con.close()
            raise QueryUnavailable("the server is shutting down")
        return _Closing(con, self._release)

    def _release(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._live_changed:
            self._live.discard(con)
            self._live_changed.notify_all()

    def _restrict(self, con: duckdb.DuckDBPyConnection, tables: set[str], tr: TimeRange | None) -> None:
        """Shadow each event table the query reads with a temporary view over its time range.

        Temporary views come first in DuckDB's name resolution, so the compiled SQL (which names
        tables unqualified) reads the restricted view. The bounds are datetimes we parsed, rendered
        by sqlglot as typed literals; the table names come from the catalog, quoted."""
        if tr is None:
            return
        db = con.execute("SELECT current_database()").fetchone()
        database = str(db[0]) if db else "memory"
        for name in sorted(tables):
            table = self.catalog.table(name)
            if table is None or not table.has_timestamp:
                continue
            ts = exp.column("Timestamp", quoted=True)
            day = exp.column(DATE_PARTITION, quoted=True)
            cond: exp.Expression | exp.Condition = exp.GTE(this=ts, expression=_ts_literal(tr.start))
            cond = exp.and_(cond, exp.GTE(this=day, expression=_date_literal(tr.start)))
            if tr.end is not None:
                cond = exp.and_(cond, exp.LT(this=ts, expression=_ts_literal(tr.end)))
                cond = exp.and_(cond, exp.LTE(this=day, expression=_date_literal(tr.end)))
            source = exp.Table(
                this=exp.to_identifier(name, quoted=True),
                db=exp.to_identifier("main", quoted=True),
                catalog=exp.to_identifier(database, quoted=True),
            )
            select = exp.select(exp.Star()).from_(source).where(cond)
            view = exp.Create(
                this=exp.Table(this=exp.to_identifier(name, quoted=True)),
                kind="VIEW",
                expression=select,
                properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
            )
            con.execute(view.sql(dialect="duckdb"))

    def _partitions(self, con: duckdb.DuckDBPyConnection, sql: str, tables: set[str]) -> int:
        """Parquet files the plan reads (each file is one date partition's part).

        From EXPLAIN, which costs no execution: a Parquet scan with a partition filter reports
        "Scanning Files: n/m" (n after pruning); one without a filter reads every file of its
        table, which EXPLAIN does not count, so those are counted on disk, the table told apart
        by the columns the scan projects. A count answered from file metadata scans no file."""
        try:
            plan = con.execute("EXPLAIN (FORMAT json) " + _wrap(sql)).fetchall()
        except duckdb.Error:
            return 0
        scans: list[dict[str, Any]] = []
        for _kind, text in plan:
            try:
                _parquet_scans(orjson.loads(text), scans)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                continue
        total = 0
        for info in scans:
            scanning = info.get("Scanning Files")
            if isinstance(scanning, str) and "/" in scanning:
                total += int(scanning.split("/", 1)[0])
            else:
                total += self._table_files(_scan_table(info, tables, self.catalog))
        return total

    def _table_files(self, table: str | None) -> int:
        data_dir = getattr(self.storage, "data_dir", None)
        if table is None or data_dir is None:
            return 0
        return sum(1 for _ in Path(data_dir, table).glob("*/*.parquet"))

    def _execute(
        self, con: duckdb.DuckDBPyConnection, sql: str, timeout_s: float | None, limit: int
    ) -> list[tuple[Any, ...]]:
        with self._timer(con, timeout_s) as fired:
            try:
                cursor = con.execute(sql)
                return cursor.fetchmany(limit)
            except duckdb.Error as e:
                raise self._map_error(e, fired.is_set()) from None

    def _timer(self, con: duckdb.DuckDBPyConnection, timeout_s: float | None) -> _Timer:
        return _Timer(con, self.limits.timeout_s if timeout_s is None else timeout_s)

    def _map_error(self, e: Exception, timed_out: bool) -> QueryError:
        timeout = self.limits.timeout_s
        if self._closed and not timed_out:  # close() interrupted it (Arrow's reader: ArrowException)
            return QueryUnavailable("the server is shutting down; the query was stopped")
        if timed_out or isinstance(e, duckdb.InterruptException):
            return QueryTimeout(
                f"the query exceeded the timeout period of {timeout:g} s and was stopped; "
                "narrow the time range or filter earlier"
            )
        if isinstance(e, duckdb.OutOfMemoryException):
            return QueryResourceLimit(
                "the query was stopped because it needed more memory than the per-query limit "
                f"({self.limits.memory_limit}); reduce the data it reads or aggregates"
            )
        if isinstance(e, duckdb.PermissionException):
            return QueryExecutionError("the query tried an operation that is not permitted")
        # Data errors (a cast that fails on a value, a regex that does not compile...) are the
        # query's fault, not the service's: 400 with DuckDB's first line, which names the value.
        log.info("query execution failed: %s", e)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        # Never the server's own paths; a stored file that cannot be read is an operator's job.
        data_dir = getattr(self.storage, "data_dir", None)
        if isinstance(data_dir, Path):
            first = redact(first, data_dir)
        if "Parquet file" in first:
            first += " (a stored file cannot be read back; an operator can run `quarry repair`)"
        return QueryExecutionError(f"the query failed while running: {first}")


_gc_lock = threading.Lock()
_gc_compiles = 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a query compiles. A large query makes hundreds of
    thousands of syntax and sqlglot objects, and a full collection over them holds the GIL for
    up to 0.8 s (measured), during which the event loop, /healthz included, cannot answer; with
    collection paused it waited at most ~0.2 s. The objects are freed by reference counting when
    the compile ends; compiles are bounded by kql.limits, so the pause is too."""
    global _gc_compiles
    with _gc_lock:
        _gc_compiles += 1
        if _gc_compiles == 1:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_compiles -= 1
            if _gc_compiles == 0:
                gc.enable()


def _parquet_scans(node: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(node, list):
        for n in node:
            _parquet_scans(n, out)
    elif isinstance(node, dict):
        info = node.get("extra_info")
        if isinstance(info, dict) and str(info.get("Function", node.get("name", ""))).upper() == "READ_PARQUET":
            out.append(info)
        for child in node.get("children") or []:
            _parquet_scans(child, out)


def _scan_table(info: dict[str, Any], tables: set[str], catalog: Catalog) -> str | None:
    """Which of the query's tables a Parquet scan reads: the one whose columns hold every
    column it projects (the first such, in name order, when tables share them)."""
    projected = info.get("Projections", [])
    names = {projected} if isinstance(projected, str) else {str(p) for p in projected}
    names = {n.strip().strip('"') for n in names} - {DATE_PARTITION, "_ingestion_time", "_extra"}
    for name in sorted(tables):
        table = catalog.table(name)
        if table is not None and names <= set(table.column_names):
            return name
    return None


def _wrap(sql: str) -> str:
    """Run only one SELECT: the compiler's SQL is ours, but a second statement smuggled into it
    by a compiler bug must not execute. Checked with DuckDB's own statement splitter."""
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise QueryExecutionError("internal: the compiled query is not a single SELECT")
    return sql.strip().rstrip(";")


def _limited(sql: str, limit: int) -> str:
    # DuckDB folds an outer LIMIT over an ORDER BY subquery into a Top-N, so a sorted query with
    # a row cap does not sort everything; and the subquery's order is kept.
    return f"SELECT * FROM ({_wrap(sql)}) AS _quarry_result LIMIT {int(limit)}"


def _ts_literal(value: dt.datetime) -> exp.Expression:
    # isoformat, not strftime: %Y drops the leading zeros of years before 1000
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ", timespec="microseconds")), exp.DataType.Type.TIMESTAMP)


def _date_literal(value: dt.datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.date().isoformat()), exp.DataType.Type.DATE)


class ExportStream(Iterator[pa.RecordBatch | None]):
    """An export's batches (``QueryRunner.export_batches``), closable from any thread.

    A generator cannot be closed while another thread runs it ("generator already executing"),
    and that thread may sit in DuckDB for as long as the query takes. ``close()`` therefore
    interrupts the query until the running step lets go, then closes the generator, which
    gives back the slot and the connection at once, not when the garbage collector gets to it."""

    def __init__(self, gen: Generator[pa.RecordBatch | None, None, None]) -> None:
        self._gen = gen
        self._lock = threading.Lock()
        self.cancelled = False
        self.con: duckdb.DuckDBPyConnection | None = None  # set while the query holds one

    def __next__(self) -> pa.RecordBatch | None:
        with self._lock:
            if self.cancelled:
                raise StopIteration
            return next(self._gen)

    def close(self) -> None:
        self.cancelled = True
        while not self._lock.acquire(timeout=0.05):
            con = self.con
            if con is not None:
                # Again and again: a step may start a new statement right after one interrupt.
                con.interrupt()
        try:
            self._gen.close()
        finally:
            self._lock.release()


class _Slot:
    def __init__(self, sem: threading.BoundedSemaphore, wait_s: float, deadline: float | None) -> None:
        self.sem = sem
        self.wait_s = wait_s
        self.deadline = deadline
        self.held = False

    def __enter__(self) -> _Slot:
        wait = self.wait_s if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if not self.sem.acquire(timeout=wait):
            retry = max(1, math.ceil(self.wait_s))
            raise QueryRejected(
                "too many queries are running at once; retry after a few seconds", retry_after_s=retry
            )
        self.held = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            self.sem.release()


class _Closing:
    def __init__(self, con: duckdb.DuckDBPyConnection,
                 release: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        self.con = con
        self.release = release

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def __exit__(self, *exc: object) -> None:
        try:
            self.con.close()
        except duckdb.Error:
            log.debug("closing a query connection failed", exc_info=True)
        finally:
            self.release(self.con)


class _Timer:
    """Calls ``interrupt()`` on the connection when the timeout passes; ``fired`` tells why the
    query stopped."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout_s: float) -> None:
        self.con = con
        self.timeout_s = timeout_s
        self.fired = threading.Event()
        self.timer: threading.Timer | None = None

    def _fire(self) -> None:
        self.fired.set()
        self.con.interrupt()

    def __enter__(self) -> threading.Event:
        if self.timeout_s and self.timeout_s > 0:
            self.timer = threading.Timer(self.timeout_s, self._fire)
            self.timer.daemon = True
            self.timer.start()
        return self.fired

    def __exit__(self, *exc: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
