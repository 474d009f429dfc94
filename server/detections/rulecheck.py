"""Compile-on-save: a rule's query must compile against the schema and return the columns that
identify an event (Timestamp, DeviceId, ReportId: limits.md section 5), so a broken rule is
refused when it is saved, not discovered by the scheduler later."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schema.catalog import Catalog

REQUIRED_COLUMNS: tuple[str, ...] = ("Timestamp", "DeviceId", "ReportId")
# `{{Column}}` in an alert title or description is replaced by the matched row's value.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Defender's NRT rules take one table and no joins, unions or externaldata.
_NRT_FORBIDDEN = re.compile(r"\|\s*(join|union|lookup)\b|\bexternaldata\b|^\s*union\b", re.I | re.M)


@dataclass
class RuleCheck:
    ok: bool
    errors: list[dict[str, Any]] = field(default_factory=list)
    sql: str | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)
    # the columns depend on the data (evaluate bag_unpack/pivot): `sql` comes from a check with a
    # probe on the run's connection; `columns` are the ones known without data
    needs_probe: bool = False


def diagnostic_dict(d: Any) -> dict[str, Any]:
    """A compiler Diagnostic in the API's error-entry shape."""
    out: dict[str, Any] = {"code": getattr(d, "code", "error"), "message": getattr(d, "message", str(d))}
    for key in ("severity", "line", "column", "end_line", "end_column", "hints"):
        val = getattr(d, key, None)
        if val is not None:
            out[key] = val
    return out


def compile_rule(query: str, catalog: Catalog, now: datetime, probe: Any = None, limits: Any = None) -> Any:
    """Compile ``query`` with ``now()``/``ago()`` fixed at ``now`` (``probe``: see CompileOptions;
    ``limits``: the server's kql.limits.KqlLimits, the defaults when None)."""
    from kql import CompileOptions, compile_kql  # the compiler package, built separately

    # rules run over storage, which stores a missing string as "" (no COALESCE needed)
    options = CompileOptions(now=now, strings_never_null=True, probe=probe)
    if limits is not None:
        options = CompileOptions(now=now, strings_never_null=True, probe=probe, limits=limits)
    return compile_kql(query, catalog, options)


def check_rule(
    query: str,
    frequency: str,
    catalog: Catalog,
    now: datetime,
    title: str = "",
    description: str = "",
    probe: Any = None,
    limits: Any = None,
) -> RuleCheck:
    try:
        compiled = compile_rule(query, catalog, now, probe, limits)
    except Exception as e:  # a compiler bug must be a clear refusal, never a 500
        return RuleCheck(
            False,
            [{"code": "compile_error", "message": f"the compiler failed on this query ({type(e).__name__}: {e})"}],
        )
    errors = [diagnostic_dict(d) for d in compiled.diagnostics if getattr(d, "severity", "error") == "error"]
    needs_probe = bool(getattr(compiled, "needs_probe", False))
    if not compiled.ok or (compiled.sql is None and not needs_probe):
        return RuleCheck(False, errors or [{"code": "compile", "message": "the query did not compile"}])
    names = [c[0] for c in compiled.columns]
    types = dict(compiled.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in types]
    if missing:
        errors.append(
            {
                "code": "missing_required_columns",
                "message": (
                    f"a detection query must return {', '.join(REQUIRED_COLUMNS)} (they identify the "
                    f"event an alert points at); missing: {', '.join(missing)}. "
                    f"The query returns: {', '.join(names) or 'no columns'}"
                ),
                "missing": missing,
            }
        )
    elif types["Timestamp"] != "datetime":
        errors.append(
            {
                "code": "type_mismatch",
                "message": f"column Timestamp must be a datetime, the query returns {types['Timestamp']}",
            }
        )
    if frequency == "continuous":
        tables = sorted(compiled.tables)
        if len(tables) != 1 or _NRT_FORBIDDEN.search(query):
            errors.append(
                {
                    "code": "continuous_unsupported",
                    "message": (
                        "a continuous (near-real-time) rule must read exactly one table, without "
                        f"join, union, lookup or externaldata; this query reads: {', '.join(tables)}"
                    ),
                }
            )
        else:
            table = catalog.table(tables[0])
            if table is None or not table.nrt_supported:
                errors.append(
                    {
                        "code": "continuous_unsupported",
                        "message": f"table {tables[0]} is not supported by continuous rules; use a scheduled frequency",
                    }
                )
    for where, text in (("alertTitle", title), ("alertDescription", description)):
        for m in PLACEHOLDER.finditer(text or ""):
            if m.group(1) not in types:
                errors.append(
                    {
                        "code": "unknown_column",
                        "message": (
                            f"{where} names column {m.group(1)!r}, which the query does not return; "
                            f"available: {', '.join(names)}"
                        ),
                        "field": where,
                    }
                )
    return RuleCheck(not errors, errors, compiled.sql, list(compiled.columns), set(compiled.tables),
                     needs_probe)


def render_template(text: str, row: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        val = row.get(m.group(1))
        return "" if val is None else str(val)

    return PLACEHOLDER.sub(sub, text)
