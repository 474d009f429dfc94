"""Kusto's datetime and timespan ranges for computed values.

A Kusto datetime lies in [0001-01-01, 9999-12-31 23:59:59.9999999] and a timespan in
±10675199.02:48:05.4775807 (a signed 64-bit count of 100 ns ticks); arithmetic whose result
falls outside is null, as Kusto gives it (``print datetime(9999-12-31) + 1d`` is null). DuckDB's
TIMESTAMP and INTERVAL reach much further (year 294247), so the compiler wraps each computed
datetime/timespan in a range check. The checks name their argument once (least/greatest/nullif),
so a chain of additions does not grow its SQL exponentially.
"""

from __future__ import annotations

from datetime import timedelta

from sqlglot import exp

from kql import sqlbuild as sb

# Kusto's largest timespan, to the microsecond DuckDB keeps
MAX_TIMESPAN = timedelta(days=10675199, seconds=10085, microseconds=477580)
_PAST_END = "10000-01-01 00:00:00"  # the first instant after Kusto's datetime range
_BEFORE_START = "0000-12-31 23:59:59.999999"  # the last instant before it


def _ts(text: str) -> exp.Expr:
    return exp.Cast(this=sb.s(text), to=exp.DataType.build("TIMESTAMP"))


def _clip(e: exp.Expr, high: exp.Expr, low: exp.Expr) -> exp.Expr:
    """``e`` when low < e < high, else NULL; ``e`` appears once."""
    capped = sb.fn("nullif", sb.fn("least", e, high), high.copy())
    return sb.fn("nullif", sb.fn("greatest", capped, low), low.copy())


def datetime_in_range(e: exp.Expr) -> exp.Expr:
    """A computed datetime, or NULL outside Kusto's datetime range."""
    return _clip(e, _ts(_PAST_END), _ts(_BEFORE_START))


def timespan_in_range(e: exp.Expr) -> exp.Expr:
    """A computed timespan, or NULL outside Kusto's timespan range. Compared as microseconds:
    DuckDB's least()/greatest() order INTERVALs by their raw (months, days, micros) fields, so
    10675198 days came out "greater" than 922337203685477581 microseconds."""
    beyond = (MAX_TIMESPAN + timedelta(microseconds=1)) // timedelta(microseconds=1)
    us = _clip(sb.fn("epoch_us", e), sb.num(beyond), sb.num(-beyond))
    return sb.fn("to_microseconds", us)


def timespan_ok(value: timedelta) -> bool:
    return -MAX_TIMESPAN <= value <= MAX_TIMESPAN
