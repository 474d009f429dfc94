"""`quarry rules import-sigma`: Sigma rule files (tests/data/sigma, written for these tests)
converted with pySigma's Kusto backend and Microsoft XDR pipeline into disabled detection rules,
with severity, MITRE techniques, category and metadata from the rule, and a line per rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.cli import main
from server.detections.store import SqliteDetectionStore
from server.metadata import MetadataDB
from tests.kql.fixtures import run_kql

RULES = Path(__file__).resolve().parent / "data" / "sigma"


def test_import_sigma_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "import-sigma", str(RULES), "--data-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 imported, 2 skipped"
    lines = {line.split("\t")[0].rsplit("/", 1)[-1]: line for line in out[:-1]}
    assert "imported as rule" in lines["proc_creation_whoami.yml"]
    assert "skipped: not a Sigma rule file" in lines["broken.yml"]
    assert "skipped: conversion failed: Unable to determine table name" in lines["unsupported_logsource.yml"]

    db = MetadataDB(tmp_path / "metadata.sqlite")
    try:
        store = SqliteDetectionStore(db)
        whoami = store.rule_by_name("Whoami Execution From A Command Shell")
        assert whoami is not None
        assert whoami["enabled"] == 0
        assert whoami["severity"] == "high"  # Sigma's critical: Quarry's highest
        assert whoami["mitre_techniques"] == ["T1033"] and whoami["category"] == "Discovery"
        meta = whoami["metadata"]
        assert meta["sigmaId"] == "3a7b0f4e-9c1d-4c8e-9f2a-1d0b6f7e8a01"
        assert meta["license"] == "DRL-1.1" and meta["author"] == "Quarry tests"
        assert meta["file"].endswith("proc_creation_whoami.yml")
        assert whoami["query"].startswith("DeviceProcessEvents")
        rdp = store.rule_by_name("Outbound RDP Connection")
        assert rdp is not None
        assert (rdp["severity"], rdp["mitre_techniques"], rdp["category"]) == ("low", ["T1021.001"], "LateralMovement")
        assert rdp["metadata"]["license"] is None  # the rule names none
        # the converted queries run as Quarry queries
        for rule in (whoami, rdp):
            run_kql(rule["query"])
    finally:
        db.close()

    # importing again skips what exists, rule by rule
    assert main(["rules", "import-sigma", str(RULES / "net_connection_rdp.yml"), "--data-dir", str(tmp_path),
                 "--no-progress"]) == 1
    assert "skipped: a rule named 'Outbound RDP Connection' already exists" in capsys.readouterr().out


def test_missing_path_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "import-sigma", str(tmp_path / "nope.yml"), "--data-dir", str(tmp_path)]) == 2
    assert "no such file or directory" in capsys.readouterr().err


