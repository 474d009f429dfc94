"""Rule, alert and incident vocabularies and the request models of the detections API.

Field names follow Defender where it has them (Graph ``detectionRule`` / ``alert`` use camelCase);
values are Graph's lower-camel enums (``inProgress``, ``truePositive``...). Inputs are
matched case-insensitively so the legacy MDE API spelling (``InProgress``, ``TruePositive``) is
accepted too.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.api.params import KqlText
from server.devices.actions import ACTION_TYPES

FREQUENCIES: tuple[str, ...] = ("continuous", "1h", "3h", "12h", "24h")
FREQUENCY_SECONDS: dict[str, int] = {"1h": 3600, "3h": 3 * 3600, "12h": 12 * 3600, "24h": 24 * 3600}
SEVERITIES: tuple[str, ...] = ("informational", "low", "medium", "high")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
# A rule's actions are the device action queue's types: one list, owned by the queue.
# A detection never releases a device from isolation: that stays an analyst's decision.
ACTIONS: tuple[str, ...] = tuple(a for a in ACTION_TYPES if a != "unisolate")
# Defender's alert categories (custom detection "Category" list).
CATEGORIES: tuple[str, ...] = (
    "Collection",
    "CommandAndControl",
    "CredentialAccess",
    "DefenseEvasion",
    "Discovery",
    "Execution",
    "Exfiltration",
    "Exploit",
    "InitialAccess",
    "LateralMovement",
    "Malware",
    "Persistence",
    "PrivilegeEscalation",
    "Ransomware",
    "SuspiciousActivity",
    "UnwantedSoftware",
)
ALERT_STATUSES: tuple[str, ...] = ("new", "inProgress", "resolved")
CLASSIFICATIONS: tuple[str, ...] = ("truePositive", "falsePositive", "informationalExpectedActivity")
# Graph alerts_v2 determination values by classification (api_shapes.md (e)); `other` is valid
# with every classification.
DETERMINATIONS: dict[str, tuple[str, ...]] = {
    "truePositive": (
        "multiStagedAttack",
        "maliciousUserActivity",
        "compromisedUser",
        "malware",
        "phishing",
        "unwantedSoftware",
        "other",
    ),
    "informationalExpectedActivity": (
        "securityTesting",
        "lineOfBusinessApplication",
        "confirmedUserActivity",
        "other",
    ),
    "falsePositive": ("clean", "insufficientData", "other"),
}
ALL_DETERMINATIONS: tuple[str, ...] = tuple(dict.fromkeys(d for v in DETERMINATIONS.values() for d in v))
_MITRE = re.compile(r"^T\d{4}(\.\d{3})?$")


def canonical(value: str, allowed: tuple[str, ...], what: str) -> str:
    """``value`` spelled as in ``allowed`` (case-insensitive), or ValueError naming the choices."""
    by_lower = {a.lower(): a for a in allowed}
    got = by_lower.get(value.strip().lower())
    if got is None:
        raise ValueError(f"unknown {what} {value!r}; expected one of: {', '.join(allowed)}")
    return got


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _check_frequency(v: str) -> str:
    return canonical(v, FREQUENCIES, "frequency")


def _check_severity(v: str) -> str:
    return canonical(v, SEVERITIES, "severity")


def _check_category(v: str) -> str:
    return canonical(v, CATEGORIES, "category")


def _check_mitre(v: list[str]) -> list[str]:
    out = []
    for t in v:
        t = t.strip().upper()
        if not _MITRE.match(t):
            raise ValueError(f"MITRE technique {t!r} is not of the form T1234 or T1234.001")
        out.append(t)
    return out


def _check_actions(v: list[str]) -> list[str]:
    return list(dict.fromkeys(canonical(a, ACTIONS, "action") for a in v))


class RuleIn(_Strict):
    name: str = Field(min_length=1, max_length=200)
    query: KqlText = Field(min_length=1, max_length=100_000)
    frequency: str = "1h"
    severity: str = "medium"
    category: str = "SuspiciousActivity"
    mitreTechniques: list[str] = Field(default_factory=list)
    alertTitle: str | None = Field(default=None, max_length=500)
    alertDescription: str = Field(default="", max_length=10_000)
    recommendedActions: str = Field(default="", max_length=10_000)
    deviceGroups: list[int] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("frequency")
    @classmethod
    def _freq(cls, v: str) -> str:
        return _check_frequency(v)

    @field_validator("severity")
    @classmethod
    def _sev(cls, v: str) -> str:
        return _check_severity(v)

    @field_validator("category")
    @classmethod
    def _cat(cls, v: str) -> str:
        return _check_category(v)

    @field_validator("mitreTechniques")
    @classmethod
    def _mitre(cls, v: list[str]) -> list[str]:
        return _check_mitre(v)

    @field_validator("actions")
    @classmethod
    def _act(cls, v: list[str]) -> list[str]:
        return _check_actions(v)


class RulePatch(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    query: KqlText | None = Field(default=None, min_length=1, max_length=100_000)
    frequency: str | None = None
    severity: str | None = None
    category: str | None = None
    mitreTechniques: list[str] | None = None
    alertTitle: str | None = Field(default=None, max_length=500)
    alertDescription: str | None = Field(default=None, max_length=10_000)
    recommendedActions: str | None = Field(default=None, max_length=10_000)
    deviceGroups: list[int] | None = None
    actions: list[str] | None = None
    enabled: bool | None = None

    @field_validator("frequency")
    @classmethod
    def _freq(cls, v: str | None) -> str | None:
        return None if v is None else _check_frequency(v)

    @field_validator("severity")
    @classmethod
    def _sev(cls, v: str | None) -> str | None:
        return None if v is None else _check_severity(v)

    @field_validator("category")
    @classmethod
    def _cat(cls, v: str | None) -> str | None:
        return None if v is None else _check_category(v)

    @field_validator("mitreTechniques")
    @classmethod
    def _mitre(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_mitre(v)

    @field_validator("actions")
    @classmethod
    def _act(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_actions(v)


class TriagePatch(_Strict):
    """PATCH body for an alert or an incident: the fields Defender lets you update, plus a
    comment (legacy API: ``comment``; Graph: ``comments``) that is appended, never replaced."""

    status: str | None = None
    assignedTo: str | None = Field(default=None, max_length=320)
    classification: str | None = None
    determination: str | None = None
    comment: str | None = Field(default=None, max_length=10_000)
    comments: list[str] | str | None = None

    @field_validator("status")
    @classmethod
    def _status(cls, v: str | None) -> str | None:
        return None if v is None else canonical(v, ALERT_STATUSES, "status")

    @field_validator("classification")
    @classmethod
    def _cls(cls, v: str | None) -> str | None:
        return None if v is None else canonical(v, CLASSIFICATIONS, "classification")

    @field_validator("determination")
    @classmethod
    def _det(cls, v: str | None) -> str | None:
        return None if v is None else canonical(v, ALL_DETERMINATIONS, "determination")

    def new_comments(self) -> list[str]:
        out: list[str] = []
        if self.comment:
            out.append(self.comment)
        if isinstance(self.comments, str):
            out.append(self.comments)
        elif self.comments:
            out.extend(self.comments)
        return [c for c in out if c.strip()]

    def check_pair(self, current_classification: str | None, current_determination: str | None = None) -> None:
        """The determination the row ends up with must fit the classification it ends up with
        (a new classification alone must not leave a stored determination that no longer fits)."""
        cls = self.classification or current_classification
        det = self.determination or current_determination
        if det is None or cls is None:
            return
        if det not in DETERMINATIONS[cls]:
            what = f"determination {det!r}" if self.determination else f"the current determination {det!r}"
            raise ValueError(
                f"{what} does not fit classification {cls!r}; give a determination among: "
                f"{', '.join(DETERMINATIONS[cls])}"
            )


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)
