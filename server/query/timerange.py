"""ISO 8601 time ranges as Graph's ``runHuntingQuery`` takes them in ``Timespan``.

Accepted forms (api_shapes.md (b)): ``start/end``, ``duration/end``, ``start/duration``,
``duration`` (back from now) and a lone ``start`` (up to now). Durations are ISO 8601
(``P30D``, ``PT2H``, ``P1DT12H``); datetimes are ISO 8601, UTC when they carry no offset.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

_DURATION = TypeAdapter(dt.timedelta)
_DATETIME = TypeAdapter(dt.datetime)


class TimeRangeError(ValueError):
    pass


@dataclass(frozen=True)
class TimeRange:
    """``start <= Timestamp`` and, when ``end`` is set, ``Timestamp < end``; naive UTC."""

    start: dt.datetime
    end: dt.datetime | None = None


def _duration(text: str) -> dt.timedelta:
    if not text.upper().startswith("P"):
        raise TimeRangeError(f"'{text}' is not an ISO 8601 duration such as P30D or PT2H")
    try:
        value = _DURATION.validate_python(text.upper())
    except ValidationError:
        raise TimeRangeError(f"'{text}' is not an ISO 8601 duration such as P30D or PT2H") from None
    if value <= dt.timedelta(0):
        raise TimeRangeError(f"duration '{text}' must be positive")
    return value


def _datetime(text: str) -> dt.datetime:
    # Plain numbers would be read as Unix seconds by pydantic: demand a calendar date.
    if "-" not in text:
        raise TimeRangeError(f"'{text}' is not an ISO 8601 datetime such as 2024-02-01T08:00:00Z")
    try:
        value = _DATETIME.validate_python(text)
    except ValidationError:
        raise TimeRangeError(
            f"'{text}' is not an ISO 8601 datetime such as 2024-02-01T08:00:00Z"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def parse_timespan(text: str, now: dt.datetime) -> TimeRange:
    """Parse a Graph ``Timespan``; ``now`` is naive UTC."""
    try:
        return _parse(text.strip(), now)
    except OverflowError:
        # P999999D back from now, or a duration past year 9999: no datetime holds the bound
        raise TimeRangeError(f"Timespan '{text.strip()}' reaches outside the years 1 to 9999") from None


def _parse(text: str, now: dt.datetime) -> TimeRange:
    if not text:
        raise TimeRangeError("Timespan is empty")
    if "/" in text:
        left, _, right = text.partition("/")
        left, right = left.strip(), right.strip()
        if "/" in right:
            raise TimeRangeError(f"Timespan '{text}' has more than one '/'")
        left_is_duration = left.upper().startswith("P")
        right_is_duration = right.upper().startswith("P")
        if left_is_duration and right_is_duration:
            raise TimeRangeError(f"Timespan '{text}' has two durations; give a start or an end")
        if left_is_duration:
            end = _datetime(right)
            start = end - _duration(left)
        elif right_is_duration:
            start = _datetime(left)
            end = start + _duration(right)
        else:
            start, end = _datetime(left), _datetime(right)
        if end <= start:
            raise TimeRangeError(f"Timespan '{text}' ends before it starts")
        return TimeRange(start, end)
    if text.upper().startswith("P"):
        # No upper bound: "the last 30 days" includes events stamped a little in the future by
        # a skewed agent clock.
        return TimeRange(now - _duration(text), None)
    return TimeRange(_datetime(text), None)
