"""Test support: an in-memory DuckDB shaped like ``Storage.connect()`` and a compile-and-run helper.

Every catalog table becomes a view named as the table with the schema columns in order, then
``_ingestion_time``, ``_extra`` and ``date`` (the UTC day of Timestamp, or of ingestion time), as
docs/internals.md states for storage. Rows are given as dicts; missing columns are NULL.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from kql.api import Compiled, CompileOptions, compile_kql
from kql.sqlbuild import SQL_TYPES
from schema.catalog import DATE_PARTITION, EXTRA_COLUMN, INGESTION_TIME_COLUMN, Catalog


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fixture_connection(
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    catalog: Catalog,
    ingestion_time: dt.datetime = dt.datetime(2024, 5, 15, 12, 0, 0),
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    for table in catalog.tables.values():
        cols = [(c.name, SQL_TYPES[c.type.name]) for c in table.columns]
        cols += [(INGESTION_TIME_COLUMN, "TIMESTAMP"), (EXTRA_COLUMN, "JSON"), (DATE_PARTITION, "DATE")]
        store = _qi("_rows_" + table.name)
        con.execute(f"CREATE TABLE {store} ({', '.join(f'{_qi(c)} {t}' for c, t in cols)})")
        con.execute(f"CREATE VIEW {_qi(table.name)} AS SELECT * FROM {store}")
        data = rows.get(table.name, ())
        if not data:
            continue
        names = [c for c, _ in cols]
        values = []
        for r in data:
            unknown = set(r) - set(names)
            if unknown:
                raise KeyError(f"{table.name}: no such columns {sorted(unknown)}")
            row = dict(r)
            row.setdefault(INGESTION_TIME_COLUMN, ingestion_time)
            when = row.get("Timestamp") if table.has_timestamp else row[INGESTION_TIME_COLUMN]
            row.setdefault(DATE_PARTITION, when.date() if isinstance(when, dt.datetime) else None)
            for c, t in cols:
                if t == "JSON" and row.get(c) is not None and not isinstance(row[c], str):
                    row[c] = json.dumps(row[c])
            values.append([row.get(c) for c in names])
        placeholders = ", ".join("?" for _ in names)
        con.executemany(f"INSERT INTO {store} VALUES ({placeholders})", values)
    return con


@dataclass
class Result:
    compiled: Compiled
    rows: list[tuple[Any, ...]]

    @property
    def columns(self) -> list[str]:
        return [c for c, _ in self.compiled.columns]


def run_kql(con: duckdb.DuckDBPyConnection, kql: str, catalog: Catalog, now: dt.datetime) -> Result:
    def probe(sql: str) -> list[tuple[Any, ...]]:
        # evaluate bag_unpack/pivot learn their columns on the same data, as the runner does
        return con.cursor().execute(sql).fetchall()

    compiled = compile_kql(kql, catalog, CompileOptions(now=now, probe=probe))
    if not compiled.ok or compiled.sql is None:
        msgs = "; ".join(f"{d.code} at {d.line}:{d.column}: {d.message}" for d in compiled.diagnostics)
        raise AssertionError(f"did not compile: {kql}\n{msgs}")
    rows = con.cursor().execute(compiled.sql).fetchall()
    return Result(compiled, rows)


# The two documented examples of geo_info_from_ip_address() (Kusto docs): network, record.
GEOIP_EXAMPLES: dict[str, dict[str, Any]] = {
    "20.53.203.0/24": {"country": "Australia", "state": "New South Wales", "city": "Sydney",
                       "latitude": -33.8715, "longitude": 151.2006},
    "2a03:2880:f12c::/48": {"country": "United States", "state": "Florida", "city": "Boca Raton",
                            "latitude": 26.3594, "longitude": -80.0771},
}


def write_geoip_db(path: Any, networks: Mapping[str, Mapping[str, Any]] = GEOIP_EXAMPLES) -> None:
    """Write a tiny MaxMind City database (the GeoLite2-City record layout) with ``networks``
    (CIDR -> country, state, city, latitude, longitude), for tests and benchmarks: the real
    GeoLite2 data may not be redistributed. Needs the dev extra's ``mmdb-writer``."""
    from mmdb_writer import MmdbF64, MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for cidr, info in networks.items():
        writer.insert_network(IPSet([cidr]), {
            "country": {"names": {"en": info["country"]}},
            "subdivisions": [{"names": {"en": info["state"]}}],
            "city": {"names": {"en": info["city"]}},
            "location": {"latitude": MmdbF64(info["latitude"]), "longitude": MmdbF64(info["longitude"])},
        })
    writer.to_db_file(str(path))
