"""Kusto.Language as a referee (the pieces benchmarks/corpus.py and benchmarks/differential.py
share): the node process that judges queries, and the comparison of its verdicts and result
columns with Quarry's outcomes. See benchmarks/differential.py for the whole run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import BUILD, REPO

SHARED = REPO.parent / "shared"
if not SHARED.exists():  # a git worktree sits deeper: the shared directory is /work/shared
    SHARED = Path("/work/shared")
CHECK_SOURCE = SHARED / "tools" / "kusto-check"
SCHEMA_SOURCE = SHARED / "reference" / "defender_device_tables.json"
CORPORA = ("community", "sigma")
# Kusto.Language types -> the KQL type names Quarry reports (Kusto.Language calls real "real",
# and a few internal names differ).
_KUSTO_TYPES = {"int": "int", "long": "long", "real": "real", "double": "real", "decimal": "decimal",
                "string": "string", "bool": "bool", "datetime": "datetime", "timespan": "timespan",
                "dynamic": "dynamic", "guid": "guid"}


class RefereeUnavailable(Exception):
    """node/npm or the kusto-check sources are missing: the reason says which."""


def referee_dir(cache: Path | None = None) -> Path:
    """A writable copy of kusto-check with its npm dependency installed (done once per cache)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RefereeUnavailable("node and npm are not installed (apt-get install nodejs npm)")
    if not (CHECK_SOURCE / "check.js").exists():
        raise RefereeUnavailable(f"{CHECK_SOURCE}/check.js not found (../shared beside the repo)")
    dest = cache or Path(os.environ.get("QUARRY_KUSTO_CHECK_DIR", BUILD / "kusto-check"))
    marker = dest / "node_modules" / "@kusto" / "language-service-next" / "package.json"
    source_files = ("check.js", "package.json")
    if not marker.exists() or any(
        (CHECK_SOURCE / f).read_bytes() != (dest / f).read_bytes() if (dest / f).exists() else True
        for f in source_files
    ):
        dest.mkdir(parents=True, exist_ok=True)
        for f in source_files:
            shutil.copyfile(CHECK_SOURCE / f, dest / f)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=dest, capture_output=True, text=True, timeout=600,
        )
        if done.returncode != 0 or not marker.exists():
            raise RefereeUnavailable(f"npm install in {dest} failed: {done.stderr.strip()[-500:]}")
    return dest


class Referee:
    """One node process judging a batch of queries; start it, do other work, then `results()`.
    Answers are cached by the hash of check.js, the schema and the input."""

    def __init__(self, queries: dict[str, str], cache: Path | None = None) -> None:
        self.dir = referee_dir(cache)
        payload = "".join(json.dumps({"id": k, "query": q}) + "\n" for k, q in queries.items())
        digest = hashlib.sha256()
        for part in ((self.dir / "check.js").read_bytes(), SCHEMA_SOURCE.read_bytes(), payload.encode()):
            digest.update(part)
        self._cached = self.dir / f"answers-{digest.hexdigest()[:16]}.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None
        if self._cached.exists():
            return
        # Files, not pipes: node writes while Quarry works, and nobody reads a pipe meanwhile.
        # They stay open for the process's life, closed in results().
        self._input = tempfile.TemporaryFile()  # noqa: SIM115
        self._input.write(payload.encode())
        self._input.seek(0)
        self._partial = self._cached.with_suffix(".part")
        self._out = self._partial.open("wb")  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            ["node", str(self.dir / "check.js")], stdin=self._input, stdout=self._out,
            stderr=self._err, env={**os.environ, "DEFENDER_SCHEMA": str(SCHEMA_SOURCE)},
        )

    def results(self, timeout_s: float = 600) -> dict[str, dict[str, Any]]:
        if self._proc is not None:
            rc = self._proc.wait(timeout=timeout_s)
            self._out.close()
            self._input.close()
            if rc != 0:
                self._err.seek(0)
                raise RefereeUnavailable(f"kusto-check exited {rc}: {self._err.read().decode()[-800:]}")
            self._err.close()
            os.replace(self._partial, self._cached)
            self._proc = None
        out = {}
        for line in self._cached.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                out[str(r["id"])] = r
        return out


# --- comparison -------------------------------------------------------------------------------


@dataclass
class Verdict:
    corpus: str
    id: str
    # ineligible | referee_blind | accepted_ran | accepted_failed | accepted_missing_data |
    # rejected_rejected | rejected_warned | rejected_ran
    kind: str
    reason: str  # Quarry's failure, or Kusto's first error
    columns_agree: bool | None  # for accepted_ran with Kusto columns known
    columns_detail: str
    query: str


def kusto_columns(answer: dict[str, Any]) -> list[tuple[str, str]] | None:
    cols = answer.get("columns")
    if cols is None:
        return None
    return [(str(n), _KUSTO_TYPES.get(str(t), str(t))) for n, t in cols]


def compare_columns(kusto: list[tuple[str, str]] | None, quarry: list[tuple[str, str]]) -> tuple[bool | None, str]:
    """Do Quarry's result columns equal Kusto's (names, order, types)? None when Kusto's are
    unknown or data-dependent (bag_unpack and pivot columns appear only with data)."""
    if kusto is None or not kusto:
        return None, ""
    # The referee gives every table Sentinel's TimeGenerated as a column of its own; Defender's
    # tables (and Quarry's) have none: Quarry resolves the name to Timestamp. So where Quarry
    # has no TimeGenerated column, Kusto's TimeGenerated and Timestamp are one column, at the
    # place of whichever comes first (`*`: Timestamp; `project-reorder TimeGenerated`: first).
    names = {n for n, _ in quarry}
    if not any(n.startswith("Timestamp") for n, _ in kusto):
        # a table without Timestamp: the referee's TimeGenerated stands for nothing
        kusto = [(n, t) for n, t in kusto if n in names or not re.fullmatch(r"TimeGenerated\d*", n)]
    elif not any(n.startswith("TimeGenerated") for n in names):
        merged: list[tuple[str, str]] = []
        for n, t in kusto:
            base = re.fullmatch(r"(TimeGenerated|Timestamp)(\d*)", n)
            if base:
                n = "Timestamp" + base.group(2)
                if any(m == n for m, _ in merged):
                    continue
            merged.append((n, t))
        kusto = merged
    if quarry == kusto:
        return True, ""
    if len(quarry) != len(kusto):
        missing = [n for n, _ in kusto if n not in dict(quarry)]
        extra = [n for n, _ in quarry if n not in dict(kusto)]
        return False, f"names: kusto has {len(kusto)} columns, quarry {len(quarry)}; missing {missing[:4]}, extra {extra[:4]}"
    for (kn, kt), (qn, qt) in zip(kusto, quarry, strict=True):
        if kn != qn:
            return False, f"name: kusto {kn!r}, quarry {qn!r}"
        if kt != qt:
            return False, f"type of {kn}: kusto {kt}, quarry {qt}"
    return False, "order"


# Defender's own functions, which Kusto.Language does not know: check.js drops the "unknown
# function" error, but the columns they add (FileProfile's SHA1, GlobalPrevalence...) then fail
# to bind downstream, so Kusto's verdict on such a query says nothing. KS245 ("syntax depth
# exceeds maximum safe limit, semantic analysis not performed") is the analyzer's own limit.
_DATA_COLUMNS = re.compile(r"\bevaluate\s+(bag_unpack|pivot)\b")
_DEFENDER_FUNCTIONS = re.compile(r"\b(FileProfile|DeviceFromIP|AssignedIPAddresses)\s*\(")


def _referee_blind(query: str, errors: list[dict[str, Any]]) -> bool:
    return bool(_DEFENDER_FUNCTIONS.search(query)) or any(e.get("code") == "KS245" for e in errors)


def classify(corpus: str, outcome: Any, answer: dict[str, Any] | None) -> Verdict:
    """One query's verdict from Quarry's outcome (benchmarks.corpus.Outcome) and Kusto's answer."""
    base = {"corpus": corpus, "id": outcome.id, "query": outcome.query}
    if outcome.status == "ineligible" or answer is None:
        return Verdict(kind="ineligible", reason=outcome.reason, columns_agree=None, columns_detail="", **base)
    errors = answer.get("errors") or []
    ran = outcome.status == "ok"
    if not errors:
        if not ran:
            # A column that only data reveals (bag_unpack, pivot) and this dataset lacks: Kusto
            # too fails such a query on data without that key. Counted apart, not as a failure.
            missing = outcome.reason.startswith("unknown_column") and _DATA_COLUMNS.search(outcome.query)
            return Verdict(kind="accepted_missing_data" if missing else "accepted_failed",
                           reason=outcome.reason, columns_agree=None, columns_detail="", **base)
        # Kusto.Language does not know the columns Defender's functions add, nor those only
        # data reveals (bag_unpack, pivot: the README of kusto-check says so).
        blind = _DEFENDER_FUNCTIONS.search(outcome.query) or _DATA_COLUMNS.search(outcome.query)
        kusto = None if blind else kusto_columns(answer)
        agree, detail = compare_columns(kusto, [(str(n), str(t)) for n, t in outcome.columns])
        return Verdict(kind="accepted_ran", reason="", columns_agree=agree, columns_detail=detail, **base)
    kusto_reason = f"kusto: {errors[0].get('code')}: {errors[0].get('message')}"[:200]
    if _referee_blind(outcome.query, errors):
        return Verdict(kind="referee_blind", reason=kusto_reason, columns_agree=None,
                       columns_detail="", **base)
    if outcome.status in ("compile_error",):
        kind = "rejected_rejected"
    elif any(w == "kusto_rejects" for w in outcome.warnings):
        kind = "rejected_warned"
    else:
        kind = "rejected_ran"
    return Verdict(kind=kind, reason=kusto_reason, columns_agree=None, columns_detail="", **base)


def summarize(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    vs = list(verdicts)
    kinds = Counter(v.kind for v in vs)
    accepted = kinds["accepted_ran"] + kinds["accepted_failed"]  # missing-data ones apart
    rejected = kinds["rejected_rejected"] + kinds["rejected_warned"] + kinds["rejected_ran"]
    judged = [v for v in vs if v.columns_agree is not None]
    agree = sum(1 for v in judged if v.columns_agree)
    return {
        "queries": len(vs),
        "ineligible": kinds["ineligible"],
        "referee_blind": kinds["referee_blind"],
        "missing_data": kinds["accepted_missing_data"],
        "kusto_accepts": accepted,
        "accepted_run": kinds["accepted_ran"],
        "accepted_run_share": kinds["accepted_ran"] / accepted if accepted else None,
        "kusto_rejects": rejected,
        "rejected_handled": kinds["rejected_rejected"] + kinds["rejected_warned"],
        "rejected_handled_share": (kinds["rejected_rejected"] + kinds["rejected_warned"]) / rejected
        if rejected else None,
        "columns_judged": len(judged),
        "columns_agree": agree,
        "columns_agree_share": agree / len(judged) if judged else None,
        "kinds": dict(kinds),
    }


def format_summary(name: str, s: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    return (
        f"{name}: {s['queries']} queries, {s['ineligible']} not eligible, "
        f"{s['referee_blind']} the referee cannot judge, {s['missing_data']} need data the "
        f"dataset lacks; "
        f"Kusto accepts {s['kusto_accepts']}, Quarry runs {s['accepted_run']} "
        f"({pct(s['accepted_run_share'])}); Kusto rejects {s['kusto_rejects']}, Quarry rejects "
        f"or warns on {s['rejected_handled']} ({pct(s['rejected_handled_share'])}); result "
        f"columns agree on {s['columns_agree']}/{s['columns_judged']} "
        f"({pct(s['columns_agree_share'])})"
    )
