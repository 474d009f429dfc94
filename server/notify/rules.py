"""Notification rules: name, deviceGroups (empty = all devices), minSeverity, emails, webhookUrl,
webhookSecret (write-only: signs the rule's webhook POSTs, never returned)."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from server.detections.model import SEVERITIES, SEVERITY_RANK  # the one severity scale
from server.devices.groups import GroupError, get_groups, normalise_group_ids
from server.errors import FieldError
from server.metadata import MetadataDB

MAX_EMAILS = 50
FIELDS = {"name", "deviceGroups", "minSeverity", "emails", "webhookUrl", "webhookSecret", "enabled"}
# A short secret is guessable offline from one signed POST; 16 characters is the floor.
MIN_SECRET_LEN = 16
MAX_SECRET_LEN = 512

# Deliberately simple: one @, no spaces or angle brackets, a dot in the domain. Anything that
# passes goes to the SMTP server, which is the real judge; this only catches typos at save time.
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]+$")


class RuleError(FieldError):
    default_code = "invalid_rule"


@dataclass(frozen=True)
class NotificationRule:
    id: int
    name: str
    device_groups: tuple[int, ...]
    min_severity: str
    emails: tuple[str, ...]
    webhook_url: str | None
    enabled: bool
    created_at: str
    updated_at: str
    webhook_secret: str | None = None

    def severity_matches(self, severity: str | None) -> bool:
        rank = SEVERITY_RANK.get((severity or "").lower())
        # An alert with a severity we do not know is notified rather than dropped: missing a
        # page is worse than an extra one.
        return rank is None or rank >= SEVERITY_RANK[self.min_severity]

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "deviceGroups": list(self.device_groups),
            "minSeverity": self.min_severity,
            "emails": list(self.emails),
            "webhookUrl": self.webhook_url,
            # The secret itself is write-only; say only whether one is set.
            "webhookSigned": self.webhook_secret is not None,
            "enabled": self.enabled,
            "createdDateTime": self.created_at,
            "lastUpdateDateTime": self.updated_at,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def validate_emails(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError("emails must be a list of email addresses", "emails")
    out: list[str] = []
    for i, raw in enumerate(value):
        addr = raw.strip()
        if not _EMAIL.match(addr):
            raise RuleError(f"emails[{i}]: {raw!r} is not an email address", f"emails[{i}]")
        if addr.lower() not in (o.lower() for o in out):
            out.append(addr)
    if len(out) > MAX_EMAILS:
        raise RuleError(f"at most {MAX_EMAILS} email addresses per rule", "emails")
    return out


def validate_webhook(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RuleError("webhookUrl must be a string", "webhookUrl")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleError(f"webhookUrl {value!r} is not an http(s) URL with a host", "webhookUrl")
    return value.strip()


def validate_secret(value: Any) -> str | None:
    """The secret as given (it is the HMAC key, so no trimming), or None to have none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RuleError("webhookSecret must be a string", "webhookSecret")
    if not MIN_SECRET_LEN <= len(value) <= MAX_SECRET_LEN:
        raise RuleError(
            f"webhookSecret must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters, got {len(value)}",
            "webhookSecret",
        )
    return value


def _validate(metadata: MetadataDB, data: dict[str, Any]) -> dict[str, Any]:
    unknown = set(data) - FIELDS
    if unknown:
        raise RuleError(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise RuleError("name is required: a non-empty string of at most 200 characters", "name")
    sev = data.get("minSeverity", "informational")
    if not isinstance(sev, str) or sev.lower() not in SEVERITY_RANK:
        raise RuleError(
            f"minSeverity must be one of {', '.join(SEVERITIES)}, got {sev!r}", "minSeverity"
        )
    groups_raw = data.get("deviceGroups") or []
    if not isinstance(groups_raw, list):
        raise RuleError("deviceGroups must be a list of device group ids", "deviceGroups")
    try:
        groups = normalise_group_ids(groups_raw)
        get_groups(metadata, groups)  # every id must exist
    except GroupError as e:
        raise RuleError(str(e), "deviceGroups", e.code) from None
    emails = validate_emails(data.get("emails"))
    webhook = validate_webhook(data.get("webhookUrl"))
    secret = validate_secret(data.get("webhookSecret"))
    if secret is not None and webhook is None:
        raise RuleError("webhookSecret needs a webhookUrl to sign for", "webhookSecret")
    if not emails and webhook is None:
        raise RuleError("a rule needs at least one of emails or webhookUrl", "emails")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("enabled must be true or false", "enabled")
    return {
        "name": name.strip(),
        "min_severity": sev.lower(),
        "groups": groups,
        "emails": emails,
        "webhook": webhook,
        "secret": secret,
        "enabled": enabled,
    }


def _load(metadata: MetadataDB, rows: list[sqlite3.Row]) -> list[NotificationRule]:
    out = []
    for r in rows:
        groups = metadata.query(
            "SELECT group_id FROM notification_rule_groups WHERE rule_id = ? ORDER BY group_id",
            (r["id"],),
        )
        out.append(
            NotificationRule(
                id=int(r["id"]),
                name=str(r["name"]),
                device_groups=tuple(int(g["group_id"]) for g in groups),
                min_severity=str(r["min_severity"]),
                emails=tuple(json.loads(r["emails"])),
                webhook_url=r["webhook_url"],
                enabled=bool(r["enabled"]),
                created_at=str(r["created_at"]),
                updated_at=str(r["updated_at"]),
                webhook_secret=r["webhook_secret"],
            )
        )
    return out


def list_rules(metadata: MetadataDB, enabled_only: bool = False) -> list[NotificationRule]:
    sql = (
        "SELECT * FROM notification_rules"
        + (" WHERE enabled = 1" if enabled_only else "")
        + " ORDER BY id"
    )
    return _load(metadata, metadata.query(sql))


def get_rule(metadata: MetadataDB, rule_id: int) -> NotificationRule | None:
    rules = _load(
        metadata, metadata.query("SELECT * FROM notification_rules WHERE id = ?", (rule_id,))
    )
    return rules[0] if rules else None


def _write(metadata: MetadataDB, rule_id: int | None, v: dict[str, Any]) -> int:
    now = _now()
    # name, min_severity, emails, webhook_url, webhook_secret, enabled: the same columns for
    # insert and update.
    values = (v["name"], v["min_severity"], json.dumps(v["emails"]), v["webhook"], v["secret"], int(v["enabled"]))
    try:
        with metadata.tx() as conn:
            if rule_id is None:
                cur = conn.execute(
                    "INSERT INTO notification_rules (name, min_severity, emails, webhook_url, webhook_secret,"
                    " enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, now, now),
                )
                rule_id = int(cur.lastrowid or 0)
            else:
                conn.execute(
                    "UPDATE notification_rules SET name = ?, min_severity = ?, emails = ?, webhook_url = ?,"
                    " webhook_secret = ?, enabled = ?, updated_at = ? WHERE id = ?",
                    (*values, now, rule_id),
                )
                conn.execute("DELETE FROM notification_rule_groups WHERE rule_id = ?", (rule_id,))
            for gid in v["groups"]:
                conn.execute(
                    "INSERT INTO notification_rule_groups (rule_id, group_id) VALUES (?, ?)",
                    (rule_id, gid),
                )
    except sqlite3.IntegrityError as e:
        if "UNIQUE" in str(e):
            raise RuleError(
                f"a notification rule named {v['name']!r} already exists", "name", "conflict", 409
            ) from None
        # A group deleted between validation and insert.
        raise RuleError(
            "a device group in deviceGroups no longer exists", "deviceGroups", "unknown_group"
        ) from None
    return rule_id


def create_rule(metadata: MetadataDB, data: dict[str, Any]) -> NotificationRule:
    rule_id = _write(metadata, None, _validate(metadata, data))
    rule = get_rule(metadata, rule_id)
    assert rule is not None
    return rule


def update_rule(
    metadata: MetadataDB, rule_id: int, changes: dict[str, Any]
) -> NotificationRule | None:
    current = get_rule(metadata, rule_id)
    if current is None:
        return None
    merged = {k: v for k, v in current.to_api().items() if k in FIELDS}
    unknown = set(changes) - FIELDS
    if unknown:
        raise RuleError(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    # The secret is not in to_api(): keep the stored one unless the change sets or clears it.
    # A change that removes the webhook URL drops its secret too (there is nothing to sign).
    merged["webhookSecret"] = current.webhook_secret
    merged.update(changes)
    if "webhookSecret" not in changes and not merged.get("webhookUrl"):
        merged["webhookSecret"] = None
    _write(metadata, rule_id, _validate(metadata, merged))
    return get_rule(metadata, rule_id)


def delete_rule(metadata: MetadataDB, rule_id: int) -> bool:
    with metadata.tx() as conn:
        return conn.execute("DELETE FROM notification_rules WHERE id = ?", (rule_id,)).rowcount > 0
