"""Durable storage: write-ahead log, hot tail, partitioned Parquet, and locked-down DuckDB views.

See ``engine`` for how the parts fit and docs/internals.md ("Storage") for the contract.
"""

from server.storage.base import (
    AppendResult,
    Backpressure,
    BatchError,
    StorageClosed,
    StorageLocked,
    utc_now,
)
from server.storage.engine import Storage
from server.storage.space import DiskFull

__all__ = [
    "AppendResult",
    "Backpressure",
    "BatchError",
    "DiskFull",
    "Storage",
    "StorageClosed",
    "StorageLocked",
    "utc_now",
]
