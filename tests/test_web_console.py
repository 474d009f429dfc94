"""The hunting console in a real headless Chromium (the run's one browser, tests/conftest.py)
against the real server: the whole USB scenario from sign-in to classifying the alert, the
inline diagnostics, a 100,000-row grid, escaping of hostile event text everywhere it is shown,
and the CSRF and scope rules of the console. Screenshots of each page go to ARTIFACTS."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.web import sessions
from tests.notify_helpers import ADMIN, LiveServer, iso, live_server, settings_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "test-artifacts" / "console"  # screenshots of every console page
SEED = ('DeviceProcessEvents | where Timestamp > ago(2h) | where ProcessCommandLine contains "/Volume" '
        "| sort by Timestamp asc")
MAC_ID, MAC_NAME = "mac-0001", "alice-macbook.contoso.com"
XSS_CMD = """cp "<script>window.__xss=1</script>" '<img src=x onerror="window.__xss=2">' /Volumes/USB/a"b'c"""


def _events(now: datetime) -> list[dict[str, Any]]:
    dev = {"DeviceId": MAC_ID, "DeviceName": MAC_NAME, "AccountName": "alice", "ActionType": "ProcessCreated"}
    term, zsh, cp = now - timedelta(hours=3), now - timedelta(minutes=11), now - timedelta(minutes=10)
    shell = {"InitiatingProcessId": 4242, "InitiatingProcessFileName": "zsh", "InitiatingProcessCommandLine": "-zsh",
             "InitiatingProcessCreationTime": iso(zsh), "InitiatingProcessParentId": 4100,
             "InitiatingProcessParentFileName": "Terminal", "InitiatingProcessParentCreationTime": iso(term)}
    return [
        {**dev, "Timestamp": iso(term), "FileName": "Terminal", "ProcessId": 4100,
         "ProcessCommandLine": "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal",
         "ProcessCreationTime": iso(term), "InitiatingProcessId": 1, "InitiatingProcessFileName": "launchd",
         "ReportId": 501},
        {**dev, "Timestamp": iso(zsh), "FileName": "zsh", "ProcessId": 4242, "ProcessCommandLine": "-zsh",
         "ProcessCreationTime": iso(zsh), "InitiatingProcessId": 4100, "InitiatingProcessFileName": "Terminal",
         "InitiatingProcessCommandLine": "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal",
         "InitiatingProcessCreationTime": iso(term), "InitiatingProcessParentId": 1,
         "InitiatingProcessParentFileName": "launchd", "ReportId": 502},
        {**dev, **shell, "Timestamp": iso(cp), "FileName": "cp", "ProcessId": 4300,
         "ProcessCommandLine": "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt", "ProcessCreationTime": iso(cp),
         "ReportId": 503},
        {**dev, **shell, "Timestamp": iso(cp + timedelta(seconds=5)), "FileName": "cp", "ProcessId": 4301,
         "ProcessCommandLine": XSS_CMD, "ProcessCreationTime": iso(cp + timedelta(seconds=5)), "ReportId": 504},
    ]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(settings_for(tmp_path_factory.mktemp("console"), public_url="http://127.0.0.1")) as s:
        with s.client(s.key("ingest")) as agent:
            assert agent.post("/api/ingest/DeviceProcessEvents", json=_events(datetime.now(UTC))).status_code == 200
            info = {"Timestamp": iso(datetime.now(UTC)), "DeviceId": MAC_ID, "DeviceName": MAC_NAME,
                    "OSPlatform": "macOS", "OSVersion": "14.5"}
            assert agent.post("/api/ingest/DeviceInfo", json=[info]).status_code == 200
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        yield s


def _sign_in(browser: Any, srv: LiveServer, key: str, path: str = "/") -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.problems = problems  # type: ignore[attr-defined]
    resp = page.goto(srv.url + path)
    assert resp is not None and resp.status == 401
    page.fill("#key", key)
    page.click("#signin")
    page.wait_for_load_state()
    return page


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _set_query(page: Any, text: str) -> None:
    page.click(".cm-content")
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.evaluate("t => window.quarryEditor.dispatch({changes: {from: 0, to: window.quarryEditor.state.doc.length, insert: t}})", text)


def _editor_text(page: Any) -> str:
    return str(page.evaluate("() => window.quarryEditor.state.doc.toString()"))


def _run(page: Any) -> str:
    page.click(".cm-content")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("() => /rows|Error/.test(document.getElementById('status').textContent)")
    return str(page.inner_text("#status"))


def test_the_whole_usb_scenario_in_the_browser(srv: LiveServer, browser: Any) -> None:
    page = _sign_in(browser, srv, ADMIN, "/")
    assert page.url == srv.url + "/"
    assert page.locator("nav.main a").all_inner_texts() == ["Hunting", "Alerts", "Incidents", "Rules", "Devices"]
    ingested = page.inner_text("#ingested")
    assert re.search(r"DeviceProcessEvents\s+4", ingested) and re.search(r"DeviceInfo\s+1", ingested)
    assert re.search(r"Storage: .* of Parquet, and 5 rows not yet flushed", page.inner_text("#storage-size"))
    _shot(page, "home")

    page.click("#nav-hunting")
    page.wait_for_selector(".cm-content")
    page.wait_for_selector("#schema-tree details")
    _set_query(page, "")
    # Type the seed query; completion offers the column (with its type) and Enter accepts it.
    page.keyboard.type("DeviceProcessEvents | where Timestamp > ago(2h) | where ProcessComm", delay=5)
    option = page.locator(".cm-tooltip-autocomplete li", has=page.locator(".cm-completionLabel", has_text=re.compile("^ProcessCommandLine$")))
    option.wait_for()
    assert option.locator(".cm-completionDetail").inner_text() == "string"
    option.click()
    page.keyboard.type(' contains "/Volume" | sort by Timestamp asc', delay=5)
    assert _editor_text(page) == SEED
    status = _run(page)
    assert status.startswith("2 rows"), status
    grid = page.inner_text("#results")
    assert "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt" in grid and MAC_NAME in grid
    # copy a row: the clipboard gets the row as JSON
    page.locator(".gc", has_text="cp Desktop/leak.txt").first.click()
    page.click("#copy-row")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert '"ProcessCommandLine":"cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt"' in copied
    # save it (shared), then load it back from the list
    page.fill("#save-name", "USB copies")
    page.check("#save-shared")
    page.click("#save-query")
    page.wait_for_selector("#saved a:text-is('USB copies')")
    assert "(shared)" in page.inner_text("#saved")
    history = page.inner_text("#history")
    assert "DeviceProcessEvents | where Timestamp > ago(2h)" in history and "2 rows" in history
    _shot(page, "hunting")

    # A timechart of count() by bin(Timestamp, 1h): one drawn point per row of the result.
    _set_query(page, "DeviceProcessEvents | where Timestamp > ago(1d) | summarize count() by bin(Timestamp, 1h)"
                     ' | render timechart with (title="Processes per hour")')
    status = _run(page)
    rows = int(status.split()[0])
    assert rows >= 2
    page.wait_for_selector("#chart-svg circle.pt")
    assert page.locator("#chart-svg circle.pt").count() == rows
    assert page.locator("#chart-svg polyline.line").count() == 1
    assert page.text_content("#chart-svg .chart-title") == "Processes per hour"
    assert "render" not in page.inner_text("#warnings")
    _shot(page, "hunting-timechart")

    # Create the detection rule from the seed query (loaded from the saved queries): compile
    # check and backtest first.
    page.click("#saved a:text-is('USB copies')")
    assert _editor_text(page) == SEED
    page.click("#create-rule")
    page.fill("#rule-form [name=name]", "USB copy on macOS")
    page.fill("#rule-form [name=alertTitle]", "File copied to USB on {{DeviceName}}")
    page.select_option("#rule-form [name=frequency]", "1h")
    page.select_option("#rule-form [name=severity]", "high")
    page.click("#rule-preview")
    page.wait_for_selector("#rule-check.ok")
    summary = page.inner_text("#backtest-summary")
    assert "2 matching rows, 2 alert(s) would be raised" in summary, summary
    _shot(page, "create-rule")
    page.click("#rule-save")
    page.wait_for_selector("#new-rule-link")
    page.click("#new-rule-link")
    page.wait_for_selector("#rule-name")
    assert page.inner_text("#rule-query") == SEED

    # Run it now from the rule page; the run shows in its history.
    page.click("#rule-run")
    page.wait_for_function("() => document.querySelector('#runs').textContent.includes('manual')")
    runs = page.inner_text("#runs")
    assert "manual" in runs and "completed" in runs
    page.click("#rule-backtest-run")
    page.wait_for_selector("#backtest-chart rect.bar")
    assert "2 matching rows; 2 alert(s) would be raised" in page.inner_text("#backtest-summary")
    _shot(page, "rule")
    page.click("#rule-toggle")  # disable
    page.wait_for_function("() => document.getElementById('rule-toggle').textContent === 'Enable'")
    assert "disabled" in page.inner_text("main p")

    # The alert is in the queue; open it, see the process tree, classify it.
    page.click("#nav-alerts")
    page.wait_for_selector("#alert-queue")
    queue = page.inner_text("#alert-queue")
    assert queue.count(f"File copied to USB on {MAC_NAME}") == 2 and "USB copy on macOS" in queue
    _shot(page, "alerts")
    # bulk: assign every alert in the queue at once
    page.check("#select-all")
    page.fill("#bulk [name=assignedTo]", "alice@contoso.com")
    page.click("#bulk-apply")
    page.wait_for_function("() => document.querySelector('#alert-queue').textContent.split('alice@contoso.com').length - 1 === 2")
    # the alert of the plain cp event (the other one is the hostile-text event, ReportId 504)
    page.locator("#alert-queue a", has_text="File copied to USB").last.click()
    page.wait_for_selector("#process-tree")
    assert "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt" in page.inner_text("#process-tree")
    chain = page.eval_on_selector_all(
        "#process-tree li.proc", "els => els.map(e => e.querySelector(':scope > .node .pname').textContent)")
    assert chain[:3] == ["launchd", "Terminal", "zsh"] and "cp" in chain
    _shot(page, "alert")
    page.select_option("#triage [name=status]", "resolved")
    page.select_option("#triage [name=classification]", "truePositive")
    page.fill("#triage [name=comment]", "confirmed with alice")
    page.click("#triage-save")
    page.wait_for_function("() => document.getElementById('alert-status').textContent === 'resolved'")
    assert "truePositive" in page.inner_text("main")

    page.click("#nav-incidents")
    page.wait_for_selector("#incident-queue")
    page.check("#select-all")
    page.fill("#bulk [name=assignedTo]", "bob@contoso.com")
    page.click("#bulk-apply")
    page.wait_for_function("() => document.querySelector('#incident-queue').textContent.includes('bob@contoso.com')")
    page.locator("#incident-queue a").first.click()
    page.wait_for_selector("#incident-alerts")
    page.fill("#triage [name=comment]", "one incident, two copies")
    page.select_option("#triage [name=status]", "inProgress")
    page.click("#triage-save")
    page.wait_for_function("() => document.querySelector('main p').textContent.includes('inProgress')")
    for name in ("incidents", "rules", "devices"):
        page.click(f"#nav-{name}")
        page.wait_for_load_state()
        _shot(page, name)
    assert "14.5" in page.inner_text("#devices") and MAC_NAME in page.inner_text("#devices")
    # The device page: its alerts, a timeline across the Device* tables, a process's tree.
    page.click(f"#devices a:text-is('{MAC_NAME}')")
    page.wait_for_selector("#timeline")
    assert page.inner_text("#device-alerts").count("File copied to USB") == 2
    timeline = page.inner_text("#timeline")
    assert "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt" in timeline and "process tree" in timeline
    page.select_option("form.filters [name=table]", "DeviceProcessEvents")
    page.fill("form.filters [name=actionType]", "FileCreated")
    page.click("form.filters button")
    page.wait_for_load_state()
    assert "No events in this period" in page.inner_text("#timeline")
    page.fill("form.filters [name=actionType]", "ProcessCreated")
    page.click("form.filters button")
    page.wait_for_load_state()
    assert page.locator("#timeline tr").count() == 5
    page.locator("#timeline tr", has_text="cp Desktop/leak.txt").locator("a.tree-link").click()
    page.wait_for_selector("#process-tree")
    chain = page.eval_on_selector_all(
        "#process-tree li.proc", "els => els.map(e => e.querySelector(':scope > .node .pname').textContent)")
    assert chain[:3] == ["launchd", "Terminal", "zsh"] and page.locator("#process-tree li.focus .pname").inner_text() == "cp"
    _shot(page, "device")
    page.click("#nav-rules")
    page.wait_for_selector("#rules svg.spark rect")
    assert "USB copy on macOS" in page.inner_text("#rules")
    assert not page.problems, page.problems  # type: ignore[attr-defined]
    page.context.close()


def test_a_column_typo_is_marked_where_it_is_with_the_fix(srv: LiveServer, browser: Any) -> None:
    page = _sign_in(browser, srv, srv.key("query"), "/hunting")
    page.wait_for_selector(".cm-content")
    _set_query(page, 'DeviceProcessEvents\n| where ProcessComandLine contains "x"')
    page.click(".cm-content")
    page.keyboard.press("End")
    marker = page.locator(".cm-lintRange-error")
    marker.wait_for()
    assert marker.inner_text() == "ProcessComandLine"
    # the marked text is on line 2 of the editor, at column 9
    assert "ProcessComandLine" in page.locator(".cm-line").nth(1).inner_text()
    diag = page.locator("#diagnostics .diag-error").first
    assert (diag.get_attribute("data-line"), diag.get_attribute("data-column")) == ("2", "9")
    assert "did you mean ProcessCommandLine" in diag.inner_text()
    # the quick fix replaces the typo
    marker.hover()
    fix = page.locator(".cm-diagnosticAction", has_text="Replace with ProcessCommandLine")
    fix.wait_for()
    fix.click()
    assert _editor_text(page) == 'DeviceProcessEvents\n| where ProcessCommandLine contains "x"'
    page.wait_for_function("() => !document.querySelector('.cm-lintRange-error')")
    # the schema tree: filter, then a click inserts the column at the cursor
    page.click(".cm-content")
    page.keyboard.press("Control+End")
    page.fill("#schema-filter", "SHA256")
    page.locator("#schema-tree details", has_text="DeviceFileEvents").locator("a.col", has_text="SHA256").first.click()
    assert _editor_text(page).endswith('contains "x"SHA256')
    page.context.close()


def test_a_100000_row_result_scrolls_with_only_visible_rows_rendered(srv: LiveServer, browser: Any) -> None:
    page = _sign_in(browser, srv, srv.key("query"), "/hunting")
    page.wait_for_selector(".cm-content")
    page.select_option("#timespan", "")
    _set_query(page, 'range i from 1 to 100000 step 1 | extend s = strcat("row-", tostring(i)), d = bag_pack("k", i)')
    t0 = time.monotonic()
    status = _run(page)
    assert status.startswith("100,000 rows"), status
    assert page.inner_text("#row-count") == "100,000 rows"
    rendered = page.locator("#grid-body .gr").count()
    assert 0 < rendered < 100
    # scroll to the end: the last rows are drawn, and still only a window of rows exists
    for _ in range(5):
        page.eval_on_selector("#grid-body", "b => { b.scrollTop = b.scrollHeight; b.dispatchEvent(new Event('scroll')); }")
    page.wait_for_selector("#grid-body .gc:text-is('row-100000')")
    assert page.locator("#grid-body .gr").count() < 100
    # dynamic values expand as JSON; the type is in the header
    page.locator("#grid-body .gc.dyn").last.click()
    assert '"k": 100000' in page.inner_text("#cell-detail")
    assert "dynamic" in page.inner_text(".grid-head")
    # client-side filter and sort
    page.fill("#grid-filter", "row-99999")
    assert page.inner_text("#row-count") == "1 of 100,000 rows"
    page.fill("#grid-filter", "")
    page.click(".gh[data-col='0']")
    page.click(".gh[data-col='0']")  # descending
    page.eval_on_selector("#grid-body", "b => { b.scrollTop = 0; b.dispatchEvent(new Event('scroll')); }")
    page.wait_for_selector("#grid-body .gr[data-row='0'] .gc:text-is('100000')")
    assert time.monotonic() - t0 < 30
    # Export streams the whole result through /api/query/export
    with page.expect_download() as info:
        page.select_option("#export", "csv")
    path = info.value.path()
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 100_001 and lines[0].startswith("i,s,d") and lines[-1].startswith("100000,row-100000")
    page.context.close()


def test_hostile_event_text_is_shown_as_text_everywhere(srv: LiveServer, browser: Any) -> None:
    # A rule whose alert title and evidence carry the hostile command line, and a hostile name.
    with srv.client() as admin:
        rule = admin.post("/api/detections/rules", json={
            "name": "<i>xss</i> \"rule' <script>window.__xss=3</script>", "frequency": "1h",
            "query": "DeviceProcessEvents | where ReportId == 504",
            "alertTitle": "Copy: {{ProcessCommandLine}}"}).json()
        run = admin.post(f"/api/detections/rules/{rule['id']}/run").json()
        assert run["alertsCreated"] == 1, run
        [alert] = [a for a in admin.get("/api/alerts").json()["value"] if a["ruleId"] == rule["id"]]
    assert alert["title"] == f"Copy: {XSS_CMD}"
    page = _sign_in(browser, srv, srv.key("query"), "/hunting")
    page.wait_for_selector(".cm-content")
    _set_query(page, "DeviceProcessEvents | where ReportId == 504 | project ProcessCommandLine, DeviceName")
    assert _run(page).startswith("1 rows")
    assert XSS_CMD in page.inner_text("#results")
    shown = {"/": "#newest-alerts", "/alerts": "#alert-queue", f"/alerts/{alert['id']}": "main",
             f"/incidents/{alert['incidentId']}": "#incident-alerts", "/rules": "#rules", f"/rules/{rule['id']}": "main",
             f"/devices/{MAC_ID}": "#timeline"}
    for path, where in shown.items():
        page.goto(srv.url + path)
        text = page.inner_text(where)
        assert XSS_CMD in text or rule["name"] in text, path
        assert page.evaluate("() => window.__xss === undefined"), path
        assert page.locator("img[src=x], main script, main i").count() == 0, path
        raw = httpx.get(srv.url + path, headers={"Authorization": f"Bearer {ADMIN}"}).text
        assert "<script>window.__xss" not in raw and "<img src=x" not in raw and "<i>xss" not in raw, path
    page.goto(f"{srv.url}/alerts/{alert['id']}")
    assert XSS_CMD in page.inner_text("#evidence") and XSS_CMD in page.inner_text("#process-tree")
    assert not page.problems, page.problems  # type: ignore[attr-defined]
    page.context.close()


def _alerts(srv: LiveServer) -> list[dict[str, Any]]:
    with srv.client() as c:
        return list(c.get("/api/alerts").json()["value"])


def _session(srv: LiveServer, key: str) -> tuple[str, dict[str, str]]:
    r = httpx.post(f"{srv.url}/login", data={"key": key, "next": "/"}, headers={"Origin": srv.url})
    token = r.cookies["quarry_session"]
    return token, {"Cookie": f"quarry_session={token}"}


def test_console_csrf_and_scopes(srv: LiveServer) -> None:
    token, cookie = _session(srv, srv.key("query"))
    csrf = sessions.csrf_token(token)
    page = httpx.get(f"{srv.url}/hunting", headers=cookie)
    assert page.status_code == 200 and f'<meta name="csrf-token" content="{csrf}">' in page.text
    # A query key sees hunting and alerts, not rule administration.
    assert re.search(r'<button id="create-rule" disabled', page.text)
    ok = {**cookie, "X-CSRF-Token": csrf}
    r = httpx.post(f"{srv.url}/api/query", json={"query": "print 1"}, headers=ok)
    assert r.status_code == 200
    r = httpx.post(f"{srv.url}/api/detections/rules", json={"name": "x", "query": SEED}, headers=ok)
    assert r.status_code == 403
    # Every state change through the console needs the CSRF token: a forged request carries
    # the cookie but cannot know the token.
    for method, path, body in (("POST", "/api/query/saved", {"name": "n", "query": "print 1"}),
                               ("PATCH", "/api/alerts/x", {"status": "resolved"}),
                               ("POST", "/api/query", {"query": "print 1"})):
        for headers in (cookie, {**cookie, "X-CSRF-Token": "forged"}):
            r = httpx.request(method, srv.url + path, json=body, headers=headers)
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == "csrf", (method, path)
    # Saved queries and history belong to the key that signed in.
    assert httpx.post(f"{srv.url}/api/query/saved", json={"name": "mine", "query": "print 1"}, headers=ok).status_code == 201
    _, other_cookie = _session(srv, srv.key("query"))
    other_token = other_cookie["Cookie"].split("=", 1)[1]
    other = {**other_cookie, "X-CSRF-Token": sessions.csrf_token(other_token)}
    # (queries shared by other tests' users may be listed; "mine" was not shared)
    assert "mine" not in {q["name"] for q in httpx.get(f"{srv.url}/api/query/saved", headers=other).json()["value"]}
    assert httpx.get(f"{srv.url}/api/query/history", headers=other).json()["value"] == []
    # Signing out is refused cross-site; pages forbid inline scripts and framing.
    assert httpx.post(f"{srv.url}/logout", headers={**cookie, "Origin": "http://evil.example"}).status_code == 403
    for path in ("/", "/hunting", "/alerts", "/incidents", "/rules", "/devices", "/login"):
        r = httpx.get(srv.url + path, headers=cookie)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-frame-options"] == "DENY"
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path
    # An ingest key cannot sign in to the console; a query key cannot load pages without signing in.
    r = httpx.post(f"{srv.url}/login", data={"key": srv.key("ingest"), "next": "/"}, headers={"Origin": srv.url})
    assert r.status_code == 403
    assert httpx.get(f"{srv.url}/console/assets/console.js").status_code == 401
    assert httpx.get(f"{srv.url}/console/assets/console.js", headers=cookie).status_code == 200


def test_every_chart_kind_is_drawn_and_cancel_stops_the_query(srv: LiveServer, browser: Any) -> None:
    page = _sign_in(browser, srv, srv.key("query"), "/hunting")
    page.wait_for_selector(".cm-content")
    page.select_option("#timespan", "")
    data = ('range i from 1 to 4 step 1 | extend cat = strcat("c", tostring(i % 2)), t = datetime(2026-01-01) + i * 1h,'
            " a = i * 10, b = i")
    drawn = {
        # (summarised as) what must be on the chart: element selector -> count
        "timechart": ("| project t, a, b | render timechart", {"circle.pt": 8, "polyline.line": 2}),
        "linechart": ("| project i, a | render linechart with (ycolumns=a)", {"circle.pt": 4, "polyline.line": 1}),
        "areachart": ("| project t, a, b | render areachart with (kind=stacked)", {"polygon.area": 2}),
        "scatterchart": ("| project i, a | render scatterchart", {"circle.pt": 4, "polyline.line": 0}),
        "columnchart": ("| summarize a = sum(a), b = sum(b) by cat | render columnchart with (kind=stacked)",
                        {"rect.bar": 4}),
        "barchart": ("| summarize a = sum(a) by cat | render barchart with (title='Per category')", {"rect.bar": 2}),
        "piechart": ("| summarize a = sum(a) by cat | render piechart", {"path.slice": 2}),
    }
    for vis, (tail, expect) in drawn.items():
        _set_query(page, f"{data} {tail}")
        assert _run(page).startswith(("2 rows", "4 rows")), vis
        page.wait_for_selector(f"#chart-svg[data-visualization={vis}]")
        for selector, n in expect.items():
            assert page.locator(f"#chart-svg {selector}").count() == n, (vis, selector)
        if vis == "columnchart":
            # stacked: the second series' bar sits on the first one's, in the same column
            bars = page.eval_on_selector_all("#chart-svg rect.bar", "rs => rs.map(r => [+r.getAttribute('x'), +r.getAttribute('y'), +r.getAttribute('height')])")
            first, second = bars[0], bars[2]
            assert first[0] == second[0] and abs(second[1] + second[2] - first[1]) < 0.01
        if vis == "barchart":
            assert page.text_content("#chart-svg .chart-title") == "Per category"
    _shot(page, "hunting-columnchart")
    # Cancel: the browser drops the request and the server stops the query.
    _set_query(page, "range a from 1 to 30000 step 1 | extend k = 1 | join kind=inner (range b from 1 to 30000 step 1"
                     " | extend k = 1) on k | summarize n = dcount(a * 100000 + b)")
    page.click(".cm-content")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("() => !document.getElementById('cancel').disabled")
    time.sleep(0.5)
    runner = srv.app.state.query_runner
    assert runner.running == 1
    page.click("#cancel")
    page.wait_for_function("() => document.getElementById('status').textContent === 'Cancelled.'")
    t0 = time.monotonic()
    while runner.running and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert runner.running == 0
    page.context.close()
