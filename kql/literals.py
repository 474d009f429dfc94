"""KQL literal text read as Python values: timespans (`1d`, `1.02:03:04`) and datetimes.

Below the parser and the function table (both read literals), so neither imports the other.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS: dict[str, float] = {}
for _names, _us in (
    (("d", "day", "days"), 86_400_000_000),
    (("h", "hr", "hrs", "hour", "hours"), 3_600_000_000),
    (("m", "min", "minute", "minutes"), 60_000_000),
    (("s", "sec", "second", "seconds"), 1_000_000),
    (("ms", "milli", "millis", "millisecond", "milliseconds"), 1_000),
    (("micro", "micros", "microsecond", "microseconds"), 1),
    (("tick", "ticks"), 0.1),
):
    for _n in _names:
        _UNITS[_n] = _us

_TIMESPAN_RE = re.compile(r"(\d+(?:\.\d+)?)([a-z]+)")


def parse_timespan(text: str) -> timedelta | None:
    """`1d`, `1.5h`, `100ms`; and the `time()` forms `1.02:03:04`, `02:03`, `10m`."""
    try:
        return _parse_timespan(text)
    except OverflowError:  # beyond what a timespan holds (about 10,675,199 days)
        return None


def _parse_timespan(text: str) -> timedelta | None:
    text = text.strip().strip("\"'")
    m = _TIMESPAN_RE.fullmatch(text)
    if m and m.group(2) in _UNITS:
        return timedelta(microseconds=round(float(m.group(1)) * _UNITS[m.group(2)]))
    m = re.fullmatch(r"(-)?(?:(\d+)\.)?(\d+):(\d+)(?::(\d+(?:\.\d+)?))?", text)
    if m:
        td = timedelta(
            days=int(m.group(2) or 0),
            hours=int(m.group(3)),
            minutes=int(m.group(4)),
            seconds=float(m.group(5) or 0),
        )
        return -td if m.group(1) else td
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(days=float(text))  # time(2) is two days
    return None


_DT_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%Y%m%d", "%d %b %Y", "%Y-%m-%d %H")


def parse_datetime(text: str) -> datetime | None:
    s = text.strip().strip("\"'").strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1]
    # fromisoformat rejects more than 6 fractional digits, which Kusto prints (ticks)
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        dt = None
        for fmt in _DT_FORMATS:
            try:
                dt = datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
    if dt is None:
        return None
    if dt.tzinfo is not None:
        try:
            dt = dt.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # an offset that moves year 1 or 9999 out of range
            return None
    return dt
