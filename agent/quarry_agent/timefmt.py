"""Datetimes as the ingest API takes them: ISO 8601 UTC with microseconds and Z."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_ts(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC))


def now_iso() -> str:
    return iso(datetime.now(UTC))
