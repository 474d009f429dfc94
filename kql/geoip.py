"""geo_info_from_ip_address() over a MaxMind-format database the operator supplies.

Kusto answers from MaxMind's GeoLite2-City data; Quarry ships no such data (its licence forbids
redistribution), so the operator points ``QUARRY_GEOIP_DB`` at a GeoLite2-City / GeoIP2-City
``.mmdb`` file. Without one the function keeps its ``unsupported`` diagnostic.

The lookup runs inside DuckDB as a scalar function ``quarry_geo_info(ip VARCHAR) -> VARCHAR``
(JSON text) registered on each database that runs compiled queries (``register``); the compiler
emits a call to it only when a database is configured (``configured()``).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import maxminddb
from duckdb.func import FunctionNullHandling
from sqlglot import exp

from kql import sqlbuild as sb
from kql.context import Ctx
from kql.nodes import Call
from kql.typed import V, as_string

SQL_FUNCTION = "quarry_geo_info"

_lock = threading.Lock()
_reader: Any = None
_path: Path | None = None


class GeoIPError(ValueError):
    """The configured file is not a readable MaxMind database."""


def configure(path: Path | str | None) -> None:
    """Open ``path`` (a MaxMind DB) for lookups, or forget the database when None."""
    global _reader, _path
    with _lock:
        if _reader is not None:
            _reader.close()
        _reader, _path = None, None
        _lookup.cache_clear()
        if path is None:
            return
        try:
            _reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            raise GeoIPError(f"QUARRY_GEOIP_DB={path}: not a readable MaxMind database: {e}") from e
        _path = Path(path)


def configured() -> bool:
    return _reader is not None


def _name(record: dict[str, Any], key: str) -> str | None:
    names = (record.get(key) or {}).get("names") or {}
    value = names.get("en")
    return str(value) if value is not None else None


@lru_cache(maxsize=65_536)
def _lookup(ip: str) -> str | None:
    reader = _reader
    if reader is None:
        return None
    try:
        ipaddress.ip_address(ip)
        record = reader.get(ip)
    except ValueError:
        return None  # not an address: Kusto gives an empty result
    if not isinstance(record, dict):
        return None
    subdivisions = record.get("subdivisions") or [{}]
    location = record.get("location") or {}
    info = {
        "country": _name(record, "country"),
        "state": _name({"subdivision": subdivisions[0]}, "subdivision"),
        "city": _name(record, "city"),
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
    }
    return json.dumps({k: v for k, v in info.items() if v is not None})


def lookup(ip: str | None) -> str | None:
    """The geo information of ``ip`` as Kusto's bag (country, state, city, latitude,
    longitude; keys the database lacks are left out), JSON text; None if unknown."""
    if ip is None:
        return None
    return _lookup(ip.strip())


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``quarry_geo_info`` callable on ``con``'s database (before its configuration is
    locked)."""
    con.create_function(SQL_FUNCTION, lookup, ["VARCHAR"], "VARCHAR",
                        null_handling=FunctionNullHandling.SPECIAL, side_effects=False)


def build(ctx: Ctx, a: list[V], node: Call) -> exp.Expr:
    """The compiler's builder for geo_info_from_ip_address(ip) -> dynamic."""
    if not configured():
        ctx.error("unsupported", "geo_info_from_ip_address() needs a geo-IP database, which Quarry "
                  "does not ship", node.name_span,
                  ["an operator can set QUARRY_GEOIP_DB to a MaxMind GeoLite2-City .mmdb file"])
        return sb.null("dynamic")
    return sb.cast(sb.fn(SQL_FUNCTION, as_string(a[0])), "dynamic")
