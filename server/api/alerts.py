"""Alerts: ``GET /api/alerts`` (filters), ``GET/PATCH /api/alerts/{id}``, and the process tree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from server.auth import QueryKey
from server.detections.model import ALERT_STATUSES, SEVERITIES, TriagePatch, canonical
from server.detections.process_tree import build_tree
from server.detections.store import AlertFilter
from server.detections.timeutil import iso, parse_iso
from server.detections.views import alert_to_api
from server.errors import ApiError, invalid_field

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


def _choice(value: str | None, allowed: tuple[str, ...], field: str) -> str | None:
    if value is None:
        return None
    try:
        return canonical(value, allowed, field)
    except ValueError as e:
        raise invalid_field(field, str(e)) from None


def _time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise invalid_field(field, f"{field} must be an ISO-8601 date-time such as 2025-01-31T12:00:00Z, got {value!r}") from None


def _store(request: Request) -> Any:
    engine = getattr(request.app.state, "detections", None)
    if engine is None:
        raise ApiError(503, "detections are not available (storage is not started)", code="unavailable")
    return engine.store


def parse_triage(body: dict[str, Any], what: str) -> TriagePatch:
    """An alert or incident PATCH body (``what`` names which), or a 400 naming each bad field."""
    try:
        return TriagePatch.model_validate(body)
    except ValidationError as e:
        raise ApiError(
            400,
            f"invalid {what} update",
            [{"code": "invalid_request", "message": str(x["msg"]), "field": ".".join(map(str, x["loc"]))} for x in e.errors()],
        ) from None


def triage_changes(body: TriagePatch, current: dict[str, Any], actor: str, now: datetime) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The columns and comments a PATCH writes to ``current`` (the alert or incident row)."""
    try:
        body.check_pair(current["classification"], current["determination"])
    except ValueError as e:
        raise invalid_field("determination", str(e)) from None
    data = body.model_dump(exclude_unset=True)
    fields: dict[str, Any] = {}
    if data.get("status") is not None:
        fields["status"] = data["status"]
    if "assignedTo" in data:
        fields["assigned_to"] = data["assignedTo"] or None
    if "classification" in data:
        fields["classification"] = data["classification"]
    if "determination" in data:
        fields["determination"] = data["determination"]
    comments = [{"comment": c, "createdBy": actor, "createdDateTime": iso(now)} for c in body.new_comments()]
    return fields, comments


@router.get("")
def list_alerts(
    request: Request,
    _: QueryKey,
    status: str | None = None,
    severity: str | None = None,
    minSeverity: str | None = None,
    device: str | None = Query(None, description="DeviceId or device name"),
    ruleId: int | None = None,
    incidentId: int | None = None,
    kind: str | None = Query(None, description="detection or health"),
    from_: str | None = Query(None, alias="from", description="event time at or after (ISO-8601)"),
    to: str | None = Query(None, description="event time at or before (ISO-8601)"),
    top: int = Query(1000, ge=1, le=10_000),
    skip: int = Query(0, ge=0),
) -> dict[str, Any]:
    f = AlertFilter(
        status=_choice(status, ALERT_STATUSES, "status"),
        severity=_choice(severity, SEVERITIES, "severity"),
        min_severity=_choice(minSeverity, SEVERITIES, "minSeverity"),
        device=device,
        rule_id=ruleId,
        incident_id=incidentId,
        kind=_choice(kind, ("detection", "health"), "kind"),
        since=_time(from_, "from"),
        until=_time(to, "to"),
        top=top,
        skip=skip,
    )
    settings = request.app.state.settings
    return {"value": [alert_to_api(a, settings) for a in _store(request).list_alerts(f)]}


@router.get("/{alert_id}")
def get_alert(request: Request, _: QueryKey, alert_id: str) -> dict[str, Any]:
    alert = _store(request).get_alert(alert_id)
    if alert is None:
        raise ApiError(404, f"no alert with id {alert_id!r}", code="not_found")
    return alert_to_api(alert, request.app.state.settings, full=True)


@router.patch("/{alert_id}")
def update_alert(request: Request, scope: QueryKey, alert_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Update status, assignedTo, classification, determination; ``comment``/``comments`` are
    appended. Fields left out keep their values."""
    patch = parse_triage(body, "alert")
    store = _store(request)
    current = store.get_alert(alert_id)
    if current is None:
        raise ApiError(404, f"no alert with id {alert_id!r}", code="not_found")
    now = request.app.state.detections.clock()
    fields, comments = triage_changes(patch, current, f"api key ({scope})", now)
    updated = store.update_alert(alert_id, fields, comments, now)
    if updated is None:  # removed between the read and the update
        raise ApiError(404, f"no alert with id {alert_id!r}", code="not_found")
    return alert_to_api(updated, request.app.state.settings, full=True)


@router.get("/{alert_id}/process-tree")
async def process_tree(request: Request, _: QueryKey, alert_id: str) -> dict[str, Any]:
    """The tree around the alert's process from DeviceProcessEvents: ancestors (root first),
    the process, its children; times and command lines."""
    alert = _store(request).get_alert(alert_id)
    if alert is None:
        raise ApiError(404, f"no alert with id {alert_id!r}", code="not_found")
    storage = request.app.state.storage

    def build() -> dict[str, Any]:
        con = storage.connect()
        try:
            return build_tree(con, alert)
        finally:
            con.close()

    return await run_in_threadpool(build)
