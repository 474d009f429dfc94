"""Ids outside SQLite's 64-bit range are a 400 in the error shape, not a 500; ids in range that
do not exist are a 404."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notify_helpers import live_server, settings_for

ROUTES = [
    "/api/incidents/{}",
    "/api/detections/rules/{}",
    "/api/detections/rules/{}/runs",
    "/api/notifications/rules/{}",
    "/api/devicegroups/{}",
]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with live_server(settings_for(Path(tmp_path_factory.mktemp("ids")))) as s:
        yield s


@pytest.mark.parametrize("route", ROUTES)
def test_huge_and_missing_ids(srv, route: str) -> None:  # type: ignore[no-untyped-def]
    with srv.client() as c:
        r = c.get(route.format(2**70))
        assert r.status_code == 400, r.text
        assert r.json()["ok"] is False and r.json()["errors"][0]["code"] == "invalid_request"
        for missing in (0, 2**63 - 1):
            r = c.get(route.format(missing))
            assert r.status_code == 404, (missing, r.text)
            assert r.json()["errors"][0]["code"] == "not_found"
