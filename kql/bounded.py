"""SQL for array-producing functions bounded by ``kql.limits`` (``max_array_elements``).

DuckDB builds a whole list before anything can look at it, and ``interrupt()`` is only checked
between vectors, not inside one row's ``generate_series``: ``range(1, 100000000, 1)`` held 12.7 GB
and ran long past its timeout. So the bound goes into the call itself:

* ``range()`` stops after ``max_array_elements`` values, which is Kusto's documented behaviour
  (it returns at most 1,048,576 values; the array is cut);
* ``make_list``/``make_set`` keep at most ``maxSize`` values, whose default and maximum are
  1,048,576 in Kusto;
* ``make-series`` refuses, with a runtime error naming the limit, a grid of more bins than that
  (cutting a series would silently drop its end).
"""

from __future__ import annotations

from sqlglot import exp

from kql import limits
from kql import sqlbuild as sb

_TEMPORAL = ("datetime", "timespan", "date")


def _seconds(e: exp.Expr, kql_type: str) -> exp.Expr:
    """A value as a DOUBLE on a linear scale: seconds for datetime/timespan, else the number."""
    if kql_type in _TEMPORAL:
        return sb.fn("epoch", e)
    return exp.Cast(this=e, to=exp.DataType.build("DOUBLE"))


def span_count(start: exp.Expr, stop: exp.Expr, step: exp.Expr, kql_type: str) -> exp.Expr:
    """How many steps lie between start and stop, as a DOUBLE (never overflows)."""
    diff = exp.Sub(this=_seconds(stop, kql_type), expression=_seconds(start.copy(), kql_type))
    return exp.Div(this=sb.paren(diff), expression=sb.paren(_seconds(step, kql_type)))


def capped_stop(start: exp.Expr, stop: exp.Expr, step: exp.Expr, kql_type: str) -> exp.Expr:
    """``stop``, or the last value of the first ``max_array_elements`` when there are more."""
    cap = limits.current().max_array_elements
    too_many = exp.GTE(this=span_count(start, stop.copy(), step, kql_type), expression=sb.num(cap))
    # only computed when there are more values than the cap, so between start and stop: no overflow
    last = exp.Add(this=start.copy(), expression=exp.Mul(this=sb.paren(step.copy()), expression=sb.num(cap - 1)))
    return exp.Case(ifs=[exp.If(this=too_many, true=last)], default=stop)


def bounded_range(args: list[exp.Expr], kql_type: str) -> exp.Expr:
    """``generate_series(start, stop[, step])`` with at most ``max_array_elements`` values."""
    start, stop = args[0], args[1]
    if len(args) > 2:
        step = args[2]
    elif kql_type in _TEMPORAL:
        step = exp.Interval(this=sb.s("1"), unit=exp.var("HOUR"))
    else:
        step = sb.num(1)
    return sb.fn("generate_series", start, capped_stop(start, stop, step, kql_type), step.copy())


def cap_list(inner: exp.Expr, max_size: exp.Expr | None) -> exp.Expr:
    """At most ``max_size`` (clamped to ``max_array_elements``) items of a collected list."""
    cap = sb.num(limits.current().max_array_elements)
    size: exp.Expr = cap if max_size is None else sb.fn("least", max_size, cap)
    return sb.fn("list_slice", inner, sb.num(1), size)


def guarded_grid(start: exp.Expr, end: exp.Expr, step: exp.Expr, kql_type: str) -> exp.Expr:
    """``range(start, end, step)`` for make-series' bins, or a runtime error naming the limit
    when there would be more than ``max_array_elements`` bins."""
    cap = limits.current().max_array_elements
    too_many = exp.GT(this=span_count(start, end, step, kql_type), expression=sb.num(cap))
    message = (f"make-series would produce more than {cap:,} bins per series "
               "(query_max_array_elements); use a larger step or a shorter range")
    # the end is capped too: DuckDB folds a constant range() while planning, where neither the
    # CASE nor interrupt() can stop it
    grid = sb.fn("range", start.copy(), capped_stop(start, end, step, kql_type), step.copy())
    return exp.Case(ifs=[exp.If(this=too_many, true=sb.fn("error", sb.s(message)))], default=grid)
