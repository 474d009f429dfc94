"""What the server-rendered pages share: the Jinja2 templates (``server/web/templates``, with
automatic escaping, so no value reaches a page unescaped), the layout's navigation and the
security headers. ``render`` is the one way a page is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from server.web.sessions import Principal

TEMPLATES = Path(__file__).parent / "templates"

# Scripts only from this server's own files (no inline script, no eval); inline styles are allowed
# because the editor (CodeMirror) injects its style sheets at run time.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: alert ids still never leave the site, and browsers send our
    # real Origin on our own form posts (under no-referrer they send "Origin: null", which the
    # cross-site check of /login and /logout would have to refuse).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
# Every page's navigation (the layout marks the current one).
NAV: list[tuple[str, str]] = [
    ("Hunting", "/hunting"),
    ("Alerts", "/alerts"),
    ("Incidents", "/incidents"),
    ("Rules", "/rules"),
    ("Devices", "/devices"),
]

ENV = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt variable is an error, not a silently empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["q"] = lambda v: quote("" if v is None else str(v), safe="")  # one path segment


def render(template: str, status: int = 200, who: Principal | None = None,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """A page from ``template``; ``who`` (the viewer) turns on the navigation, the console's
    script and its CSRF token."""
    doc = ENV.get_template(template).render(who=who, nav=NAV, **context)
    return HTMLResponse(doc, status_code=status, headers=headers or HEADERS)


def login_form(next_path: str, message: str, status: int = 401) -> HTMLResponse:
    return render("login.html", status, None, title="Quarry: sign in", next_path=next_path, message=message)
