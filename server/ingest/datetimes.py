"""ISO 8601 datetimes to naive UTC microseconds, vectorised in Arrow (both ingest paths)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_TS_UTC = pa.timestamp("us", tz="UTC")
_TS_NS_UTC = pa.timestamp("ns", tz="UTC")
_TS = pa.timestamp("us")
_NULL_STR = pa.scalar(None, pa.string())
_TS_MIN = pa.scalar(datetime(1, 1, 1), _TS)
_TS_MAX = pa.scalar(datetime(9999, 12, 31, 23, 59, 59, 999999), _TS)
# ISO 8601 as KQL accepts it (date, optional time with optional seconds and up to 7 fractional
# digits, optional Z or +hh:mm/+hhmm offset). RE2 syntax: pyarrow evaluates it vectorised.
_DT_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_ZONE_PATTERN = r"(?:Z|[+-]\d{2}:?\d{2})$"
# What agents and Defender send: a time and a zone. Matching it implies matching _DT_PATTERN and
# _ZONE_PATTERN, so such an array can go straight to the zoned parse below.
_DT_ZONED_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:?\d{2})$"
)


def parse_datetimes(arr: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, list[int]]:
    """ISO 8601 strings to naive UTC ``timestamp[us]``, vectorised. ``""`` becomes null.
    Returns the converted array (null where invalid) and the indices of invalid strings."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count == len(arr):
        return pa.nulls(len(arr), _TS), []  # a column the sender left out
    if pc.all(pc.match_substring_regex(arr, _DT_ZONED_PATTERN)).as_py():
        # Every string has a time and a zone (nulls are skipped): one regex pass instead of the
        # three below (empty, well-formed, zoned), a fifth of the cost of a datetime column.
        zoned = _parse_zoned(arr)
        if zoned is not None:
            return zoned, []
    empty = pc.equal(arr, "")
    if pc.any(empty).as_py():
        arr = pc.if_else(empty, _NULL_STR, arr)
    bad_mask = pc.invert(pc.fill_null(pc.match_substring_regex(arr, _DT_PATTERN), True))
    bad: list[int] = []
    if pc.any(bad_mask).as_py():
        bad = pc.indices_nonzero(bad_mask).to_pylist()
        arr = pc.if_else(bad_mask, _NULL_STR, arr)
    no_zone = pc.invert(pc.match_substring_regex(arr, _ZONE_PATTERN))
    if not pc.any(no_zone).as_py():
        zoned = _parse_zoned(arr)
        if zoned is not None:
            return zoned, bad
    s = arr
    if pc.any(pc.equal(pc.utf8_length(s), 10)).as_py():
        s = pc.replace_substring_regex(s, r"^(\d{4}-\d{2}-\d{2})$", r"\1T00:00:00")
    s = pc.replace_substring_regex(s, r"(\.\d{6})\d+", r"\1")  # 100 ns ticks -> microseconds
    no_zone = pc.invert(pc.match_substring_regex(s, _ZONE_PATTERN))
    s = pc.binary_join_element_wise(s, pc.if_else(no_zone, "Z", ""), "")
    try:
        out = pc.cast(s, _TS_UTC)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Well-formed but impossible (month 13, Feb 30, hour 25): find them one by one.
        values = s.to_pylist()
        fixed: list[Any] = []
        for i, v in enumerate(values):
            if v is None:
                fixed.append(None)
                continue
            try:
                pc.cast(pa.array([v]), _TS_UTC)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                bad.append(i)
                v = None
            fixed.append(v)
        out = pc.cast(pa.array(fixed, pa.string()), _TS_UTC)
    out = out.cast(_TS)
    # An offset can move a well-formed value past datetime's range (years 1 to 9999), and Arrow
    # takes year 0000: such a value would break every reader (Python's datetime cannot hold it).
    # Only this path can see one: the zoned path above reaches years 1677..2262 only.
    outside = pc.or_(pc.less(out, _TS_MIN), pc.greater(out, _TS_MAX))
    if pc.any(outside).as_py():
        bad.extend(pc.indices_nonzero(outside).to_pylist())
        out = pc.if_else(outside, pa.scalar(None, _TS), out)
    bad.sort()
    return out, bad


def _parse_zoned(arr: pa.Array) -> pa.Array | None:
    """Well-formed datetimes that all carry a zone, or None if Arrow cannot parse them all.

    The common case (agents and Defender write a zone): Arrow's own parser takes up to 9
    fractional digits into nanoseconds, and truncating to microseconds is one more cast. Regex
    rewrites cost 10x more, so they are kept for the rest. Nanoseconds only reach 1677..2262:
    other years fall through to the general path."""
    try:
        ns = pc.cast(arr, _TS_NS_UTC)
        us = pc.cast(ns, options=pc.CastOptions(_TS_UTC, allow_time_truncate=True))
        return us.cast(_TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
