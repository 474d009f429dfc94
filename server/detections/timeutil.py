"""Times in the detections store: naive UTC datetimes in code, fixed-width ISO text in SQLite.

Fixed width (always microseconds, always ``Z``) keeps text comparison equal to time comparison,
which the correlation window and the alert filters rely on.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def iso(value: datetime) -> str:
    return to_naive_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 (``Z`` or offset or naive-as-UTC) into a naive UTC datetime."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    return to_naive_utc(datetime.fromisoformat(t))
