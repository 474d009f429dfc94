"""API docs at /docs against a real uvicorn server: anonymous browsers are sent to the sign-in
form, a session or a query/admin bearer key gets Swagger UI (served from this server, no CDN)
with a server-rendered list of every route, its scope and an example; the examples work; the
page renders in headless Chromium with no request leaving the machine."""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.notify_helpers import ADMIN, LiveServer, live_server, settings_for
from tests.test_auth import OPEN, app_routes, required_scope

PUBLIC = "http://quarry.test:8080"  # settings_for's public_url, used in the examples
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(settings_for(tmp_path_factory.mktemp("docs"))) as s:
        yield s


def session_cookie(s: LiveServer, scope: str = "query") -> dict[str, str]:
    r = httpx.post(f"{s.url}/login", data={"key": s.key(scope), "next": "/docs"},
                   headers={"Origin": s.url}, follow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return {"Cookie": f"quarry_session={r.cookies['quarry_session']}"}


def get(s: LiveServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(s.url + path, headers=headers, follow_redirects=False, timeout=30)


def listed(page: str) -> dict[tuple[str, str], str]:
    """(method, path) -> scope, from the server-rendered endpoint rows."""
    rows = re.findall(r'<tr class="endpoint" data-method="([A-Z]+)" data-path="([^"]+)">'
                      r"(?:.*?</td>){3}<td>([^<]*)</td>", page)
    return {(m, html.unescape(p)): scope for m, p, scope in rows}


def test_anonymous_browser_is_sent_to_sign_in_and_back(srv: LiveServer) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    r = get(srv, "/docs?tab=hunting", **browser)
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("/login?next=")
    form = get(srv, location, **browser)
    assert form.status_code == 200 and 'id="key"' in form.text
    [next_value] = re.findall(r'name="next" value="([^"]*)"', form.text)
    assert html.unescape(next_value) == "/docs?tab=hunting"
    signed = httpx.post(f"{srv.url}/login", data={"key": srv.key("query"), "next": html.unescape(next_value)},
                        headers={"Origin": srv.url}, follow_redirects=False, timeout=30)
    assert signed.status_code == 303 and signed.headers["location"] == "/docs?tab=hunting"
    cookie = f"quarry_session={signed.cookies['quarry_session']}"
    assert get(srv, "/docs?tab=hunting", Cookie=cookie, **browser).status_code == 200


def test_api_clients_get_401_or_403_not_a_redirect(srv: LiveServer) -> None:
    for path in ("/docs", "/docs/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
        for headers in ({}, {"Accept": "application/json"},
                        {"Accept": "text/html", "Authorization": "Bearer qk_not-a-key"}):
            r = get(srv, path, **headers)
            assert r.status_code == 401, (path, headers)
            assert r.json()["ok"] is False and r.headers["www-authenticate"] == "Bearer"
        r = get(srv, path, Authorization=f"Bearer {srv.key('ingest')}")
        assert r.status_code == 403 and "scope 'ingest'" in r.json()["error"]
        for scope in ("query", "admin"):
            assert get(srv, path, Authorization=f"Bearer {srv.key(scope)}").status_code == 200


def test_docs_page_lists_every_route_with_its_scope(srv: LiveServer) -> None:
    r = get(srv, "/docs", **session_cookie(srv))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    rows = listed(r.text)
    routes = app_routes(srv.app)
    api = [rt for rt in routes if rt[1].startswith("/api/")]
    assert len(api) > 30 and ("POST", "/api/ingest/{table}") in api
    missing = [rt for rt in routes if rt not in rows]
    assert not missing, f"routes missing from /docs: {missing}"
    # The scope the page states is the one tests/test_auth.py enforces.
    wrong = {}
    for method, path in routes:
        need = "open" if (method, path) == ("GET", "/healthz") or (method, path) in OPEN else required_scope(method, path)
        if need == "any":
            need = "open"
        shown = rows[(method, path)]
        if (method, path) == ("POST", "/logout"):
            continue  # shown as "session": it ends the caller's own session
        if shown != need:
            wrong[(method, path)] = (shown, need)
    assert not wrong, f"(method, path): (shown, enforced): {wrong}"
    # Every documented operation has a curl example with its method and its path.
    spec = httpx.get(f"{srv.url}/api/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    examples = dict(re.findall(r'data-path="([^"]+)">.*?<pre class=\'ex\'>(curl[^<]*)</pre>', r.text))
    for path, ops in spec["paths"].items():
        for method in ops:
            example = html.unescape(
                re.search(rf'data-method="{method.upper()}" data-path="{re.escape(html.escape(path))}">'
                          r".*?<pre class='ex'>(curl[^<]*)</pre>", r.text).group(1)  # type: ignore[union-attr]
            )
            assert example.startswith("curl") and PUBLIC in example, (method, path)
            assert (f"-X {method.upper()}" in example) == (method != "get"), example
    assert examples
    # The page itself loads nothing from elsewhere.
    assert not re.search(r'(src|href)="(https?:)?//', r.text)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "http" not in csp and "'unsafe-eval'" not in csp


def test_openapi_document_of_the_docs(srv: LiveServer) -> None:
    r = get(srv, "/docs/openapi.json", **session_cookie(srv))
    assert r.status_code == 200
    doc = r.json()
    base = srv.app.openapi()
    assert set(doc["paths"]) == set(base["paths"])
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            need = required_scope(method.upper(), path)
            if path == "/healthz":
                assert op["security"] == [] and op["x-quarry-scope"] == "open"
                continue
            assert op["x-quarry-scope"] == need, (method, path)
            assert op["security"] == [{"bearerAuth": []}]
            assert f"**Scope:** `{need}`" in op["description"] and "curl" in op["description"]
    # The app's own document is not altered by the docs' additions.
    assert "securitySchemes" not in srv.app.openapi().get("components", {})


def test_assets_are_served_from_this_server(srv: LiveServer) -> None:
    cookie = session_cookie(srv)
    js = get(srv, "/docs/assets/swagger-ui-bundle.js", **cookie)
    assert js.status_code == 200 and js.headers["content-type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in js.content and len(js.content) > 500_000
    css = get(srv, "/docs/assets/swagger-ui.css", **cookie)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    init = get(srv, "/docs/assets/init.js", **cookie)
    assert init.status_code == 200 and "/docs/openapi.json" not in init.text  # read from the page
    for name in ("nope.js", "..%2Fcore.py", "redoc.standalone.js"):
        assert get(srv, f"/docs/assets/{name}", **cookie).status_code == 404


def _curl(example: str) -> tuple[str, str, dict[str, str], str | None]:
    args = shlex.split(example)
    assert args[0] == "curl"
    method, headers, body, url = "GET", {}, None, ""
    i = 1
    while i < len(args):
        a = args[i]
        if a == "-X":
            method, i = args[i + 1], i + 2
        elif a == "-H":
            name, _, value = args[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif a == "--data":
            body, i = args[i + 1], i + 2
        else:
            url, i = a, i + 1
    return method, url, headers, body


def test_read_only_examples_work_as_written(srv: LiveServer) -> None:
    """Every GET example, and the POST examples of the hunting (query-scope, read-only) routes,
    sent as written (the key in place of $QUARRY_KEY, this server in place of public_url)."""
    doc = get(srv, "/docs/openapi.json", Authorization=f"Bearer {ADMIN}").json()
    tried, failures = 0, []
    with httpx.Client(timeout=60) as c:
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if method != "get" and (op["x-quarry-scope"] != "query" or method != "post"):
                    continue
                m, url, headers, body = _curl(op["x-quarry-example"])
                if "<" in url or "<" in (body or ""):
                    continue  # needs an id the reader must fill in
                parts = urlsplit(url)
                assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
                headers = {k: v.replace("$QUARRY_KEY", srv.key(op["x-quarry-scope"]) if op["x-quarry-scope"] != "open" else "")
                           for k, v in headers.items()}
                r = c.request(m, srv.url + parts.path + (f"?{parts.query}" if parts.query else ""),
                              headers=headers, content=body)
                tried += 1
                has_id = "{" in path
                # 201: saving a query (the one query-scope POST that keeps something, for its caller)
                if not (r.status_code in (200, 201) or (has_id and r.status_code == 404)):
                    failures.append((m, path, r.status_code, r.text[:200]))
    assert tried >= 15
    assert not failures, failures


def test_swagger_ui_renders_offline_in_chromium(srv: LiveServer, browser: Any) -> None:
    doc = get(srv, "/docs/openapi.json", Authorization=f"Bearer {ADMIN}").json()
    n_ops = sum(len(ops) for ops in doc["paths"].values())
    elsewhere: list[str] = []
    problems: list[str] = []
    context = browser.new_context()
    try:
        page = context.new_page()

        def route(r: Any) -> None:
            if r.request.url.startswith(srv.url):
                r.continue_()
            else:  # nothing may leave the machine (no CDN, no validator badge)
                elsewhere.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{srv.url}/docs")
        assert page.url == f"{srv.url}/login?next=/docs"
        page.fill("#key", srv.key("query"))
        page.click("#signin")
        page.wait_for_selector(".opblock")
        assert page.url == f"{srv.url}/docs"
        assert page.locator(".opblock").count() == n_ops
        assert page.locator("#endpoints").count() == 0  # Swagger UI replaced the fallback list
        page.click("#operations-hunting-native_query_api_query_post .opblock-summary")
        text = page.inner_text("#operations-hunting-native_query_api_query_post")
        assert "Scope: query (or admin)." in text and "curl -X POST" in text
        assert page.locator(".btn.authorize").count() == 1
        page.click("#signout")
        page.wait_for_selector("#key")
        assert page.goto(f"{srv.url}/docs") is not None and page.url.startswith(f"{srv.url}/login")
    finally:
        context.close()
    assert not elsewhere, elsewhere
    assert not problems, problems
