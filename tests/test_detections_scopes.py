"""Every route of detections, alerts, incidents, notifications, device groups and device actions
answers 401 without a valid key and 403 with a key of a scope it does not allow, in the one error
shape; the scope it needs admits the call (never a 500). The table below must name every route
the app has under these prefixes, so a route added without its scope decision fails here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.notify_helpers import LiveServer, live_server, settings_for

PREFIXES = (
    "/api/detections",
    "/api/alerts",
    "/api/incidents",
    "/api/notifications",
    "/api/devicegroups",
    "/api/devices",
    "/api/deviceactions",
)

# (method, route path) -> the scope it needs (admin implies every scope).
SCOPES: dict[tuple[str, str], str] = {
    ("POST", "/api/detections/rules"): "admin",
    ("GET", "/api/detections/rules"): "query",
    ("GET", "/api/detections/rules/{rule_id}"): "query",
    ("PATCH", "/api/detections/rules/{rule_id}"): "admin",
    ("DELETE", "/api/detections/rules/{rule_id}"): "admin",
    ("GET", "/api/detections/rules/{rule_id}/runs"): "query",
    ("POST", "/api/detections/rules/{rule_id}/run"): "admin",
    ("POST", "/api/detections/rules/{rule_id}/backtest"): "query",
    ("POST", "/api/detections/preview"): "query",
    ("GET", "/api/alerts"): "query",
    ("GET", "/api/alerts/{alert_id}"): "query",
    ("PATCH", "/api/alerts/{alert_id}"): "query",
    ("GET", "/api/alerts/{alert_id}/process-tree"): "query",
    ("GET", "/api/incidents"): "query",
    ("GET", "/api/incidents/{incident_id}"): "query",
    ("PATCH", "/api/incidents/{incident_id}"): "query",
    ("POST", "/api/notifications/rules"): "admin",
    ("GET", "/api/notifications/rules"): "admin",
    ("GET", "/api/notifications/rules/{rule_id}"): "admin",
    ("PATCH", "/api/notifications/rules/{rule_id}"): "admin",
    ("DELETE", "/api/notifications/rules/{rule_id}"): "admin",
    ("POST", "/api/notifications/test"): "admin",
    ("GET", "/api/notifications/deliveries"): "admin",
    ("GET", "/api/notifications/status"): "admin",
    ("POST", "/api/devicegroups"): "admin",
    ("GET", "/api/devicegroups"): "admin",
    ("GET", "/api/devicegroups/{group_id}"): "admin",
    ("PATCH", "/api/devicegroups/{group_id}"): "admin",
    ("DELETE", "/api/devicegroups/{group_id}"): "admin",
    ("GET", "/api/devicegroups/{group_id}/devices"): "admin",
    ("POST", "/api/devices/{device_id}/actions"): "admin",
    ("GET", "/api/devices/{device_id}/actions"): "admin",
    ("GET", "/api/devices/{device_id}/actions/pending"): "ingest",
    ("POST", "/api/devices/{device_id}/actions/{action_id}/result"): "ingest",
    ("POST", "/api/devices/{device_id}/actions/{action_id}/cancel"): "admin",
    ("PUT", "/api/devices/{device_id}/actions/{action_id}/package"): "ingest",
    ("GET", "/api/devices/{device_id}/actions/{action_id}/package"): "admin",
    ("GET", "/api/devices/{device_id}/actions/audit"): "admin",
    ("GET", "/api/deviceactions"): "admin",
    ("GET", "/api/deviceactions/audit"): "admin",
}
BODY_METHODS = {"POST", "PATCH"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data: Path = tmp_path_factory.mktemp("detection-scopes")
    with live_server(settings_for(data)) as s:
        yield s


def _routes(srv: LiveServer) -> set[tuple[str, str]]:
    # From the OpenAPI document: included routers are not flat in ``app.routes``.
    paths = srv.app.openapi()["paths"]
    return {(m.upper(), p) for p, ops in paths.items() if p.startswith(PREFIXES) for m in ops}


def test_the_table_names_every_route(srv: LiveServer) -> None:
    assert _routes(srv) == set(SCOPES)


def _url(path: str) -> str:
    return path.format(rule_id=1, alert_id="qa0", incident_id=1, group_id=1, device_id="dev-1", action_id="a-1")


def _check_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    body = r.json()
    assert body["ok"] is False and [e["code"] for e in body["errors"]] == [code], body


@pytest.mark.parametrize(("method", "path"), sorted(SCOPES))
def test_route_scope(srv: LiveServer, method: str, path: str) -> None:
    need = SCOPES[(method, path)]
    url = _url(path)
    body: dict[str, object] | None = {} if method in BODY_METHODS else None
    with httpx.Client(base_url=srv.url, timeout=30) as anon:
        _check_error(anon.request(method, url, json=body), 401, "unauthorized")
        bad = anon.request(method, url, json=body, headers={"authorization": "Bearer qk_not-a-key"})
        _check_error(bad, 401, "unauthorized")
    for scope in ("ingest", "query", "admin"):
        with srv.client(srv.key(scope)) as c:
            r = c.request(method, url, json=body)
        if scope == "admin" or scope == need:
            # Admitted: the dummy ids and empty bodies may be refused, but not for the key.
            assert r.status_code not in (401, 403) and r.status_code < 500, (scope, r.status_code, r.text)
        else:
            _check_error(r, 403, "forbidden")
