"""The alert page, ``GET /alerts/{id}``: the alert, its evidence and the process tree, as plain
server-rendered HTML (no JavaScript), linked from notification emails.

Data comes through the same functions as the JSON API of detections (``server/web/sources.py``),
so the page and ``GET /api/alerts/{id}`` cannot disagree.

Auth: the page takes a bearer header (API clients) or a browser session cookie from the sign-in
form (``server/web/login.py``, ``server/web/sessions.py``); the cookie holds a session token,
never the key. Without either it answers 401 with the sign-in form; a key or session of another
scope gets 403. The scope needed is ``query``, as for reading alerts through the API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from server.auth import allows
from server.web import login, sessions, sources
from server.web.html import e as _e
from server.web.html import login_form, page

router = APIRouter(include_in_schema=False)
router.include_router(login.router)


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, "", [])
    )
    return f"<table>{cells}</table>"


def _node_html(node: dict[str, Any], focus: Any) -> str:
    is_focus = focus is not None and node.get("id") == focus or bool(node.get("isAlertProcess"))
    name = node.get("fileName") or node.get("name") or "(unknown process)"
    meta = " · ".join(
        x
        for x in (
            f"pid {_e(node.get('processId'))}" if node.get("processId") is not None else "",
            f"started {_e(node.get('creationTime'))}" if node.get("creationTime") else "",
            f"user {_e(node.get('accountName'))}" if node.get("accountName") else "",
            _e(node.get("folderPath")) if node.get("folderPath") else "",
        )
        if x
    )
    cmd = node.get("commandLine")
    children = node.get("children") or []
    inner = "".join(_node_html(c, focus) for c in children)
    return (
        f'<li class="proc{" focus" if is_focus else ""}" data-process="{_e(name)}">'
        f'<div class="node"><strong class="pname">{_e(name)}</strong>'
        f"{f' <code>{_e(cmd)}</code>' if cmd else ''}"
        f"{f'<div class=meta>{meta}</div>' if meta else ''}</div>"
        f"{f'<ul>{inner}</ul>' if inner else ''}</li>"
    )


def _tree_html(tree: dict[str, Any] | None, error: str | None) -> str:
    if error:
        return f'<p class="meta">The process tree could not be built: {_e(error)}</p>'
    if not tree or not tree.get("roots"):
        note = (tree or {}).get("note") or "no process events were found for this alert"
        return f'<p class="meta">No process tree: {_e(note)}.</p>'
    roots = "".join(_node_html(n, tree.get("focusId")) for n in tree["roots"])
    return f'<ul class="tree" id="process-tree">{roots}</ul>'


def render_alert(alert: dict[str, Any], tree: dict[str, Any] | None, tree_error: str | None) -> str:
    sev = str(alert.get("severity") or "")
    device = alert.get("deviceName") or alert.get("deviceId")
    head = (
        f'<h1 id="alert-title">{_e(alert.get("title"))}</h1>'
        f'<p><span class="sev sev-{_e(sev)}">{_e(sev)}</span> · {_e(alert.get("status"))}'
        f' · device <strong id="alert-device">{_e(device)}</strong></p>'
    )
    summary = _kv_table(
        [
            ("Alert id", alert.get("id")),
            (
                "Rule",
                f"{alert.get('ruleName')} (rule {alert.get('ruleId')})"
                if alert.get("ruleName")
                else alert.get("ruleId"),
            ),
            ("Event time", alert.get("timestamp")),
            ("Created", alert.get("createdAt")),
            ("Incident", alert.get("incidentId")),
            ("Category", alert.get("category")),
            ("MITRE techniques", ", ".join(alert.get("mitreTechniques") or [])),
            ("Device", f"{alert.get('deviceName')} ({alert.get('deviceId')})"),
            ("Assigned to", alert.get("assignedTo")),
            ("Classification", alert.get("classification")),
            ("Evidence", alert.get("evidenceSummary")),
        ]
    )
    desc = f"<p>{_e(alert.get('description'))}</p>" if alert.get("description") else ""
    entities = alert.get("entities") or []
    ent_rows = "".join(
        f"<tr><th>{_e(ent.get('entityType') or ent.get('type'))}</th><td><code>"
        + _e(
            ", ".join(
                f"{k}={v}"
                for k, v in ent.items()
                if k not in ("entityType", "type") and v not in (None, "")
            )
        )
        + "</code></td></tr>"
        for ent in entities
        if isinstance(ent, dict)
    )
    ent_html = f'<h2>Entities</h2><table id="entities">{ent_rows}</table>' if ent_rows else ""
    rows = alert.get("evidenceRows") or []
    ev_html = ""
    for i, row in enumerate(rows[:20]):
        if isinstance(row, dict):
            ev_html += f"<h3>Evidence row {i + 1}</h3>" + _kv_table(list(row.items()))
    if ev_html:
        ev_html = f'<h2>Evidence</h2><div id="evidence">{ev_html}</div>'
    tree_html = f"<h2>Process tree</h2>{_tree_html(tree, tree_error)}"
    api = f'<p class="meta">JSON: <code>/api/alerts/{_e(quote(str(alert.get("id")), safe=""))}</code></p>'
    return head + desc + summary + tree_html + ent_html + ev_html + api


def _signed_in(request: Request, here: str, what: str) -> sessions.Principal | Response:
    """The page's viewer, or the sign-in form: 401 without a key or session, 403 with one whose
    scope cannot read alerts."""
    who = sessions.principal(request)
    if who is None:
        return login_form(here, f"Sign in to see this {what}.", 401)
    if not allows(who.scope, login.PAGE_SCOPE):
        return login_form(
            here, f"You are signed in with scope '{who.scope}'; this page needs 'query' or 'admin'.", 403
        )
    return who


@router.get("/alerts/{alert_id}")
async def alert_page(request: Request, alert_id: str) -> Response:
    who = _signed_in(request, f"/alerts/{quote(alert_id, safe='')}", "alert")
    if isinstance(who, Response):
        return who
    state = request.app.state
    alert = await run_in_threadpool(sources.get_alert, state, alert_id)
    if alert is None:
        return page(
            "Alert not found",
            f"<h1>Alert not found</h1><p>No alert with id <code>{_e(alert_id)}</code>.</p>",
            404,
            who,
        )
    tree, tree_error = await run_in_threadpool(sources.get_process_tree, state, alert_id)
    return page(f"Quarry alert: {alert.get('title')}", render_alert(alert, tree, tree_error), who=who)


def render_incident(incident: dict[str, Any]) -> str:
    sev = str(incident.get("severity") or "")
    head = (
        f'<h1 id="incident-title">{_e(incident.get("displayName"))}</h1>'
        f'<p><span class="sev sev-{_e(sev)}">{_e(sev)}</span> · {_e(incident.get("status"))}'
        f" · {_e(incident.get('alertCount'))} alert(s)</p>"
    )
    summary = _kv_table(
        [
            ("Incident id", incident.get("id")),
            ("First activity", incident.get("firstActivityDateTime")),
            ("Last activity", incident.get("lastActivityDateTime")),
            ("Devices", ", ".join(str(d.get("deviceName") or d.get("deviceId")) for d in incident.get("devices") or [])),
            ("Assigned to", incident.get("assignedTo")),
            ("Classification", incident.get("classification")),
            ("Determination", incident.get("determination")),
        ]
    )
    rows = "".join(
        f'<tr><td><a href="/alerts/{_e(quote(str(a.get("id")), safe=""))}">{_e(a.get("title"))}</a></td>'
        f"<td>{_e(a.get('severity'))}</td><td>{_e(a.get('status'))}</td>"
        f"<td>{_e(a.get('deviceName') or a.get('deviceId'))}</td><td>{_e(a.get('timestamp'))}</td></tr>"
        for a in incident.get("alerts") or []
    )
    alerts = (
        '<h2>Alerts</h2><table id="incident-alerts"><tr><th>Title</th><th>Severity</th>'
        f"<th>Status</th><th>Device</th><th>Event time</th></tr>{rows}</table>"
    )
    api = f'<p class="meta">JSON: <code>/api/incidents/{_e(incident.get("id"))}</code></p>'
    return head + summary + alerts + api


@router.get("/incidents/{incident_id}")
async def incident_page(request: Request, incident_id: str) -> Response:
    # A str, not an int: a malformed id must meet the sign-in check first, then a 404.
    who = _signed_in(request, f"/incidents/{quote(incident_id, safe='')}", "incident")
    if isinstance(who, Response):
        return who
    incident = None
    # ASCII digits only (str.isdigit() takes "²", which int() refuses) and within SQLite's
    # INTEGER, so any other id is the 404 below
    if incident_id.isascii() and incident_id.isdigit() and int(incident_id) < 2**63:
        incident = await run_in_threadpool(sources.get_incident, request.app.state, int(incident_id))
    if incident is None:
        return page(
            "Incident not found",
            f"<h1>Incident not found</h1><p>No incident with id <code>{_e(incident_id)}</code>.</p>",
            404,
            who,
        )
    return page(f"Quarry incident: {incident.get('displayName')}", render_incident(incident), who=who)


# Read by the docs page (server/web/docs.py) to show the scope.
alert_page.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
incident_page.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
