"""Incidents: alerts on the same device or sharing an entity within the correlation window.
``GET /api/incidents``, ``GET/PATCH /api/incidents/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from server.api.alerts import _choice, _store, parse_triage, triage_changes
from server.api.params import RowId
from server.auth import QueryKey
from server.detections.model import ALERT_STATUSES
from server.detections.views import incident_to_api
from server.errors import ApiError

router = APIRouter(prefix="/api/incidents", tags=["incidents"])


@router.get("")
def list_incidents(
    request: Request,
    _: QueryKey,
    status: str | None = None,
    top: int = Query(100, ge=1, le=10_000),
    skip: int = Query(0, ge=0),
) -> dict[str, Any]:
    store = _store(request)
    incidents = store.list_incidents(_choice(status, ALERT_STATUSES, "status"), top, skip)
    alerts = store.incident_alerts([i["id"] for i in incidents])
    settings = request.app.state.settings
    return {"value": [incident_to_api(i, alerts[i["id"]], settings) for i in incidents]}


@router.get("/{incident_id}")
def get_incident(request: Request, _: QueryKey, incident_id: RowId) -> dict[str, Any]:
    store = _store(request)
    inc = store.get_incident(incident_id)
    if inc is None:
        raise ApiError(404, f"no incident with id {incident_id}", code="not_found")
    return incident_to_api(inc, store.incident_alerts([incident_id])[incident_id], request.app.state.settings)


@router.patch("/{incident_id}")
def update_incident(request: Request, scope: QueryKey, incident_id: RowId, body: dict[str, Any]) -> dict[str, Any]:
    """Same fields as an alert; resolving an incident resolves its alerts (as Defender)."""
    patch = parse_triage(body, "incident")
    store = _store(request)
    inc = store.get_incident(incident_id)
    if inc is None:
        raise ApiError(404, f"no incident with id {incident_id}", code="not_found")
    now = request.app.state.detections.clock()
    fields, comments = triage_changes(patch, inc, f"api key ({scope})", now)
    store.update_incident(incident_id, fields, comments, now)
    return get_incident(request, scope, incident_id)
