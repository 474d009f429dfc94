"""``GET /api/schema`` and ``GET /api/schema/{Table}``: the tables a query can read, from
``schema/`` (the one source of truth), with KQL and .NET type names and descriptions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from schema.catalog import Table, default_catalog
from server.auth import QueryKey
from server.errors import ApiError

router = APIRouter(tags=["schema"])


def table_json(table: Table, *, columns: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": table.name,
        "description": table.description,
        "hasTimestamp": table.has_timestamp,
        "isEventTable": table.is_event_table,
        "nrtSupported": table.nrt_supported,
    }
    if columns:
        out["columns"] = [
            {"name": c.name, "type": c.type.name, "dotnetType": c.type.dotnet, "description": c.description}
            for c in table.columns
        ]
    return out


_TABLE_EXAMPLE = {
    "name": "DeviceProcessEvents",
    "description": "Process creation and related events",
    "hasTimestamp": True,
    "isEventTable": True,
    "nrtSupported": True,
    "columns": [
        {
            "name": "Timestamp",
            "type": "datetime",
            "dotnetType": "DateTime",
            "description": "Date and time when the event was recorded",
        }
    ],
}


@router.get(
    "/api/schema",
    summary="Every table with its columns",
    responses={200: {"content": {"application/json": {"example": {"tables": [_TABLE_EXAMPLE]}}}}},
)
async def list_schema(_key: QueryKey) -> dict[str, Any]:
    catalog = default_catalog()
    return {"tables": [table_json(t) for t in catalog.tables.values()]}


@router.get(
    "/api/schema/{table}",
    summary="One table's columns, types and descriptions",
    responses={200: {"content": {"application/json": {"example": _TABLE_EXAMPLE}}}},
)
async def get_table_schema(table: str, _key: QueryKey) -> dict[str, Any]:
    catalog = default_catalog()
    found = catalog.table(table)
    if found is None:
        hints = catalog.suggest(table)
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise ApiError(
            404,
            f"unknown table '{table}'{hint}",
            errors=[{"code": "unknown_table", "message": f"unknown table '{table}'", "hints": hints}],
        )
    return table_json(found)
