"""What a rule run may see: each table the query reads is shadowed by a temporary view over the
rows of this run, so the compiled SQL (which names tables unqualified) reads only those rows.

A scheduled run sees rows whose event time is inside its lookback window, plus every row
ingested since the previous run whatever its event time (so a late event is still caught by
the next run), restricted to the rule's device groups. A continuous run sees only rows ingested
since the previous poll. The two branches are a UNION ALL, not an OR, so each keeps a filter
DuckDB can push into the Parquet scan (Timestamp/date for the window, _ingestion_time for the
late rows). Bounds are datetimes we computed, rendered by sqlglot as typed literals; device ids
are string literals; names are quoted identifiers. No user text reaches the SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
from sqlglot import exp

from schema.catalog import DATE_PARTITION, INGESTION_TIME_COLUMN, Catalog


@dataclass(frozen=True)
class RunScope:
    # Event-time lower bound (None: no event-time branch, as in a continuous poll).
    window_start: datetime | None
    # Rows ingested strictly after this are seen whatever their event time (None: no such branch).
    ingested_after: datetime | None
    # DeviceIds in the rule's device groups; None means all devices.
    device_ids: frozenset[str] | None = None


def _ts(value: datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.strftime("%Y-%m-%d %H:%M:%S.%f")), exp.DataType.Type.TIMESTAMP)


def _date(value: datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.strftime("%Y-%m-%d")), exp.DataType.Type.DATE)


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def base_table(con: duckdb.DuckDBPyConnection, name: str) -> exp.Table:
    """The storage view itself, fully qualified so it is not our temporary view."""
    row = con.execute("SELECT current_database()").fetchone()
    database = str(row[0]) if row else "memory"
    return exp.Table(
        this=exp.to_identifier(name, quoted=True),
        db=exp.to_identifier("main", quoted=True),
        catalog=exp.to_identifier(database, quoted=True),
    )


def scope_tables(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, tables: set[str], scope: RunScope
) -> None:
    for name in sorted(tables):
        table = catalog.table(name)
        if table is None:
            continue
        source = base_table(con, name)
        device_cond: exp.Expression | None = None
        if scope.device_ids is not None and table.column("DeviceId") is not None:
            ids = sorted(scope.device_ids)
            device_cond = (
                exp.In(this=_col("DeviceId"), expressions=[exp.Literal.string(i) for i in ids])
                if ids
                else exp.false()
            )
        branches: list[exp.Select] = []
        if not table.has_timestamp:
            # Snapshot tables (no event time): the whole table, within the device scope.
            branches.append(exp.select(exp.Star()).from_(source.copy()))
        else:
            in_window: exp.Expression | exp.Condition | None = None
            if scope.window_start is not None:
                in_window = exp.and_(
                    exp.GTE(this=_col("Timestamp"), expression=_ts(scope.window_start)),
                    exp.GTE(this=_col(DATE_PARTITION), expression=_date(scope.window_start)),
                )
                branches.append(exp.select(exp.Star()).from_(source.copy()).where(in_window))
            if scope.ingested_after is not None:
                late: exp.Expression | exp.Condition = exp.GT(
                    this=_col(INGESTION_TIME_COLUMN), expression=_ts(scope.ingested_after)
                )
                if scope.window_start is not None:
                    # Not already in the first branch: event time before the window (or none).
                    late = exp.and_(
                        late,
                        exp.or_(
                            exp.LT(this=_col("Timestamp"), expression=_ts(scope.window_start)),
                            exp.Is(this=_col("Timestamp"), expression=exp.Null()),
                        ),
                    )
                branches.append(exp.select(exp.Star()).from_(source.copy()).where(late))
            if not branches:
                branches.append(exp.select(exp.Star()).from_(source.copy()).where(exp.false()))
        if device_cond is not None:
            branches = [b.where(device_cond.copy(), append=True) for b in branches]
        body: exp.Expression = branches[0]
        for b in branches[1:]:
            body = exp.union(body, b, distinct=False)
        view = exp.Create(
            this=exp.Table(this=exp.to_identifier(name, quoted=True)),
            kind="VIEW",
            expression=body,
            replace=True,
            properties=exp.Properties(expressions=[exp.TemporaryProperty()]),
        )
        con.execute(view.sql(dialect="duckdb"))


def ingest_watermark(
    con: duckdb.DuckDBPyConnection, catalog: Catalog, tables: set[str], after: datetime | None
) -> datetime | None:
    """The latest ingestion time among rows the rule's tables hold (after ``after``)."""
    best: datetime | None = None
    for name in sorted(tables):
        table = catalog.table(name)
        if table is None:
            continue
        q = exp.select(exp.Max(this=_col(INGESTION_TIME_COLUMN))).from_(base_table(con, name))
        if after is not None:
            q = q.where(exp.GT(this=_col(INGESTION_TIME_COLUMN), expression=_ts(after)))
        row = con.execute(q.sql(dialect="duckdb")).fetchone()
        if row and row[0] is not None and (best is None or row[0] > best):
            best = row[0]
    return best
