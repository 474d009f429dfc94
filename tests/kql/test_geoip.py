"""geo_info_from_ip_address() with an operator-supplied MaxMind database (QUARRY_GEOIP_DB): the
Kusto documentation's two examples, over a tiny database the test writes in MaxMind's format,
compiled and run on DuckDB and end to end through the server; without a database, today's
`unsupported` diagnostic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from kql import CompileOptions, compile_kql, geoip
from kql.testing import write_geoip_db
from schema import default_catalog
from tests.kql.fixtures import assert_kql_error
from tests.test_api_support import live_server

EXAMPLES = [
    ("20.53.203.50", {"country": "Australia", "state": "New South Wales", "city": "Sydney",
                      "latitude": -33.8715, "longitude": 151.2006}),
    ("2a03:2880:f12c:83:face:b00c::25de", {"country": "United States", "state": "Florida",
                                           "city": "Boca Raton", "latitude": 26.3594,
                                           "longitude": -80.0771}),
]


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    write_geoip_db(path)
    return path


@pytest.fixture
def configured(db_path: Path) -> Iterator[Path]:
    geoip.configure(db_path)
    try:
        yield db_path
    finally:
        geoip.configure(None)


def run(query: str) -> list[tuple[object, ...]]:
    compiled = compile_kql(query, default_catalog(), CompileOptions())
    assert compiled.ok, compiled.diagnostics
    con = duckdb.connect()
    geoip.register(con)
    return con.execute(compiled.sql).fetchall()


@pytest.mark.parametrize(("ip", "want"), EXAMPLES)
def test_documented_examples(configured: Path, ip: str, want: dict[str, object]) -> None:
    [(value,)] = run(f"print ip_location = geo_info_from_ip_address('{ip}')")
    assert json.loads(value) == want


def test_fields_unknown_and_invalid_addresses(configured: Path) -> None:
    rows = run("datatable(ip:string)['20.53.203.1', '1.1.1.1', 'not an ip', '']\n"
               "| extend g = geo_info_from_ip_address(ip)\n"
               "| project ip, country = tostring(g.country), lat = toreal(g.latitude)")
    assert sorted(rows, key=str) == sorted([("20.53.203.1", "Australia", -33.8715), ("1.1.1.1", "", None),
                                            ("not an ip", "", None), ("", "", None)], key=str)


def test_without_a_database_the_function_is_refused() -> None:
    geoip.configure(None)
    d = assert_kql_error("print g = geo_info_from_ip_address('20.53.203.50')", "unsupported", 1, 11)
    assert "geo-IP database" in d.message and "QUARRY_GEOIP_DB" in d.hints[0]


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "city.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(geoip.GeoIPError, match="not a readable MaxMind database"):
        geoip.configure(bad)
    assert not geoip.configured()


@pytest.mark.slow
def test_server_reads_the_database_from_settings(db_path: Path, tmp_path: Path) -> None:
    try:
        with live_server(tmp_path, geoip_db=db_path) as srv, srv.client() as c:
            r = c.post("/api/query", json={"query": "print g = geo_info_from_ip_address('20.53.203.50')"})
            assert r.status_code == 200, r.text
            [[value]] = [list(row.values()) if isinstance(row, dict) else row for row in r.json()["rows"]]
            assert (value if isinstance(value, dict) else json.loads(value)) == EXAMPLES[0][1]
    finally:
        geoip.configure(None)
