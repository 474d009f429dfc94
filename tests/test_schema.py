"""The replicated schema matches its source and the type map covers every type used."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from schema import default_catalog, kql_type
from schema.generate import DEFAULT_SOURCE, OUTPUT, generate


@pytest.mark.skipif(not DEFAULT_SOURCE.exists(), reason="shared/reference not beside the repo")
def test_generated_module_is_up_to_date() -> None:
    assert OUTPUT.read_text(encoding="utf-8") == generate(DEFAULT_SOURCE), (
        "schema/tables.py is stale: run python -m schema.generate"
    )


@pytest.mark.skipif(not DEFAULT_SOURCE.exists(), reason="shared/reference not beside the repo")
def test_catalog_has_every_table_and_column_in_order() -> None:
    source = json.loads(DEFAULT_SOURCE.read_text(encoding="utf-8"))["tables"]
    catalog = default_catalog()
    assert set(catalog.tables) == set(source)
    for name, spec in source.items():
        table = catalog.table(name)
        assert table is not None
        assert [(c.name, c.type.name) for c in table.columns] == [
            (c["name"], c["type"]) for c in spec["columns"]
        ]


def test_type_map() -> None:
    assert kql_type("datetime").arrow == pa.timestamp("us")
    assert kql_type("long").arrow == pa.int64()
    assert kql_type("int").arrow == pa.int32()
    assert kql_type("double").name == "real"
    assert kql_type("boolean").dotnet == "Boolean"
    assert kql_type("dynamic").duckdb == "JSON"
    with pytest.raises(KeyError):
        kql_type("nosuchtype")


def test_event_tables_and_suggestions() -> None:
    catalog = default_catalog()
    dpe = catalog.table("DeviceProcessEvents")
    assert dpe is not None and dpe.is_event_table
    tvm = catalog.table("DeviceTvmSoftwareInventory")
    assert tvm is not None and not tvm.is_event_table
    assert catalog.suggest("DeviceProcesEvents")[0] == "DeviceProcessEvents"
