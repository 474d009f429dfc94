"""Sign-in and sign-out of the browser pages: ``GET /login`` (the form), ``POST /login`` (key in,
session cookie out), ``POST /logout`` (ends the session). See ``server/web/sessions.py``.

Cross-site request forgery: the cookie is SameSite=Lax, so other sites' sub-requests and form
posts do not carry it, and both POST routes also refuse a request whose Origin (or, without one,
Referer) is not this server, so another site can neither sign a browser in with the attacker's
key nor sign it out.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from server.auth import allows, lookup_scope
from server.web import sessions
from server.web.html import HEADERS, login_form, render

router = APIRouter(include_in_schema=False)

MAX_LOGIN_BODY = 8192
PAGE_SCOPE = "query"  # what the browser pages (console, alerts, /docs) need; admin implies it


def refused(reason: str) -> Response:
    return render("message.html", 403, None, title="Quarry: request refused", heading="Request refused",
                  message=f"This form must be sent from Quarry's own pages: {reason}.",
                  link="/login", link_text="Sign in again")


@router.get("/login")
async def login_page(next_path: str | None = Query(None, alias="next")) -> Response:
    return login_form(sessions.safe_next(next_path, "/"), "Sign in with an API key.", 200)


@router.post("/login")
async def login(request: Request) -> Response:
    raw = b""
    async for chunk in request.stream():  # read no more than the cap, whatever is sent
        raw += chunk
        if len(raw) > MAX_LOGIN_BODY:
            return login_form("/", "The sign-in form was too large.", 413)
    form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    key = (form.get("key") or [""])[0].strip()
    next_path = sessions.safe_next((form.get("next") or [""])[0], "/")
    state = request.app.state
    # The key is checked before the origin so that any request without a valid key earns the
    # same 401, whatever its headers; a cross-site post with a valid key is then refused.
    scope = lookup_scope(state.metadata, key, state.settings.admin_key) if key else None
    if scope is None:
        return login_form(next_path, "That key is not valid.", 401)
    if not allows(scope, PAGE_SCOPE):
        return login_form(
            next_path, f"That key has scope '{scope}'; the browser pages need 'query' or 'admin'.", 403
        )
    why = sessions.same_origin_post(request)
    if why is not None:
        return refused(why)
    created = sessions.store(state).create(key, state.settings.admin_key)
    if created is None:  # revoked in between
        return login_form(next_path, "That key is not valid.", 401)
    # A fresh token at every sign-in (no fixation); the session the browser had is ended.
    old = sessions.session_token(request)
    if old:
        sessions.store(state).revoke(old)
    resp = RedirectResponse(next_path, status_code=303, headers=HEADERS)
    sessions.set_session_cookie(resp, state, created[0])
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    why = sessions.same_origin_post(request)
    if why is not None:
        return refused(why)
    token = sessions.session_token(request)
    if token:
        sessions.store(request.app.state).revoke(token)
    resp = RedirectResponse("/login", status_code=303, headers=HEADERS)
    sessions.clear_session_cookie(resp, request.app.state)
    return resp
