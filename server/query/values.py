"""Rendering DuckDB result values as the hunting APIs send them.

* datetime: ISO 8601 UTC with 7 fractional digits and ``Z``, as Defender and Kusto send them
  ("2020-02-05T01:10:26.2648757Z"); storage keeps microseconds, so the 7th digit is always 0.
* timespan: Kusto's rendering, the .NET "c" format ``[-][d.]hh:mm:ss[.fffffff]``
  ("1.02:03:04.5000000"); the fraction is left out when it is zero.
* dynamic: the JSON value itself (parsed), never a string holding JSON.
* guid, decimal: strings in Kusto's wire format; Defender and Graph send guids as strings too.
* numbers as JSON numbers; NaN and infinities have no JSON form and become null.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

Converter = Callable[[Any], Any]

_TICKS_PER_SECOND = 10_000_000


def render_datetime(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        # not strftime: its %Y drops the zeros of years before 1000 (DateTime.MinValue is 0001)
        return f"{value.isoformat(timespec='microseconds')}0Z"
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00.0000000Z"
    return str(value)


def render_timespan(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, dt.timedelta):
        return str(value)
    # Integer arithmetic in microseconds: float seconds would lose the last digits of long spans.
    total_us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    seconds, us = divmod(total_us, 1_000_000)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{sign}{days}." if days else sign
    text += f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if us:
        text += f".{us * 10:07d}"
    return text


def render_dynamic(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            # A dynamic column that holds plain text (not JSON) is a string value.
            return value
    return _jsonable(value)


def _jsonable(value: Any) -> Any:
    """Nested values DuckDB returns for LIST/STRUCT/MAP columns, made JSON-safe."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return render_datetime(value)
    if isinstance(value, dt.timedelta):
        return render_timespan(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def render_real(value: Any) -> Any:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def render_long(value: Any) -> Any:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return int(value)
    return value


def render_string(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return render_datetime(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def render_decimal_string(value: Any) -> Any:
    """Kusto sends decimals as strings so no precision is lost in JSON."""
    if value is None:
        return None
    return str(value)


def render_bool(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    return bool(value)


_JSON_CONVERTERS: dict[str, Converter] = {
    "datetime": render_datetime,
    "timespan": render_timespan,
    "dynamic": render_dynamic,
    "real": render_real,
    "long": render_long,
    "int": render_long,
    "string": render_string,
    "guid": render_string,
    "decimal": render_real,
    "bool": render_bool,
}


def converter_for(kql_type: str, *, kusto_wire: bool = False) -> Converter:
    """The function turning a DuckDB value of a column of ``kql_type`` into its JSON value.

    ``kusto_wire``: Kusto's REST API sends decimals as strings.
    """
    if kusto_wire and kql_type == "decimal":
        return render_decimal_string
    return _JSON_CONVERTERS.get(kql_type, _jsonable)


def row_converter(kql_types: Sequence[str], *, kusto_wire: bool = False) -> Callable[[Sequence[Any]], list[Any]]:
    convs = [converter_for(t, kusto_wire=kusto_wire) for t in kql_types]

    def convert(row: Sequence[Any]) -> list[Any]:
        return [c(v) for c, v in zip(convs, row, strict=True)]

    return convert


def dotnet_type(kql_type: str) -> str:
    """The .NET type name Defender's API reports for a KQL type (schema.types is the one map)."""
    from schema.types import kql_type as lookup

    try:
        return lookup(kql_type).dotnet
    except KeyError:
        return "Object"


def kusto_type(kql_type: str) -> str:
    """KQL type name as Kusto's v2 frames send it (lower case; the client's pandas conversion
    only knows these)."""
    from schema.types import kql_type as lookup

    try:
        return lookup(kql_type).name
    except KeyError:
        return "dynamic"
