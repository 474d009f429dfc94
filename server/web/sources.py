"""Where the alert page reads its data: the detections store, view and process-tree builder that
the JSON API (``GET /api/alerts/{id}``, ``/process-tree``) uses, so the two always agree."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("quarry.web")


def _store(state: Any) -> Any:
    # Imported here, not at module load: the page module is imported by the app factory and
    # must not make the whole app depend on the detections package being importable.
    from server.detections.store import SqliteDetectionStore

    store = getattr(state, "detection_store", None)
    return store if store is not None else SqliteDetectionStore(state.metadata)


def get_alert(state: Any, alert_id: str) -> dict[str, Any] | None:
    from server.detections.views import alert_to_api

    row = _store(state).get_alert(alert_id)
    return None if row is None else alert_to_api(row, state.settings, full=True)


def get_process_tree(state: Any, alert_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(tree, error): ``tree`` has ``roots`` (nested nodes with ``children``) and ``note``."""
    row = _store(state).get_alert(alert_id)
    if row is None:
        return None, "alert not found"
    return tree_for(state, row)


def event_process_tree(state: Any, device_id: str, report_id: str, at: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The process tree around one process event of a device (the device page's choice), built
    as for an alert on that event."""
    return tree_for(state, {"id": None, "device_id": device_id, "report_id": report_id, "event_time": at,
                            "evidence": [{}]})


def tree_for(state: Any, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    from server.detections.process_tree import build_tree

    storage = getattr(state, "storage", None)
    alert_id = row.get("id")
    if storage is None:
        return None, "storage is not available"
    try:
        con = storage.connect()
        try:
            tree = build_tree(con, row)
        finally:
            con.close()
    except Exception:  # the page still shows the alert; why the tree failed goes to the log only
        log.exception("process tree for alert %s failed", alert_id)  # (its text names data paths)
        return None, "the process events could not be read; the server log has the reason"
    nested = tree.get("tree")
    return {"roots": [nested] if nested else [], "note": tree.get("note")}, None


def get_incident(state: Any, incident_id: int) -> dict[str, Any] | None:
    """The incident as ``GET /api/incidents/{id}`` returns it, with its alerts."""
    from server.detections.views import incident_to_api

    store = _store(state)
    inc = store.get_incident(incident_id)
    if inc is None:
        return None
    return incident_to_api(inc, store.incident_alerts([incident_id])[incident_id], state.settings)
