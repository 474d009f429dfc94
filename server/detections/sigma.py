"""Import Sigma rules as detection rules: `quarry rules import-sigma PATH...`.

Each rule file (or every `.yml`/`.yaml` under a directory) is converted with pySigma and its
Kusto backend through the Microsoft XDR pipeline (the Defender advanced-hunting tables), the
same conversion the sigma corpus was made with. A converted query is checked like a rule saved
through the API (it must compile and return Timestamp, DeviceId and ReportId) and stored
disabled, for an analyst to review and enable:

- severity from the Sigma level (informational, low, medium, high; critical becomes high, the
  highest Quarry has);
- MITRE techniques from the `attack.tNNNN[.NNN]` tags, the category from the first ATT&CK
  tactic tag Quarry knows;
- the rule's metadata keeps the Sigma id, title, author, status, references, license (Sigma's
  `license` field when the rule has one; SigmaHQ's rules are under the Detection Rule License
  1.1, which asks for attribution: author and source path are kept for it) and source file.

Every rule gets a line in the report: imported (with the new rule's id) or skipped and why
(unsupported log source, conversion error, a query Quarry cannot run, a name already taken).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from schema.catalog import Catalog
from server.detections.model import CATEGORIES, canonical
from server.detections.rulecheck import check_rule
from server.detections.store import SqliteDetectionStore

LEVELS = {"informational": "informational", "low": "low", "medium": "medium", "high": "high",
          "critical": "high"}
_TECHNIQUE = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.I)
_TACTIC = re.compile(r"^attack\.([a-z_-]+)$", re.I)


@dataclass
class RuleOutcome:
    path: str
    sigma_id: str
    title: str
    imported: bool
    reason: str = ""  # why skipped
    rule_id: int | None = None


@dataclass
class ImportReport:
    outcomes: list[RuleOutcome] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return sum(1 for o in self.outcomes if o.imported)

    @property
    def skipped(self) -> int:
        return len(self.outcomes) - self.imported


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The rule files named, directories searched for `.yml`/`.yaml`, in a stable order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in (".yml", ".yaml") and q.is_file())
        else:
            out.append(p)
    return out


def _backend() -> Any:
    from sigma.backends.kusto import KustoBackend
    from sigma.pipelines.microsoftxdr import microsoft_xdr_pipeline

    return KustoBackend(processing_pipeline=microsoft_xdr_pipeline())  # type: ignore[arg-type]  # pySigma annotates it as a dict


def _fields(rule: Any, query: str, path: Path) -> dict[str, Any]:
    tags = [str(t) for t in (rule.tags or [])]
    techniques = list(dict.fromkeys(m.group(1).upper() for t in tags if (m := _TECHNIQUE.match(t))))
    category = "SuspiciousActivity"
    for t in tags:
        m = _TACTIC.match(t)
        if m:
            try:
                category = canonical(m.group(1).replace("-", "").replace("_", ""), CATEGORIES, "category")
                break
            except ValueError:
                continue
    level = str(rule.level.name).lower() if rule.level is not None else "medium"
    custom = getattr(rule, "custom_attributes", None) or {}
    metadata = {
        "source": "sigma",
        "sigmaId": str(rule.id) if rule.id else None,
        "title": rule.title,
        "author": rule.author,
        "status": str(rule.status.name).lower() if rule.status is not None else None,
        "references": list(rule.references or []),
        "license": getattr(rule, "license", None) or custom.get("license"),
        "file": str(path),
        "tags": tags,
    }
    return {
        "name": rule.title,
        "query": query,
        "frequency": "1h",
        "severity": LEVELS.get(level, "medium"),
        "category": category,
        "mitre_techniques": techniques,
        "alert_title": rule.title,
        "alert_description": str(rule.description or ""),
        "recommended_actions": "",
        "device_groups": [],
        "actions": [],
        "enabled": 0,  # imported rules wait for an analyst
        "metadata": metadata,
    }


def import_sigma(paths: Iterable[Path], store: SqliteDetectionStore, catalog: Catalog, now: datetime,
                 progress: Callable[[Iterable[Path]], Iterable[Path]] = lambda it: it) -> ImportReport:
    """Convert and store every rule of ``paths``; never stops at a bad rule."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    backend = _backend()
    report = ImportReport()
    for path in progress(rule_files(paths)):
        try:
            collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SigmaError, ValueError, yaml.YAMLError) as e:
            reason = " ".join(str(e).split())[:300]
            report.outcomes.append(RuleOutcome(str(path), "", "", False, f"not a Sigma rule file: {reason}"))
            continue
        for rule in collection.rules:
            sid, title = str(rule.id or ""), str(rule.title or "")
            try:
                queries = backend.convert_rule(rule)
            except (SigmaError, NotImplementedError, ValueError) as e:
                first_line = " ".join(str(e).strip().split("\n")[0].split())
                report.outcomes.append(RuleOutcome(str(path), sid, title, False, f"conversion failed: {first_line}"))
                continue
            if len(queries) != 1:
                report.outcomes.append(RuleOutcome(str(path), sid, title, False,
                                                   f"converts to {len(queries)} queries, expected one"))
                continue
            fields = _fields(rule, str(queries[0]), path)
            check = check_rule(fields["query"], fields["frequency"], catalog, now, fields["alert_title"])
            if not check.ok:
                first = check.errors[0]
                report.outcomes.append(RuleOutcome(str(path), sid, title, False,
                                                   f"the converted query is not a valid detection: {first['message']}"))
                continue
            if store.rule_by_name(fields["name"]) is not None:
                report.outcomes.append(RuleOutcome(str(path), sid, title, False,
                                                   f"a rule named {title!r} already exists"))
                continue
            created = store.create_rule(fields, now)
            report.outcomes.append(RuleOutcome(str(path), sid, title, True, rule_id=int(created["id"])))
    return report
