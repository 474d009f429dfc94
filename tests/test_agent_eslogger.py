"""The macOS source: eslogger JSON lines (tests/fixtures/eslogger, written from Apple's documented
Endpoint Security message format, not captured on a Mac) mapped to Defender rows; then the real
agent, running a stand-in ``eslogger`` that prints those lines, delivers them to the real server,
where the seed rule raises an alert with the Terminal > zsh > cp process tree."""

from __future__ import annotations

import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from quarry_agent.sources.eslogger import EsloggerMapper, es_time

from tests.notify_helpers import live_server, settings_for
from tests.support.agent import agent_process, hunt, wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "eslogger" / "usb_copy.jsonl"
USERS = {501: "alice", 0: "root"}


def mapped() -> list[tuple[str, dict[str, Any]]]:
    m = EsloggerMapper("alice-macbook", user_name=lambda uid: USERS.get(uid, str(uid)) if uid is not None else "")
    out = []
    for line in FIXTURE.read_text().splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        ev = m.map(msg)
        if ev is not None:
            out.append((ev.table, ev.row))
    return out


def test_es_time_keeps_microseconds_of_nanosecond_times() -> None:
    assert es_time("2026-12-04T12:50:00.100900123Z") == "2026-12-04T12:50:00.100900Z"
    assert es_time("2026-12-04T12:50:00Z") == "2026-12-04T12:50:00.000000Z"
    assert es_time("yesterday") is None and es_time(None) is None


def test_eslogger_lines_map_to_defender_rows() -> None:
    rows = mapped()
    assert [(t, r["ActionType"]) for t, r in rows] == [
        ("DeviceEvents", "UsbDriveMounted"),
        ("DeviceProcessEvents", "ProcessCreated"),  # zsh
        ("DeviceProcessEvents", "ProcessCreated"),  # cp
        ("DeviceFileEvents", "FileCreated"),  # create + close(modified) on the stick
        ("DeviceFileEvents", "FileRenamed"),
        ("DeviceFileEvents", "FileModified"),  # close(modified) of a file not created here
    ]  # close without modification and files on the internal disk: nothing
    mount = rows[0][1]
    fields = json.loads(mount["AdditionalFields"])
    assert (mount["FolderPath"], fields["DriveLetter"], fields["FileSystem"], fields["Device"]) == (
        "/Volumes/TEST-USB", "/Volumes/TEST-USB", "msdos", "/dev/disk4s1")
    assert fields["RemovableBy"] == "external disposition" and mount["Timestamp"] == "2026-12-04T12:48:30.123456Z"

    zsh, cp = rows[1][1], rows[2][1]
    assert (zsh["FileName"], zsh["ProcessCommandLine"], zsh["ProcessId"]) == ("zsh", "-zsh", 4242)
    # zsh's creator is Terminal: not seen exec'ing, so named from the image exec replaced.
    assert zsh["InitiatingProcessId"] == 4100 and zsh["InitiatingProcessFileName"] == "Terminal"
    assert cp["ProcessCommandLine"] == "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt"
    assert (cp["FolderPath"], cp["ProcessId"], cp["AccountName"], cp["AccountDomain"]) == ("/bin/cp", 4300, "alice", "alice-macbook")
    assert cp["ProcessCreationTime"] == "2026-12-04T12:50:00.100000Z"
    # cp's creator is zsh, with the command line from zsh's own exec event, and zsh's parent.
    assert (cp["InitiatingProcessId"], cp["InitiatingProcessFileName"], cp["InitiatingProcessCommandLine"]) == (4242, "zsh", "-zsh")
    assert cp["InitiatingProcessCreationTime"] == zsh["ProcessCreationTime"]
    assert (cp["InitiatingProcessParentId"], cp["InitiatingProcessParentFileName"]) == (4100, "Terminal")
    extra = json.loads(cp["AdditionalFields"])
    assert extra["SigningId"] == "com.apple.cp" and extra["ProcessPosixEffectiveUser"] == {"Name": "alice", "PosixUserId": 501}

    created, renamed, modified = rows[3][1], rows[4][1], rows[5][1]
    assert (created["FolderPath"], created["FileName"]) == ("/Volumes/TEST-USB/leak.txt", "leak.txt")
    assert (created["InitiatingProcessFileName"], created["InitiatingProcessId"]) == ("cp", 4300)
    assert created["InitiatingProcessCommandLine"] == cp["ProcessCommandLine"]
    assert created["InitiatingProcessParentFileName"] == "zsh"
    assert (renamed["FolderPath"], renamed["PreviousFolderPath"], renamed["PreviousFileName"]) == (
        "/Volumes/TEST-USB/notes.txt", "/Volumes/TEST-USB", "leak.txt")
    assert renamed["InitiatingProcessFileName"] == "zsh"
    assert modified["FolderPath"] == "/Volumes/TEST-USB/notes.txt"


def shifted_fixture(dest: Path) -> None:
    """The fixture with its times moved to the last minutes (ingest drops rows past retention)."""
    text = FIXTURE.read_text()
    base = datetime(2026, 12, 4, 12, 51, tzinfo=UTC)
    delta = datetime.now(UTC) - base

    def shift(m: re.Match[str]) -> str:
        t = datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC) + delta
        return '"' + t.strftime("%Y-%m-%dT%H:%M:%S") + m.group(2) + '"'

    dest.write_text(re.sub(r'"(2026-12-04T\d\d:\d\d:\d\d)(\.\d+Z|Z)"', shift, text))


@pytest.mark.slow
def test_agent_runs_eslogger_and_the_seed_rule_alerts(tmp_path: Path) -> None:
    lines = tmp_path / "eslogger.jsonl"
    shifted_fixture(lines)
    fake = tmp_path / "eslogger"
    # Prints the recorded lines, then stays up like the real eslogger (which streams until stopped).
    fake.write_text(f"#!/bin/sh\ncat '{lines}'\nexec sleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with live_server(settings_for(tmp_path / "data")) as srv, srv.client() as admin:
        with agent_process(srv.url, srv.key("ingest"), tmp_path / "state",
                           ["--sources", "eslogger", "--eslogger", str(fake)]):
            wait_for(lambda: len(hunt(admin, "DeviceFileEvents")) == 3 or None, 15, "the file rows")
        assert len(hunt(admin, "DeviceProcessEvents")) == 2
        r = admin.post("/api/detections/rules", json={
            "name": "USB copy (seed)", "frequency": "1h", "severity": "medium",
            "query": 'DeviceProcessEvents | where Timestamp > ago(2h) | where ProcessCommandLine contains "/Volume"',
        })
        run = admin.post(f"/api/detections/rules/{r.json()['id']}/run").json()
        assert run["alertsCreated"] == 1, run
        alert = admin.get("/api/alerts").json()["value"][0]
        tree = admin.get(f"/api/alerts/{alert['id']}/process-tree").json()
        assert tree["path"] == ["Terminal", "zsh", "cp"]
        assert tree["process"]["commandLine"] == "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt"
    assert timedelta(0) <= datetime.now(UTC) - datetime.fromisoformat(alert["createdDateTime"].replace("Z", "+00:00")) < timedelta(minutes=5)
