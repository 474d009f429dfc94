"""`invoke FileProfile()` (Defender docs, "FileProfile() function"): Quarry computes the profile
from its own tables instead of Microsoft's reputation service, and says so with a warning.

Rows below: file aa (sha1) ran as a process on d1 and d2, was written on d3 and has a trusted
certificate; file bb was loaded as an image on d1 only and its certificate is not trusted; file cc
appears nowhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kql import CompileOptions, compile_kql
from kql.testing import fixture_connection
from schema import default_catalog

CATALOG = default_catalog()
NOW = dt.datetime(2024, 5, 15, 12, 0, 0)
T0 = dt.datetime(2024, 5, 10, 8, 0, 0)

ROWS: dict[str, list[dict[str, Any]]] = {
    "DeviceProcessEvents": [
        {"Timestamp": T0, "DeviceId": "d1", "SHA1": "aa", "SHA256": "aa256", "MD5": "aamd5",
         "FileName": "tool.exe", "ProcessVersionInfoCompanyName": "Contoso",
         "ProcessVersionInfoProductName": "Tool", "InitiatingProcessSHA1": "ee", "ReportId": 1},
        {"Timestamp": T0 + dt.timedelta(days=2), "DeviceId": "d2", "SHA1": "aa", "SHA256": "aa256",
         "FileName": "tool.exe", "InitiatingProcessSHA1": "ee", "ReportId": 2},
    ],
    "DeviceFileEvents": [
        {"Timestamp": T0 + dt.timedelta(days=3), "DeviceId": "d3", "SHA1": "aa", "SHA256": "aa256",
         "FileSize": 4096, "FileName": "tool.exe", "ActionType": "FileCreated", "ReportId": 3},
        {"Timestamp": T0, "DeviceId": "d1", "SHA1": "cc", "FileName": "other.txt",
         "ActionType": "FileCreated", "ReportId": 4},
    ],
    "DeviceImageLoadEvents": [
        {"Timestamp": T0 + dt.timedelta(hours=1), "DeviceId": "d1", "SHA1": "bb", "SHA256": "bb256",
         "FileName": "lib.dll", "ReportId": 5},
    ],
    "DeviceFileCertificateInfo": [
        {"Timestamp": T0, "DeviceId": "d1", "SHA1": "aa", "IsSigned": True, "Signer": "Contoso Ltd",
         "Issuer": "Contoso CA", "SignerHash": "s1", "IsTrusted": True, "IsRootSignerMicrosoft": False,
         "ReportId": 6},
        {"Timestamp": T0, "DeviceId": "d1", "SHA1": "bb", "IsSigned": True, "Signer": "Someone",
         "Issuer": "Nobody CA", "SignerHash": "s2", "IsTrusted": False, "IsRootSignerMicrosoft": False,
         "ReportId": 7},
    ],
}


@pytest.fixture(scope="module")
def con() -> Any:
    c = fixture_connection(ROWS, CATALOG)
    yield c
    c.close()


def run(con: Any, kql: str) -> tuple[Any, list[dict[str, Any]]]:
    compiled = compile_kql(kql, CATALOG, CompileOptions(now=NOW))
    assert compiled.ok, [(d.code, d.message) for d in compiled.diagnostics]
    assert compiled.sql is not None
    cur = con.cursor().execute(compiled.sql)
    names = [d[0] for d in cur.description]
    assert names == [c for c, _ in compiled.columns]
    return compiled, [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_profile_columns_from_local_sightings_and_certificates(con: Any) -> None:
    compiled, rows = run(con, 'datatable(SHA1:string, Note:string) ["aa", "x", "bb", "y", "cc", "z", "zz", "w", "", "e"]\n'
                              "| invoke FileProfile()")
    warnings = [d for d in compiled.diagnostics if d.code == "enrichment"]
    assert len(warnings) == 1 and warnings[0].severity == "warning"
    assert "organisation-wide" in warnings[0].message
    assert dict(compiled.columns)["GlobalPrevalence"] == "long"
    assert [c for c, _ in compiled.columns][:2] == ["SHA1", "Note"]  # input columns first, kept
    by = {r["SHA1"]: r for r in rows}
    aa = by["aa"]
    assert aa["Note"] == "x"
    assert (aa["SHA256"], aa["MD5"], aa["FileSize"]) == ("aa256", "aamd5", 4096)
    assert aa["GlobalPrevalence"] == 3  # d1, d2 (ran) and d3 (written)
    assert (aa["GlobalFirstSeen"], aa["GlobalLastSeen"]) == (T0, T0 + dt.timedelta(days=3))
    assert (aa["Signer"], aa["Issuer"], aa["SignerHash"]) == ("Contoso Ltd", "Contoso CA", "s1")
    assert (aa["IsCertificateValid"], aa["SignatureState"], aa["IsRootSignerMicrosoft"]) == (True, "SignedValid", False)
    assert (aa["IsExecutable"], aa["Publisher"], aa["SoftwareName"]) == (True, "Contoso", "Tool")
    assert (aa["ThreatName"], aa["ProfileAvailability"]) == ("", "Available")
    bb = by["bb"]
    assert (bb["GlobalPrevalence"], bb["IsExecutable"], bb["SignatureState"]) == (1, True, "SignedInvalid")
    cc = by["cc"]  # only written, never run: not known to be a PE; no certificate
    assert (cc["GlobalPrevalence"], cc["IsExecutable"], cc["SignatureState"]) == (1, None, "Unknown")
    zz = by["zz"]
    assert (zz["ProfileAvailability"], zz["GlobalPrevalence"], zz["Signer"]) == ("Missing", None, "")
    assert by[""]["ProfileAvailability"] == ""
    assert len(rows) == 5


def test_profile_by_sha256_and_initiating_process_columns(con: Any) -> None:
    _, rows = run(con, 'DeviceProcessEvents | where ReportId == 1 | project InitiatingProcessSHA1 '
                       '| invoke FileProfile(InitiatingProcessSHA1, 1000)')
    # ee is the initiating process image of the process events on d1 and d2
    assert [(r["InitiatingProcessSHA1"], r["GlobalPrevalence"], r["IsExecutable"], r["SHA1"]) for r in rows] == [
        ("ee", 2, True, "ee")]
    _, rows = run(con, 'DeviceFileEvents | where ReportId == 3 | project SHA256, FileName | invoke FileProfile("SHA256")')
    assert [(r["SHA256"], r["SHA1"], r["GlobalPrevalence"], r["SignatureState"]) for r in rows] == [
        ("aa256", "aa", 3, "SignedValid")]


def test_the_documented_low_prevalence_example_runs(con: Any) -> None:
    # the second example of the FileProfile() page
    _, rows = run(con, 'DeviceFileEvents | where ActionType == "FileCreated" and Timestamp > ago(7d)\n'
                       "| project CreatedOn = Timestamp, FileName, FolderPath, SHA1\n"
                       '| invoke FileProfile("SHA1", 500)\n'
                       "| where GlobalPrevalence < 15 | project FileName, GlobalPrevalence")
    assert sorted((r["FileName"], r["GlobalPrevalence"]) for r in rows) == [("other.txt", 1), ("tool.exe", 3)]


def test_a_let_bound_profile_used_twice_compiles_each_use(con: Any) -> None:
    _, rows = run(con, 'let p = DeviceImageLoadEvents | project SHA1 | invoke FileProfile();\n'
                       "p | union p | summarize n = count() by SignatureState")
    assert [(r["SignatureState"], r["n"]) for r in rows] == [("SignedInvalid", 2)]


@pytest.mark.parametrize(("kql", "code"), [
    ("DeviceFileEvents | invoke FileProfile(NoSuchColumn)", "unknown_column"),
    ("DeviceFileEvents | invoke FileProfile(FileSize)", "type_mismatch"),
    ("DeviceFileEvents | invoke FileProfile(SHA1, -1)", "wrong_arguments"),
    ("DeviceFileEvents | invoke FileProfile(SHA1, 10, 3)", "wrong_arguments"),
])
def test_bad_arguments(kql: str, code: str) -> None:
    compiled = compile_kql(kql, CATALOG, CompileOptions(now=NOW))
    assert not compiled.ok
    assert compiled.errors[0].code == code
    assert compiled.errors[0].line == 1 and compiled.errors[0].column >= 20
