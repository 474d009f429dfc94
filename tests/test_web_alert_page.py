"""The alert page in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright):
sign in through the form, then see the alert, its evidence and the process tree
launchd > Terminal > zsh > cp, built by the same functions as the JSON API; sign out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.web.alerts import render_alert
from tests.notify_helpers import LiveServer, iso, live_server, settings_for

pytestmark = pytest.mark.slow

MAC_ID = "mac-0001"
MAC_NAME = "alice-macbook.contoso.com"


def _events(now: datetime) -> list[dict[str, Any]]:
    device = {"DeviceId": MAC_ID, "DeviceName": MAC_NAME, "AccountName": "alice", "ActionType": "ProcessCreated"}
    term, zsh, cp = now - timedelta(hours=3), now - timedelta(minutes=11), now - timedelta(minutes=10)
    return [
        {**device, "Timestamp": iso(zsh), "FileName": "zsh", "ProcessId": 4242, "ProcessCommandLine": "-zsh",
         "ProcessCreationTime": iso(zsh), "InitiatingProcessId": 4100, "InitiatingProcessFileName": "Terminal",
         "InitiatingProcessCommandLine": "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal",
         "InitiatingProcessCreationTime": iso(term), "InitiatingProcessParentId": 1,
         "InitiatingProcessParentFileName": "launchd", "ReportId": 502},
        {**device, "Timestamp": iso(cp), "FileName": "cp", "ProcessId": 4300,
         "ProcessCommandLine": "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt", "ProcessCreationTime": iso(cp),
         "InitiatingProcessId": 4242, "InitiatingProcessFileName": "zsh", "InitiatingProcessCommandLine": "-zsh",
         "InitiatingProcessCreationTime": iso(zsh), "InitiatingProcessParentId": 4100,
         "InitiatingProcessParentFileName": "Terminal", "InitiatingProcessParentCreationTime": iso(term),
         "ReportId": 503},
    ]


def _create_alert(s: LiveServer) -> str:
    """Ingest the Mac's process events over HTTP, then raise an alert on the cp event the way a
    rule run does (detections' store and entity helpers), so this test does not depend on the
    KQL compiler; the USB end-to-end test covers the rule path."""
    from server.detections.entities import evidence_summary, extract_entities, jsonable
    from server.detections.store import NewAlert, SqliteDetectionStore

    with s.client(s.key("ingest")) as agent:
        assert agent.post("/api/ingest/DeviceProcessEvents", json=_events(datetime.now(UTC))).status_code == 200
    con = s.app.state.storage.connect()
    try:
        cur = con.execute('SELECT * FROM "DeviceProcessEvents" WHERE "ReportId" = 503')
        names = [d[0] for d in cur.description or []]
        [row] = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()
    row = {k: v for k, v in row.items() if not k.startswith("_") and k != "date"}
    alert = NewAlert(
        kind="detection", rule_id=None, rule_name="USB copy", run_id=None,
        title=f"File copied to USB on {MAC_NAME}", description="alice copied a file to removable media",
        recommended_actions="", severity="informational", category="Exfiltration", mitre_techniques=[],
        device_id=MAC_ID, device_name=MAC_NAME, report_id="503", event_time=row["Timestamp"],
        evidence=[{k: jsonable(v) for k, v in row.items()}], entities=extract_entities(row),
        evidence_summary=evidence_summary(row),
    )
    [created] = SqliteDetectionStore(s.app.state.metadata).insert_alerts([alert], datetime.now(UTC), timedelta(hours=24))
    return str(created["id"])


@pytest.fixture
def alert_server(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    with live_server(settings_for(tmp_path)) as s:
        yield s, _create_alert(s)


def test_alert_page_shows_the_process_tree_after_sign_in(alert_server: tuple[LiveServer, str], browser: Any) -> None:
    s, alert_id = alert_server
    query_key, ingest_key = s.key("query", "analyst"), s.key("ingest")
    context = browser.new_context()
    try:
        page = context.new_page()
        resp = page.goto(f"{s.url}/alerts/{alert_id}")
        assert resp is not None and resp.status == 401
        assert page.locator("#key").count() == 1
        # a key without query scope is refused with a reason
        page.fill("#key", ingest_key)
        page.click("#signin")
        assert "scope 'ingest'" in page.content()
        page.fill("#key", query_key)
        page.click("#signin")
        page.wait_for_selector("#process-tree")
        assert page.url == f"{s.url}/alerts/{alert_id}"
        assert page.inner_text("#alert-title") == f"File copied to USB on {MAC_NAME}"
        assert page.inner_text("#alert-device") == MAC_NAME
        # The tree nests launchd > Terminal > zsh > cp, and the alert's process is marked.
        chain = page.eval_on_selector_all(
            "#process-tree li.proc", "els => els.map(e => e.querySelector(':scope > .node .pname').textContent)"
        )
        assert chain == ["launchd", "Terminal", "zsh", "cp"]
        nested = page.locator("#process-tree > li > ul > li > ul > li > ul > li.focus .pname")
        assert nested.inner_text() == "cp"
        text = page.inner_text("body")
        assert "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt" in text
        assert "-zsh" in text and "pid 4242" in text
        assert "Evidence row 1" in text and "USB copy" in text
        # The browser holds an HttpOnly session token, never the key; it opens the pages,
        # and the JSON API only with the session's CSRF token (which a copied cookie lacks).
        jar = page.context.cookies()
        assert all(query_key not in c["value"] for c in jar)
        [session] = [c for c in jar if c["name"] == "quarry_session"]
        assert session["httpOnly"] and session["sameSite"] == "Lax"
        cookies = {c["name"]: c["value"] for c in jar}
        r = httpx.get(f"{s.url}/api/alerts/{alert_id}", cookies=cookies)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "csrf"
        missing = page.goto(f"{s.url}/alerts/no-such-alert")
        assert missing is not None and missing.status == 404
        # Signing out (a same-origin form post from the page) ends the session on the
        # server: the copied cookie no longer opens the page either.
        page.goto(f"{s.url}/alerts/{alert_id}")
        page.click("#signout")
        page.wait_for_selector("#key")
        assert page.url == f"{s.url}/login"
        r = httpx.get(f"{s.url}/alerts/{alert_id}", cookies=cookies)
        assert r.status_code == 401
        again = page.goto(f"{s.url}/alerts/{alert_id}")
        assert again is not None and again.status == 401
    finally:
        context.close()


def test_login_redirect_stays_on_this_server(alert_server: tuple[LiveServer, str]) -> None:
    s, _ = alert_server
    key = s.key("query")
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example/", "/"),
                             ("/alerts/1", "/alerts/1")):
        r = httpx.post(f"{s.url}/login", data={"key": key, "next": target}, headers={"Origin": s.url},
                       follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == expected
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=lax" in r.headers["set-cookie"].lower()


def test_page_escapes_alert_text() -> None:
    html = render_alert(
        {"id": "x", "title": "<script>alert(1)</script>", "deviceName": "<b>d</b>", "evidenceRows": [{"Cmd": "<img src=x>"}]},
        {"roots": [{"fileName": "<i>p</i>", "commandLine": "a&b", "children": []}]},
        None,
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "<i>p</i>" not in html and "a&amp;b" in html


@pytest.mark.parametrize("bad_id", ["%C2%B2", "99999999999999999999999", "-1", "1.0"])
def test_incident_page_bad_ids_are_404(alert_server: tuple[LiveServer, str], bad_id: str) -> None:
    """Ids that are not a stored integer ("²" is a str.isdigit() digit int() refuses; 23 digits
    overflow SQLite's INTEGER) get the page's 404, never a 500."""
    s, _ = alert_server
    r = httpx.get(f"{s.url}/incidents/{bad_id}", headers={"Authorization": f"Bearer {s.key('query')}"})
    assert r.status_code == 404, r.text
    assert "Incident not found" in r.text


def test_process_tree_failure_names_no_internals() -> None:
    """A storage error while building the tree is logged; the page says the tree failed but
    shows no exception text (DuckDB's messages carry file paths of the data directory)."""
    from types import SimpleNamespace

    from server.web.sources import get_process_tree

    class Store:
        def get_alert(self, alert_id: str) -> dict[str, Any]:
            return {"id": alert_id}

    class Storage:
        def connect(self) -> Any:
            raise OSError("IO Error: cannot open /srv/quarry/data/DeviceProcessEvents/x.parquet")

    state = SimpleNamespace(detection_store=Store(), storage=Storage())
    tree, error = get_process_tree(state, "qa1")
    assert tree is None and error
    assert "/srv/quarry" not in error and "IO Error" not in error
