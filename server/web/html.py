"""What the server-rendered pages share: escaping, the page shell, security headers."""

from __future__ import annotations

import html
from typing import Any

from fastapi.responses import HTMLResponse

from server.web.sessions import Principal

HEADERS = {
    # Inline styles only; no scripts, frames or forms to elsewhere.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: alert ids still never leave the site, and browsers send our
    # real Origin on our own form posts (under no-referrer they send "Origin: null", which the
    # cross-site check of /login and /logout would have to refuse).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { text-align: left; padding: .25rem .75rem .25rem 0; vertical-align: top; }
th { color: #555; font-weight: 600; white-space: nowrap; }
code, pre.ex { font-family: ui-monospace, monospace; font-size: .9em; word-break: break-all; }
pre.ex { white-space: pre-wrap; background: #f6f6f6; padding: .4rem; margin: .2rem 0; }
.sev { display: inline-block; padding: .1rem .5rem; border-radius: .3rem; background: #eee; }
.sev-high { background: #f8d0d0; } .sev-medium { background: #fbe3c4; } .sev-low { background: #fff4bf; }
ul.tree, ul.tree ul { list-style: none; padding-left: 1.4rem; border-left: 1px dashed #bbb; }
ul.tree { border-left: none; padding-left: 0; }
li.proc { margin: .35rem 0; }
li.proc.focus > .node { background: #fff3c4; }
.node { padding: .15rem .3rem; border-radius: .2rem; }
.meta { color: #666; font-size: .85em; }
nav.session { float: right; font-size: .85em; color: #555; }
nav.session form { display: inline; }
"""


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def session_nav(who: Principal | None) -> str:
    """'Signed in with scope X' and a sign-out button, for pages opened with a session."""
    if who is None or who.via != "session":
        return ""
    return (
        f'<nav class="session">Signed in (scope {e(who.scope)}) '
        '<form method="post" action="/logout"><button type="submit" id="signout">Sign out</button>'
        "</form></nav>"
    )


def page(title: str, body: str, status: int = 200, who: Principal | None = None,
         headers: dict[str, str] | None = None, head: str = "") -> HTMLResponse:
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{CSS}</style>{head}</head>"
        f"<body>{session_nav(who)}{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=headers or HEADERS)


def login_form(next_path: str, message: str, status: int = 401) -> HTMLResponse:
    body = (
        "<h1>Quarry: sign in</h1>"
        f'<p id="message">{e(message)}</p>'
        '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{e(next_path)}">'
        "<label>API key (query or admin scope) "
        '<input type="password" name="key" id="key" autocomplete="current-password" size="50"></label> '
        '<button type="submit" id="signin">Sign in</button></form>'
        '<p class="meta">The key is checked once; the browser then holds a session that expires, '
        "never the key itself.</p>"
    )
    return page("Quarry: sign in", body, status)
