"""Store rows to API JSON. Field names follow the Defender alert APIs (Graph alerts_v2 camelCase,
plus the legacy MDE names ``machineId``/``computerDnsName``/``alertCreationTime`` where Graph has
none), and the fields the notifier reads (ruleId, ruleName, deviceId, deviceName, timestamp,
createdAt, evidenceSummary, entities)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


def _url(settings: Any, kind: str, ident: Any) -> str:
    return f"{str(settings.public_url).rstrip('/')}/{kind}/{quote(str(ident), safe='')}"


def alert_to_api(a: dict[str, Any], settings: Any, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a["id"],
        "kind": a["kind"],
        "incidentId": a["incident_id"],
        "status": a["status"],
        "severity": a["severity"],
        "classification": a["classification"],
        "determination": a["determination"],
        "assignedTo": a["assigned_to"],
        "title": a["title"],
        "description": a["description"],
        "recommendedActions": a["recommended_actions"],
        "category": a["category"],
        "mitreTechniques": a["mitre_techniques"],
        "serviceSource": "quarry",
        "detectionSource": "customDetection" if a["kind"] == "detection" else "quarryHealth",
        "detectorId": None if a["rule_id"] is None else str(a["rule_id"]),
        "providerAlertId": a["id"],
        "alertWebUrl": _url(settings, "alerts", a["id"]),
        "incidentWebUrl": None if a["incident_id"] is None else _url(settings, "incidents", a["incident_id"]),
        "createdDateTime": a["created_at"],
        "lastUpdateDateTime": a["updated_at"],
        "resolvedDateTime": a["resolved_at"],
        "firstActivityDateTime": a["event_time"],
        "lastActivityDateTime": a["event_time"] if a["kind"] == "detection" else a["updated_at"],
        "comments": a["comments"],
        # Legacy MDE alert names.
        "machineId": a["device_id"],
        "computerDnsName": a["device_name"],
        "alertCreationTime": a["created_at"],
        # The fields the notifier and the alert page read.
        "ruleId": a["rule_id"],
        "ruleName": a["rule_name"],
        "runId": a["run_id"],
        "deviceId": a["device_id"],
        "deviceName": a["device_name"],
        "reportId": a["report_id"],
        "timestamp": a["event_time"],
        "createdAt": a["created_at"],
        "evidenceSummary": a["evidence_summary"],
        "entities": a["entities"],
        "occurrences": a["occurrences"],
    }
    if full:
        out["evidence"] = a["entities"]
        out["evidenceRows"] = a["evidence"]
    return out


def incident_to_api(i: dict[str, Any], alerts: list[dict[str, Any]], settings: Any) -> dict[str, Any]:
    devices = sorted(
        {(a["device_id"], a["device_name"]) for a in alerts if a["device_id"]}, key=lambda d: d[0]
    )
    return {
        "id": i["id"],
        "displayName": i["title"],
        "severity": i["severity"],
        "status": i["status"],
        "assignedTo": i["assigned_to"],
        "classification": i["classification"],
        "determination": i["determination"],
        "comments": i["comments"],
        "customTags": i["tags"],
        "incidentWebUrl": _url(settings, "incidents", i["id"]),
        "createdDateTime": i["created_at"],
        "lastUpdateDateTime": i["updated_at"],
        "resolvedDateTime": i["resolved_at"],
        "firstActivityDateTime": i["first_activity"],
        "lastActivityDateTime": i["last_activity"],
        "alertCount": len(alerts),
        "alertIds": [a["id"] for a in alerts],
        "devices": [{"deviceId": d, "deviceName": n} for d, n in devices],
        "alerts": [alert_to_api(a, settings) for a in alerts],
    }


def rule_to_api(r: dict[str, Any], last_run: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": r["id"],
        "name": r["name"],
        "query": r["query"],
        "frequency": r["frequency"],
        "severity": r["severity"],
        "category": r["category"],
        "mitreTechniques": r["mitre_techniques"],
        "metadata": r.get("metadata") or {},
        "alertTitle": r["alert_title"],
        "alertDescription": r["alert_description"],
        "recommendedActions": r["recommended_actions"],
        "deviceGroups": r["device_groups"],
        "actions": r["actions"],
        "enabled": bool(r["enabled"]),
        "createdBy": r["created_by"],
        "createdAt": r["created_at"],
        "updatedAt": r["updated_at"],
        "lastRunAt": r["last_run_at"],
        "lastRunStatus": r["last_run_status"],
        "lastError": r["last_error"],
        "nextRunAt": r["next_run_at"],
        "coveredThrough": r["covered_through"],
        "ingestWatermark": r["ingest_watermark"],
        "lastRun": last_run,
    }
