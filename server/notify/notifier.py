"""The notifier: ``alerts_created`` hands alerts over; a background thread routes and delivers.

Flow, every step in SQLite so nothing handed over is lost on a crash or a failed send:

1. ``alerts_created(alerts)`` writes each alert into ``notification_inbox`` and wakes the worker.
   It does no network or DuckDB work, so the detection run that calls it is never held up.
2. Routing: each inbox alert is matched against the enabled notification rules (severity, device
   groups through DeviceInfo) and becomes one ``notification_items`` row per (alert, channel,
   recipient); an alert matched by two rules with the same address is sent once.
3. Composing: webhook items each become a message. Email items are throttled per recipient: when
   the recipient got no email in the last ``email_throttle_s`` seconds, everything waiting for
   it goes out at once (one alert = an alert email, several = a digest); otherwise the items wait
   until the window ends and then go out as one digest. A storm thus costs each recipient one
   email, then at most one digest per window.
4. Sending: due messages are sent; a failure is recorded on the message (``attempts``,
   ``last_error``) and retried with exponential back-off, and after ``notify_max_attempts`` the
   message is marked ``failed`` with its last error, visible in ``GET
   /api/notifications/deliveries``.

Webhook POSTs of a rule with a ``webhookSecret`` are signed: ``X-Quarry-Timestamp`` (Unix
seconds) and ``X-Quarry-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">``, so a
receiver can check the sender and refuse replays of an old body. Each attempt signs afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from server.devices.groups import DeviceFacts, SupportsConnect, device_facts, device_in_groups
from server.metadata import MetadataDB, where_clause
from server.notify import render
from server.notify.rules import NotificationRule, list_rules, validate_emails, validate_webhook
from server.settings import Settings

log = logging.getLogger("quarry.notify")

_TIME_FMT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so ISO strings compare in time order
DIGEST_LIST_CAP = 100  # alerts listed in one digest; the rest are counted, never dropped silently


class DeliveryError(Exception):
    """A send failed; the message is what the delivery log shows."""


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime(_TIME_FMT)


def _parse(s: str) -> datetime:
    return datetime.strptime(s, _TIME_FMT).replace(tzinfo=UTC)


def send_email(settings: Settings, msg: Any) -> None:
    """Send one message with smtplib. Port 465 means implicit TLS; otherwise ``smtp_tls`` asks
    for STARTTLS (and fails rather than falling back to clear text)."""
    if not settings.smtp_host:
        raise DeliveryError("QUARRY_SMTP_HOST is not set, so email cannot be sent")
    timeout = settings.smtp_timeout_s
    try:
        smtp: smtplib.SMTP
        if settings.smtp_port == 465:
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout)
        with smtp:
            if settings.smtp_tls and settings.smtp_port != 465:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(
            f"SMTP {settings.smtp_host}:{settings.smtp_port}: {type(e).__name__}: {e}"
        ) from e
    if refused:
        raise DeliveryError(f"SMTP server refused recipient(s): {refused}")


SIGNATURE_HEADER = "X-Quarry-Signature"
TIMESTAMP_HEADER = "X-Quarry-Timestamp"


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed with the secret over ``<timestamp>.<body>``. The
    timestamp is inside the signed string so a captured POST cannot be replayed as new."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def send_webhook(
    url: str,
    payload: dict[str, Any],
    timeout: float,
    secret: str | None = None,
    now: Callable[[], float] = time.time,
) -> None:
    body = orjson.dumps(payload, default=str)
    headers = {"content-type": "application/json", "user-agent": "Quarry-Notifier"}
    if secret is not None:
        # The body signed is exactly the bytes sent: receivers must verify the raw body, not a
        # re-serialisation of the parsed JSON.
        ts = str(int(now()))
        headers[TIMESTAMP_HEADER] = ts
        headers[SIGNATURE_HEADER] = webhook_signature(secret, ts, body)
    try:
        r = httpx.post(
            url,
            content=body,
            headers=headers,
            timeout=timeout,
            follow_redirects=False,
        )
    except httpx.HTTPError as e:
        raise DeliveryError(f"webhook {url}: {type(e).__name__}: {e}") from e
    if not 200 <= r.status_code < 300:
        raise DeliveryError(f"webhook {url}: HTTP {r.status_code}: {r.text[:200]}")


class Notifier:
    def __init__(
        self,
        settings: Settings,
        metadata: MetadataDB,
        storage: SupportsConnect | Callable[[], SupportsConnect | None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``storage`` (or a function returning it, so the app can hand over storage that its
        lifespan opens later) is where DeviceInfo is read for device-group matching."""
        self.settings = settings
        self.metadata = metadata
        self._storage = storage
        self._clock = clock or (lambda: datetime.now(UTC))
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Serialises run_once between the worker and tests/endpoints that drive it directly.
        self._run_lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def storage(self) -> SupportsConnect | None:
        s = self._storage
        if s is None or hasattr(s, "connect"):
            return s  # type: ignore[return-value]
        return s()  # type: ignore[operator,no-any-return]

    # --- the interface detections use ------------------------------------------------------

    def alerts_created(self, alerts: list[dict[str, Any]]) -> None:
        """Queue alerts for notification; returns at once (delivery runs in the background)."""
        if not alerts:
            return
        now = _fmt(self._clock())
        rows = []
        for a in alerts:
            if not isinstance(a, dict) or a.get("id") in (None, ""):
                raise ValueError(f"alerts_created takes alert dicts with an 'id', got {a!r:.200}")
            rows.append((str(a["id"]), orjson.dumps(a, default=str).decode(), now))
        with self.metadata.tx() as conn:
            conn.executemany(
                "INSERT INTO notification_inbox (alert_id, payload, received_at) VALUES (?, ?, ?)",
                rows,
            )
        self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="quarry-notifier", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception as e:  # the worker must survive anything; the error is surfaced
                log.exception("notifier pass failed")
                self.last_error = f"{type(e).__name__}: {e}"
                wait = self.settings.notify_poll_s
            self._wake.wait(timeout=max(0.01, min(wait, self.settings.notify_poll_s)))
            self._wake.clear()

    # --- one pass ----------------------------------------------------------------------------

    def run_once(self) -> float:
        """Route, compose and send what is due; returns seconds until something is next due."""
        with self._run_lock:
            self._route()
            next_compose = self._compose()
            next_send = self._send_due()
        now = self._clock()
        due = [t for t in (next_compose, next_send) if t is not None]
        return max(0.0, (min(due) - now).total_seconds()) if due else self.settings.notify_poll_s

    def _facts(self, alert: dict[str, Any], cache: dict[str, DeviceFacts]) -> DeviceFacts:
        device_id = str(alert.get("deviceId") or "")
        if device_id in cache:
            return cache[device_id]
        storage = self.storage
        facts = device_facts(storage, device_id) if storage is not None and device_id else None
        if facts is None:
            # No DeviceInfo yet: the alert's own device name still lets name patterns match.
            facts = DeviceFacts(device_id, alert.get("deviceName"))
        elif facts.device_name is None and alert.get("deviceName"):
            facts = DeviceFacts(
                facts.device_id,
                alert.get("deviceName"),
                facts.os_platform,
                facts.machine_group,
                facts.tags,
            )
        cache[device_id] = facts
        return facts

    def targets(
        self, alert: dict[str, Any], rules: list[NotificationRule], cache: dict[str, DeviceFacts]
    ) -> list[tuple[str, str, int]]:
        """(channel, recipient, rule id) for every rule that wants this alert."""
        out: list[tuple[str, str, int]] = []
        for rule in rules:
            if not rule.severity_matches(alert.get("severity")):
                continue
            if rule.device_groups and not device_in_groups(
                self.metadata,
                str(alert.get("deviceId") or ""),
                rule.device_groups,
                facts=self._facts(alert, cache),
            ):
                continue
            out += [("email", e.lower(), rule.id) for e in rule.emails]
            if rule.webhook_url:
                out.append(("webhook", rule.webhook_url, rule.id))
        return out

    def _route(self) -> None:
        rows = self.metadata.query(
            "SELECT id, alert_id, payload, received_at FROM notification_inbox WHERE routed_at IS NULL"
            " ORDER BY id LIMIT 1000"
        )
        if not rows:
            return
        rules = list_rules(self.metadata, enabled_only=True)
        if self._storage is not None and self.storage is None and any(r.device_groups for r in rules):
            # Storage is configured but not open yet (app start-up, replaying the WAL): matching
            # groups now would judge devices without their DeviceInfo. Wait for it.
            return
        cache: dict[str, DeviceFacts] = {}
        for row in rows:
            alert = orjson.loads(row["payload"])
            # A DeviceInfo lookup failure propagates: the alert stays unrouted and is retried on
            # the next pass rather than being sent to the wrong audience or to nobody.
            targets = self.targets(alert, rules, cache)
            now = _fmt(self._clock())
            with self.metadata.tx() as conn:
                for channel, recipient, rule_id in targets:
                    conn.execute(
                        "INSERT OR IGNORE INTO notification_items (alert_id, rule_id, channel, recipient,"
                        " payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (row["alert_id"], rule_id, channel, recipient, row["payload"], now),
                    )
                conn.execute(
                    "UPDATE notification_inbox SET routed_at = ? WHERE id = ?", (now, row["id"])
                )

    def _new_message(
        self,
        conn: Any,
        channel: str,
        recipient: str,
        kind: str,
        item_ids: list[int],
        subject: str,
        now: str,
    ) -> None:
        cur = conn.execute(
            "INSERT INTO notification_messages (channel, recipient, kind, subject, status, created_at,"
            " next_attempt_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (channel, recipient, kind, subject, now, now),
        )
        mid = int(cur.lastrowid or 0)
        conn.executemany(
            "UPDATE notification_items SET message_id = ? WHERE id = ?",
            [(mid, i) for i in item_ids],
        )

    def _compose(self) -> datetime | None:
        throttle = timedelta(seconds=self.settings.email_throttle_s)
        next_due: datetime | None = None
        waiting = self.metadata.query(
            "SELECT channel, recipient FROM notification_items WHERE message_id IS NULL"
            " GROUP BY channel, recipient ORDER BY MIN(id)"
        )
        for w in waiting:
            channel, recipient = str(w["channel"]), str(w["recipient"])
            now_dt = self._clock()
            now = _fmt(now_dt)
            items = self.metadata.query(
                "SELECT id, payload FROM notification_items WHERE message_id IS NULL AND channel = ?"
                " AND recipient = ? ORDER BY id",
                (channel, recipient),
            )
            if channel == "webhook":
                with self.metadata.tx() as conn:
                    for it in items:
                        alert = orjson.loads(it["payload"])
                        self._new_message(
                            conn,
                            channel,
                            recipient,
                            "alert",
                            [int(it["id"])],
                            render.subject_for([alert]),
                            now,
                        )
                continue
            last = self.metadata.query(
                "SELECT MAX(created_at) AS t FROM notification_messages WHERE channel = 'email'"
                " AND recipient = ? AND kind != 'test'",
                (recipient,),
            )[0]["t"]
            if last is not None and now_dt < _parse(last) + throttle:
                due = _parse(last) + throttle
                next_due = due if next_due is None else min(next_due, due)
                continue
            alerts = [orjson.loads(it["payload"]) for it in items]
            kind = "alert" if len(items) == 1 else "digest"
            with self.metadata.tx() as conn:
                self._new_message(
                    conn,
                    channel,
                    recipient,
                    kind,
                    [int(it["id"]) for it in items],
                    render.subject_for(alerts),
                    now,
                )
        return next_due

    def _send_due(self) -> datetime | None:
        now = _fmt(self._clock())
        due = self.metadata.query(
            "SELECT * FROM notification_messages WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id",
            (now,),
        )
        for m in due:
            if self._stop.is_set():
                break
            items = self.metadata.query(
                "SELECT payload, rule_id FROM notification_items WHERE message_id = ? ORDER BY id",
                (m["id"],),
            )
            alerts = [orjson.loads(r["payload"]) for r in items]
            try:
                secret = (
                    self._webhook_secret(str(m["recipient"]), [r["rule_id"] for r in items])
                    if m["channel"] == "webhook"
                    else None
                )
                self._deliver(str(m["channel"]), str(m["recipient"]), alerts, secret)
            except Exception as e:
                self._record_failure(
                    int(m["id"]),
                    int(m["attempts"]),
                    f"{e}" if isinstance(e, DeliveryError) else f"{type(e).__name__}: {e}",
                )
                continue
            with self.metadata.tx() as conn:
                conn.execute(
                    "UPDATE notification_messages SET status = 'sent', attempts = attempts + 1, sent_at = ?,"
                    " last_error = NULL WHERE id = ?",
                    (_fmt(self._clock()), m["id"]),
                )
        nxt = self.metadata.query(
            "SELECT MIN(next_attempt_at) AS t FROM notification_messages WHERE status = 'pending'"
        )[0]["t"]
        return _parse(nxt) if nxt else None

    def _record_failure(self, message_id: int, attempts: int, error: str) -> None:
        attempts += 1
        final = attempts >= self.settings.notify_max_attempts
        backoff = self.settings.notify_retry_s * (2 ** (attempts - 1))
        log.warning(
            "notification %s attempt %s failed%s: %s",
            message_id,
            attempts,
            " (giving up)" if final else "",
            error,
        )
        with self.metadata.tx() as conn:
            conn.execute(
                "UPDATE notification_messages SET attempts = ?, last_error = ?, status = ?,"
                " next_attempt_at = ? WHERE id = ?",
                (
                    attempts,
                    error[:2000],
                    "failed" if final else "pending",
                    _fmt(self._clock() + timedelta(seconds=backoff)),
                    message_id,
                ),
            )

    def _webhook_secret(self, url: str, rule_ids: list[int | None]) -> str | None:
        """The secret to sign a webhook message with, read at send time so a changed secret
        applies to the next attempt: that of the rule that routed it while it still posts to this
        URL, else (rule deleted or changed) any enabled rule posting to the URL with a secret."""
        for rid in rule_ids:
            if rid is None:
                continue
            rows = self.metadata.query(
                "SELECT webhook_secret FROM notification_rules WHERE id = ? AND webhook_url = ?",
                (rid, url),
            )
            if rows:
                return rows[0]["webhook_secret"]  # type: ignore[no-any-return]
        rows = self.metadata.query(
            "SELECT webhook_secret FROM notification_rules WHERE webhook_url = ? AND enabled = 1"
            " AND webhook_secret IS NOT NULL ORDER BY id LIMIT 1",
            (url,),
        )
        return rows[0]["webhook_secret"] if rows else None

    def _deliver(
        self, channel: str, recipient: str, alerts: list[dict[str, Any]], secret: str | None = None
    ) -> None:
        url = self.settings.public_url
        if channel == "email":
            listed = alerts[:DIGEST_LIST_CAP]
            msg = render.email_message(
                listed, self.settings.smtp_from, recipient, url, total=len(alerts)
            )
            send_email(self.settings, msg)
        else:
            send_webhook(
                recipient, render.webhook_payload(alerts, url), self.settings.smtp_timeout_s, secret
            )

    # --- test messages, delivery log, previews ----------------------------------------------

    def send_test(
        self, emails: list[str], webhook_url: str | None, webhook_secret: str | None = None
    ) -> list[dict[str, Any]]:
        """Send a test message to each target now (no throttling) and record the outcome; the
        webhook POST is signed when a secret is given (a rule's test uses the rule's)."""
        emails = validate_emails(emails)
        webhook = validate_webhook(webhook_url)
        results: list[dict[str, Any]] = []
        targets = [("email", e) for e in emails] + ([("webhook", webhook)] if webhook else [])
        for channel, recipient in targets:
            error: str | None = None
            try:
                if channel == "email":
                    send_email(
                        self.settings,
                        render.test_email(
                            self.settings.smtp_from, recipient, self.settings.public_url
                        ),
                    )
                else:
                    payload = {"type": "test", "message": "Quarry test notification", "alerts": []}
                    send_webhook(recipient, payload, self.settings.smtp_timeout_s, webhook_secret)
            except DeliveryError as e:
                error = str(e)
            now = _fmt(self._clock())
            with self.metadata.tx() as conn:
                conn.execute(
                    "INSERT INTO notification_messages (channel, recipient, kind, subject, status, attempts,"
                    " last_error, created_at, next_attempt_at, sent_at) VALUES (?, ?, 'test', ?, ?, 1, ?, ?, ?, ?)",
                    (
                        channel,
                        recipient,
                        "[Quarry] test notification",
                        "failed" if error else "sent",
                        error,
                        now,
                        now,
                        None if error else now,
                    ),
                )
            results.append(
                {
                    "channel": channel,
                    "recipient": recipient,
                    "status": "failed" if error else "sent",
                    "error": error,
                }
            )
        return results

    def deliveries(
        self,
        status: str | None = None,
        recipient: str | None = None,
        alert_id: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        cond, params = where_clause(
            [
                ("m.status = ?", status),
                ("lower(m.recipient) = lower(?)", recipient),
                (
                    "EXISTS (SELECT 1 FROM notification_items i WHERE i.message_id = m.id AND i.alert_id = ?)",
                    alert_id,
                ),
            ]
        )
        sql = f"SELECT m.* FROM notification_messages m{cond} ORDER BY m.id DESC LIMIT ?"
        out = []
        for m in self.metadata.query(sql, (*params, limit)):
            ids = [
                str(r["alert_id"])
                for r in self.metadata.query(
                    "SELECT alert_id FROM notification_items WHERE message_id = ? ORDER BY id",
                    (m["id"],),
                )
            ]
            out.append(
                {
                    "id": int(m["id"]),
                    "channel": m["channel"],
                    "recipient": m["recipient"],
                    "kind": m["kind"],
                    "subject": m["subject"],
                    "status": m["status"],
                    "attempts": int(m["attempts"]),
                    "lastError": m["last_error"],
                    "alertIds": ids,
                    "createdDateTime": m["created_at"],
                    "nextAttemptDateTime": m["next_attempt_at"]
                    if m["status"] == "pending"
                    else None,
                    "sentDateTime": m["sent_at"],
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        q = self.metadata.query
        return {
            "unroutedAlerts": int(
                q("SELECT COUNT(*) AS n FROM notification_inbox WHERE routed_at IS NULL")[0]["n"]
            ),
            "heldForDigest": int(
                q("SELECT COUNT(*) AS n FROM notification_items WHERE message_id IS NULL")[0]["n"]
            ),
            "pendingMessages": int(
                q("SELECT COUNT(*) AS n FROM notification_messages WHERE status = 'pending'")[0][
                    "n"
                ]
            ),
            "failedMessages": int(
                q("SELECT COUNT(*) AS n FROM notification_messages WHERE status = 'failed'")[0]["n"]
            ),
            "smtpConfigured": bool(self.settings.smtp_host),
            "lastError": self.last_error,
        }

    def preview(self, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        """What notifying these alerts (as one run's batch) would send, without sending: each
        email recipient gets one message (alert or digest), each webhook one POST per alert.
        For backtests: it ignores earlier throttle windows, so it is an upper bound per run."""
        rules = list_rules(self.metadata, enabled_only=True)
        cache: dict[str, DeviceFacts] = {}
        per_recipient: dict[str, int] = {}
        webhooks = 0
        for a in alerts:
            seen: set[tuple[str, str]] = set()
            for channel, recipient, _ in self.targets(a, rules, cache):
                if (channel, recipient) in seen:
                    continue
                seen.add((channel, recipient))
                if channel == "email":
                    per_recipient[recipient] = per_recipient.get(recipient, 0) + 1
                else:
                    webhooks += 1
        return {
            "emails": len(per_recipient),
            "webhookPosts": webhooks,
            "alertsPerRecipient": per_recipient,
        }
