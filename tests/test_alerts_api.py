"""The detections, alerts and incidents HTTP APIs against the real server on loopback: rules
CRUD with compile-on-save diagnostics, run-now, backtest, alert filters and triage, incidents,
and the error shape on every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify_helpers import LiveServer, live_server, settings_for

pytestmark = pytest.mark.slow

VOLUME = 'DeviceProcessEvents | where ProcessCommandLine contains "/Volume"'


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(minutes_ago: float, report_id: int, device: str, cmd: str) -> dict[str, Any]:
    return {
        "Timestamp": iso(datetime.now(UTC) - timedelta(minutes=minutes_ago)),
        "DeviceId": device,
        "DeviceName": f"{device}.corp",
        "ActionType": "ProcessCreated",
        "FileName": cmd.split()[0],
        "ProcessCommandLine": cmd,
        "ReportId": report_id,
    }


def error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["ok"] is False and body["error"] and body["errors"]
    for e in body["errors"]:
        assert isinstance(e["code"], str) and isinstance(e["message"], str)
    if code is not None:
        assert code in [e["code"] for e in body["errors"]], body
    return body


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data: Path = tmp_path_factory.mktemp("alerts-api")
    with live_server(settings_for(data, retention_days=30)) as s:
        yield s


@pytest.fixture(scope="module")
def seeded(srv: LiveServer) -> dict[str, Any]:
    """Two rules run once over events on two devices."""
    key = srv.key("ingest")
    rows = [
        event(50, 1, "mac-1", "cp a /Volumes/USB/a"),
        event(40, 2, "mac-1", "cp b /Volumes/USB/b"),
        event(30, 3, "pc-2", "copy c /Volumes/USB/c"),
        event(20, 4, "pc-2", "whoami"),
    ]
    with srv.client(key) as c:
        assert c.post("/api/ingest/DeviceProcessEvents", json=rows).status_code == 200
    with srv.client() as admin:
        usb = admin.post(
            "/api/detections/rules",
            json={"name": "usb", "query": VOLUME, "severity": "high", "frequency": "3h"},
        ).json()
        who = admin.post(
            "/api/detections/rules",
            json={
                "name": "whoami",
                "query": 'DeviceProcessEvents | where ProcessCommandLine == "whoami" | project Timestamp, DeviceId, DeviceName, ReportId',
                "severity": "low",
                "frequency": "24h",
            },
        ).json()
        for r in (usb, who):
            assert admin.post(f"/api/detections/rules/{r['id']}/run").json()["status"] == "completed"
    return {"usb": usb, "who": who}


def test_rule_crud_and_compile_on_save(srv: LiveServer) -> None:
    with srv.client() as admin:
        body = error(
            admin.post("/api/detections/rules", json={"name": "x", "query": "DeviceProcessEvents | project Timestamp, DeviceId"}),
            400,
            "missing_required_columns",
        )
        assert "ReportId" in body["error"]
        body = error(admin.post("/api/detections/rules", json={"name": "x", "query": "DeviceProcessEvents | where Nope == 1"}), 400)
        assert body["errors"][0].get("line") == 1 and body["errors"][0].get("column")
        error(admin.post("/api/detections/rules", json={"name": "x", "query": VOLUME, "frequency": "2h"}), 400, "invalid_request")
        error(admin.post("/api/detections/rules", json={"name": "x", "query": VOLUME, "severity": "critical"}), 400)
        error(admin.post("/api/detections/rules", json={"name": "x", "query": VOLUME, "actions": ["wipe"]}), 400)
        error(admin.post("/api/detections/rules", json={"name": "x", "query": VOLUME, "deviceGroups": [999]}), 400, "unknown_device_group")
        error(admin.post("/api/detections/rules", json={"name": "x", "query": VOLUME, "bogus": 1}), 400)

        r = admin.post(
            "/api/detections/rules",
            json={"name": "crud", "query": VOLUME, "frequency": "12H", "severity": "Medium", "actions": ["isolate"], "enabled": False},
        )
        assert r.status_code == 201, r.text
        rule = r.json()
        assert (rule["frequency"], rule["severity"], rule["alertTitle"], rule["enabled"]) == ("12h", "medium", "crud", False)
        error(admin.post("/api/detections/rules", json={"name": "crud", "query": VOLUME}), 409, "conflict")

        error(admin.patch(f"/api/detections/rules/{rule['id']}", json={"query": "DeviceProcessEvents | summarize count() by DeviceId"}), 400, "missing_required_columns")
        error(admin.patch(f"/api/detections/rules/{rule['id']}", json={"frequency": "continuous", "query": "DeviceProcessEvents | join (DeviceFileEvents) on DeviceId | project Timestamp, DeviceId, ReportId"}), 400, "continuous_unsupported")
        r = admin.patch(f"/api/detections/rules/{rule['id']}", json={"frequency": "continuous", "enabled": True})
        assert r.status_code == 200 and r.json()["frequency"] == "continuous" and r.json()["enabled"] is True
        assert rule["id"] in [x["id"] for x in admin.get("/api/detections/rules").json()["value"]]

        with srv.client(srv.key("query")) as analyst:
            error(analyst.post("/api/detections/rules", json={"name": "y", "query": VOLUME}), 403)
            assert analyst.get(f"/api/detections/rules/{rule['id']}").status_code == 200

        assert admin.delete(f"/api/detections/rules/{rule['id']}").status_code == 204
        error(admin.get(f"/api/detections/rules/{rule['id']}"), 404, "not_found")
        error(admin.post(f"/api/detections/rules/{rule['id']}/run"), 404)
        error(admin.delete(f"/api/detections/rules/{rule['id']}"), 404)


def test_alert_filters_and_shape(srv: LiveServer, seeded: dict[str, Any]) -> None:
    with srv.client(srv.key("query")) as c:
        every = c.get("/api/alerts").json()["value"]
        assert len(every) == 4
        assert {a["title"] for a in every} == {"usb", "whoami"}
        usb = c.get("/api/alerts", params={"ruleId": seeded["usb"]["id"]}).json()["value"]
        assert sorted(a["reportId"] for a in usb) == ["1", "2", "3"]
        assert [a["deviceId"] for a in c.get("/api/alerts", params={"device": "pc-2"}).json()["value"]] == ["pc-2", "pc-2"]
        assert len(c.get("/api/alerts", params={"device": "MAC-1.corp"}).json()["value"]) == 2
        assert len(c.get("/api/alerts", params={"severity": "high"}).json()["value"]) == 3
        assert len(c.get("/api/alerts", params={"minSeverity": "low"}).json()["value"]) == 4
        recent = iso(datetime.now(UTC) - timedelta(minutes=35))
        assert sorted(a["reportId"] for a in c.get("/api/alerts", params={"from": recent}).json()["value"]) == ["3", "4"]
        assert len(c.get("/api/alerts", params={"status": "New", "top": 2}).json()["value"]) == 2
        error(c.get("/api/alerts", params={"status": "open"}), 400, "invalid_request")
        error(c.get("/api/alerts", params={"from": "yesterday"}), 400)
        error(c.get("/api/alerts/qa-nope"), 404, "not_found")
        a = every[0]
        for field in ("id", "incidentId", "status", "severity", "title", "category", "detectorId", "createdDateTime",
                      "alertWebUrl", "ruleId", "ruleName", "deviceId", "deviceName", "timestamp", "createdAt",
                      "evidenceSummary", "entities"):
            assert field in a, field


def test_alert_triage(srv: LiveServer, seeded: dict[str, Any]) -> None:
    with srv.client(srv.key("query")) as c:
        a = c.get("/api/alerts", params={"ruleId": seeded["who"]["id"]}).json()["value"][0]
        r = c.patch(f"/api/alerts/{a['id']}", json={"Status": "inProgress"})
        error(r, 400)
        error(c.patch(f"/api/alerts/{a['id']}", json={"status": "closed"}), 400)
        error(c.patch(f"/api/alerts/{a['id']}", json={"classification": "falsePositive", "determination": "malware"}), 400)
        error(c.patch("/api/alerts/qa-nope", json={"status": "resolved"}), 404)
        r = c.patch(f"/api/alerts/{a['id']}", json={"status": "InProgress", "assignedTo": "bob@example.com", "comments": ["looking"]})
        assert r.status_code == 200, r.text
        r = c.patch(f"/api/alerts/{a['id']}", json={"classification": "TruePositive", "determination": "maliciousUserActivity", "comment": "confirmed"})
        got = r.json()
        assert (got["status"], got["assignedTo"], got["classification"], got["determination"]) == (
            "inProgress", "bob@example.com", "truePositive", "maliciousUserActivity")
        assert [x["comment"] for x in got["comments"]] == ["looking", "confirmed"]
        assert len(c.get("/api/alerts", params={"status": "inProgress"}).json()["value"]) == 1
        # A new classification must not leave the stored determination that no longer fits it.
        error(c.patch(f"/api/alerts/{a['id']}", json={"classification": "falsePositive"}), 400, "invalid_request")
        r = c.patch(f"/api/alerts/{a['id']}", json={"classification": "falsePositive", "determination": "clean"})
        assert (r.json()["classification"], r.json()["determination"]) == ("falsePositive", "clean")


def test_incidents_group_by_device_and_resolve_together(srv: LiveServer, seeded: dict[str, Any]) -> None:
    with srv.client(srv.key("query")) as c:
        incidents = c.get("/api/incidents").json()["value"]
        by_device = {tuple(d["deviceId"] for d in i["devices"]): i for i in incidents}
        assert set(by_device) == {("mac-1",), ("pc-2",)}
        assert by_device[("pc-2",)]["alertCount"] == 2  # a usb alert and a whoami alert, one device
        mac = by_device[("mac-1",)]
        assert mac["severity"] == "high"
        error(c.patch(f"/api/incidents/{mac['id']}", json={"status": "gone"}), 400)
        error(c.get("/api/incidents/999999"), 404)
        r = c.patch(f"/api/incidents/{mac['id']}", json={"status": "resolved", "classification": "falsePositive", "determination": "clean"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "resolved"
        assert {a["status"] for a in r.json()["alerts"]} == {"resolved"}
        assert len(c.get("/api/incidents", params={"status": "resolved"}).json()["value"]) == 1


def test_backtest_and_run_history_endpoints(srv: LiveServer, seeded: dict[str, Any]) -> None:
    rid = seeded["usb"]["id"]
    with srv.client(srv.key("query")) as c:
        bt = c.post(f"/api/detections/rules/{rid}/backtest", params={"days": 1}).json()
        assert bt["rowsMatched"] == 3 and bt["alertsWouldCreate"] == 3
        assert {d["deviceId"]: d["count"] for d in bt["matchesPerDevice"]} == {"mac-1": 2, "pc-2": 1}
        error(c.post(f"/api/detections/rules/{rid}/backtest", params={"days": 90}), 400, "out_of_range")
        error(c.post(f"/api/detections/rules/{rid}/backtest", params={"days": 0}), 400)
        runs = c.get(f"/api/detections/rules/{rid}/runs").json()["value"]
        assert runs[0]["status"] == "completed" and runs[0]["alertsCreated"] == 3
        for field in ("startedAt", "endedAt", "durationMs", "rowsMatched", "alertsCreated", "status", "error", "capped"):
            assert field in runs[0]
    with srv.client() as admin:
        alerts_before = len(admin.get("/api/alerts").json()["value"])
        admin.post(f"/api/detections/rules/{rid}/backtest", params={"days": 30})
        assert len(admin.get("/api/alerts").json()["value"]) == alerts_before
