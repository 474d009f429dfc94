"""The alert page, ``GET /alerts/{id}``, and the incident page, ``GET /incidents/{id}``: the alert,
its evidence and the process tree, server-rendered from templates (``alert.html``,
``incident.html``), linked from notification emails and from the console's queues.

Data comes through the same functions as the JSON API of detections (``server/web/sources.py``),
so the page and ``GET /api/alerts/{id}`` cannot disagree. Signed-in browsers also get a triage
form (status, classification, assignee, comment) that the console's script sends to
``PATCH /api/alerts/{id}`` with the session's CSRF token.

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
from server.detections.model import ALERT_STATUSES, CLASSIFICATIONS
from server.web import login, sessions, sources
from server.web.html import ENV, login_form, render

router = APIRouter(include_in_schema=False)
router.include_router(login.router)


def render_alert(alert: dict[str, Any], tree: dict[str, Any] | None, tree_error: str | None,
                 who: sessions.Principal | None = None) -> str:
    """The alert page's HTML (the template escapes every value)."""
    return ENV.get_template("alert.html").render(
        who=who, nav=[], active="/alerts", title=f"Quarry alert: {alert.get('title')}", alert=alert,
        tree=tree, tree_error=tree_error, statuses=ALERT_STATUSES, classifications=CLASSIFICATIONS,
    )


def signed_in(request: Request, here: str, what: str) -> sessions.Principal | Response:
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


def not_found(who: sessions.Principal, what: str, ident: str, active: str) -> Response:
    return render("message.html", 404, who, title=f"{what} not found", heading=f"{what} not found",
                  message=f"No {what.lower()} with id {ident}.", link=None, active=active)


@router.get("/alerts/{alert_id}")
async def alert_page(request: Request, alert_id: str) -> Response:
    who = signed_in(request, f"/alerts/{quote(alert_id, safe='')}", "alert")
    if isinstance(who, Response):
        return who
    state = request.app.state
    alert = await run_in_threadpool(sources.get_alert, state, alert_id)
    if alert is None:
        return not_found(who, "Alert", alert_id, "/alerts")
    tree, tree_error = await run_in_threadpool(sources.get_process_tree, state, alert_id)
    return render("alert.html", who=who, active="/alerts", title=f"Quarry alert: {alert.get('title')}",
                  alert=alert, tree=tree, tree_error=tree_error, statuses=ALERT_STATUSES,
                  classifications=CLASSIFICATIONS)


@router.get("/incidents/{incident_id}")
async def incident_page(request: Request, incident_id: str) -> Response:
    # A str, not an int: a malformed id must meet the sign-in check first, then a 404.
    who = signed_in(request, f"/incidents/{quote(incident_id, safe='')}", "incident")
    if isinstance(who, Response):
        return who
    incident = None
    # ASCII digits only (str.isdigit() takes "²", which int() refuses) and within SQLite's
    # INTEGER, so any other id is the 404 below
    if incident_id.isascii() and incident_id.isdigit() and int(incident_id) < 2**63:
        incident = await run_in_threadpool(sources.get_incident, request.app.state, int(incident_id))
    if incident is None:
        return not_found(who, "Incident", incident_id, "/incidents")
    return render("incident.html", who=who, active="/incidents",
                  title=f"Quarry incident: {incident.get('displayName')}", incident=incident,
                  statuses=ALERT_STATUSES, classifications=CLASSIFICATIONS)


# Read by the docs page (server/web/docs.py) to show the scope.
alert_page.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
incident_page.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
