"""Device groups: named sets of devices, matched from the latest DeviceInfo facts.

A group has up to three criteria: a device name pattern (a case-insensitive glob such as
``mac-*``), a list of OS platforms (``macOS``, ``Windows11``, ...) and a list of machine tags.
A device belongs to a group when it satisfies every criterion the group sets (AND across
criteria, OR within a list), as Defender's device-group matching rules combine. A group must set
at least one criterion: an empty group that matched everything would silently widen the scope of
every rule and notification that names it.

Membership is computed, not stored: DeviceInfo is a stream of heartbeats, so a device that is
renamed or re-tagged moves between groups with its next heartbeat.

``device_in_groups(metadata, device_id, group_ids, facts=..., storage=...)`` is the interface
used by detections (rule scope) and notifications. Callers either pass the device's facts or a
storage (anything with ``connect() -> duckdb connection`` exposing the ``DeviceInfo`` view).
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import duckdb

from server.errors import FieldError
from server.metadata import MetadataDB


class GroupError(FieldError):
    """A group definition or reference is invalid; ``field`` names the offending field."""

    default_code = "invalid_group"


class SupportsConnect(Protocol):
    def connect(self) -> duckdb.DuckDBPyConnection: ...


@dataclass(frozen=True)
class DeviceFacts:
    """What group matching needs to know about a device (latest non-null DeviceInfo values)."""

    device_id: str
    device_name: str | None = None
    os_platform: str | None = None
    machine_group: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class DeviceGroup:
    id: int
    name: str
    description: str
    name_pattern: str | None
    os_platforms: tuple[str, ...]
    tags: tuple[str, ...]
    created_at: str
    updated_at: str

    def matches(self, facts: DeviceFacts) -> bool:
        if self.name_pattern is not None:
            name = facts.device_name or ""
            # fnmatchcase on lower-cased text: case-insensitive on every OS (plain fnmatch
            # follows the OS's path rules).
            if not fnmatch.fnmatchcase(name.lower(), self.name_pattern.lower()):
                return False
        if self.os_platforms:
            platform = (facts.os_platform or "").lower()
            if platform not in {p.lower() for p in self.os_platforms}:
                return False
        if self.tags:
            have = {t.lower() for t in facts.tags}
            if not have.intersection(t.lower() for t in self.tags):
                return False
        return True

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "namePattern": self.name_pattern,
            "osPlatforms": list(self.os_platforms),
            "tags": list(self.tags),
            "createdDateTime": self.created_at,
            "lastUpdateDateTime": self.updated_at,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _row_to_group(row: sqlite3.Row) -> DeviceGroup:
    return DeviceGroup(
        id=int(row["id"]),
        name=str(row["name"]),
        description=str(row["description"]),
        name_pattern=row["name_pattern"],
        os_platforms=tuple(json.loads(row["os_platforms"])),
        tags=tuple(json.loads(row["tags"])),
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
    )


def _clean_list(value: Any, field_name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GroupError(f"{field_name} must be a list of strings", field_name)
    out = [v.strip() for v in value if v.strip()]
    if len(out) != len(value):
        raise GroupError(f"{field_name} must not contain empty strings", field_name)
    return out


def _validate(name: Any, pattern: Any, platforms: list[str], tags: list[str]) -> None:
    if not isinstance(name, str) or not name.strip():
        raise GroupError("name is required and must be a non-empty string", "name")
    if len(name) > 200:
        raise GroupError("name is longer than 200 characters", "name")
    if pattern is not None and (not isinstance(pattern, str) or not pattern.strip()):
        raise GroupError("namePattern must be a non-empty glob such as 'mac-*'", "namePattern")
    if pattern is None and not platforms and not tags:
        raise GroupError(
            "a group needs at least one of namePattern, osPlatforms or tags "
            "(an empty group would match every device)",
            "namePattern",
        )


def list_groups(metadata: MetadataDB) -> list[DeviceGroup]:
    return [_row_to_group(r) for r in metadata.query("SELECT * FROM device_groups ORDER BY id")]


def get_group(metadata: MetadataDB, group_id: int) -> DeviceGroup | None:
    rows = metadata.query("SELECT * FROM device_groups WHERE id = ?", (group_id,))
    return _row_to_group(rows[0]) if rows else None


def get_groups(metadata: MetadataDB, group_ids: Iterable[int | str]) -> list[DeviceGroup]:
    """The groups with these ids; raises GroupError naming any id that does not exist."""
    ids = normalise_group_ids(group_ids)
    if not ids:
        return []
    marks = ",".join("?" for _ in ids)
    rows = metadata.query(
        f"SELECT * FROM device_groups WHERE id IN ({marks}) ORDER BY id", tuple(ids)
    )
    found = {int(r["id"]) for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise GroupError(
            f"unknown device group id(s): {', '.join(map(str, missing))}",
            "deviceGroups",
            "unknown_group",
        )
    return [_row_to_group(r) for r in rows]


def normalise_group_ids(group_ids: Iterable[int | str] | None) -> list[int]:
    """Group ids as ints (the API also accepts numeric strings); raises GroupError otherwise."""
    out: list[int] = []
    for g in group_ids or []:
        if isinstance(g, bool):
            raise GroupError(f"device group id {g!r} is not an integer", "deviceGroups")
        try:
            gid = int(g)
        except (TypeError, ValueError):
            raise GroupError(f"device group id {g!r} is not an integer", "deviceGroups") from None
        if gid not in out:
            out.append(gid)
    return out


def create_group(
    metadata: MetadataDB,
    name: str,
    name_pattern: str | None = None,
    os_platforms: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    description: str = "",
) -> DeviceGroup:
    platforms = _clean_list(os_platforms, "osPlatforms")
    tag_list = _clean_list(tags, "tags")
    _validate(name, name_pattern, platforms, tag_list)
    now = _now()
    try:
        with metadata.tx() as conn:
            cur = conn.execute(
                "INSERT INTO device_groups (name, description, name_pattern, os_platforms, tags,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    name.strip(),
                    description,
                    name_pattern,
                    json.dumps(platforms),
                    json.dumps(tag_list),
                    now,
                    now,
                ),
            )
            gid = int(cur.lastrowid or 0)
    except sqlite3.IntegrityError:
        raise GroupError(
            f"a device group named {name.strip()!r} already exists", "name", "conflict", 409
        ) from None
    group = get_group(metadata, gid)
    assert group is not None
    return group


def update_group(
    metadata: MetadataDB, group_id: int, changes: dict[str, Any]
) -> DeviceGroup | None:
    """Apply API-named changes (name, description, namePattern, osPlatforms, tags)."""
    current = get_group(metadata, group_id)
    if current is None:
        return None
    unknown = set(changes) - {"name", "description", "namePattern", "osPlatforms", "tags"}
    if unknown:
        raise GroupError(f"unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    name = changes.get("name", current.name)
    description = changes.get("description", current.description)
    if not isinstance(description, str):
        raise GroupError("description must be a string", "description")
    pattern = changes.get("namePattern", current.name_pattern)
    platforms = _clean_list(changes.get("osPlatforms", list(current.os_platforms)), "osPlatforms")
    tag_list = _clean_list(changes.get("tags", list(current.tags)), "tags")
    _validate(name, pattern, platforms, tag_list)
    try:
        with metadata.tx() as conn:
            conn.execute(
                "UPDATE device_groups SET name = ?, description = ?, name_pattern = ?, os_platforms = ?,"
                " tags = ?, updated_at = ? WHERE id = ?",
                (
                    name.strip(),
                    description,
                    pattern,
                    json.dumps(platforms),
                    json.dumps(tag_list),
                    _now(),
                    group_id,
                ),
            )
    except sqlite3.IntegrityError:
        raise GroupError(
            f"a device group named {name.strip()!r} already exists", "name", "conflict", 409
        ) from None
    return get_group(metadata, group_id)


def delete_group(metadata: MetadataDB, group_id: int) -> bool:
    """Delete a group; refuses (GroupError code 'in_use') while a notification rule or a
    detection rule names it (a detection rule's scope would dangle and every run would fail).
    Checked in the deleting transaction, so a rule saved meanwhile cannot slip through."""
    with metadata.tx() as conn:
        notify = conn.execute(
            "SELECT r.name FROM notification_rule_groups g JOIN notification_rules r ON r.id = g.rule_id"
            " WHERE g.group_id = ? ORDER BY r.name",
            (group_id,),
        ).fetchall()
        # detection_rules.device_groups is a JSON array of group ids (migration 3).
        detect = conn.execute(
            "SELECT DISTINCT r.name FROM detection_rules r, json_each(r.device_groups) j"
            " WHERE j.value = ? ORDER BY r.name",
            (group_id,),
        ).fetchall()
        users = [f"notification rule {str(u['name'])!r}" for u in notify]
        users += [f"detection rule {str(u['name'])!r}" for u in detect]
        if users:
            raise GroupError(
                f"device group {group_id} is used by {', '.join(users)}", "id", "in_use", 409
            )
        cur = conn.execute("DELETE FROM device_groups WHERE id = ?", (group_id,))
        return cur.rowcount > 0


# --- DeviceInfo facts -------------------------------------------------------------------------

# The latest non-null value of each column: DeviceInfo rows are heartbeats, and a partial
# report must not blank out a name or tag that an earlier full report set.
_FACTS_SQL = """
SELECT DeviceId,
       arg_max(DeviceName, Timestamp) FILTER (WHERE DeviceName IS NOT NULL) AS DeviceName,
       arg_max(OSPlatform, Timestamp) FILTER (WHERE OSPlatform IS NOT NULL) AS OSPlatform,
       arg_max(MachineGroup, Timestamp) FILTER (WHERE MachineGroup IS NOT NULL) AS MachineGroup,
       arg_max(RegistryDeviceTag, Timestamp) FILTER (WHERE RegistryDeviceTag IS NOT NULL) AS RegistryDeviceTag,
       arg_max(CAST(DeviceManualTags AS VARCHAR), Timestamp) FILTER (WHERE DeviceManualTags IS NOT NULL) AS DeviceManualTags,
       arg_max(CAST(DeviceDynamicTags AS VARCHAR), Timestamp) FILTER (WHERE DeviceDynamicTags IS NOT NULL) AS DeviceDynamicTags
FROM "DeviceInfo"
{where}
GROUP BY DeviceId
"""


def _tags_from(value: Any) -> set[str]:
    """Tags from a DeviceInfo tag column: a JSON array of strings, or one plain tag."""
    if value is None:
        return set()
    text = str(value).strip()
    if not text:
        return set()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            return {text}
        return (
            {str(t).strip() for t in parsed if str(t).strip()}
            if isinstance(parsed, list)
            else set()
        )
    return {text}


def _facts_from_row(row: tuple[Any, ...]) -> DeviceFacts:
    device_id, name, platform, mgroup, reg_tag, manual, dynamic = row
    tags = _tags_from(reg_tag) | _tags_from(manual) | _tags_from(dynamic)
    return DeviceFacts(str(device_id), name, platform, mgroup, frozenset(tags))


def device_facts(storage: SupportsConnect, device_id: str) -> DeviceFacts | None:
    """The device's latest DeviceInfo facts, or None when it has sent no DeviceInfo."""
    conn = storage.connect()
    try:
        rows = conn.execute(_FACTS_SQL.format(where="WHERE DeviceId = ?"), [device_id]).fetchall()
    finally:
        conn.close()
    return _facts_from_row(rows[0]) if rows else None


def all_device_facts(storage: SupportsConnect) -> list[DeviceFacts]:
    conn = storage.connect()
    try:
        rows = conn.execute(_FACTS_SQL.format(where="")).fetchall()
    finally:
        conn.close()
    return [_facts_from_row(r) for r in rows]


def device_in_groups(
    metadata: MetadataDB,
    device_id: str,
    group_ids: Iterable[int | str] | None,
    facts: DeviceFacts | None = None,
    storage: SupportsConnect | None = None,
) -> bool:
    """True when the device is in any of the groups, or when ``group_ids`` is empty (= all).

    Pass ``facts`` when the caller already knows the device, else ``storage`` to read DeviceInfo.
    A device with no DeviceInfo is matched on its id alone, so only groups without criteria on
    name, platform or tags could take it, and there are none: it is in no group.
    Raises GroupError for an unknown group id (a dangling scope is an error, not "all devices").
    """
    groups = get_groups(metadata, group_ids or [])
    if not groups:
        return True
    if facts is None:
        if storage is None:
            raise ValueError("device_in_groups needs facts= or storage= to know the device")
        facts = device_facts(storage, device_id) or DeviceFacts(device_id)
    return any(g.matches(facts) for g in groups)


def group_device_ids(
    metadata: MetadataDB, storage: SupportsConnect, group_ids: Iterable[int | str]
) -> set[str] | None:
    """The DeviceIds in any of the groups, or None when ``group_ids`` is empty (all devices).

    For scoping a query to a rule's device groups in one pass over DeviceInfo.
    """
    groups = get_groups(metadata, group_ids)
    if not groups:
        return None
    return {f.device_id for f in all_device_facts(storage) if any(g.matches(f) for g in groups)}
