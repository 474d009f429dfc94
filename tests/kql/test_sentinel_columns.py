"""Queries written for Microsoft Sentinel's copies of the Device tables: TimeGenerated reads
Timestamp; TenantId, SourceSystem, Type and MachineGroup resolve too (constants: one tenant, no
workspace; Type is the table's name), without showing in `*`."""

from __future__ import annotations

from schema import default_catalog
from tests.kql.fixtures import assert_kql, assert_kql_error, run_kql


def test_sentinel_columns_resolve_on_device_tables() -> None:
    r = assert_kql(
        "DeviceProcessEvents | where ReportId == 1\n"
        "| project TenantId, SourceSystem, Type, MachineGroup",
        [("", "", "DeviceProcessEvents", "")],
        types=["string"] * 4,
    )
    assert r.names == ["TenantId", "SourceSystem", "Type", "MachineGroup"]
    assert_kql('DeviceNetworkEvents | where Type == "DeviceNetworkEvents" and isempty(TenantId) '
               '| summarize n = count() by Type | project Type', [("DeviceNetworkEvents",)])


def test_sentinel_columns_are_not_in_star_and_real_columns_win() -> None:
    r = run_kql("DeviceProcessEvents | take 1")
    assert not {"TenantId", "SourceSystem", "Type"} & set(r.names)
    assert r.names == default_catalog().tables["DeviceProcessEvents"].column_names
    # DeviceInfo has a MachineGroup column of its own: that one is read
    assert run_kql("DeviceInfo | project MachineGroup").types == ["string"]
    # a let of the same name wins over the constant
    assert_kql('let Type = "mine"; DeviceProcessEvents | where ReportId == 1 | project Type', [("mine",)])


def test_not_resolved_where_the_table_is_gone() -> None:
    assert_kql_error("DeviceProcessEvents | summarize count() by DeviceId | project Type", "unknown_column")
