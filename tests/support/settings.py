"""Settings pieces the storage-level tests share."""

from __future__ import annotations

from typing import Any

# Background flushing, compaction and retention never fire during a test (their thresholds are
# far off), so a test decides when data reaches Parquet.
MANUAL_FLUSH: dict[str, Any] = {
    "flush_max_rows": 10_000_000,
    "flush_max_age_s": 3600.0,
    "compaction_interval_s": 3600.0,
    "retention_interval_s": 3600.0,
}
