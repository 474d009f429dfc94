"""Import Sigma rules (https://sigmahq.io) as Quarry detection rules: ``quarry rules import-sigma``.

pySigma parses each rule and its Kusto backend, with the Microsoft XDR pipeline, writes the
Defender KQL; the result is then held to the same contract as a rule saved through the API
(``RuleIn``'s validation and ``check_rule``: it must compile and return Timestamp, DeviceId and
ReportId) and written through the detection store. A rule that fails any step is skipped with the
reason; nothing half-converted is stored. Imported rules are disabled unless asked otherwise:
SigmaHQ's rules are written for broad telemetry and need tuning before they page anyone.

pySigma is the optional ``quarry[sigma]`` extra, so this module is imported only by the command.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from sigma.backends.kusto import KustoBackend
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.pipelines.microsoftxdr import microsoft_xdr_pipeline
from sigma.rule import SigmaRule

from schema.catalog import Catalog
from server.detections.model import RuleIn
from server.detections.rulecheck import check_rule
from server.detections.store import SqliteDetectionStore

DEFAULT_FREQUENCY = "1h"
DEFAULT_LICENSE = "DRL-1.1"
LICENSE_URL = {"DRL-1.1": "https://github.com/SigmaHQ/Detection-Rule-License/blob/main/LICENSE.Detection.Rules.md"}
# Sigma levels onto Quarry's (Defender's) severities; Defender has no "critical", so it becomes
# high and the original level stays in the rule's metadata.
SEVERITY = {"informational": "informational", "low": "low", "medium": "medium", "high": "high", "critical": "high"}
# The first ATT&CK tactic tag picks the alert category (Defender's list); others fall back.
CATEGORY = {
    "initial-access": "InitialAccess",
    "execution": "Execution",
    "persistence": "Persistence",
    "privilege-escalation": "PrivilegeEscalation",
    "defense-evasion": "DefenseEvasion",
    "credential-access": "CredentialAccess",
    "discovery": "Discovery",
    "lateral-movement": "LateralMovement",
    "collection": "Collection",
    "exfiltration": "Exfiltration",
    "command-and-control": "CommandAndControl",
}
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$", re.I)
RULE_SUFFIXES = (".yml", ".yaml")
# Larger files are skipped unread: SigmaHQ's largest rule (a list of vulnerable drivers' hashes)
# is under 300 KB, and pySigma holds a whole file in memory several times over.
MAX_RULE_FILE_BYTES = 1024 * 1024

Status = Literal["imported", "updated", "skipped"]


@dataclass
class Outcome:
    """What became of one Sigma rule (one line of the report)."""

    path: str
    status: Status
    sigma_id: str | None = None
    title: str | None = None
    rule_id: int | None = None
    name: str | None = None
    reason: str | None = None
    code: str | None = None  # machine-readable reason: yaml, sigma, convert, compile, validation, ...

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The rule files named by ``paths``: files as given, folders searched recursively for
    ``*.yml``/``*.yaml`` (sorted, so reports are stable). FileNotFoundError for a missing path."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in RULE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(out))


def _first_line(e: BaseException) -> str:
    """The message's first line, without a trailing lead-in to text that follows ("...: ")."""
    text = str(e).strip().splitlines()
    line = text[0].strip() if text else type(e).__name__
    if line.endswith(":") and ". " in line:
        line = line[: line.rindex(". ") + 1]
    return line


def _techniques(rule: SigmaRule) -> list[str]:
    return list(dict.fromkeys(t.name.upper() for t in rule.tags if t.namespace == "attack" and _TECHNIQUE.match(t.name)))


def _category(rule: SigmaRule) -> str:
    for t in rule.tags:
        if t.namespace == "attack" and t.name.lower() in CATEGORY:
            return CATEGORY[t.name.lower()]
    return "SuspiciousActivity"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def source_of(rule: SigmaRule, path: str, license_: str) -> dict[str, Any]:
    """The rule's provenance as stored in ``detection_rules.metadata``: enough to credit the authors
    (the DRL's attribution) and to find the original."""
    author = _text(rule.author)
    lic = _text(rule.custom_attributes.get("license")) or license_
    credit = f"Sigma rule \"{rule.title}\" ({rule.id})" + (f" by {author}" if author else "")
    url = LICENSE_URL.get(lic)
    return {
        "kind": "sigma",
        "id": str(rule.id),
        "title": rule.title,
        "author": author,
        "license": lic,
        "attribution": f"{credit}; licence {lic}" + (f" ({url})" if url else ""),
        "references": [str(r) for r in rule.references],
        "level": rule.level.name.lower() if rule.level else None,
        "status": rule.status.name.lower() if rule.status else None,
        "tags": [str(t) for t in rule.tags],
        "logsource": {k: v for k, v in (("product", rule.logsource.product), ("category", rule.logsource.category),
                                        ("service", rule.logsource.service)) if v},
        "date": _text(rule.date) or None,
        "modified": _text(rule.modified) or None,
        "path": path,
    }


def _description(rule: SigmaRule, source: dict[str, Any]) -> str:
    parts = [_text(rule.description).strip()]
    if rule.falsepositives:
        parts.append("Known false positives: " + "; ".join(str(f) for f in rule.falsepositives))
    # The DRL asks that what a rule produces credits it: every alert carries the attribution.
    parts.append(source["attribution"])
    return "\n\n".join(p for p in parts if p)[:10_000]


class SigmaImporter:
    """Converts and stores rules one file at a time; ``outcomes`` collects the report."""

    def __init__(
        self,
        store: SqliteDetectionStore,
        catalog: Catalog,
        now: datetime,
        *,
        enable: bool = False,
        frequency: str | None = None,
        license_: str = DEFAULT_LICENSE,
        limits: Any = None,
    ) -> None:
        self.store, self.catalog, self.now, self.limits = store, catalog, now, limits
        self.enable, self.frequency, self.license = enable, frequency, license_
        self.outcomes: list[Outcome] = []

    def run(self, files: list[Path], progress: Callable[[int, int], None] | None = None) -> list[Outcome]:
        for i, f in enumerate(files, start=1):
            self.import_file(f)
            if progress is not None:
                progress(i, len(files))
        return self.outcomes

    def import_file(self, path: Path) -> None:
        where = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_RULE_FILE_BYTES:
                self._skip(Outcome(where, "skipped"), "too_large",
                           f"the file is {size:,} bytes; a Sigma rule file may be at most {MAX_RULE_FILE_BYTES:,}")
                return
            text = path.read_text(encoding="utf-8")
            collection = SigmaCollection.from_yaml(text, collect_errors=True)
        except (OSError, UnicodeDecodeError, SigmaError) as e:
            self._skip(Outcome(where, "skipped"), "yaml", f"the file could not be read as Sigma: {_first_line(e)}")
            return
        except Exception as e:  # pySigma raises YAML and other errors of its own: report, go on
            self._skip(Outcome(where, "skipped"), "yaml", f"the file could not be read as Sigma: {type(e).__name__}: {_first_line(e)}")
            return
        # collection.errors also holds each rule's errors (reported with the rule below); the rest
        # are documents that did not become a rule at all
        of_rules = {id(e) for r in collection.rules for e in r.errors}
        lost = [e for e in collection.errors if id(e) not in of_rules]
        if lost:
            self._skip(Outcome(where, "skipped"), "sigma", "; ".join(_first_line(e) for e in lost))
        for rule in collection.rules:
            out = Outcome(where, "skipped", str(rule.id) if rule.id else None, rule.title or None)
            if isinstance(rule, SigmaCorrelationRule):
                self._skip(out, "correlation", "correlation rules (counts over several events) are not "
                           "supported: a Quarry detection alerts on single events")
                continue
            self._import_rule(rule, out)

    def _skip(self, out: Outcome, code: str, reason: str) -> None:
        out.status, out.code, out.reason = "skipped", code, reason
        self.outcomes.append(out)

    def _import_rule(self, rule: SigmaRule, out: Outcome) -> None:
        if rule.errors:
            self._skip(out, "sigma", "; ".join(_first_line(e) for e in rule.errors))
            return
        if rule.id is None:
            self._skip(out, "no_id", "the rule has no id (a re-import finds the rule by its Sigma id)")
            return
        try:
            # a fresh pipeline each time: the XDR pipeline keeps per-rule state (the table)
            pipeline = microsoft_xdr_pipeline()
            # the backend annotates processing_pipeline as a dict; it takes (and documents) a pipeline
            queries = KustoBackend(processing_pipeline=pipeline).convert_rule(rule)  # type: ignore[arg-type]
        except SigmaError as e:
            ls = "/".join(v for v in (rule.logsource.product, rule.logsource.category, rule.logsource.service) if v)
            self._skip(out, "convert", f"pySigma cannot convert it (logsource {ls}): {_first_line(e)}")
            return
        except Exception as e:  # a backend bug on an odd rule must not stop the import
            self._skip(out, "convert", f"pySigma cannot convert it ({type(e).__name__}: {_first_line(e)})")
            return
        if not queries and not getattr(rule, "_output", True):
            # pySigma's flag for a rule a correlation refers to without `generate: true`
            self._skip(out, "correlation", "the rule is only a part of a correlation rule (no `generate: true`), "
                       "so it yields no query of its own")
            return
        if len(queries) != 1 or not isinstance(queries[0], str):
            self._skip(out, "convert", (f"pySigma produced {len(queries)} queries; a Quarry rule holds exactly one" if queries
                       else "pySigma produced no query for it (its pipeline dropped the rule)"))
            return
        self._store(rule, queries[0], out)

    def _store(self, rule: SigmaRule, query: str, out: Outcome) -> None:
        ref = f"sigma:{rule.id}"
        existing = self.store.rule_by_source(ref)
        frequency = self.frequency or (existing["frequency"] if existing else DEFAULT_FREQUENCY)
        source = source_of(rule, out.path, self.license)
        level = rule.level.name.lower() if rule.level else "medium"
        name = self._name(rule, existing)
        try:
            body = RuleIn(
                name=name,
                query=query,
                frequency=frequency,
                severity=SEVERITY.get(level, "medium"),
                category=_category(rule),
                mitreTechniques=_techniques(rule),
                alertTitle=rule.title[:500],
                alertDescription=_description(rule, source),
                enabled=self.enable or bool(existing and existing["enabled"]),
            )
        except ValidationError as e:
            err = e.errors()[0]
            self._skip(out, "validation", f"{'.'.join(map(str, err['loc']))}: {err['msg']}")
            return
        check = check_rule(query, frequency, self.catalog, self.now, body.alertTitle or "",
                           body.alertDescription, limits=self.limits)
        if not check.ok:
            first = check.errors[0]
            where = f" (line {first['line']}, column {first['column']})" if "line" in first else ""
            self._skip(out, str(first.get("code") or "compile"),
                       f"Quarry refuses the converted query{where}: {first['message']}")
            return
        fields: dict[str, Any] = {
            "name": body.name,
            "query": body.query,
            "frequency": body.frequency,
            "severity": body.severity,
            "category": body.category,
            "mitre_techniques": body.mitreTechniques,
            "alert_title": body.alertTitle,
            "alert_description": body.alertDescription,
            "enabled": int(body.enabled),
            "metadata": source,
            "source_ref": ref,
        }
        try:
            if existing is None:
                stored = self.store.create_rule({**fields, "created_by": "quarry rules import-sigma"}, self.now)
                out.status = "imported"
            else:
                if self.frequency is not None and self.frequency != existing["frequency"]:
                    fields["next_run_at"] = None  # a new schedule starts now, as the API does
                stored = self.store.update_rule(existing["id"], fields, self.now) or existing
                out.status = "updated"
        except sqlite3.IntegrityError as e:
            self._skip(out, "conflict", f"the rule could not be stored: {e}")
            return
        out.rule_id, out.name = int(stored["id"]), stored["name"]
        self.outcomes.append(out)

    def _name(self, rule: SigmaRule, existing: dict[str, Any] | None) -> str:
        """The rule's title, made unique: rule names are unique in Quarry and SigmaHQ titles
        mostly are, but not always (the same title for a Windows and a Linux variant)."""
        name = rule.title.strip()[:200] or str(rule.id)
        holder = self.store.rule_by_name(name)
        if holder is None or (existing is not None and holder["id"] == existing["id"]):
            return name
        return f"{name[:189]} [{str(rule.id)[:8]}]"


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {"imported": 0, "updated": 0, "skipped": 0}
    for o in outcomes:
        counts[o.status] += 1
    return counts
