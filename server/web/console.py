"""The console's pages: ``/`` (overview), ``/hunting``, ``/alerts``, ``/incidents``, ``/rules``,
``/rules/{id}``, ``/devices``, and its bundled script and style sheet
(``/console/assets/{name}``, built from ``console/`` by ``make console-assets``).

Pages are server-rendered from templates; the page's own script (no inline script: the CSP
forbids it) adds the editor, the results grid, charts and the actions, which call the JSON API
with the session cookie and the CSRF token of ``<meta name="csrf-token">`` (server/web/sessions.py).
Every page needs a query key or a session of one; what a page offers beyond reading (rule
administration) is refused by the API to a query key and shown disabled on the page.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server.auth import allows
from server.detections.model import ALERT_STATUSES, CLASSIFICATIONS, SEVERITIES, canonical
from server.detections.store import AlertFilter
from server.detections.timeutil import parse_iso
from server.errors import ApiError
from server.web import login, overview, sources
from server.web.alerts import not_found, signed_in
from server.web.html import render

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parent / "static"
_ASSETS = {"console.js": "application/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
ALERTS_PAGE_ROWS = 500  # rows a queue page shows (filters narrow it; the API pages further)


@cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/console/assets/{name}")
async def console_asset(request: Request, name: str) -> Response:
    who = signed_in(request, "/", "console")
    if isinstance(who, Response):
        raise ApiError(401 if who.status_code == 401 else 403, "sign in to load the console", code="unauthorized")
    media = _ASSETS.get(name)
    if media is None:
        raise ApiError(404, f"no console asset named {name[:100]!r}", code="not_found")
    return Response(_asset(name), media_type=media,
                    headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"})


@router.get("/")
async def home(request: Request) -> Response:
    who = signed_in(request, "/", "console")
    if isinstance(who, Response):
        return who
    state = request.app.state

    def gather() -> dict[str, Any]:
        size, unflushed = overview.storage_size(state)
        return {
            "unflushed": unflushed,
            "events": overview.events_last_day(state),
            "alerts": overview.alerts(state, AlertFilter(top=10)),
            "incidents": [i for i in overview.incidents(state, None, 50) if i.get("status") != "resolved"][:10],
            "rules": overview.rules(state),
            "storage": overview.human_bytes(size),
        }

    data = await run_in_threadpool(gather)
    return render("home.html", who=who, active="/", title="Quarry", **data)


@router.get("/hunting")
async def hunting(request: Request) -> Response:
    who = signed_in(request, "/hunting", "console")
    if isinstance(who, Response):
        return who
    return render("hunting.html", who=who, active="/hunting", title="Quarry: hunting",
                  can_admin=allows(who.scope, "admin"), mainclass="wide")


def _opt(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if not value:
        return None
    try:
        return canonical(value, allowed, field)
    except ValueError as e:
        raise ApiError(400, str(e), code="invalid_request") from None


def _when(value: str | None, field: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise ApiError(400, f"{field} must be an ISO-8601 date-time such as 2025-01-31T12:00:00Z", code="invalid_request") from None


@router.get("/alerts")
async def alerts_queue(
    request: Request,
    status: str | None = None,
    severity: str | None = None,
    ruleId: str | None = None,  # noqa: N803 (the API's parameter name)
    device: str | None = None,
    from_: str | None = Query(None, alias="from"),
    to: str | None = None,
) -> Response:
    who = signed_in(request, "/alerts", "alert queue")
    if isinstance(who, Response):
        return who
    rule_id = None
    if ruleId:
        if not (ruleId.isascii() and ruleId.isdigit() and int(ruleId) < 2**63):
            raise ApiError(400, "ruleId must be a rule's number", code="invalid_request")
        rule_id = int(ruleId)
    f = AlertFilter(status=_opt(status, ALERT_STATUSES, "status"), severity=_opt(severity, SEVERITIES, "severity"),
                    rule_id=rule_id, device=device or None, since=_when(from_, "from"), until=_when(to, "to"),
                    top=ALERTS_PAGE_ROWS)
    state = request.app.state
    rows, rules = await run_in_threadpool(lambda: (overview.alerts(state, f), overview.rules(state)))
    filters = {"status": status or "", "severity": severity or "", "ruleId": ruleId or "", "device": device or "",
               "from": from_ or "", "to": to or ""}
    return render("alerts.html", who=who, active="/alerts", title="Quarry: alerts", alerts=rows, rules=rules,
                  filters=filters, statuses=ALERT_STATUSES, severities=SEVERITIES,
                  classifications=CLASSIFICATIONS, cap=ALERTS_PAGE_ROWS)


@router.get("/incidents")
async def incidents_queue(request: Request, status: str | None = None) -> Response:
    who = signed_in(request, "/incidents", "incident queue")
    if isinstance(who, Response):
        return who
    st = _opt(status, ALERT_STATUSES, "status")
    state = request.app.state
    rows = await run_in_threadpool(overview.incidents, state, st, ALERTS_PAGE_ROWS)
    return render("incidents.html", who=who, active="/incidents", title="Quarry: incidents", incidents=rows,
                  status_filter=status or "", statuses=ALERT_STATUSES, classifications=CLASSIFICATIONS)


@router.get("/rules")
async def rules_list(request: Request) -> Response:
    who = signed_in(request, "/rules", "rules list")
    if isinstance(who, Response):
        return who
    rows = await run_in_threadpool(overview.rules, request.app.state)
    return render("rules.html", who=who, active="/rules", title="Quarry: detection rules", rules=rows,
                  can_admin=allows(who.scope, "admin"))


@router.get("/rules/{rule_id}")
async def rule_page(request: Request, rule_id: str) -> Response:
    # A str, not an int: a malformed id must meet the sign-in check first, then a 404.
    who = signed_in(request, f"/rules/{quote(rule_id, safe='')}", "rule")
    if isinstance(who, Response):
        return who
    found = None
    if rule_id.isascii() and rule_id.isdigit() and int(rule_id) < 2**63:
        found = await run_in_threadpool(overview.rule_detail, request.app.state, int(rule_id))
    if found is None:
        return not_found(who, "Rule", rule_id, "/rules")
    rule, runs = found
    return render("rule.html", who=who, active="/rules", title=f"Quarry rule: {rule['name']}", rule=rule,
                  runs=runs, can_admin=allows(who.scope, "admin"))


@router.get("/devices")
async def devices_list(request: Request) -> Response:
    who = signed_in(request, "/devices", "devices list")
    if isinstance(who, Response):
        return who
    rows = await run_in_threadpool(overview.devices, request.app.state)
    return render("devices.html", who=who, active="/devices", title="Quarry: devices", devices=rows)


@router.get("/devices/{device_id}")
async def device_page(
    request: Request,
    device_id: str,
    table: str | None = None,
    actionType: str | None = None,  # noqa: N803 (the API's parameter name)
    hours: str | None = None,
    process: str | None = None,
    at: str | None = None,
) -> Response:
    who = signed_in(request, f"/devices/{quote(device_id, safe='')}", "device")
    if isinstance(who, Response):
        return who
    tables = overview.timeline_tables()
    if table and table not in tables:
        raise ApiError(400, f"table must be one of {', '.join(tables)}", code="invalid_request")
    span = int(hours) if hours and hours.isdigit() else 24
    if span not in overview.TIMELINE_HOURS:
        raise ApiError(400, f"hours must be one of {', '.join(map(str, overview.TIMELINE_HOURS))}", code="invalid_request")
    when = _when(at, "at") if process else None
    state = request.app.state

    def gather() -> dict[str, Any]:
        found = overview.device(state, device_id)
        tree = tree_error = None
        if process and when is not None:
            tree, tree_error = sources.event_process_tree(state, device_id, process, when)
        return {
            "device": found,
            "events": overview.device_timeline(state, device_id, table or None, actionType or None, span),
            "alerts": overview.alerts(state, AlertFilter(device=device_id, top=50)),
            "tree": tree, "tree_error": tree_error,
        }

    data = await run_in_threadpool(gather)
    if data["device"] is None and not data["events"]:
        return not_found(who, "Device", device_id, "/devices")
    filters = {"table": table or "", "actionType": actionType or "", "hours": span}
    return render("device.html", who=who, active="/devices", title=f"Quarry device: {device_id}",
                  device_id=device_id, tables=tables, spans=overview.TIMELINE_HOURS, filters=filters,
                  process=process or "", cap=overview.TIMELINE_ROWS, **data)


# Read by the docs page (server/web/docs.py) and the docs test to show each page's scope.
for _route in (console_asset, home, hunting, alerts_queue, incidents_queue, rules_list, rule_page, devices_list,
               device_page):
    setattr(_route, "quarry_scope", login.PAGE_SCOPE)  # noqa: B010
