"""Device groups API: ``/api/devicegroups`` (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from starlette.concurrency import run_in_threadpool

from server.api.params import RowId
from server.auth import AdminKey
from server.devices import groups as g
from server.errors import ApiError, field_error

router = APIRouter(prefix="/api/devicegroups", tags=["device groups"])
JsonBody = Annotated[dict[str, Any], Body()]


def _not_found(group_id: RowId) -> ApiError:
    return ApiError(404, f"no device group with id {group_id}", code="not_found")


@router.post("", status_code=201)
def create_group(request: Request, _: AdminKey, body: JsonBody) -> dict[str, Any]:
    """Create a group: ``name``, and at least one of ``namePattern`` (case-insensitive glob),
    ``osPlatforms`` and ``tags``; optional ``description``."""
    unknown = set(body) - {"name", "description", "namePattern", "osPlatforms", "tags"}
    if unknown:
        raise field_error(
            g.GroupError(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
        )
    description = body.get("description", "")
    if not isinstance(description, str):
        raise field_error(g.GroupError("description must be a string", "description"))
    try:
        group = g.create_group(
            request.app.state.metadata,
            body.get("name"),  # type: ignore[arg-type]  # validated inside
            name_pattern=body.get("namePattern"),
            os_platforms=body.get("osPlatforms"),
            tags=body.get("tags"),
            description=description,
        )
    except g.GroupError as e:
        raise field_error(e) from None
    return group.to_api()


@router.get("")
def list_groups(request: Request, _: AdminKey) -> dict[str, Any]:
    return {"value": [x.to_api() for x in g.list_groups(request.app.state.metadata)]}


@router.get("/{group_id}")
def get_group(request: Request, _: AdminKey, group_id: RowId) -> dict[str, Any]:
    group = g.get_group(request.app.state.metadata, group_id)
    if group is None:
        raise _not_found(group_id)
    return group.to_api()


@router.patch("/{group_id}")
def update_group(request: Request, _: AdminKey, group_id: RowId, body: JsonBody) -> dict[str, Any]:
    try:
        group = g.update_group(request.app.state.metadata, group_id, body)
    except g.GroupError as e:
        raise field_error(e) from None
    if group is None:
        raise _not_found(group_id)
    return group.to_api()


@router.delete("/{group_id}", status_code=204)
def delete_group(request: Request, _: AdminKey, group_id: RowId) -> Response:
    try:
        deleted = g.delete_group(request.app.state.metadata, group_id)
    except g.GroupError as e:
        raise field_error(e) from None
    if not deleted:
        raise _not_found(group_id)
    return Response(status_code=204)


@router.get("/{group_id}/devices")
async def group_devices(request: Request, _: AdminKey, group_id: RowId) -> dict[str, Any]:
    """The devices currently in the group, from their latest DeviceInfo."""
    state = request.app.state
    group = g.get_group(state.metadata, group_id)
    if group is None:
        raise _not_found(group_id)
    storage = getattr(state, "storage", None)
    if storage is None:
        raise ApiError(
            503, "storage is not available, so DeviceInfo cannot be read", code="unavailable"
        )
    facts = await run_in_threadpool(g.all_device_facts, storage)
    return {
        "value": [
            {
                "deviceId": f.device_id,
                "deviceName": f.device_name,
                "osPlatform": f.os_platform,
                "machineGroup": f.machine_group,
                "tags": sorted(f.tags),
            }
            for f in sorted(facts, key=lambda f: f.device_id)
            if group.matches(f)
        ]
    }
