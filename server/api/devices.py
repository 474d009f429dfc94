"""Device actions API.

Admins (admin scope) request actions and read the audit log. Agents poll and report with an
**ingest**-scope key: the agent already holds one to send telemetry, and giving agents a
query or admin key would let a compromised endpoint read everyone's data or queue actions.
An ingest key bound to device ids (``quarry keys create --scope ingest --device ID``) polls and
reports only for those devices (403 otherwise); an unbound ingest key may act for any device.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from server.auth import AdminKey, IngestKey, hash_key, request_key
from server.devices import actions as act
from server.devices.groups import device_facts
from server.errors import ApiError, field_error, invalid_field, reject_unknown_fields
from server.responses import OrjsonResponse

router = APIRouter(tags=["device actions"])
JsonBody = Annotated[dict[str, Any], Body()]
OptionalJsonBody = Annotated[dict[str, Any] | None, Body()]


def actor(request: Request) -> str:
    """Who is calling, for the audit log: the API key's name and prefix (never the key)."""
    header = request.headers.get("authorization", "")
    token = header.partition(" ")[2].strip()
    state = request.app.state
    if state.settings.admin_key and token == state.settings.admin_key:
        return "admin key (QUARRY_ADMIN_KEY)"
    rows = state.metadata.query(
        "SELECT prefix, name, scope FROM api_keys WHERE key_hash = ?", (hash_key(token),)
    )
    if not rows:
        return "unknown key"
    r = rows[0]
    label = f"{r['scope']} key {r['prefix']}…"
    return f"{label} ({r['name']})" if r["name"] else label


def _str_field(body: dict[str, Any], name: str, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid_field(name, f"{name} must be a string")
    return value


@router.post("/api/devices/{device_id}/actions", status_code=201)
async def request_action(request: Request, _: AdminKey, device_id: str, body: JsonBody) -> Any:
    """Queue ``type`` (isolate, collectInvestigationPackage, runAntivirusScan,
    initiateInvestigation) with an optional ``comment``. 201 when queued; 200 with
    ``merged: true`` when the same action is already open on the device."""
    reject_unknown_fields(body, {"type", "comment"})
    action_type = body.get("type")
    if not isinstance(action_type, str):
        raise field_error(
            act.ActionError(f"type is required: one of {', '.join(act.ACTION_TYPES)}", "type")
        )
    comment = _str_field(body, "comment")
    state = request.app.state
    storage = getattr(state, "storage", None)
    if storage is not None:
        # A typo in a device id would otherwise wait in the queue forever for an agent that
        # does not exist.
        facts = await run_in_threadpool(device_facts, storage, device_id)
        if facts is None:
            raise ApiError(
                404, f"no device {device_id!r}: it has sent no DeviceInfo", code="not_found"
            )
    try:
        result = act.queue_action(state.metadata, device_id, action_type, actor(request), comment)
    except act.ActionError as e:
        raise field_error(e) from None
    return OrjsonResponse(result, status_code=200 if result["merged"] else 201)


@router.get("/api/devices/{device_id}/actions")
def list_device_actions(
    request: Request,
    _: AdminKey,
    device_id: str,
    status: str | None = None,
    top: int = Query(1000, ge=1, le=10000),
) -> dict[str, Any]:
    return {"value": act.list_actions(request.app.state.metadata, device_id, status, top)}


def _own_device(request: Request, device_id: str) -> None:
    """A key bound to devices acts only for them."""
    devices = request_key(request).devices
    if devices is not None and device_id not in devices:
        raise ApiError(
            403,
            f"this key is bound to other devices; it cannot act for device {device_id[:80]!r}",
            [{"code": "device_not_allowed", "message": "the key is not bound to this device",
              "field": "deviceId"}],
        )


@router.get("/api/devices/{device_id}/actions/pending")
def pending_actions(request: Request, _: IngestKey, device_id: str) -> dict[str, Any]:
    """For agents: the open actions for this device, oldest first. Fetching marks Pending
    actions InProgress; an InProgress action is returned again until its result is reported."""
    _own_device(request, device_id)
    try:
        return {"value": act.fetch_pending(request.app.state.metadata, device_id, actor(request))}
    except act.ActionError as e:
        raise field_error(e) from None


@router.post("/api/devices/{device_id}/actions/{action_id}/result")
def report_result(
    request: Request, _: IngestKey, device_id: str, action_id: str, body: JsonBody
) -> dict[str, Any]:
    """For agents: ``status`` Succeeded or Failed, optional ``comment`` and ``details`` (JSON)."""
    _own_device(request, device_id)
    reject_unknown_fields(body, {"status", "comment", "details"})
    status = body.get("status")
    if not isinstance(status, str):
        raise field_error(act.ActionError("status is required: Succeeded or Failed", "status"))
    try:
        return act.report_result(
            request.app.state.metadata,
            device_id,
            action_id,
            status,
            actor(request),
            _str_field(body, "comment"),
            body.get("details"),
        )
    except act.ActionError as e:
        raise field_error(e) from None


MAX_PACKAGE_BYTES = 64 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"


def _package_path(request: Request, action_id: str) -> Path:
    # action ids are server-made UUIDs, checked against the queue before any path is built.
    return Path(request.app.state.settings.data_dir) / "packages" / f"{action_id}.tar.gz"


def _package_action(request: Request, device_id: str, action_id: str) -> dict[str, Any]:
    action = act.get_action(request.app.state.metadata, device_id, action_id)
    if action is None:
        raise ApiError(404, f"no action {action_id!r} on device {device_id!r}", code="not_found")
    if action["type"] != "collectInvestigationPackage":
        raise ApiError(400, f"action {action_id} is {action['type']}, not collectInvestigationPackage",
                       code="invalid_action")
    return action


@router.put("/api/devices/{device_id}/actions/{action_id}/package")
async def upload_package(request: Request, _: IngestKey, device_id: str, action_id: str) -> dict[str, Any]:
    """For agents: the investigation package (a gzip'd tarball) of an open
    collectInvestigationPackage action, at most 64 MiB; a later upload replaces it."""
    _own_device(request, device_id)
    action = await run_in_threadpool(_package_action, request, device_id, action_id)
    if action["status"] not in act.OPEN_STATUSES:
        raise ApiError(409, f"action {action_id} is already {action['status']}", code="conflict")
    path = _package_path(request, action_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_PACKAGE_BYTES:
                    raise ApiError(413, f"the package is larger than {MAX_PACKAGE_BYTES} bytes",
                                   code="payload_too_large")
                if size == len(chunk) and not chunk.startswith(GZIP_MAGIC):
                    raise ApiError(400, "the package must be a gzip'd tarball (no gzip header)",
                                   code="invalid_package")
                digest.update(chunk)
                f.write(chunk)
        if size == 0:
            raise ApiError(400, "the package is empty", code="invalid_package")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sha = digest.hexdigest()
    await run_in_threadpool(act.record_package, request.app.state.metadata, device_id, action_id,
                            actor(request), size, sha)
    return {"actionId": action_id, "bytes": size, "sha256": sha}


@router.get("/api/devices/{device_id}/actions/{action_id}/package")
def download_package(request: Request, _: AdminKey, device_id: str, action_id: str) -> FileResponse:
    """The uploaded investigation package of a collectInvestigationPackage action."""
    _package_action(request, device_id, action_id)
    path = _package_path(request, action_id)
    if not path.is_file():
        raise ApiError(404, f"action {action_id} has no uploaded package yet", code="not_found")
    return FileResponse(path, media_type="application/gzip", filename=f"investigation-{action_id}.tar.gz")


@router.post("/api/devices/{device_id}/actions/{action_id}/cancel")
def cancel_action(
    request: Request,
    _: AdminKey,
    device_id: str,
    action_id: str,
    body: OptionalJsonBody = None,
) -> dict[str, Any]:
    comment = _str_field(body or {}, "comment")
    try:
        return act.cancel_action(
            request.app.state.metadata, device_id, action_id, actor(request), comment
        )
    except act.ActionError as e:
        raise field_error(e) from None


@router.get("/api/devices/{device_id}/actions/audit")
def device_audit(
    request: Request, _: AdminKey, device_id: str, top: int = Query(1000, ge=1, le=10000)
) -> dict[str, Any]:
    return {"value": act.audit_log(request.app.state.metadata, device_id=device_id, limit=top)}


@router.get("/api/deviceactions")
def all_actions(
    request: Request, _: AdminKey, status: str | None = None, top: int = Query(1000, ge=1, le=10000)
) -> dict[str, Any]:
    return {"value": act.list_actions(request.app.state.metadata, None, status, top)}


@router.get("/api/deviceactions/audit")
def audit(
    request: Request,
    _: AdminKey,
    deviceId: str | None = None,  # noqa: N803  (API field name)
    actionId: str | None = None,  # noqa: N803
    top: int = Query(1000, ge=1, le=10000),
) -> dict[str, Any]:
    """Every request, delivery, result and cancellation, oldest first."""
    return {"value": act.audit_log(request.app.state.metadata, deviceId, actionId, top)}
