"""Device groups and the device action queue over HTTP against the real server: request,
agent poll (ingest scope), result, audit log; group CRUD and membership from DeviceInfo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.devices.groups import DeviceFacts, DeviceGroup, device_in_groups
from server.metadata import MetadataDB
from tests.notify_helpers import LiveServer, device_info, live_server, settings_for


def _ingest(s: LiveServer, rows: list[dict[str, Any]]) -> None:
    key = s.key("ingest")
    r = httpx.post(f"{s.url}/api/ingest/DeviceInfo", json=rows, headers={"authorization": f"Bearer {key}"})
    assert r.status_code < 300, r.text


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with live_server(settings_for(tmp_path)) as s:
        _ingest(s, [device_info("dev-mac-1", "mac-alice.corp", "macOS"), device_info("dev-win-1", "win-bob", "Windows11")])
        yield s


def test_action_lifecycle_and_audit(server: LiveServer) -> None:
    agent_key = server.key("ingest", "mac agent")
    with server.client() as admin, server.client(agent_key) as agent:
        r = admin.post("/api/devices/dev-mac-1/actions", json={"type": "isolate", "comment": "USB exfiltration"})
        assert r.status_code == 201, r.text
        action = r.json()
        assert action["status"] == "Pending" and action["machineId"] == "dev-mac-1" and action["type"] == "isolate"
        assert "admin key" in action["requestor"]
        # the same action again while open: merged, not queued twice
        again = admin.post("/api/devices/dev-mac-1/actions", json={"type": "isolate", "comment": "again"})
        assert again.status_code == 200 and again.json()["id"] == action["id"] and again.json()["merged"] is True
        scan = admin.post("/api/devices/dev-mac-1/actions", json={"type": "runAntivirusScan"}).json()

        pending = agent.get("/api/devices/dev-mac-1/actions/pending").json()["value"]
        assert [p["id"] for p in pending] == [action["id"], scan["id"]]
        assert {p["status"] for p in pending} == {"InProgress"}
        # at-least-once: still handed out until a result arrives
        assert len(agent.get("/api/devices/dev-mac-1/actions/pending").json()["value"]) == 2
        assert agent.get("/api/devices/dev-win-1/actions/pending").json()["value"] == []

        done = agent.post(
            f"/api/devices/dev-mac-1/actions/{action['id']}/result",
            json={"status": "Succeeded", "comment": "network isolated", "details": {"interfaces": 2}},
        )
        assert done.status_code == 200 and done.json()["status"] == "Succeeded"
        assert done.json()["resultDetails"] == {"interfaces": 2}
        late = agent.post(f"/api/devices/dev-mac-1/actions/{action['id']}/result", json={"status": "Failed"})
        assert late.status_code == 409 and late.json()["errors"][0]["code"] == "conflict"
        wrong_device = agent.post(f"/api/devices/dev-win-1/actions/{scan['id']}/result", json={"status": "Failed"})
        assert wrong_device.status_code == 404
        bad = agent.post(f"/api/devices/dev-mac-1/actions/{scan['id']}/result", json={"status": "Done"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "status"
        assert [p["id"] for p in agent.get("/api/devices/dev-mac-1/actions/pending").json()["value"]] == [scan["id"]]
        cancelled = admin.post(f"/api/devices/dev-mac-1/actions/{scan['id']}/cancel", json={"comment": "not needed"})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "Cancelled"
        assert agent.get("/api/devices/dev-mac-1/actions/pending").json()["value"] == []

        audit = admin.get("/api/deviceactions/audit", params={"deviceId": "dev-mac-1"}).json()["value"]
        events = [(e["actionId"], e["event"]) for e in audit]
        assert events == [
            (action["id"], "requested"),
            (action["id"], "merged"),
            (scan["id"], "requested"),
            (action["id"], "delivered"),
            (scan["id"], "delivered"),
            (action["id"], "result"),
            (action["id"], "result_rejected"),
            (scan["id"], "cancelled"),
        ]
        assert "mac agent" in audit[3]["actor"]
        assert audit[5]["detail"]["comment"] == "network isolated"
        per_device = admin.get("/api/devices/dev-mac-1/actions/audit").json()["value"]
        assert len(per_device) == len(audit)


def test_action_request_errors_and_scopes(server: LiveServer) -> None:
    query_key = server.key("query")
    with server.client() as admin, server.client(query_key) as q:
        r = admin.post("/api/devices/dev-mac-1/actions", json={"type": "wipe"})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "type"
        assert "isolate" in r.json()["error"]
        r = admin.post("/api/devices/no-such-device/actions", json={"type": "isolate"})
        assert r.status_code == 404 and "DeviceInfo" in r.json()["error"]
        r = admin.post("/api/devices/dev-mac-1/actions", json={"type": "isolate", "extra": 1})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "extra"
        r = admin.post("/api/devices/dev-mac-1/actions", content=b"[1,2]", headers={"content-type": "application/json"})
        assert r.status_code == 400
        # agents poll with ingest keys; a query key may neither poll nor queue
        assert q.get("/api/devices/dev-mac-1/actions/pending").status_code == 403
        assert q.post("/api/devices/dev-mac-1/actions", json={"type": "isolate"}).status_code == 403
        assert httpx.get(f"{server.url}/api/devices/dev-mac-1/actions/pending").status_code == 401


def test_rule_action_interface_for_detections(server: LiveServer) -> None:
    from server.devices.actions import queue_action

    md = server.app.state.metadata
    a = queue_action(md, "dev-win-1", "collectInvestigationPackage", "rule:USB copy", "raised by rule 7", rule_id=7)
    assert a["status"] == "Pending" and a["ruleId"] == "7" and a["merged"] is False
    b = queue_action(md, "dev-win-1", "collectInvestigationPackage", "rule:USB copy", "second alert", rule_id=7)
    assert b["id"] == a["id"] and b["merged"] is True
    with server.client() as admin:
        listed = admin.get("/api/devices/dev-win-1/actions").json()["value"]
        assert [x["id"] for x in listed] == [a["id"]]


def test_group_crud_and_membership(server: LiveServer) -> None:
    with server.client() as admin:
        g = admin.post("/api/devicegroups", json={"name": "Macs", "osPlatforms": ["macos"], "description": "all Macs"})
        assert g.status_code == 201, g.text
        gid = g.json()["id"]
        assert [d["deviceId"] for d in admin.get(f"/api/devicegroups/{gid}/devices").json()["value"]] == ["dev-mac-1"]
        r = admin.post("/api/devicegroups", json={"name": "Macs", "tags": ["x"]})
        assert r.status_code == 409
        r = admin.post("/api/devicegroups", json={"name": "everything"})
        assert r.status_code == 400 and "at least one" in r.json()["error"]
        r = admin.patch(f"/api/devicegroups/{gid}", json={"namePattern": "win-*", "osPlatforms": []})
        assert r.status_code == 200 and r.json()["namePattern"] == "win-*"
        assert [d["deviceId"] for d in admin.get(f"/api/devicegroups/{gid}/devices").json()["value"]] == ["dev-win-1"]
        # a renamed device moves with its next heartbeat
        later = datetime.now(UTC) + timedelta(minutes=5)
        _ingest(server, [device_info("dev-mac-1", "win-renamed", "macOS", when=later, report_id=2)])
        members = admin.get(f"/api/devicegroups/{gid}/devices").json()["value"]
        assert sorted(d["deviceId"] for d in members) == ["dev-mac-1", "dev-win-1"]
        assert admin.delete(f"/api/devicegroups/{gid}").status_code == 204
        assert admin.get(f"/api/devicegroups/{gid}").status_code == 404
        assert admin.get("/api/devicegroups").json()["value"] == []


def test_device_in_groups_with_storage_and_with_facts(server: LiveServer) -> None:
    from server.devices.groups import create_group

    md: MetadataDB = server.app.state.metadata
    storage = server.app.state.storage
    macs = create_group(md, "m", os_platforms=["macOS"])
    assert device_in_groups(md, "dev-mac-1", [macs.id], storage=storage)
    assert not device_in_groups(md, "dev-win-1", [macs.id], storage=storage)
    assert not device_in_groups(md, "unknown-device", [macs.id], storage=storage)
    assert device_in_groups(md, "anything", [], storage=storage)  # no groups = all devices
    assert device_in_groups(md, "x", [macs.id], facts=DeviceFacts("x", "n", "macOS"))
    with pytest.raises(ValueError, match="unknown device group"):
        device_in_groups(md, "dev-mac-1", [9999], storage=storage)


def test_group_matching_rules() -> None:
    g = DeviceGroup(1, "g", "", "MAC-*", ("macOS",), ("Finance", "HR"), "", "")
    assert g.matches(DeviceFacts("d", "mac-1.corp", "MacOS", tags=frozenset({"hr"})))
    assert not g.matches(DeviceFacts("d", "mac-1.corp", "macOS", tags=frozenset({"eng"})))  # tag
    assert not g.matches(DeviceFacts("d", "win-1", "macOS", tags=frozenset({"hr"})))  # name
    assert not g.matches(DeviceFacts("d", "mac-1", "Windows11", tags=frozenset({"hr"})))  # platform
    assert not g.matches(DeviceFacts("d", None, "macOS", tags=frozenset({"hr"})))  # no name known


def test_group_named_by_a_detection_rule_cannot_be_deleted(server: LiveServer) -> None:
    # As for notification rules: deleting the group would leave the rule scoped to nothing it
    # can resolve, and every later run would fail.
    with server.client() as admin:
        gid = admin.post("/api/devicegroups", json={"name": "Macs", "osPlatforms": ["macOS"]}).json()["id"]
        other = admin.post("/api/devicegroups", json={"name": "Wins", "osPlatforms": ["Windows11"]}).json()["id"]
        body = {
            "name": "usb copy",
            "query": "DeviceProcessEvents | where ProcessCommandLine contains '/Volume'",
            "frequency": "1h",
            "severity": "informational",
            "deviceGroups": [gid],
        }
        assert admin.post("/api/detections/rules", json=body).status_code == 201, "rule"
        r = admin.delete(f"/api/devicegroups/{gid}")
        assert r.status_code == 409, r.text
        assert r.json()["errors"][0]["code"] == "in_use" and "usb copy" in r.json()["error"]
        assert admin.get(f"/api/devicegroups/{gid}").status_code == 200
        # a group id that only appears inside another number (1 vs 11) is not "in use"
        assert admin.delete(f"/api/devicegroups/{other}").status_code == 204
