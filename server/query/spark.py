"""Apache Spark as the query engine (``QUARRY_ENGINE=spark``): the same KQL, compiled for the
`spark` target, over the same Parquet layout, for data beyond one machine.

- Tables: each catalog table is read from ``<data_dir>/<table>/date=YYYY-MM-DD/*.parquet`` with
  Spark's partition discovery, so a time filter's ``date`` conditions prune whole directories
  (``PartitionFilters`` in the physical plan; tests/test_spark_engine.py checks it).
- The hot tail (rows acknowledged but not yet flushed to Parquet) is shipped as Arrow: the
  storage's DuckDB view of the tail is read as an Arrow table and becomes a Spark DataFrame
  (``arrow_to_spark``) that is unioned by name with the Parquet rows, so Spark answers over
  exactly the rows DuckDB would.
- pyspark is an optional extra (``pip install quarry[spark]``); nothing here imports it until a
  Spark engine is created.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from schema.catalog import DATE_PARTITION, EXTRA_COLUMN, INGESTION_TIME_COLUMN, Table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# What every Quarry Spark session needs to answer like DuckDB does: UTC times, NULL (not an error)
# for a failed cast or a division by zero, as the compiled SQL expects.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.legacy.sizeOfNull": "false",  # SIZE(NULL) is NULL, as DuckDB's len()
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "true",
}

_lock = threading.Lock()


class SparkUnavailable(RuntimeError):
    """pyspark or a Java runtime is missing."""


def spark_session(master: str = "local[*]", conf: Mapping[str, str] | None = None,
                  app_name: str = "quarry") -> SparkSession:
    """The process's Spark session (Spark allows one active per JVM), created on first use."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:  # pragma: no cover - depends on the install
        raise SparkUnavailable("the Spark engine needs pyspark: pip install 'quarry[spark]'") from e
    with _lock:
        builder = SparkSession.builder.master(master).appName(app_name)
        for k, v in {**BASE_CONF, **(conf or {})}.items():
            builder = builder.config(k, v)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark


def _spark_ready(table: pa.Table) -> pa.Table:
    """Arrow as Spark should read it: JSON extension columns as their text, naive timestamps as
    UTC instants (Spark's TIMESTAMP, which the compiled SQL uses with the session in UTC)."""
    cols = []
    fields = []
    for f, col in zip(table.schema, table.columns, strict=True):
        t = f.type
        if isinstance(t, pa.ExtensionType):
            col = pa.chunked_array([c.storage for c in col.chunks], t.storage_type)
            t = t.storage_type
        if pa.types.is_timestamp(t) and t.tz is None:
            t = pa.timestamp("us", "UTC")
            col = col.cast(t)
        cols.append(col)
        fields.append(pa.field(f.name, t))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def arrow_to_spark(spark: SparkSession, table: pa.Table) -> DataFrame:
    """An Arrow table (the hot tail, fixture rows) as a Spark DataFrame with the same columns."""
    return spark.createDataFrame(_spark_ready(table))


def stored_columns(table: Table) -> list[str]:
    return [*table.column_names, INGESTION_TIME_COLUMN, EXTRA_COLUMN, DATE_PARTITION]


def register_table(spark: SparkSession, table: Table, files: list[Path] | None, tail: pa.Table | None,
                   base: Path | None = None) -> int:
    """Make ``table`` a temporary view: its Parquet files (under ``base``, the table's directory,
    so Spark reads ``date`` from the ``date=YYYY-MM-DD`` folder names and can prune by it) plus
    the tail rows, by column name. Returns the number of Parquet files."""
    from pyspark.sql import functions as F

    parts: list[DataFrame] = []
    if files:
        reader = spark.read.option("basePath", str(base)) if base is not None else spark.read
        parts.append(reader.parquet(*[str(f) for f in files]))
    if tail is not None and (tail.num_rows or not parts):
        parts.append(arrow_to_spark(spark, tail))
    if not parts:
        raise ValueError(f"no data source for table {table.name}")
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p, allowMissingColumns=True)
    # the stored column order, a DATE partition, TIMESTAMP (not TIMESTAMP_NTZ) datetimes
    types = dict(out.dtypes)
    cols = []
    for name in stored_columns(table):
        c = F.col(f"`{name}`")
        if name == DATE_PARTITION and types.get(name) != "date":
            c = c.cast("date")
        elif types.get(name) == "timestamp_ntz":
            c = c.cast("timestamp")
        cols.append(c.alias(name))
    out.select(*cols).createOrReplaceTempView(table.name)
    return len(files or ())


def run_sql(spark: SparkSession, sql: str, limit: int | None = None) -> pa.Table:
    """Run one compiled SELECT and return its rows as Arrow (at most ``limit`` rows)."""
    df = spark.sql(sql)
    if limit is not None:
        df = df.limit(limit)
    return df.toArrow()


def spark_version(spark: SparkSession) -> Any:
    return spark.version
