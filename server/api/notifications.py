"""Notification rules, test messages and the delivery log: ``/api/notifications`` (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.api.params import RowId
from server.auth import AdminKey
from server.errors import ApiError, field_error, reject_unknown_fields
from server.notify import rules as r
from server.notify.notifier import Notifier

router = APIRouter(prefix="/api/notifications", tags=["notifications"])
JsonBody = Annotated[dict[str, Any], Body()]
OptionalJsonBody = Annotated[dict[str, Any] | None, Body()]


def _not_found(rule_id: RowId) -> ApiError:
    return ApiError(404, f"no notification rule with id {rule_id}", code="not_found")


def _notifier(request: Request) -> Notifier:
    n = getattr(request.app.state, "notifier", None)
    if n is None:
        raise ApiError(503, "the notifier is not running", code="unavailable")
    return n  # type: ignore[no-any-return]


@router.post("/rules", status_code=201)
def create_rule(request: Request, _: AdminKey, body: JsonBody) -> dict[str, Any]:
    """``name``, ``deviceGroups`` (ids; empty = all devices), ``minSeverity`` (informational,
    low, medium, high; default informational), ``emails``, ``webhookUrl``, ``enabled``."""
    try:
        return r.create_rule(request.app.state.metadata, body).to_api()
    except r.RuleError as e:
        raise field_error(e) from None


@router.get("/rules")
def list_rules(request: Request, _: AdminKey) -> dict[str, Any]:
    return {"value": [x.to_api() for x in r.list_rules(request.app.state.metadata)]}


@router.get("/rules/{rule_id}")
def get_rule(request: Request, _: AdminKey, rule_id: RowId) -> dict[str, Any]:
    rule = r.get_rule(request.app.state.metadata, rule_id)
    if rule is None:
        raise _not_found(rule_id)
    return rule.to_api()


@router.patch("/rules/{rule_id}")
def update_rule(request: Request, _: AdminKey, rule_id: RowId, body: JsonBody) -> dict[str, Any]:
    try:
        rule = r.update_rule(request.app.state.metadata, rule_id, body)
    except r.RuleError as e:
        raise field_error(e) from None
    if rule is None:
        raise _not_found(rule_id)
    return rule.to_api()


@router.delete("/rules/{rule_id}", status_code=204)
def delete_rule(request: Request, _: AdminKey, rule_id: RowId) -> Response:
    if not r.delete_rule(request.app.state.metadata, rule_id):
        raise _not_found(rule_id)
    return Response(status_code=204)


@router.post("/test")
async def send_test(request: Request, _: AdminKey, body: OptionalJsonBody = None) -> dict[str, Any]:
    """Send a test message now, bypassing throttling: to ``emails`` and/or ``webhookUrl``, or to
    the targets of rule ``ruleId``. 200 when every target accepted it, else 502 naming each
    failure (the outcome is also in the delivery log)."""
    body = body or {}
    reject_unknown_fields(body, {"emails", "webhookUrl", "ruleId"})
    emails, webhook = body.get("emails"), body.get("webhookUrl")
    secret: str | None = None
    if "ruleId" in body:
        rid = body["ruleId"]
        rule = (
            r.get_rule(request.app.state.metadata, rid)
            if isinstance(rid, int) and not isinstance(rid, bool)
            else None
        )
        if rule is None:
            raise ApiError(404, f"no notification rule with id {rid!r}", code="not_found")
        emails, webhook, secret = list(rule.emails), rule.webhook_url, rule.webhook_secret
    if not emails and not webhook:
        raise ApiError(
            400,
            "give emails, webhookUrl or ruleId",
            [{"code": "invalid_request", "message": "nothing to send to", "field": "emails"}],
        )
    notifier = _notifier(request)
    try:
        results = await run_in_threadpool(notifier.send_test, emails or [], webhook, secret)
    except r.RuleError as e:
        raise field_error(e) from None
    failed = [x for x in results if x["status"] != "sent"]
    if failed:
        raise ApiError(
            502,
            f"{len(failed)} of {len(results)} test message(s) failed",
            [
                {
                    "code": "delivery_failed",
                    "message": x["error"],
                    "channel": x["channel"],
                    "recipient": x["recipient"],
                }
                for x in failed
            ],
        )
    return {"ok": True, "value": results}


@router.get("/deliveries")
def deliveries(
    request: Request,
    _: AdminKey,
    status: str | None = Query(None, pattern="^(pending|sent|failed)$"),
    recipient: str | None = None,
    alertId: str | None = None,  # noqa: N803  (API field name)
    top: int = Query(200, ge=1, le=10000),
) -> dict[str, Any]:
    """Every message (alert, digest, test) with its status, attempts and last error."""
    return {"value": _notifier(request).deliveries(status, recipient, alertId, top)}


@router.get("/status")
def status(request: Request, _: AdminKey) -> dict[str, Any]:
    return _notifier(request).status()
