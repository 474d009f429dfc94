"""Notifications end to end: the real server on loopback, a real aiosmtpd SMTP server, a loopback
webhook receiver; alerts handed to ``app.state.notifier.alerts_created`` as detections do."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.notify_helpers import (
    WebhookReceiver,
    alert,
    device_info,
    live_server,
    settings_for,
    wait_until,
)
from tests.smtp_fixture import SmtpServer, smtp_server_fixture  # noqa: F401  (registers smtp_server)
from tests.support.live import free_port


def _rule(c: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", f"rule-{time.monotonic_ns()}")
    r = c.post("/api/notifications/rules", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _to(messages: list[Any], rcpt: str) -> list[Any]:
    return [m for m in messages if rcpt in m.rcpt_tos]


def test_alert_email_names_everything_and_links_to_the_page(smtp_server: SmtpServer, tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path, **smtp_server.settings())) as s, s.client() as c:
        _rule(c, name="admins", minSeverity="informational", emails=["admin@example.com"])
        s.app.state.notifier.alerts_created([alert("a-1")])
        [mail] = smtp_server.wait_for(1)
        assert mail.rcpt_tos == ["admin@example.com"]
        assert "File copied to USB" in mail.subject and "mac-alice.corp" in mail.subject
        text = mail.text()
        for expected in (
            "File copied to USB",
            "informational",
            "mac-alice.corp (dev-mac-1)",
            "USB copy (rule 7)",
            "2026-11-28T10:00:00.000000Z",
            "cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt",
            "http://quarry.test:8080/alerts/a-1",
        ):
            assert expected in text, expected
        assert 'href="http://quarry.test:8080/alerts/a-1"' in mail.html()
        # The mail can reach the SMTP server a moment before the delivery is marked sent.
        log = wait_until(
            lambda: [d for d in c.get("/api/notifications/deliveries").json()["value"] if d["status"] != "pending"],
            what="the delivery to be recorded",
        )
        assert [(d["status"], d["kind"], d["alertIds"], d["attempts"]) for d in log] == [
            ("sent", "alert", ["a-1"], 1)
        ]


def test_alert_storm_folds_into_one_digest_per_recipient(smtp_server: SmtpServer, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, email_throttle_s=2.0, **smtp_server.settings())
    with live_server(settings) as s, s.client() as c:
        _rule(c, emails=["admin@example.com"])
        notifier = s.app.state.notifier
        notifier.alerts_created([alert("s-1")])
        smtp_server.wait_for(1)
        first_at = time.monotonic()
        for i in range(2, 7):  # five more alerts, one call each, inside the throttle window
            notifier.alerts_created([alert(f"s-{i}")])
        time.sleep(0.8)
        if time.monotonic() - first_at < 1.9:
            assert len(smtp_server.messages) == 1, "alerts inside the window must wait for the digest"
        mails = smtp_server.wait_for(2, timeout=10)
        digest = mails[1]
        assert "5 alerts" in digest.subject
        body = digest.text()
        for i in range(2, 7):
            assert f"http://quarry.test:8080/alerts/s-{i}" in body
        assert "/alerts/s-1\n" not in body  # already had its own email
        # A storm in one call to a recipient that got nothing yet: one digest straight away.
        _rule(c, emails=["soc@example.com"])
        notifier.alerts_created([alert(f"storm-{i}") for i in range(30)])
        wait_until(lambda: _to(smtp_server.messages, "soc@example.com"), what="soc digest")
        time.sleep(0.5)
        soc = _to(smtp_server.messages, "soc@example.com")
        assert len(soc) == 1 and "30 alerts" in soc[0].subject
        log = c.get("/api/notifications/deliveries", params={"recipient": "soc@example.com"}).json()["value"]
        assert len(log) == 1 and len(log[0]["alertIds"]) == 30 and log[0]["kind"] == "digest"
        # admin@ matched the storm too (its rule covers everything) and gets it as one more
        # digest when its window ends: held, not lost, not 30 emails.
        admin = wait_until(
            lambda: [m for m in _to(smtp_server.messages, "admin@example.com") if "30 alerts" in m.subject],
            what="admin's storm digest",
        )
        assert len(admin) == 1 and len(_to(smtp_server.messages, "admin@example.com")) == 3


def test_severity_threshold_and_one_email_per_recipient(smtp_server: SmtpServer, tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path, **smtp_server.settings())) as s, s.client() as c:
        _rule(c, name="high only", minSeverity="high", emails=["x@example.com"])
        _rule(c, name="low and up", minSeverity="low", emails=["X@example.com", "y@example.com"])
        s.app.state.notifier.alerts_created([alert("info-1", severity="informational")])
        s.app.state.notifier.alerts_created([alert("med-1", severity="medium")])
        smtp_server.wait_for(2)
        time.sleep(0.6)
        mails = smtp_server.messages
        assert sorted(m.rcpt_tos[0].lower() for m in mails) == ["x@example.com", "y@example.com"]
        assert all("med-1" in m.text() and "info-1" not in m.text() for m in mails)


def test_failed_send_is_retried_then_delivered(smtp_server: SmtpServer, tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path, **smtp_server.settings())) as s, s.client() as c:
        _rule(c, emails=["admin@example.com"])
        smtp_server.fail_next(1)
        s.app.state.notifier.alerts_created([alert("r-1")])
        smtp_server.wait_for(1)
        [d] = wait_until(
            lambda: [x for x in c.get("/api/notifications/deliveries").json()["value"] if x["status"] == "sent"],
            what="sent status",
        )
        assert d["attempts"] == 2


def test_undeliverable_email_ends_failed_with_its_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, smtp_host="127.0.0.1", smtp_port=free_port())
    with live_server(settings) as s, s.client() as c:
        _rule(c, emails=["admin@example.com"])
        s.app.state.notifier.alerts_created([alert("f-1")])
        [d] = wait_until(
            lambda: c.get("/api/notifications/deliveries", params={"status": "failed"}).json()["value"],
            timeout=15, what="failed status",
        )
        assert d["attempts"] == 3 and d["alertIds"] == ["f-1"]
        assert "SMTP 127.0.0.1" in d["lastError"] and "Connection" in d["lastError"]
        assert c.get("/api/notifications/status").json()["failedMessages"] == 1


def test_webhook_posts_json_and_retries(tmp_path: Path) -> None:
    with WebhookReceiver() as hook, live_server(settings_for(tmp_path)) as s, s.client() as c:
        _rule(c, webhookUrl=hook.url, minSeverity="low")
        hook.fail_next(1)
        s.app.state.notifier.alerts_created([alert("w-1", severity="high"), alert("w-2", severity="informational")])
        [payload] = hook.wait_for(1)
        assert payload["type"] == "alert"
        [a] = payload["alerts"]
        assert a["id"] == "w-1" and a["severity"] == "high" and a["deviceName"] == "mac-alice.corp"
        assert a["alertWebUrl"] == "http://quarry.test:8080/alerts/w-1"
        assert hook.headers[0]["content-type"] == "application/json"
        time.sleep(0.5)
        assert len(hook.received) == 1  # w-2 is below the rule's minSeverity
        [d] = c.get("/api/notifications/deliveries").json()["value"]
        assert d["channel"] == "webhook" and d["attempts"] == 2 and d["status"] == "sent"


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (docs/notifications.md): HMAC over "<timestamp>.<raw body>"."""
    signed = headers["x-quarry-timestamp"].encode() + b"." + body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-quarry-signature"])


def test_webhook_is_signed_with_the_rules_secret_which_is_never_returned(tmp_path: Path) -> None:
    secret = "s3cret-for-the-hook-0123456789"
    with WebhookReceiver() as signed_hook, WebhookReceiver() as plain_hook, \
            live_server(settings_for(tmp_path)) as s, s.client() as c:
        rule = _rule(c, webhookUrl=signed_hook.url, webhookSecret=secret)
        _rule(c, webhookUrl=plain_hook.url)
        # Write-only: no answer carries it, only whether one is set.
        assert "webhookSecret" not in rule and rule["webhookSigned"] is True
        got = c.get(f"/api/notifications/rules/{rule['id']}").json()
        assert secret not in str(got) and got["webhookSigned"] is True
        assert secret not in c.get("/api/notifications/rules").text
        before = int(time.time())
        s.app.state.notifier.alerts_created([alert("sig-1", severity="high")])
        signed_hook.wait_for(1)
        plain_hook.wait_for(1)
        headers, body = signed_hook.headers[0], signed_hook.bodies[0]
        assert headers["x-quarry-signature"].startswith("sha256=")
        assert before <= int(headers["x-quarry-timestamp"]) <= int(time.time())
        assert _verify(secret, headers, body)
        assert not _verify("another-secret-0123456789", headers, body)
        # The timestamp is part of what is signed: a replay with a fresh timestamp fails.
        replay = {**headers, "x-quarry-timestamp": str(int(headers["x-quarry-timestamp"]) + 600)}
        assert not _verify(secret, replay, body)
        assert not _verify(secret, headers, body.replace(b"sig-1", b"sig-2"))
        # Without a secret: no signature headers at all.
        assert "x-quarry-signature" not in plain_hook.headers[0]
        assert "x-quarry-timestamp" not in plain_hook.headers[0]

        # A PATCH that does not name the secret keeps it; the rule's test message is signed too.
        r = c.patch(f"/api/notifications/rules/{rule['id']}", json={"minSeverity": "medium"})
        assert r.status_code == 200 and r.json()["webhookSigned"] is True
        assert c.post("/api/notifications/test", json={"ruleId": rule["id"]}).status_code == 200
        signed_hook.wait_for(2)
        assert signed_hook.received[1]["type"] == "test"
        assert _verify(secret, signed_hook.headers[1], signed_hook.bodies[1])
        # Cleared: the next POST carries no signature.
        r = c.patch(f"/api/notifications/rules/{rule['id']}", json={"webhookSecret": None})
        assert r.status_code == 200 and r.json()["webhookSigned"] is False
        s.app.state.notifier.alerts_created([alert("sig-3", severity="high")])
        signed_hook.wait_for(3)
        assert "x-quarry-signature" not in signed_hook.headers[2]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhookUrl": "http://127.0.0.1:9/h", "webhookSecret": "short"}, "webhookSecret"),
        ({"webhookUrl": "http://127.0.0.1:9/h", "webhookSecret": 12345678901234567}, "webhookSecret"),
        ({"emails": ["a@example.com"], "webhookSecret": "long-enough-secret-1234"}, "webhookSecret"),
    ],
)
def test_webhook_secret_validation(tmp_path: Path, body: dict[str, Any], field: str) -> None:
    with live_server(settings_for(tmp_path)) as s, s.client() as c:
        r = c.post("/api/notifications/rules", json={"name": "r", **body})
        assert r.status_code == 400, r.text
        assert field in r.text and "long-enough-secret" not in r.text


def test_device_group_scoping(smtp_server: SmtpServer, tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path, **smtp_server.settings())) as s, s.client() as c:
        ingest = s.key("ingest", "agent")
        rows = [
            device_info("dev-mac-1", "mac-alice.corp", "macOS", ["finance"]),
            device_info("dev-win-1", "win-bob.corp", "Windows11", ["finance"]),
            device_info("dev-win-2", "win-carol.corp", "Windows11", []),
        ]
        r = httpx.post(f"{s.url}/api/ingest/DeviceInfo", json=rows, headers={"authorization": f"Bearer {ingest}"})
        assert r.status_code < 300, r.text
        macs = c.post("/api/devicegroups", json={"name": "Macs", "osPlatforms": ["macOS"]}).json()
        fin_win = c.post(
            "/api/devicegroups", json={"name": "Finance Windows", "namePattern": "WIN-*", "tags": ["Finance"]}
        ).json()
        _rule(c, name="mac team", emails=["mac-team@example.com"], deviceGroups=[macs["id"]])
        _rule(c, name="fin team", emails=["fin-team@example.com"], deviceGroups=[str(fin_win["id"])])
        _rule(c, name="everyone", emails=["all@example.com"], deviceGroups=[])
        s.app.state.notifier.alerts_created([
            # the alert's own deviceName is not trusted for groups when DeviceInfo knows better
            alert("g-mac", "dev-mac-1", "mac-alice.corp"),
            alert("g-win1", "dev-win-1", "win-bob.corp"),
            alert("g-win2", "dev-win-2", "win-carol.corp"),
        ])
        smtp_server.wait_for(3)
        time.sleep(0.6)
        by = {m.rcpt_tos[0]: m.text() for m in smtp_server.messages}
        assert set(by) == {"mac-team@example.com", "fin-team@example.com", "all@example.com"}
        assert "g-mac" in by["mac-team@example.com"] and "g-win" not in by["mac-team@example.com"]
        assert "g-win1" in by["fin-team@example.com"]
        assert "g-win2" not in by["fin-team@example.com"] and "g-mac" not in by["fin-team@example.com"]
        assert all(f"/alerts/{a}" in by["all@example.com"] for a in ("g-mac", "g-win1", "g-win2"))
        members = c.get(f"/api/devicegroups/{fin_win['id']}/devices").json()["value"]
        assert [m["deviceId"] for m in members] == ["dev-win-1"]
        # a group in use by a notification rule cannot be deleted
        r = c.delete(f"/api/devicegroups/{macs['id']}")
        assert r.status_code == 409 and "mac team" in r.json()["error"]


def test_test_message_endpoint(smtp_server: SmtpServer, tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path, **smtp_server.settings())) as s, s.client() as c:
        r = c.post("/api/notifications/test", json={"emails": ["admin@example.com"]})
        assert r.status_code == 200, r.text
        [mail] = smtp_server.wait_for(1)
        assert mail.subject == "[Quarry] test notification"
        bad = f"http://127.0.0.1:{free_port()}/hook"
        r = c.post("/api/notifications/test", json={"webhookUrl": bad})
        assert r.status_code == 502
        body = r.json()
        assert body["ok"] is False and body["errors"][0]["recipient"] == bad
        assert body["errors"][0]["code"] == "delivery_failed"
        rule = _rule(c, emails=["ops@example.com"])
        assert c.post("/api/notifications/test", json={"ruleId": rule["id"]}).status_code == 200
        assert _to(smtp_server.wait_for(2), "ops@example.com")
        kinds = {(d["recipient"], d["status"]) for d in c.get("/api/notifications/deliveries").json()["value"]}
        assert kinds == {("admin@example.com", "sent"), (bad, "failed"), ("ops@example.com", "sent")}


def test_no_smtp_host_is_an_error_not_silence(tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path)) as s, s.client() as c:
        r = c.post("/api/notifications/test", json={"emails": ["admin@example.com"]})
        assert r.status_code == 502 and "QUARRY_SMTP_HOST" in r.json()["errors"][0]["message"]


def test_alerts_handed_over_survive_a_restart(smtp_server: SmtpServer, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, **smtp_server.settings())
    with live_server(settings) as s, s.client() as c:
        _rule(c, emails=["admin@example.com"])
        s.app.state.notifier.close()  # the worker is gone (as in a crash) before it routes
        s.app.state.notifier.alerts_created([alert("d-1")])
    assert smtp_server.messages == []
    with live_server(settings):
        [mail] = smtp_server.wait_for(1)
        assert "/alerts/d-1" in mail.text()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "r", "emails": ["not-an-address"]}, 400, "emails[0]"),
        ({"name": "r", "emails": []}, 400, "emails"),
        ({"name": "r", "emails": ["a@example.com"], "minSeverity": "critical"}, 400, "minSeverity"),
        ({"name": "r", "emails": ["a@example.com"], "deviceGroups": [999]}, 400, "deviceGroups"),
        ({"name": "r", "webhookUrl": "ftp://example.com/x"}, 400, "webhookUrl"),
        ({"name": "", "emails": ["a@example.com"]}, 400, "name"),
        ({"name": "r", "emails": ["a@example.com"], "bogus": 1}, 400, "bogus"),
    ],
)
def test_rule_validation(tmp_path: Path, body: dict[str, Any], status: int, field: str) -> None:
    with live_server(settings_for(tmp_path)) as s, s.client() as c:
        r = c.post("/api/notifications/rules", json=body)
        assert r.status_code == status, r.text
        err = r.json()
        assert err["ok"] is False and err["errors"][0]["field"] == field


def test_rule_crud_and_auth(tmp_path: Path) -> None:
    with live_server(settings_for(tmp_path)) as s, s.client() as c:
        rule = _rule(c, name="ops", emails=["ops@example.com"], minSeverity="Medium")
        assert rule["minSeverity"] == "medium" and rule["deviceGroups"] == [] and rule["enabled"] is True
        assert c.post("/api/notifications/rules", json={"name": "ops", "emails": ["o@example.com"]}).status_code == 409
        r = c.patch(f"/api/notifications/rules/{rule['id']}", json={"enabled": False, "emails": ["new@example.com"]})
        assert r.status_code == 200 and r.json()["emails"] == ["new@example.com"] and r.json()["enabled"] is False
        assert r.json()["minSeverity"] == "medium"
        assert [x["name"] for x in c.get("/api/notifications/rules").json()["value"]] == ["ops"]
        assert c.delete(f"/api/notifications/rules/{rule['id']}").status_code == 204
        assert c.get(f"/api/notifications/rules/{rule['id']}").status_code == 404
        assert c.patch("/api/notifications/rules/999", json={"enabled": True}).status_code == 404
        with s.client(s.key("query")) as q:
            r = q.get("/api/notifications/rules")
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == "forbidden"
        assert httpx.get(f"{s.url}/api/notifications/rules").status_code == 401


def test_title_with_line_breaks_is_still_emailed(smtp_server: SmtpServer, tmp_path: Path) -> None:
    # A title rendered from a result column (alertTitle "Copy: {{ProcessCommandLine}}") can
    # carry CR/LF, which an email header must not contain: the alert must still be delivered.
    with live_server(settings_for(tmp_path, **smtp_server.settings())) as s, s.client() as c:
        _rule(c, minSeverity="informational", emails=["admin@example.com"])
        s.app.state.notifier.alerts_created([alert("a-nl", title="Copy: cp a\r\nBcc: x@evil.test\nb")])
        [mail] = smtp_server.wait_for(1)
        assert mail.rcpt_tos == ["admin@example.com"]
        assert "Copy: cp a Bcc: x@evil.test b" in mail.subject
        assert "\n" not in mail.subject and "\r" not in mail.subject
        log = wait_until(
            lambda: [d for d in c.get("/api/notifications/deliveries").json()["value"] if d["status"] != "pending"],
            what="the delivery to be recorded",
        )
        assert [(d["status"], d["attempts"]) for d in log] == [("sent", 1)]
