"""What a notification says: email subject and bodies (text and HTML), digests, webhook JSON.

Every alert message names the title, severity, device, rule, time and evidence summary and links
to the alert page at ``<public_url>/alerts/<id>``.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import quote

from server.notify.rules import SEVERITY_RANK


def alert_url(public_url: str, alert_id: Any) -> str:
    return f"{public_url.rstrip('/')}/alerts/{quote(str(alert_id), safe='')}"


def _s(value: Any, default: str = "-") -> str:
    return default if value is None or value == "" else str(value)


def _device(alert: dict[str, Any]) -> str:
    name, did = alert.get("deviceName"), alert.get("deviceId")
    if name and did:
        return f"{name} ({did})"
    return _s(name or did)


def _rule(alert: dict[str, Any]) -> str:
    name, rid = alert.get("ruleName"), alert.get("ruleId")
    if name and rid is not None:
        return f"{name} (rule {rid})"
    return _s(name or rid)


def _fields(alert: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("Title", _s(alert.get("title"))),
        ("Severity", _s(alert.get("severity"))),
        ("Device", _device(alert)),
        ("Rule", _rule(alert)),
        ("Time", _s(alert.get("timestamp"))),
        ("Alert created", _s(alert.get("createdAt"))),
        ("Incident", _s(alert.get("incidentId"))),
        ("Category", _s(alert.get("category"))),
        ("Evidence", _s(alert.get("evidenceSummary"))),
    ]


def _highest(alerts: list[dict[str, Any]]) -> str:
    known = [
        str(a.get("severity", "")).lower()
        for a in alerts
        if str(a.get("severity", "")).lower() in SEVERITY_RANK
    ]
    return max(known, key=lambda s: SEVERITY_RANK[s]) if known else "unknown"


def one_line(text: str) -> str:
    """``text`` as one header-safe line. Titles come from rule templates filled with result
    columns (a command line can hold CR/LF); the email package refuses such a header, so the
    message would fail on every retry and the alert would never be mailed."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def subject_for(alerts: list[dict[str, Any]]) -> str:
    if len(alerts) == 1:
        a = alerts[0]
        return one_line(
            f"[Quarry] {_s(a.get('severity'))} alert: {_s(a.get('title'))} on {_s(a.get('deviceName') or a.get('deviceId'))}"
        )
    devices = {str(a.get("deviceName") or a.get("deviceId")) for a in alerts}
    return f"[Quarry] {len(alerts)} alerts on {len(devices)} device(s), highest severity {_highest(alerts)}"


def text_body(alerts: list[dict[str, Any]], public_url: str, total: int | None = None) -> str:
    if len(alerts) == 1:
        a = alerts[0]
        lines = ["Quarry raised an alert.", ""]
        lines += [f"{k + ':':<15}{v}" for k, v in _fields(a)]
        lines += ["", f"Open the alert: {alert_url(public_url, a.get('id'))}", ""]
        return "\n".join(lines)
    lines = [
        f"Quarry raised {len(alerts)} alerts. They are folded into this digest because alerts",
        "arrived faster than the notification throttle allows for one recipient.",
        "",
    ]
    for i, a in enumerate(alerts, 1):
        lines.append(f"{i}. [{_s(a.get('severity'))}] {_s(a.get('title'))}")
        for k, v in _fields(a)[2:]:
            lines.append(f"   {k + ':':<15}{v}")
        lines.append(f"   {'Link:':<15}{alert_url(public_url, a.get('id'))}")
        lines.append("")
    if total is not None and total > len(alerts):
        lines.append(
            f"... and {total - len(alerts)} more alerts: see {public_url.rstrip('/')}/api/alerts"
        )
    return "\n".join(lines)


def html_body(alerts: list[dict[str, Any]], public_url: str, total: int | None = None) -> str:
    e = html.escape
    count = max(total or 0, len(alerts))
    parts = ['<html><body style="font-family: sans-serif">']
    if count > 1:
        parts.append(
            f"<p>Quarry raised {count} alerts (folded into one digest by the notification throttle).</p>"
        )
    for a in alerts:
        url = alert_url(public_url, a.get("id"))
        parts.append(f'<h3><a href="{e(url)}">{e(_s(a.get("title")))}</a></h3><table>')
        for k, v in _fields(a):
            parts.append(f'<tr><th align="left">{e(k)}</th><td>{e(v)}</td></tr>')
        parts.append(f'</table><p><a href="{e(url)}">Open the alert</a></p>')
    if count > len(alerts):
        parts.append(f"<p>... and {count - len(alerts)} more alerts.</p>")
    parts.append("</body></html>")
    return "".join(parts)


def email_message(
    alerts: list[dict[str, Any]],
    sender: str,
    recipient: str,
    public_url: str,
    total: int | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = (
        subject_for(alerts)
        if not total or total <= len(alerts)
        else f"[Quarry] {total} alerts, highest severity {_highest(alerts)}"
    )
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="quarry")
    msg.set_content(text_body(alerts, public_url, total))
    msg.add_alternative(html_body(alerts, public_url, total), subtype="html")
    return msg


def test_email(sender: str, recipient: str, public_url: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = "[Quarry] test notification"
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="quarry")
    msg.set_content(
        "This is a test message from Quarry. If you can read it, alert emails reach you.\n\n"
        f"Quarry: {public_url}\n"
    )
    return msg


def webhook_payload(
    alerts: list[dict[str, Any]], public_url: str, kind: str = "alert"
) -> dict[str, Any]:
    return {
        "type": kind,
        "alerts": [{**a, "alertWebUrl": alert_url(public_url, a.get("id"))} for a in alerts],
    }
