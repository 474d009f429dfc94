"""The alert page, ``GET /alerts/{id}``: the alert, its evidence and the process tree, as plain
server-rendered HTML (no JavaScript), linked from notification emails.

Data comes through the same functions as the JSON API of detections (``server/web/sources.py``),
so the page and ``GET /api/alerts/{id}`` cannot disagree.

Auth: a browser following a link from an email cannot send a bearer header, so the page also
accepts the key from an HttpOnly cookie set by a small login form (``POST /login``). The cookie
is SameSite=Lax (sent on the top-level navigation from a mail client, not on cross-site
sub-requests) and only the HTML pages read it; the JSON API keeps requiring the header. The
scope needed is ``query``, as for reading alerts through the API.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from server.auth import lookup_scope
from server.web import sources

router = APIRouter(include_in_schema=False)

COOKIE = "quarry_key"
MAX_LOGIN_BODY = 8192
_HEADERS = {
    # Inline styles only; no scripts, frames, forms to elsewhere or referrers leaking alert ids.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { text-align: left; padding: .25rem .75rem .25rem 0; vertical-align: top; }
th { color: #555; font-weight: 600; white-space: nowrap; }
code { font-family: ui-monospace, monospace; font-size: .9em; word-break: break-all; }
.sev { display: inline-block; padding: .1rem .5rem; border-radius: .3rem; background: #eee; }
.sev-high { background: #f8d0d0; } .sev-medium { background: #fbe3c4; } .sev-low { background: #fff4bf; }
ul.tree, ul.tree ul { list-style: none; padding-left: 1.4rem; border-left: 1px dashed #bbb; }
ul.tree { border-left: none; padding-left: 0; }
li.proc { margin: .35rem 0; }
li.proc.focus > .node { background: #fff3c4; }
.node { padding: .15rem .3rem; border-radius: .2rem; }
.meta { color: #666; font-size: .85em; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=_HEADERS)


def _key_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE) or None


def _authorised(request: Request) -> bool:
    key = _key_from(request)
    if not key:
        return False
    state = request.app.state
    scope = lookup_scope(state.metadata, key, state.settings.admin_key)
    return scope in ("query", "admin")


def _login_form(next_path: str, message: str, status: int = 401) -> HTMLResponse:
    body = (
        "<h1>Quarry: sign in</h1>"
        f"<p>{_e(message)}</p>"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{_e(next_path)}">'
        "<label>API key (query or admin scope) "
        '<input type="password" name="key" id="key" autocomplete="current-password" size="50"></label> '
        '<button type="submit" id="signin">Sign in</button></form>'
    )
    return _page("Quarry: sign in", body, status)


def _safe_next(value: str) -> str:
    # Only paths on this server: "//host" and "/\\host" would be taken by browsers as other hosts.
    if not value.startswith("/") or value.startswith("//") or value.startswith("/\\"):
        return "/"
    return value


@router.post("/login")
async def login(request: Request) -> Response:
    raw = await request.body()
    if len(raw) > MAX_LOGIN_BODY:
        return _login_form("/", "The sign-in form was too large.", 413)
    form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    key = (form.get("key") or [""])[0].strip()
    next_path = _safe_next((form.get("next") or ["/"])[0])
    state = request.app.state
    scope = lookup_scope(state.metadata, key, state.settings.admin_key) if key else None
    if scope not in ("query", "admin"):
        msg = (
            "That key is not valid."
            if scope is None
            else f"That key has scope '{scope}'; the alert pages need 'query' or 'admin'."
        )
        return _login_form(next_path, msg)
    resp = RedirectResponse(next_path, status_code=303, headers=_HEADERS)
    resp.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="lax",
        secure=str(state.settings.public_url).startswith("https://"),
        path="/",
    )
    return resp


@router.post("/logout")
async def logout() -> Response:
    resp = RedirectResponse("/", status_code=303, headers=_HEADERS)
    resp.delete_cookie(COOKIE, path="/")
    return resp


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


@router.get("/alerts/{alert_id}")
async def alert_page(request: Request, alert_id: str) -> Response:
    if not _authorised(request):
        return _login_form(f"/alerts/{quote(alert_id, safe='')}", "Sign in to see this alert.")
    state = request.app.state
    alert = await run_in_threadpool(sources.get_alert, state, alert_id)
    if alert is None:
        return _page(
            "Alert not found",
            f"<h1>Alert not found</h1><p>No alert with id <code>{_e(alert_id)}</code>.</p>",
            404,
        )
    tree, tree_error = await run_in_threadpool(sources.get_process_tree, state, alert_id)
    return _page(f"Quarry alert: {alert.get('title')}", render_alert(alert, tree, tree_error))
