"""Custom detection rules: ``/api/detections/rules`` CRUD (compile on save), run now, backtest,
run history."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.api.params import RowId
from server.auth import AdminKey, QueryKey
from server.detections.model import RuleIn, RulePatch
from server.detections.rulecheck import check_rule
from server.detections.runner import DetectionEngine, RunFailed, run_to_api
from server.detections.views import rule_to_api
from server.errors import ApiError

router = APIRouter(prefix="/api/detections", tags=["detections"])


def _engine(request: Request) -> DetectionEngine:
    engine = getattr(request.app.state, "detections", None)
    if engine is None:
        raise ApiError(503, "detections are not available (storage is not started)", code="unavailable")
    return engine  # type: ignore[no-any-return]


def _rule_or_404(engine: DetectionEngine, rule_id: RowId) -> dict[str, Any]:
    rule = engine.store.get_rule(rule_id)
    if rule is None:
        raise ApiError(404, f"no detection rule with id {rule_id}", code="not_found")
    return rule


def _api(engine: DetectionEngine, rule: dict[str, Any]) -> dict[str, Any]:
    last = engine.store.last_run(rule["id"])
    return rule_to_api(rule, run_to_api(last) if last else None)


def _validate(engine: DetectionEngine, fields: dict[str, Any]) -> None:
    """Compile the query as saved and check its columns, title placeholders and groups."""
    check = check_rule(
        fields["query"],
        fields["frequency"],
        engine.catalog,
        engine.clock(),
        fields.get("alert_title") or "",
        fields.get("alert_description") or "",
        limits=engine._kql_limits(),
    )
    if not check.ok:
        first = check.errors[0]
        where = f" at line {first['line']}, column {first['column']}" if "line" in first else ""
        raise ApiError(
            400,
            f"the rule's query is not a valid detection ({len(check.errors)} error(s)): {first['message']}{where}",
            check.errors,
        )
    groups = fields.get("device_groups") or []
    if groups:
        from server.devices.groups import get_groups

        try:
            found = {g.id for g in get_groups(engine.metadata, groups)}
        except ValueError as e:
            raise ApiError(400, str(e), [{"code": "unknown_device_group", "message": str(e), "field": "deviceGroups"}]) from None
        missing = [g for g in groups if g not in found]
        if missing:
            msg = f"unknown device group id(s): {', '.join(map(str, missing))}"
            raise ApiError(400, msg, [{"code": "unknown_device_group", "message": msg, "field": "deviceGroups"}])


_FIELD_MAP = {
    "name": "name",
    "query": "query",
    "frequency": "frequency",
    "severity": "severity",
    "category": "category",
    "mitreTechniques": "mitre_techniques",
    "alertTitle": "alert_title",
    "alertDescription": "alert_description",
    "recommendedActions": "recommended_actions",
    "deviceGroups": "device_groups",
    "actions": "actions",
    "enabled": "enabled",
}


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    return {_FIELD_MAP[k]: v for k, v in data.items() if k in _FIELD_MAP}


def _conflict(name: str) -> ApiError:
    msg = f"a detection rule named {name!r} already exists; rule names are unique"
    return ApiError(409, msg, [{"code": "conflict", "message": msg, "field": "name"}])


def _wake_scheduler(request: Request) -> None:
    scheduler = getattr(request.app.state, "detection_scheduler", None)
    if scheduler is not None:
        scheduler.wake()


@router.post("/rules", status_code=201)
def create_rule(request: Request, _: AdminKey, body: RuleIn) -> dict[str, Any]:
    """Create a rule. The query must compile and return Timestamp, DeviceId and ReportId."""
    engine = _engine(request)
    fields = _fields(body.model_dump())
    fields["alert_title"] = body.alertTitle or body.name
    fields["enabled"] = int(body.enabled)
    _validate(engine, fields)
    try:
        rule = engine.store.create_rule(fields, engine.clock())
    except sqlite3.IntegrityError:
        raise _conflict(body.name) from None
    _wake_scheduler(request)  # a new rule runs at once, not at the next tick
    return _api(engine, rule)


@router.get("/rules")
def list_rules(request: Request, _: QueryKey) -> dict[str, Any]:
    engine = _engine(request)
    return {"value": [_api(engine, r) for r in engine.store.list_rules()]}


@router.get("/rules/{rule_id}")
def get_rule(request: Request, _: QueryKey, rule_id: RowId) -> dict[str, Any]:
    engine = _engine(request)
    return _api(engine, _rule_or_404(engine, rule_id))


@router.patch("/rules/{rule_id}")
def update_rule(request: Request, _: AdminKey, rule_id: RowId, body: RulePatch) -> dict[str, Any]:
    """Change fields; the merged rule is compiled again. Takes effect at the next run."""
    engine = _engine(request)
    rule = _rule_or_404(engine, rule_id)
    changes = _fields(body.model_dump(exclude_unset=True))
    if "enabled" in changes:
        if changes["enabled"] is None:
            raise ApiError(400, "enabled must be true or false", code="invalid_request")
        changes["enabled"] = int(changes["enabled"])
    for key in ("name", "query", "frequency", "severity", "category", "alert_title"):
        if key in changes and changes[key] is None:
            raise ApiError(400, f"{key} cannot be null", code="invalid_request")
    merged = {**rule, **changes}
    _validate(engine, merged)
    if "frequency" in changes and changes["frequency"] != rule["frequency"]:
        # A new schedule starts now rather than waiting out the old interval.
        changes["next_run_at"] = None
    try:
        updated = engine.store.update_rule(rule_id, changes, engine.clock())
    except sqlite3.IntegrityError:
        raise _conflict(str(changes.get("name"))) from None
    assert updated is not None
    _wake_scheduler(request)
    return _api(engine, updated)


@router.delete("/rules/{rule_id}", status_code=204)
def delete_rule(request: Request, _: AdminKey, rule_id: RowId) -> Response:
    """Delete the rule and its run history; its alerts stay (with the rule's name)."""
    engine = _engine(request)
    if not engine.store.delete_rule(rule_id):
        raise ApiError(404, f"no detection rule with id {rule_id}", code="not_found")
    return Response(status_code=204)


@router.get("/rules/{rule_id}/runs")
def list_runs(
    request: Request, _: QueryKey, rule_id: RowId, top: int = Query(50, ge=1, le=1000)
) -> dict[str, Any]:
    engine = _engine(request)
    _rule_or_404(engine, rule_id)
    return {"value": [run_to_api(r) for r in engine.store.list_runs(rule_id, top)]}


@router.post("/rules/{rule_id}/run")
async def run_now(request: Request, _: AdminKey, rule_id: RowId) -> dict[str, Any]:
    """Run the rule now (also when disabled) and return the run; resets its interval."""
    engine = _engine(request)
    _rule_or_404(engine, rule_id)
    try:
        return await run_in_threadpool(engine.run_rule, rule_id, "manual")
    except KeyError:
        raise ApiError(404, f"no detection rule with id {rule_id}", code="not_found") from None


@router.post("/rules/{rule_id}/backtest")
async def backtest(
    request: Request,
    _: QueryKey,
    rule_id: RowId,
    days: float = Query(30.0, gt=0, description="How many days of retained data to replay"),
) -> dict[str, Any]:
    """Replay the rule over the last ``days`` of retained data without creating anything:
    matches per day and device, sample rows, and the alerts and emails it would produce."""
    engine = _engine(request)
    rule = _rule_or_404(engine, rule_id)
    limit = float(request.app.state.settings.retention_days)
    if days > limit:
        msg = f"days={days:g} is beyond the retention of {limit:g} days; no older data is kept"
        raise ApiError(400, msg, [{"code": "out_of_range", "message": msg, "field": "days"}])
    try:
        return await run_in_threadpool(engine.backtest, rule, days)
    except RunFailed as e:
        raise ApiError(400, f"the backtest failed: {e}", [{"code": e.code, "message": str(e)}]) from None


@router.post("/preview")
async def preview_rule(
    request: Request,
    _: QueryKey,
    body: RuleIn,
    days: float = Query(7.0, gt=0, description="How many days of retained data the backtest replays"),
) -> dict[str, Any]:
    """What creating this rule would do, without saving anything: the compile check of its query
    (as `POST /rules` does it) and, if that passes, a backtest over the last ``days``. The
    console shows both before the rule is saved."""
    engine = _engine(request)
    limit = float(request.app.state.settings.retention_days)
    if days > limit:
        msg = f"days={days:g} is beyond the retention of {limit:g} days; no older data is kept"
        raise ApiError(400, msg, [{"code": "out_of_range", "message": msg, "field": "days"}])
    fields = _fields(body.model_dump())
    fields["alert_title"] = body.alertTitle or body.name
    try:
        _validate(engine, fields)
    except ApiError as e:
        return {"check": {"ok": False, "message": e.error, "errors": e.errors}, "backtest": None}
    rule = {"id": None, "enabled": 1, "created_by": None, **fields}
    try:
        result = await run_in_threadpool(engine.backtest, rule, days)
    except RunFailed as e:
        return {"check": {"ok": True, "errors": []},
                "backtest": {"error": f"the backtest failed: {e}", "code": e.code}}
    return {"check": {"ok": True, "errors": []}, "backtest": result}
