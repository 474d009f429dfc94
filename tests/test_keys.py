"""API keys (issue 9, item 11): list, create and revoke over HTTP and the CLI, last-used time
written at most once a minute, revocation that takes effect at the next request (sessions too),
and ingest keys bound to devices: they ingest rows of their devices only and poll and complete
device actions only for them. A real server over HTTP (tests/notify_helpers.py)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from server.cli import main
from tests.notify_helpers import LiveServer, device_info, live_server, settings_for
from tests.test_web_sessions import login, page, token_of

TABLE = "DeviceProcessEvents"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(settings_for(tmp_path_factory.mktemp("keys"))) as s:
        yield s


def rows(*devices: str) -> list[dict[str, object]]:
    return [{"Timestamp": "2026-11-28T19:48:48Z", "DeviceId": d, "DeviceName": f"{d}.corp",
             "ActionType": "ProcessCreated", "ReportId": i} for i, d in enumerate(devices)]


def count(srv: LiveServer, device: str) -> int:
    con = srv.app.state.storage.connect()
    try:
        got = con.execute(f'SELECT count(*) FROM "{TABLE}" WHERE DeviceId = ?', [device]).fetchone()
    finally:
        con.close()
    return int(got[0]) if got else 0


def create(srv: LiveServer, **body: object) -> httpx.Response:
    with srv.client() as c:
        return c.post("/api/keys", json=body)


def listed(srv: LiveServer, prefix: str, include_revoked: bool = False) -> dict | None:  # type: ignore[type-arg]
    with srv.client() as c:
        r = c.get("/api/keys", params={"includeRevoked": str(include_revoked).lower()})
    assert r.status_code == 200, r.text
    return next((k for k in r.json()["value"] if k["prefix"] == prefix), None)


def test_create_list_use_and_revoke_over_http(srv: LiveServer) -> None:
    r = create(srv, scope="query", name="analyst")
    assert r.status_code == 201, r.text
    made = r.json()
    key, prefix = made["key"], made["prefix"]
    assert key.startswith(prefix) and made["scope"] == "query" and made["devices"] is None
    assert made["createdAt"].endswith("Z") and made["lastUsedAt"] is None
    entry = listed(srv, prefix)
    assert entry is not None and "key" not in entry and key not in json.dumps(entry)
    assert entry["lastUsedAt"] is None

    with srv.client(key) as c:
        assert c.get("/api/schema").status_code == 200
        first = listed(srv, prefix)
        assert first is not None and first["lastUsedAt"] is not None
        # At most one write a minute per key: the next uses leave the time as it was.
        for _ in range(3):
            assert c.get("/api/schema").status_code == 200
        assert listed(srv, prefix)["lastUsedAt"] == first["lastUsedAt"]  # type: ignore[index]

        # A browser session signed in with the key ends with it.
        token = token_of(login(srv, key))
        assert page(srv, token).status_code == 404  # signed in: the page looks the alert up
        with srv.client() as admin:
            r = admin.delete(f"/api/keys/{prefix}")
            assert r.status_code == 200, r.text
            assert r.json()["revokedAt"] is not None
            # At once: the very next request with the key is refused.
            assert c.get("/api/schema").status_code == 401
            assert page(srv, token).status_code in (303, 401)
            again = admin.delete(f"/api/keys/{prefix}")
            assert again.status_code == 404 and again.json()["errors"][0]["field"] == "prefix"
            assert admin.delete("/api/keys/nonsense").status_code == 404
    assert listed(srv, prefix) is None
    assert listed(srv, prefix, include_revoked=True) is not None


@pytest.mark.parametrize(("body", "field"), [
    ({"scope": "query", "devices": ["d1"]}, "devices"),  # only ingest keys are bound
    ({"scope": "ingest", "devices": "d1"}, "devices"),
    ({"scope": "ingest", "devices": []}, "devices"),
    ({"scope": "ingest", "devices": [1]}, "devices"),
    ({"scope": "ingest", "devices": ["a\nb"]}, "devices"),
    ({"scope": "root"}, "scope"),
    ({"scope": "ingest", "color": "red"}, "color"),
])
def test_bad_key_requests_are_400_naming_the_field(srv: LiveServer, body: dict, field: str) -> None:  # type: ignore[type-arg]
    r = create(srv, **body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == field


def test_a_key_bound_to_devices_ingests_only_their_rows(srv: LiveServer) -> None:
    r = create(srv, scope="ingest", name="agent-a", devices=["dev-a1", "dev-a2"])
    assert r.status_code == 201, r.text
    assert r.json()["devices"] == ["dev-a1", "dev-a2"]
    with srv.client(r.json()["key"]) as c:
        ok = c.post(f"/api/ingest/{TABLE}", json=rows("dev-a1", "dev-a2"))
        assert ok.status_code == 200, ok.text
        before = count(srv, "dev-a1")
        # One foreign row refuses the whole request, naming its row and field.
        bad = c.post(f"/api/ingest/{TABLE}", json=rows("dev-a1", "dev-b", "dev-a2", "DEV-A1"))
        assert bad.status_code == 403, bad.text
        errors = bad.json()["errors"]
        assert [(e["row"], e["column"], e["value"]) for e in errors] == [
            (1, "DeviceId", "dev-b"), (3, "DeviceId", "DEV-A1")]  # ids match exactly
        assert {e["code"] for e in errors} == {"device_not_allowed"}
        assert count(srv, "dev-a1") == before and count(srv, "dev-b") == 0
        # NDJSON and gzip take the same check.
        nd = gzip.compress(b"\n".join(orjson.dumps(x) for x in rows("dev-a2", "dev-c")))
        bad = c.post(f"/api/ingest/{TABLE}", content=nd, headers={
            "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
        assert bad.status_code == 403 and bad.json()["errors"][0]["row"] == 1
        # The streaming route: rows are numbered across the body's records.
        records = [{"category": f"AdvancedHunting-{TABLE}", "properties": p}
                   for p in rows("dev-a1", "dev-a1", "dev-z")]
        bad = c.post("/api/ingest/streaming", json={"records": records})
        assert bad.status_code == 403, bad.text
        assert [(e["row"], e["table"]) for e in bad.json()["errors"]] == [(2, TABLE)]
        good = c.post("/api/ingest/streaming", json={"records": records[:2]})
        assert good.status_code == 200, good.text
        # A table without DeviceId cannot be attributed to a device.
        r = c.post("/api/ingest/AlertInfo", json=[{"Timestamp": "2026-11-28T19:48:48Z",
                                                   "AlertId": "a1", "Title": "t"}])
        assert r.status_code == 403 and r.json()["errors"][0]["column"] == "DeviceId"
    assert count(srv, "dev-a1") == before + 2
    # An unbound ingest key still ingests for any device.
    with srv.client(srv.key("ingest", "any")) as c:
        assert c.post(f"/api/ingest/{TABLE}", json=rows("dev-b")).status_code == 200


def test_a_key_bound_to_devices_polls_and_completes_actions_only_for_them(
    srv: LiveServer,
) -> None:
    with srv.client() as admin:
        for dev in ("dev-act-1", "dev-act-2"):
            assert admin.post("/api/ingest/DeviceInfo",
                              json=[device_info(dev, f"{dev}.corp", "Windows")]).status_code == 200
            r = admin.post(f"/api/devices/{dev}/actions", json={"type": "runAntivirusScan"})
            assert r.status_code == 201, r.text
        other_action = admin.get("/api/devices/dev-act-2/actions").json()["value"][0]["id"]
    key = create(srv, scope="ingest", devices=["dev-act-1"]).json()["key"]
    with srv.client(key) as agent:
        mine = agent.get("/api/devices/dev-act-1/actions/pending")
        assert mine.status_code == 200 and len(mine.json()["value"]) == 1
        action = mine.json()["value"][0]["id"]
        theirs = agent.get("/api/devices/dev-act-2/actions/pending")
        assert theirs.status_code == 403, theirs.text
        assert theirs.json()["errors"][0]["code"] == "device_not_allowed"
        r = agent.post(f"/api/devices/dev-act-2/actions/{other_action}/result",
                       json={"status": "Succeeded"})
        assert r.status_code == 403
        r = agent.post(f"/api/devices/dev-act-1/actions/{action}/result", json={"status": "Succeeded"})
        assert r.status_code == 200 and r.json()["status"] == "Succeeded"
    with srv.client() as admin:  # the refused report changed nothing
        assert admin.get("/api/devices/dev-act-2/actions").json()["value"][0]["status"] == "Pending"


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert main(["keys", "create", "--scope", "ingest", "--name", "agent", "--device", "d1",
                 "--device", "d2", "--data-dir", d]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["keys", "create", "--scope", "query", "--device", "d1", "--data-dir", d]) == 2
    assert "only ingest keys" in capsys.readouterr().err
    assert main(["keys", "list", "--json", "--data-dir", d]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["prefix"] == key[:10] and entry["devices"] == ["d1", "d2"]
    assert main(["keys", "list", "--data-dir", d]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["prefix", "scope", "name", "devices", "createdAt", "lastUsedAt",
                              "revokedAt"]
    assert out[1].split()[:4] == [key[:10], "ingest", "agent", "d1,d2"]
    assert main(["keys", "revoke", key[:10], "--data-dir", d]) == 0
    assert capsys.readouterr().out.startswith(f"revoked {key[:10]}")
    assert main(["keys", "revoke", key[:10], "--data-dir", d]) == 1
    assert main(["keys", "list", "--data-dir", d]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # the header only
    assert main(["keys", "list", "--all", "--data-dir", d]) == 0
    assert key[:10] in capsys.readouterr().out
