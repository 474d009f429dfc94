"""The fixture database itself has storage's layout (docs/internals.md, "Storage")."""

from __future__ import annotations

from schema import default_catalog
from tests.kql.fixtures import FIXTURE_ROWS, fixture_connection


def test_every_catalog_table_has_schema_then_system_then_partition_columns() -> None:
    con = fixture_connection()
    for table in default_catalog().tables.values():
        cols = [r[0] for r in con.execute(f'DESCRIBE "{table.name}"').fetchall()]
        assert cols == [*table.column_names, "_ingestion_time", "_extra", "date"], table.name


def test_fixture_rows_are_loaded_with_date_and_ingestion_time() -> None:
    con = fixture_connection()
    for name, rows in FIXTURE_ROWS.items():
        got = con.execute(
            f'SELECT count(*), count(*) FILTER (WHERE "date" = CAST("Timestamp" AS DATE)),'
            f' count(*) FILTER (WHERE _ingestion_time > "Timestamp") FROM "{name}"'
        ).fetchone()
        assert got == (len(rows), len(rows), len(rows)), name
