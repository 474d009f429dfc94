"""Browser sessions of the alert pages and /docs, against a real uvicorn server: the cookie holds a
session token (never the key, only its hash stored), sessions expire, end at sign-out and with
their key, cross-site posts are refused, ``next`` never leaves the site, the wrong scope is 403.

An authorised request for an alert that does not exist answers 404, an unauthorised one 401, so
``/alerts/nope`` tells whether a cookie opens the pages without creating alerts."""

from __future__ import annotations

import hashlib
import html
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from server.auth import revoke_key
from server.web import sessions
from tests.notify_helpers import ADMIN, LiveServer, live_server, settings_for

PUBLIC = "http://quarry.test:8080"  # settings_for's public_url (the site behind a proxy)
PAGE = "/alerts/nope"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(settings_for(tmp_path_factory.mktemp("sessions"))) as s:
        yield s


def origin(s: LiveServer) -> dict[str, str]:
    return {"Origin": s.url}


def login(s: LiveServer, key: str, next_path: str = "/alerts/nope",
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{s.url}/login", data={"key": key, "next": next_path},
                      headers=origin(s) if headers is None else headers, follow_redirects=False, timeout=30)


def token_of(r: httpx.Response, name: str = "quarry_session") -> str:
    assert r.status_code == 303, r.text
    value = r.cookies.get(name)
    assert value, r.headers.get_list("set-cookie")
    return value


def page(s: LiveServer, token: str | None, path: str = PAGE, name: str = "quarry_session",
         **headers: str) -> httpx.Response:
    h = dict(headers)
    if token is not None:
        h["Cookie"] = f"{name}={token}"
    return httpx.get(s.url + path, headers=h, timeout=30, follow_redirects=False)


def key_id(s: LiveServer, key: str) -> int:
    rows = s.app.state.metadata.query("SELECT id FROM api_keys WHERE key_hash = ?",
                                      (hashlib.sha256(key.encode()).hexdigest(),))
    return int(rows[0]["id"])


def test_cookie_holds_a_session_token_not_the_key(srv: LiveServer) -> None:
    key = srv.key("query", "analyst")
    r = login(srv, key)
    token = token_of(r)
    assert r.headers["location"] == PAGE
    set_cookie = " ".join(r.headers.get_list("set-cookie"))
    assert key not in set_cookie and key not in r.text
    assert token.startswith("qs_") and token != key
    attrs = [a.strip().lower() for a in r.headers.get_list("set-cookie")[0].split(";")]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # public_url is http here
    assert f"max-age={12 * 3600}" in attrs  # the default session_ttl_h
    # the old raw-key cookie is cleared in browsers that still hold one
    assert any(c.startswith("quarry_key=") for c in r.headers.get_list("set-cookie"))
    assert page(srv, token).status_code == 404  # signed in: the page looks the alert up
    # Only the token's SHA-256 is stored; neither the token nor the key is anywhere in SQLite.
    rows = srv.app.state.metadata.query("SELECT token_hash, scope, key_id FROM web_sessions")
    mine = [row for row in rows if row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()]
    assert len(mine) == 1 and mine[0]["scope"] == "query" and mine[0]["key_id"] == key_id(srv, key)
    data_dir = Path(srv.app.state.settings.data_dir)
    for f in data_dir.glob("metadata.sqlite*"):
        blob = f.read_bytes()
        assert token.encode() not in blob and key.encode() not in blob, f


def test_session_cookie_opens_the_json_api_only_with_its_csrf_token(srv: LiveServer) -> None:
    token = token_of(login(srv, srv.key("query")))
    r = page(srv, token, "/api/alerts")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "csrf"
    cookie = {"Cookie": f"quarry_session={token}"}
    other = sessions.csrf_token(token_of(login(srv, srv.key("query"))))  # another session's token
    for bad in ("", "0" * 64, other):
        r = httpx.get(f"{srv.url}/api/alerts", headers={**cookie, "X-CSRF-Token": bad}, timeout=30)
        assert r.status_code == 403, bad
    good = {**cookie, "X-CSRF-Token": sessions.csrf_token(token)}
    assert httpx.get(f"{srv.url}/api/alerts", headers=good, timeout=30).status_code == 200
    # ...and with the session's scope: a query session cannot administer rules.
    r = httpx.post(f"{srv.url}/api/detections/rules", json={"name": "x", "query": "DeviceInfo"}, headers=good,
                   timeout=30)
    assert r.status_code == 403 and "scope 'query'" in r.json()["error"]


def test_raw_key_cookie_is_no_longer_accepted(srv: LiveServer) -> None:
    key = srv.key("query")
    assert page(srv, key, name="quarry_key").status_code == 401
    assert page(srv, key).status_code == 401  # nor a key put in the session cookie


def test_session_expires_after_the_ttl(srv: LiveServer) -> None:
    store = sessions.store(srv.app.state)
    t0 = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
    now = [t0]
    store.clock = lambda: now[0]
    try:
        token = token_of(login(srv, srv.key("query")))
        now[0] = t0 + timedelta(hours=12) - timedelta(seconds=1)
        assert page(srv, token).status_code == 404
        now[0] = t0 + timedelta(hours=12)
        r = page(srv, token)
        assert r.status_code == 401 and 'id="key"' in r.text  # back to the sign-in form
        # A later sign-in tidies expired rows away: the session cannot come back.
        now[0] = t0 + timedelta(hours=13)
        token_of(login(srv, srv.key("query")))
        now[0] = t0
        assert page(srv, token).status_code == 401
        gone = srv.app.state.metadata.query(
            "SELECT 1 FROM web_sessions WHERE token_hash = ?", (hashlib.sha256(token.encode()).hexdigest(),))
        assert gone == []
    finally:
        store.clock = lambda: datetime.now(UTC)


def test_logout_ends_the_session_on_the_server(srv: LiveServer) -> None:
    token = token_of(login(srv, srv.key("query")))
    r = httpx.post(f"{srv.url}/logout", headers={**origin(srv), "Cookie": f"quarry_session={token}"},
                   follow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    cleared = [c for c in r.headers.get_list("set-cookie") if c.startswith("quarry_session=")]
    assert cleared and ("max-age=0" in cleared[0].lower() or "expires=thu, 01 jan 1970" in cleared[0].lower())
    # A copy of the cookie kept elsewhere is useless: the session is revoked, not just forgotten.
    assert page(srv, token).status_code == 401


def test_cross_site_logout_is_refused(srv: LiveServer) -> None:
    token = token_of(login(srv, srv.key("query")))
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Referer": "https://evil.example/page"}, {}):
        r = httpx.post(f"{srv.url}/logout", headers={**headers, "Cookie": f"quarry_session={token}"},
                       follow_redirects=False, timeout=30)
        assert r.status_code == 403, headers
        assert not r.headers.get_list("set-cookie")
    assert page(srv, token).status_code == 404  # still signed in


def test_revoking_the_key_ends_its_sessions(srv: LiveServer) -> None:
    key, other = srv.key("query"), srv.key("query")
    t1, t2 = token_of(login(srv, key)), token_of(login(srv, key))
    t3 = token_of(login(srv, other))
    assert revoke_key(srv.app.state.metadata, key_id(srv, key))
    assert page(srv, t1).status_code == 401 and page(srv, t2).status_code == 401
    assert page(srv, t3).status_code == 404  # another key's session lives on
    assert login(srv, key).status_code == 401
    # Revoked by any other means (plain SQL, a future CLI): the lookup checks the key each time.
    with srv.app.state.metadata.tx() as conn:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                     (datetime.now(UTC).isoformat(), key_id(srv, other)))
    assert page(srv, t3).status_code == 401


def test_env_admin_key_session_ends_when_the_env_key_changes(srv: LiveServer) -> None:
    token = token_of(login(srv, ADMIN))
    assert page(srv, token).status_code == 404
    settings = srv.app.state.settings
    try:
        settings.admin_key = "a-new-admin-key"
        assert page(srv, token).status_code == 401
    finally:
        settings.admin_key = ADMIN
    assert page(srv, token).status_code == 404


def test_login_refuses_cross_site_posts(srv: LiveServer) -> None:
    key = srv.key("query")
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Origin": f"{srv.url}.evil.example"}, {"Referer": "https://evil.example/x"}, {}):
        r = login(srv, key, headers=headers)
        assert r.status_code == 403, headers
        assert "another site" in r.text or "neither an Origin" in r.text
        assert not r.headers.get_list("set-cookie"), headers
    # Our own origin, as addressed, as the public URL behind a proxy, or by Referer alone.
    for headers in (origin(srv), {"Origin": PUBLIC}, {"Referer": f"{srv.url}/login?next=/docs"}):
        assert login(srv, key, headers=headers).status_code == 303, headers


def test_sign_in_rotates_the_session(srv: LiveServer) -> None:
    key = srv.key("query")
    old = token_of(login(srv, key))
    r = httpx.post(f"{srv.url}/login", data={"key": key, "next": PAGE},
                   headers={**origin(srv), "Cookie": f"quarry_session={old}"}, follow_redirects=False, timeout=30)
    new = token_of(r)
    assert new != old
    assert page(srv, old).status_code == 401 and page(srv, new).status_code == 404


@pytest.mark.parametrize(("target", "expected"), [
    ("/alerts/qa1", "/alerts/qa1"),
    ("/docs?x=1#y", "/docs?x=1#y"),
    ("//evil.example/x", "/"),
    ("https://evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("/\t/evil.example", "/"),
    ("/\n/evil.example", "/"),
    ("javascript:alert(1)", "/"),
    ("evil.example", "/"),
    ("", "/"),
])
def test_next_never_leaves_the_site(srv: LiveServer, target: str, expected: str) -> None:
    r = login(srv, srv.key("query"), next_path=target)
    assert r.status_code == 303 and r.headers["location"] == expected
    form = httpx.get(f"{srv.url}/login", params={"next": target}, timeout=30)
    assert form.status_code == 200 and f'name="next" value="{expected}"' in form.text.replace("&amp;", "&")


def test_wrong_scope_is_forbidden_not_unauthorised(srv: LiveServer) -> None:
    ingest = srv.key("ingest")
    r = page(srv, None, Authorization=f"Bearer {ingest}")
    assert r.status_code == 403 and "scope 'ingest'" in html.unescape(r.text)
    r = login(srv, ingest)
    assert r.status_code == 403 and "scope 'ingest'" in html.unescape(r.text) and not r.headers.get_list("set-cookie")
    # A session of another scope (the store makes them; sign-in does not for these pages).
    made = sessions.store(srv.app.state).create(ingest, ADMIN)
    assert made is not None and made[1] == "ingest"
    assert page(srv, made[0]).status_code == 403
    assert page(srv, None, Authorization="Bearer qk_wrong").status_code == 401
    # A bad bearer header is not rescued by a good cookie.
    good = token_of(login(srv, srv.key("query")))
    assert page(srv, good, Authorization="Bearer qk_wrong").status_code == 401


def test_https_public_url_sets_a_secure_host_only_cookie(tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path, public_url="https://quarry.example")) as s:
        r = login(s, s.key("query"), headers={"Origin": "https://quarry.example"})
        assert r.status_code == 303
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("__Host-quarry_session="))
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert "secure" in attrs and "httponly" in attrs and "path=/" in attrs
        assert not any(a.startswith("domain=") for a in attrs)
        token = cookie.split(";")[0].split("=", 1)[1]
        assert page(s, token, name="__Host-quarry_session").status_code == 404
        assert page(s, token, name="quarry_session").status_code == 401


def test_sessions_table_is_a_new_migration(tmp_path: Path) -> None:
    """The sessions table comes from a migration appended after the existing ones: an existing
    data directory at the previous version upgrades in place and keeps its keys."""
    from server.auth import create_key, lookup_scope
    from server.metadata import MIGRATIONS, MetadataDB

    n = next(i for i, sql in enumerate(MIGRATIONS) if "CREATE TABLE web_sessions" in sql)
    old = MetadataDB(tmp_path / "m.sqlite", MIGRATIONS[:n])
    key = create_key(old, "query")
    old.close()
    db = MetadataDB(tmp_path / "m.sqlite")
    try:
        assert lookup_scope(db, key, None) == "query"
        store = sessions.SessionStore(db, timedelta(hours=1))
        made = store.create(key, None)
        assert made is not None and store.lookup(made[0], None) is not None
        version = sqlite3.connect(tmp_path / "m.sqlite").execute("PRAGMA user_version").fetchone()[0]
        assert version == len(MIGRATIONS)
    finally:
        db.close()


def test_oversized_sign_in_form_is_refused(srv: LiveServer) -> None:
    r = httpx.post(f"{srv.url}/login", content=b"key=" + b"a" * 100_000, headers={
        **origin(srv), "Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 413 and not r.headers.get_list("set-cookie")
