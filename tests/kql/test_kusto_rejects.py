"""Queries Kusto would refuse but Quarry runs carry a `kusto_rejects` warning at the construct
(each case checked against Kusto.Language through kusto-check)."""

from __future__ import annotations

import pytest

from kql import CompileOptions, compile_kql
from schema import default_catalog


@pytest.mark.parametrize(("query", "column"), [
    ("DeviceEvents | where AdditionalFields.Command == 'x'", 22),  # member access on a string
    ("DeviceEvents | where AdditionalFields['Command'] == 'x'", 22),
    ("DeviceNetworkEvents | where RemotePort in~ (80, 443)", 29),  # in~ on a number
    ("DeviceEvents | summarize count(RemoteUrl)", 26),  # count() of a non-bool
    ("let a = 1; let a = 2; DeviceEvents | take a", 16),  # a name declared twice
])
def test_warned(query: str, column: int) -> None:
    compiled = compile_kql(query, default_catalog(), CompileOptions())
    assert compiled.ok, compiled.diagnostics
    warned = [d for d in compiled.diagnostics if d.code == "kusto_rejects"]
    assert warned and warned[0].severity == "warning" and warned[0].column == column, compiled.diagnostics


@pytest.mark.parametrize("query", [
    "DeviceEvents | where parse_json(AdditionalFields).Command == 'x'",
    "DeviceNetworkEvents | where RemoteUrl in~ ('a.com')",
    "DeviceEvents | summarize count(), countif(isnotempty(RemoteUrl))",
])
def test_not_warned(query: str) -> None:
    compiled = compile_kql(query, default_catalog(), CompileOptions())
    assert compiled.ok and not [d for d in compiled.diagnostics if d.code == "kusto_rejects"]
