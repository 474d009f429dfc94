"""Settings, from QUARRY_* environment variables or passed explicitly (tests build their own)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kql.limits import KUSTO_MAX_ARRAY, KqlLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUARRY_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Where the WAL, Parquet and metadata live")
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = Field(default="http://127.0.0.1:8080", description="Base URL used in links in notifications")
    admin_key: str | None = Field(default=None, description="Accepted as an admin API key when set")
    session_ttl_h: float = Field(
        default=12.0, gt=0, description="Lifetime of a browser session (alert pages, /docs), from sign-in"
    )

    # Ingest and storage
    retention_days: int = 30
    max_body_bytes: int = 32 * 1024 * 1024  # after decompression
    # Rows (NDJSON: lines; streaming: records) in one ingest request, counted before any row
    # is converted: a body of millions of tiny rows would otherwise hold an ingest slot for
    # seconds of CPU before being refused.
    max_batch_rows: int = Field(default=100_000, gt=0, description="Rows (NDJSON lines, streaming records) per ingest request; more is refused with 413")
    flush_max_rows: int = 200_000  # flush a table's tail to Parquet at this many rows...
    flush_max_age_s: float = 30.0  # ...or when its oldest unflushed row is this old
    max_unflushed_rows: int = 2_000_000  # back-pressure bound: above it ingest answers 503
    min_free_bytes: int = Field(
        default=100 * 1024 * 1024, ge=0,
        description="Ingest answers 507 while the data directory's filesystem has less free space",
    )
    disk_reserve_bytes: int = Field(
        default=32 * 1024 * 1024, ge=0,
        description="Ballast file given back when the disk fills, so a start-up and a flush have room",
    )
    retention_interval_s: float = 600.0
    compaction_interval_s: float = 600.0

    # Queries
    query_timeout_s: float = 200.0
    max_rows: int = 100_000
    max_concurrent_queries: int = 4
    query_queue_wait_s: float = 2.0
    query_memory_limit: str = "4GB"
    geoip_db: Path | None = Field(
        default=None, description="MaxMind GeoLite2-City/GeoIP2-City .mmdb file for geo_info_from_ip_address()")
    # Query size limits (kql.limits; docs/limits.md): past one, a query gets 400 `too_complex`
    query_max_bytes: int = Field(default=131_072, gt=0, description="Largest query text, in UTF-8 bytes")
    query_max_depth: int = Field(default=100, gt=0, description="Deepest nesting of a query's syntax tree")
    query_max_nodes: int = Field(default=50_000, gt=0, description="Most syntax elements in one query")
    query_max_expression_nodes: int = Field(
        default=6_000, gt=0, description="Most syntax elements in one scalar expression (in-list literals excepted)")
    query_max_list_items: int = Field(
        default=10_000, gt=0, description="Most items in one list: in (...), an array literal, an operator's columns")
    query_max_array_elements: int = Field(
        default=KUSTO_MAX_ARRAY, gt=0,
        description="Most elements range(), make_list/make_set and make-series produce per value (more are cut)")
    # The engine hunting queries run on (docs/scale-out.md): duckdb on this machine, or an
    # Apache Spark cluster over the same Parquet (pip install 'quarry[spark]').
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[*]"
    # Extra Spark properties as JSON, e.g. {"spark.executor.memory": "8g"} (a cluster's settings)
    spark_conf: dict[str, str] = Field(default={})  # pydantic copies a default per instance

    # Detections and notifications
    alerts_per_run_cap: int = 100
    correlation_window_h: float = 24.0
    scheduler_enabled: bool = True
    # Event-time lookback per rule frequency, in hours; defaults as Defender's current docs
    # (4x the interval, 30 days for daily rules). A new rule's first run looks back
    # first_run_lookback_days whatever its frequency.
    lookback_1h_h: float = 4.0
    lookback_3h_h: float = 12.0
    lookback_12h_h: float = 48.0
    lookback_24h_h: float = 720.0
    first_run_lookback_days: float = 30.0
    continuous_poll_s: float = Field(default=1.0, description="How often `continuous` rules look at newly ingested rows")
    scheduler_tick_s: float = 1.0
    # A row may be stamped with its ingestion time a moment before it becomes visible; each run
    # re-reads this much before the previous watermark (de-duplication absorbs the overlap).
    detection_ingest_overlap_s: float = 10.0
    detection_timeout_s: float = 120.0
    detection_max_rows: int = 10_000  # rows a run reads from its query; more is reported as truncated
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "quarry@localhost"
    smtp_tls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    email_throttle_s: float = 300.0
    smtp_timeout_s: float = 10.0  # also the webhook timeout
    notify_retry_s: float = 30.0  # first retry delay of a failed send; doubles per attempt
    notify_max_attempts: int = 5  # then the message is marked failed (visible in the delivery log)
    notify_poll_s: float = 5.0  # the notifier's idle wake-up; alerts_created wakes it at once

    def kql_limits(self) -> KqlLimits:
        """The compiler's size limits from these settings."""
        return KqlLimits(
            max_query_bytes=self.query_max_bytes,
            max_depth=self.query_max_depth,
            max_nodes=self.query_max_nodes,
            max_expression_nodes=self.query_max_expression_nodes,
            max_list_items=self.query_max_list_items,
            max_array_elements=self.query_max_array_elements,
        )
