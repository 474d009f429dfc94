"""The API the console stands on, over HTTP against the real server: the `render` hint with the
rows, `POST /api/query/check` (positions and quick fixes), `GET /api/query/language`, per-user
history and saved queries, the rule preview, and a query stopped when its client leaves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kql.chart import RenderError, parse_render
from tests.notify_helpers import ADMIN, LiveServer, live_server, settings_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(settings_for(tmp_path_factory.mktemp("console-api"))) as s:
        yield s


def _post(srv: LiveServer, path: str, body: dict[str, Any], key: str = ADMIN) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.mark.parametrize("vis", ["timechart", "linechart", "areachart", "columnchart", "barchart", "piechart",
                                 "scatterchart"])
def test_render_hint_comes_with_the_rows(srv: LiveServer, vis: str) -> None:
    q = ('range i from 1 to 3 step 1 | extend d = iff(i == 2, "b", "a"), v = i * 2 '
         f'| render {vis} with (title="T, \\"q\\"", xcolumn=i, ycolumns=v, i, series=d, kind=stacked, ytitle=n)')
    r = _post(srv, "/api/query", {"query": q})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == [[1, "a", 2], [2, "b", 4], [3, "a", 6]]
    assert body["render"] == {"visualization": vis, "title": 'T, "q"', "xcolumn": "i", "ycolumns": ["v", "i"],
                              "series": ["d"], "kind": "stacked", "ytitle": "n"}
    assert body["warnings"] == []  # a drawable render is a hint, not a warning


def test_a_render_the_server_cannot_read_says_why(srv: LiveServer) -> None:
    for q, why in (("print x = 1 | render sparkles", "unknown render visualization 'sparkles'"),
                   ("print x = 1 | render timechart with (colour=red)", "unknown render property 'colour'"),
                   ("print x = 1 | render barchart with (kind=wobbly)", "unknown render kind 'wobbly'")):
        body = _post(srv, "/api/query", {"query": q}).json()
        assert body["render"] is None and body["rows"] == [[1]]
        assert any(why in w for w in body["warnings"]), body["warnings"]
    assert _post(srv, "/api/query", {"query": "print x = 1"}).json()["render"] is None
    with pytest.raises(RenderError, match="not closed"):
        parse_render("render piechart with (title=x")


def test_check_gives_positions_and_quick_fixes(srv: LiveServer) -> None:
    q = "DeviceProcessEvents\n| where Timestamp > ago(1h)\n| where ProcessComandLine has 'x'\n| project FileNme"
    body = _post(srv, "/api/query/check", {"query": q}).json()
    assert body["ok"] is False
    by_code = [(d["line"], d["column"], d["endColumn"], d["suggestions"][0]) for d in body["diagnostics"]]
    assert (3, 9, 26, "ProcessCommandLine") in by_code
    first = next(d for d in body["diagnostics"] if d["line"] == 3)
    assert q[first["start"]:first["end"]] == "ProcessComandLine" and first["severity"] == "error"
    good = _post(srv, "/api/query/check", {"query": "DeviceProcessEvents | summarize n = count() by DeviceName"
                                                    " | render piechart"}).json()
    assert good["ok"] is True and good["diagnostics"] == []
    assert good["columns"] == [{"name": "DeviceName", "type": "string"}, {"name": "n", "type": "long"}]
    assert good["render"] == {"visualization": "piechart"}
    syntax = _post(srv, "/api/query/check", {"query": "DeviceProcessEvents | where"}).json()
    assert syntax["ok"] is False and syntax["diagnostics"][0]["line"] == 1
    # a query key may check; an ingest key may not
    assert _post(srv, "/api/query/check", {"query": "print 1"}, srv.key("query")).status_code == 200
    assert _post(srv, "/api/query/check", {"query": "print 1"}, srv.key("ingest")).status_code == 403


def test_language_lists_what_the_compiler_knows(srv: LiveServer) -> None:
    lang = httpx.get(srv.url + "/api/query/language", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert {"where", "summarize", "project-away", "mv-expand", "render"} <= set(lang["operators"])
    assert {"contains", "!has", "in~", "startswith_cs"} <= set(lang["scalarOperators"])
    fns = {f["name"]: f for f in lang["functions"]}
    assert fns["ago"]["kind"] == "scalar" and fns["dcount"]["kind"] == "aggregate" and fns["ago"]["returns"] == "datetime"
    assert fns["todouble"] == {"name": "todouble", "kind": "alias", "aliasOf": "toreal"}


def test_history_and_saved_queries_belong_to_their_key(srv: LiveServer) -> None:
    alice, bob = srv.key("query", "alice"), srv.key("query", "bob")
    assert _post(srv, "/api/query", {"query": "print a = 1"}, alice).status_code == 200
    assert _post(srv, "/api/query", {"query": "print a = nope()"}, alice).status_code == 400

    def get(path: str, key: str) -> Any:
        return httpx.get(srv.url + path, headers={"Authorization": f"Bearer {key}"}).json()["value"]

    hist = get("/api/query/history", alice)
    assert [h["query"] for h in hist] == ["print a = nope()", "print a = 1"]
    assert hist[1]["rows"] == 1 and hist[0]["error"] and "nope" in hist[0]["error"]
    assert get("/api/query/history", bob) == []
    mine = _post(srv, "/api/query/saved", {"name": "one", "query": "print 1"}, alice).json()
    shared = _post(srv, "/api/query/saved", {"name": "two", "query": "print 2", "shared": True}, alice).json()
    again = _post(srv, "/api/query/saved", {"name": "two", "query": "print 22", "shared": True}, alice).json()
    assert again["id"] == shared["id"] and again["query"] == "print 22"
    assert [(q["name"], q["mine"]) for q in get("/api/query/saved", bob)] == [("two", False)]
    r = httpx.delete(f"{srv.url}/api/query/saved/{shared['id']}", headers={"Authorization": f"Bearer {bob}"})
    assert r.status_code == 403
    r = httpx.delete(f"{srv.url}/api/query/saved/{mine['id']}", headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 204
    assert [q["name"] for q in get("/api/query/saved", alice)] == ["two"]
    assert _post(srv, "/api/query/saved", {"name": "", "query": "x"}, alice).status_code == 400


def test_rule_preview_checks_and_backtests_without_saving(srv: LiveServer) -> None:
    ok = _post(srv, "/api/detections/preview",
               {"name": "p", "query": "DeviceProcessEvents | where FileName == 'cp'", "frequency": "1h"},
               srv.key("query")).json()
    assert ok["check"]["ok"] is True and ok["backtest"]["rowsMatched"] == 0
    bad = _post(srv, "/api/detections/preview", {"name": "p", "query": "DeviceProcessEvents | project FileName"}).json()
    assert bad["check"]["ok"] is False and "ReportId" in bad["check"]["message"] and bad["backtest"] is None
    rules = httpx.get(srv.url + "/api/detections/rules", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert rules["value"] == []


def test_a_query_stops_when_its_client_leaves(srv: LiveServer) -> None:
    # A slow query (a 900-million-row join); the client gives up after 2.5 s.
    slow = ("range a from 1 to 30000 step 1 | extend k = 1 | join kind=inner (range b from 1 to 30000 step 1 "
            "| extend k = 1) on k | summarize n = dcount(a * 100000 + b)")
    runner_state: dict[str, Any] = {}

    def client() -> None:
        try:
            httpx.post(srv.url + "/api/query", json={"query": slow}, headers={"Authorization": f"Bearer {ADMIN}"},
                       timeout=2.5)
        except httpx.TimeoutException:
            runner_state["gave_up"] = time.monotonic()

    t = threading.Thread(target=client)
    t.start()
    time.sleep(1.5)
    runner = srv.app.state.query_runner
    assert runner.running == 1  # still running while its client waits
    t.join()
    assert "gave_up" in runner_state
    while runner.running and time.monotonic() - runner_state["gave_up"] < 10:
        time.sleep(0.05)
    assert runner.running == 0 and time.monotonic() - runner_state["gave_up"] < 3
    hist = httpx.get(srv.url + "/api/query/history?top=1", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert hist["value"][0]["query"] == slow and "cancelled" in hist["value"][0]["error"]
