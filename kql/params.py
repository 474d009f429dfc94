"""Query parameter values (``declare query_parameters``): read a request's value by its declared type.

Kusto's REST API sends every value as a string (``properties.Parameters``), read by the normal
parsing rules of the declared type: ``datetime(2024-01-01)`` or ``2024-01-01``, ``long(5)`` or
``5``, ``dynamic([1,2])`` or ``[1,2]``; a ``string`` value is the plain text itself (the documented
example sends ``"courtesyTitle": "Mr."``). azure-kusto-data's ``set_parameter`` puts the value
into the JSON as is (``json.dumps(..., default=str)``), so a Python int arrives as a JSON
number and a ``datetime``/``timedelta`` as its ``str()`` (``2024-01-01 00:00:00``,
``1 day, 2:00:00``); both are accepted. The native API sends JSON values: numbers, booleans,
null, and for ``dynamic`` any JSON value.

The result is a Python value for ``sqlbuild.literal``: a parameter only ever becomes a typed SQL
literal, never query text.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import timedelta
from typing import Any

from kql.literals import parse_datetime, parse_timespan
from kql.typed import normalize_type

# Kusto's scalar types a query parameter may have (tabular parameters do not exist)
PARAM_TYPES = ("string", "guid", "long", "int", "real", "decimal", "bool", "datetime", "timespan", "dynamic")

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class BadValue(ValueError):
    """The value does not read as the declared type; the message says why (no parameter name)."""


def _unwrap(text: str, names: tuple[str, ...]) -> str:
    """`long(5)` -> `5`: the KQL literal form around a value, if present."""
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z_0-9]*)\s*\((.*)\)\s*", text, re.S)
    if m and normalize_type(m.group(1)) in names:
        return m.group(2).strip()
    return text.strip()


def _is_null(text: str) -> bool:
    return text.strip() == "null"


_PY_TIMEDELTA = re.compile(r"(-?\d+) days?, (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _timespan(text: str) -> timedelta:
    m = _PY_TIMEDELTA.fullmatch(text)
    if m:  # str(timedelta) with days, as the Python client serialises one
        return timedelta(days=int(m.group(1)), hours=int(m.group(2)), minutes=int(m.group(3)),
                         seconds=float(m.group(4)))
    td = parse_timespan(text)
    if td is None:
        raise BadValue(f"{text!r} is not a timespan (such as 1h, 30m, 1.02:03:04 or time(1d))")
    return td


def read_value(kql_type: str, value: Any) -> Any:
    """The Python value of ``value`` as ``kql_type`` (a normalised scalar type name), or raise
    ``BadValue``. ``None`` (JSON null, or the text ``null``/``type(null)``) is a typed null."""
    t = kql_type
    if value is None:
        return None
    if isinstance(value, str):
        return _read_text(t, value)
    if t == "dynamic":
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise BadValue("the value is not JSON") from None
        return value
    if isinstance(value, bool):
        if t == "bool":
            return value
        raise BadValue(f"a boolean is not a {t}")
    if isinstance(value, int):
        if t in _INT_RANGE:
            return _in_range(t, value)
        if t in ("real", "decimal"):
            return float(value)
        raise BadValue(f"a number is not a {t}; send it as a string")
    if isinstance(value, float):
        if t in ("real", "decimal"):
            return value
        if t in _INT_RANGE and value.is_integer():
            return _in_range(t, int(value))
        raise BadValue(f"{value!r} is not a {t}")
    raise BadValue(f"a JSON {type(value).__name__} is not a {t}")


def _in_range(t: str, v: int) -> int:
    lo, hi = _INT_RANGE[t]
    if not lo <= v <= hi:
        raise BadValue(f"{v} is out of range for {t}")
    return v


def _read_text(t: str, text: str) -> Any:
    if t == "string":
        return text  # plain text: the value itself, nothing is parsed out of it
    inner = _unwrap(text, (t,) + (("timespan",) if t == "timespan" else ()))
    if _is_null(inner):
        return None
    if t == "guid":
        try:
            return str(uuid.UUID(inner))
        except ValueError:
            raise BadValue(f"{text!r} is not a guid") from None
    if t in _INT_RANGE:
        try:
            return _in_range(t, int(inner, 0) if inner.lower().startswith(("0x", "-0x")) else int(inner))
        except ValueError:
            raise BadValue(f"{text!r} is not a {t}") from None
    if t in ("real", "decimal"):
        special = {"nan": math.nan, "+inf": math.inf, "inf": math.inf, "-inf": -math.inf}
        if inner.lower() in special:
            return special[inner.lower()]
        try:
            return float(inner)
        except ValueError:
            raise BadValue(f"{text!r} is not a {t}") from None
    if t == "bool":
        v = {"true": True, "false": False, "1": True, "0": False}.get(inner.lower())
        if v is None:
            raise BadValue(f"{text!r} is not a bool (true or false)")
        return v
    if t == "datetime":
        dt = parse_datetime(inner)
        if dt is None:
            raise BadValue(f"{text!r} is not a datetime (such as 2024-01-31T12:00:00Z or datetime(2024-01-31))")
        return dt
    if t == "timespan":
        return _timespan(inner)
    if t == "dynamic":
        try:
            return json.loads(inner)
        except ValueError as e:
            raise BadValue(f"{text!r} is not a dynamic value (JSON such as [1, 2] or {{\"a\": 1}}): {e}") from None
    raise BadValue(f"type {t} cannot be a query parameter")

