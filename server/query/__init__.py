"""Query execution: compile KQL, run it on a locked-down storage connection within limits."""

from server.query.runner import (
    CompileFailed,
    QueryError,
    QueryExecutionError,
    QueryLimits,
    QueryRejected,
    QueryResourceLimit,
    QueryResult,
    QueryRunner,
    QueryStats,
    QueryTimeout,
)
from server.query.timerange import TimeRange, TimeRangeError, parse_timespan

__all__ = [
    "CompileFailed",
    "QueryError",
    "QueryExecutionError",
    "QueryLimits",
    "QueryRejected",
    "QueryResourceLimit",
    "QueryResult",
    "QueryRunner",
    "QueryStats",
    "QueryTimeout",
    "TimeRange",
    "TimeRangeError",
    "parse_timespan",
]
