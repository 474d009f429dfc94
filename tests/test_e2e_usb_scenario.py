"""The scenario Quarry was born from, end to end over HTTP against the real server (uvicorn on
loopback) and a real SMTP server (aiosmtpd on loopback):

a Mac user copies a file to a USB stick; an hourly rule finds it; an alert opens inside an
incident; the admin gets one email naming the device, with a link to the alert; the alert shows
the process tree Terminal > zsh > cp; an action can be queued for the device; a second run adds
no alert and sends no email."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.notify_helpers import live_server, settings_for
from tests.smtp_fixture import SmtpServer, smtp_server_fixture  # noqa: F401  (registers smtp_server)

pytestmark = pytest.mark.slow

MAC_ID = "c3f1a9d2e5b74e8f9a0b1c2d3e4f5a6b7c8d9e0f"
MAC_NAME = "alice-macbook.contoso.com"
RULE_QUERY = (
    "DeviceProcessEvents | where Timestamp > ago(2h) | where ProcessCommandLine contains \"/Volume\""
    " | sort by Timestamp asc"
)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def mac_events(now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """DeviceEvents UsbDriveMounted, then Terminal starting zsh, then zsh running cp to the stick."""
    mounted = now - timedelta(minutes=12)
    terminal_start = now - timedelta(hours=3)  # Terminal has been open for a while
    zsh_start = now - timedelta(minutes=11)
    cp_time = now - timedelta(minutes=10)
    device = {"DeviceId": MAC_ID, "DeviceName": MAC_NAME}
    account = {"AccountName": "alice", "AccountDomain": "alice-macbook", "InitiatingProcessAccountName": "alice"}
    usb = [
        {
            **device,
            "Timestamp": iso(mounted),
            "ActionType": "UsbDriveMounted",
            "ReportId": 501,
            "AdditionalFields": '{"DriveLetter":"/Volumes/TEST-USB","ProductName":"Cruzer Blade","Manufacturer":"SanDisk"}',
        }
    ]
    processes = [
        {   # Terminal (launched by launchd) starts the login shell
            **device,
            **account,
            "Timestamp": iso(zsh_start),
            "ActionType": "ProcessCreated",
            "FileName": "zsh",
            "FolderPath": "/bin/zsh",
            "ProcessId": 4242,
            "ProcessCommandLine": "-zsh",
            "ProcessCreationTime": iso(zsh_start),
            "InitiatingProcessId": 4100,
            "InitiatingProcessFileName": "Terminal",
            "InitiatingProcessFolderPath": "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal",
            "InitiatingProcessCommandLine": "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal",
            "InitiatingProcessCreationTime": iso(terminal_start),
            "InitiatingProcessParentId": 1,
            "InitiatingProcessParentFileName": "launchd",
            "ReportId": 502,
        },
        {   # zsh runs cp to the USB volume
            **device,
            **account,
            "Timestamp": iso(cp_time),
            "ActionType": "ProcessCreated",
            "FileName": "cp",
            "FolderPath": "/bin/cp",
            "ProcessId": 4300,
            "ProcessCommandLine": "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt",
            "ProcessCreationTime": iso(cp_time),
            "SHA1": "d1b2a59fbcc6e3c6f5a7c1d3e6f0a9b8c7d6e5f4",
            "InitiatingProcessId": 4242,
            "InitiatingProcessFileName": "zsh",
            "InitiatingProcessFolderPath": "/bin/zsh",
            "InitiatingProcessCommandLine": "-zsh",
            "InitiatingProcessCreationTime": iso(zsh_start),
            "InitiatingProcessParentId": 4100,
            "InitiatingProcessParentFileName": "Terminal",
            "InitiatingProcessParentCreationTime": iso(terminal_start),
            "ReportId": 503,
        },
    ]
    return usb, processes


def test_usb_copy_on_a_mac_end_to_end(tmp_path: Path, smtp_server: SmtpServer) -> None:
    settings = settings_for(tmp_path, **smtp_server.settings(), public_url="http://quarry.test:8080")
    with live_server(settings) as srv, srv.client() as admin:
        r = admin.post(
            "/api/notifications/rules",
            json={"name": "admin on everything", "minSeverity": "informational", "emails": ["admin@example.com"]},
        )
        assert r.status_code == 201, r.text

        r = admin.post(
            "/api/detections/rules",
            json={
                "name": "File copied to a USB volume",
                "query": RULE_QUERY,
                "frequency": "1h",
                "severity": "informational",
                "category": "Exfiltration",
                "mitreTechniques": ["T1052.001"],
                "alertTitle": "File copied to USB on {{DeviceName}}",
                "alertDescription": "{{AccountName}} ran: {{ProcessCommandLine}}",
            },
        )
        assert r.status_code == 201, r.text
        rule = r.json()
        assert rule["coveredThrough"] is None and rule["frequency"] == "1h"

        usb, processes = mac_events(datetime.now(UTC))
        ingest_key = srv.key("ingest", "mac agent")
        heartbeat = {
            "Timestamp": iso(datetime.now(UTC) - timedelta(minutes=15)),
            "DeviceId": MAC_ID,
            "DeviceName": MAC_NAME,
            "OSPlatform": "macOS",
            "ReportId": 500,
        }
        with srv.client(ingest_key) as agent:
            assert agent.post("/api/ingest/DeviceInfo", json=[heartbeat]).status_code == 200
            assert agent.post("/api/ingest/DeviceEvents", json=usb).status_code == 200
            r = agent.post("/api/ingest/DeviceProcessEvents", json=processes)
            assert r.status_code == 200, r.text

        run = admin.post(f"/api/detections/rules/{rule['id']}/run").json()
        assert run["status"] == "completed", run
        assert (run["rowsMatched"], run["alertsCreated"]) == (1, 1)

        alerts = admin.get("/api/alerts").json()["value"]
        assert len(alerts) == 1
        alert = alerts[0]
        assert alert["title"] == f"File copied to USB on {MAC_NAME}"
        assert alert["description"] == "alice ran: cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt"
        assert (alert["severity"], alert["status"], alert["category"]) == ("informational", "new", "Exfiltration")
        assert (alert["deviceId"], alert["reportId"]) == (MAC_ID, "503")
        assert alert["detectorId"] == str(rule["id"]) and alert["mitreTechniques"] == ["T1052.001"]

        incidents = admin.get("/api/incidents").json()["value"]
        assert len(incidents) == 1
        assert incidents[0]["id"] == alert["incidentId"] and incidents[0]["alertIds"] == [alert["id"]]
        # The incident's title names the device once, and its web link opens a page listing the alert.
        assert incidents[0]["displayName"] == alert["title"]
        web_path = incidents[0]["incidentWebUrl"].removeprefix("http://quarry.test:8080")
        page = admin.get(web_path)
        assert page.status_code == 200 and f'href="/alerts/{alert["id"]}"' in page.text
        assert admin.get(f"/incidents/{alert['incidentId'] + 1000}").status_code == 404

        full = admin.get(f"/api/alerts/{alert['id']}").json()
        assert full["evidenceRows"][0]["ProcessCommandLine"] == "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt"
        kinds = {e["entityType"] for e in full["entities"]}
        assert {"device", "account", "process"} <= kinds

        tree = admin.get(f"/api/alerts/{alert['id']}/process-tree").json()
        assert tree["path"] == ["launchd", "Terminal", "zsh", "cp"]
        assert tree["process"]["commandLine"] == "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt"
        zsh = tree["ancestors"][-1]
        assert (zsh["fileName"], zsh["commandLine"], zsh["processId"]) == ("zsh", "-zsh", 4242)
        assert tree["ancestors"][-2]["commandLine"].endswith("MacOS/Terminal")
        assert tree["tree"]["fileName"] == "launchd"

        [mail] = smtp_server.wait_for(1, timeout=15)
        assert mail.rcpt_tos == ["admin@example.com"]
        body = mail.text()
        assert MAC_NAME in body
        assert f"http://quarry.test:8080/alerts/{alert['id']}" in body

        # An action can be queued for the device, and the agent sees it.
        r = admin.post(f"/api/devices/{MAC_ID}/actions", json={"type": "collectInvestigationPackage", "comment": "USB leak"})
        assert r.status_code == 201, r.text
        with srv.client(ingest_key) as agent:
            pending = agent.get(f"/api/devices/{MAC_ID}/actions/pending").json()["value"]
        assert [p["type"] for p in pending] == ["collectInvestigationPackage"]

        # A second run adds no alert (and so no email).
        again = admin.post(f"/api/detections/rules/{rule['id']}/run").json()
        assert (again["status"], again["alertsCreated"], again["duplicates"]) == ("completed", 0, 1)
        assert len(admin.get("/api/alerts").json()["value"]) == 1
        rule = admin.get(f"/api/detections/rules/{rule['id']}").json()
        assert rule["coveredThrough"] is not None and rule["lastRun"]["id"] == again["id"]
        runs = admin.get(f"/api/detections/rules/{rule['id']}/runs").json()["value"]
        assert [x["alertsCreated"] for x in runs] == [0, 1]
        time.sleep(1.0)  # the notifier polls every 0.2 s here: a second email would be out by now
        assert len(smtp_server.messages) == 1

        # Triage: the analyst takes the alert, then resolves it as expected activity.
        r = admin.patch(f"/api/alerts/{alert['id']}", json={"status": "inProgress", "assignedTo": "soc@example.com"})
        assert r.status_code == 200 and r.json()["status"] == "inProgress"
        r = admin.patch(
            f"/api/alerts/{alert['id']}",
            json={
                "status": "resolved",
                "classification": "informationalExpectedActivity",
                "determination": "confirmedUserActivity",
                "comment": "Alice backs up to her own stick",
            },
        )
        body2 = r.json()
        assert (body2["status"], body2["assignedTo"], body2["classification"]) == (
            "resolved", "soc@example.com", "informationalExpectedActivity"
        )
        assert body2["comments"][0]["comment"] == "Alice backs up to her own stick"
        assert body2["resolvedDateTime"] is not None


def test_continuous_rule_alerts_on_newly_ingested_rows_with_the_scheduler_on(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, scheduler_enabled=True, continuous_poll_s=0.5, scheduler_tick_s=0.5)
    with live_server(settings) as srv, srv.client() as admin:
        r = admin.post(
            "/api/detections/rules",
            json={"name": "usb nrt", "query": 'DeviceProcessEvents | where ProcessCommandLine contains "/Volume"',
                  "frequency": "continuous", "severity": "high"},
        )
        assert r.status_code == 201, r.text
        _, processes = mac_events(datetime.now(UTC))
        with srv.client(srv.key("ingest")) as agent:
            assert agent.post("/api/ingest/DeviceProcessEvents", json=processes).status_code == 200
        deadline = time.monotonic() + 20  # a bound for a slow CI machine, not a measurement
        alerts: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not alerts:
            alerts = admin.get("/api/alerts", params={"kind": "detection"}).json()["value"]
            time.sleep(0.1)
        assert [a["reportId"] for a in alerts] == ["503"]
        runs = admin.get(f"/api/detections/rules/{r.json()['id']}/runs").json()["value"]
        assert {x["trigger"] for x in runs} == {"scheduled"}
        assert sum(x["alertsCreated"] for x in runs) == 1
