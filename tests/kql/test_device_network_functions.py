"""`AssignedIPAddresses()` and `invoke DeviceFromIP()` (Defender docs, "AssignedIPAddresses()
function" and "DeviceFromIP() function"), answered from this Quarry's DeviceNetworkInfo reports.

Rows below: device d1 (ws-01) reported adapter eth0 with 10.0.0.5 on day 1 and 10.0.0.9 on day 3,
and adapter wlan0 with 192.168.1.20 on day 2; device d2 (ws-02) reported 10.0.0.5 on day 4 (it got
d1's old address). Expected answers are read off these rows with the docs in hand.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from kql import CompileOptions, compile_kql
from kql.testing import fixture_connection
from schema import default_catalog

CATALOG = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)
D1 = dt.datetime(2024, 5, 1, 8, 0, 0)


def _day(n: int) -> dt.datetime:
    return D1 + dt.timedelta(days=n - 1)


def _ips(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"IPAddress": ip, "SubnetPrefix": 24, "AddressType": kind} for ip, kind in pairs])


NETS = json.dumps([{"Name": "contoso.com", "Category": "Domain", "IsConnectedToInternet": True}])
ROWS: dict[str, list[dict[str, Any]]] = {
    "DeviceNetworkInfo": [
        {"Timestamp": _day(1), "DeviceId": "d1", "DeviceName": "ws-01.contoso.com", "NetworkAdapterName": "eth0",
         "NetworkAdapterType": "Ethernet", "ConnectedNetworks": NETS, "IPAddresses": _ips(("10.0.0.5", "Private")),
         "ReportId": 1},
        {"Timestamp": _day(3), "DeviceId": "d1", "DeviceName": "ws-01.contoso.com", "NetworkAdapterName": "eth0",
         "NetworkAdapterType": "Ethernet", "ConnectedNetworks": NETS,
         "IPAddresses": _ips(("10.0.0.9", "Private"), ("fe80::1", "LinkLocal")), "ReportId": 2},
        {"Timestamp": _day(2), "DeviceId": "d1", "DeviceName": "ws-01.contoso.com", "NetworkAdapterName": "wlan0",
         "NetworkAdapterType": "Wireless80211", "ConnectedNetworks": "[]",
         "IPAddresses": _ips(("192.168.1.20", "Private")), "ReportId": 3},
        {"Timestamp": _day(4), "DeviceId": "d2", "DeviceName": "ws-02.contoso.com", "NetworkAdapterName": "eth0",
         "NetworkAdapterType": "Ethernet", "ConnectedNetworks": NETS, "IPAddresses": _ips(("10.0.0.5", "Private")),
         "ReportId": 4},
    ],
}


@pytest.fixture(scope="module")
def con() -> Any:
    c = fixture_connection(ROWS, CATALOG)
    yield c
    c.close()


def run(con: Any, kql: str) -> tuple[Any, list[tuple[Any, ...]]]:
    compiled = compile_kql(kql, CATALOG, CompileOptions(now=NOW))
    assert compiled.ok, [(d.code, d.message) for d in compiled.diagnostics]
    assert compiled.sql is not None
    rows = con.cursor().execute(compiled.sql).fetchall()
    return compiled, sorted(rows, key=repr)


def test_assigned_ip_addresses_latest_and_at_a_time(con: Any) -> None:
    compiled, rows = run(con, 'AssignedIPAddresses("ws-01.contoso.com")')
    assert compiled.columns[:5] == [("Timestamp", "datetime"), ("IPAddress", "string"), ("IPType", "string"),
                                    ("NetworkAdapterType", "string"), ("ConnectedNetworks", "string")]
    assert [c for c, _ in compiled.columns][5:] == ["DeviceId", "DeviceName"]
    assert any(d.code == "enrichment" and d.severity == "warning" for d in compiled.diagnostics)
    # now: eth0's latest report (day 3: two addresses) and wlan0's (day 2)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (_day(2), "192.168.1.20", "Private", "Wireless80211"),
        (_day(3), "10.0.0.9", "Private", "Ethernet"),
        (_day(3), "fe80::1", "LinkLocal", "Ethernet"),
    ]
    assert json.loads(rows[1][4])[0]["Name"] == "contoso.com"
    # on day 1 at noon (by DeviceId): only eth0's first address; wlan0 had not reported yet
    _, rows = run(con, "AssignedIPAddresses('d1', datetime(2024-05-01 12:00))")
    assert [(r[1], r[5], r[6]) for r in rows] == [("10.0.0.5", "d1", "ws-01.contoso.com")]
    # the docs' example shape: 24 hours before a time, then joined with other tables
    _, rows = run(con, "let Date = datetime(2024-05-03 12:00); let DeviceName = 'd2';\n"
                       "AssignedIPAddresses(DeviceName, Date) | project DeviceName, IPAddress, AssignedTime = Timestamp")
    assert rows == []  # d2 first reported on day 4


def test_device_from_ip_per_row_time_and_default_now(con: Any) -> None:
    q = ("datatable(IP:string, Timestamp:datetime, Note:string) [\n"
         '"10.0.0.5", datetime(2024-05-02 00:00), "d1 then",\n'
         '"10.0.0.5", datetime(2024-05-10 00:00), "d2 now",\n'
         '"10.0.0.5", datetime(2024-05-03 12:00), "nobody between",\n'
         '"10.9.9.9", datetime(2024-05-10 00:00), "unknown address"]\n'
         "| invoke DeviceFromIP(IP, Timestamp)")
    compiled, rows = run(con, q)
    assert compiled.columns == [("IP", "string"), ("Timestamp", "datetime"), ("Note", "string"),
                                ("DeviceId", "string")]
    assert sorted((r[2], r[3]) for r in rows) == [("d1 then", "d1"), ("d2 now", "d2"),
                                            ("nobody between", ""), ("unknown address", "")]
    # the docs' example: the IP column, the latest records
    _, rows = run(con, 'datatable(LocalIP:string) ["10.0.0.9", "192.168.1.20", "10.0.0.5"]\n'
                       "| project IP = LocalIP | invoke DeviceFromIP()")
    assert rows == [("10.0.0.5", "d2"), ("10.0.0.9", "d1"), ("192.168.1.20", "d1")]


def test_bad_arguments_are_positioned_errors() -> None:
    for q, code in [("AssignedIPAddresses()", "wrong_arguments"),
                    ("AssignedIPAddresses('d1', 5)", "type_mismatch"),
                    ("datatable(x:string) ['a'] | invoke DeviceFromIP()", "unknown_column"),
                    ("datatable(IP:long) [1] | invoke DeviceFromIP()", "type_mismatch")]:
        compiled = compile_kql(q, CATALOG, CompileOptions(now=NOW))
        assert not compiled.ok and any(d.code == code for d in compiled.diagnostics), (q, compiled.diagnostics)
