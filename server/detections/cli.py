"""``quarry rules ...``: detection rule commands that work on a data directory without a server.

``import-sigma`` converts Sigma rules (pySigma, the optional ``quarry[sigma]`` extra) into
detection rules; see server/detections/sigma.py. Exit status: 0 whatever was skipped (the report
says why), 2 for a usage error (no such path, pySigma missing, bad option).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.detections.model import FREQUENCIES


def add_rules_parser(sub: Any) -> None:
    r = sub.add_parser("rules", help="manage detection rules offline")
    rsub = r.add_subparsers(dest="rules_command", required=True)
    s = rsub.add_parser(
        "import-sigma",
        help="convert Sigma rules (files or folders) into detection rules",
        description="Convert Sigma rules with pySigma's Kusto backend (Microsoft XDR pipeline) into "
        "Quarry detection rules, disabled unless --enable. Exit status: 0 (skipped rules are "
        "reported, not errors), 2 usage error.",
    )
    s.add_argument("paths", nargs="+", metavar="PATH",
                   help="Sigma rule files, or folders searched recursively for *.yml/*.yaml")
    s.add_argument("--data-dir", help="the data directory whose metadata.sqlite gets the rules")
    s.add_argument("--enable", action="store_true", help="enable the imported rules (default: disabled)")
    s.add_argument("--frequency", choices=[f for f in FREQUENCIES if f != "continuous"], default=None,
                   help="how often the rules run (default 1h for new rules; re-imports keep theirs)")
    s.add_argument("--license", default="DRL-1.1",
                   help="licence recorded for rules that name none (default DRL-1.1, SigmaHQ's)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    s.set_defaults(func=import_sigma_command)


def import_sigma_command(args: argparse.Namespace) -> int:
    try:
        from tqdm import tqdm

        from server.detections import sigma
    except ImportError as e:
        print(f"quarry rules import-sigma: pySigma is not installed ({e}); "
              "install the extra: pip install 'quarry[sigma]'", file=sys.stderr)
        return 2
    from schema import default_catalog
    from server.detections.store import SqliteDetectionStore
    from server.metadata import MetadataDB
    from server.settings import Settings

    try:
        files = sigma.rule_files(Path(p) for p in args.paths)
    except FileNotFoundError as e:
        print(f"quarry rules import-sigma: {e}", file=sys.stderr)
        return 2
    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    db = MetadataDB(settings.data_dir / "metadata.sqlite")
    try:
        importer = sigma.SigmaImporter(
            SqliteDetectionStore(db), default_catalog(), datetime.now(UTC), enable=args.enable,
            frequency=args.frequency, license_=args.license, limits=settings.kql_limits(),
        )
        with tqdm(total=len(files), desc="Sigma rules", unit="file", file=sys.stderr,
                  disable=args.no_progress) as bar:
            outcomes = importer.run(files, lambda done, total: bar.update(1))
    finally:
        db.close()
    counts = sigma.summary(outcomes)
    if args.json:
        print(json.dumps({"files": len(files), **counts, "rules": [o.to_json() for o in outcomes]}, indent=2))
        return 0
    for o in outcomes:
        what = f"{o.title or '?'} ({o.sigma_id or 'no id'})"
        if o.status == "skipped":
            print(f"skipped   {o.path}: {what}: {o.reason}")
        else:
            print(f"{o.status:<9} {o.path}: {what} -> rule {o.rule_id} {o.name!r}")
    print(f"{len(files)} files: {counts['imported']} imported, {counts['updated']} updated, "
          f"{counts['skipped']} skipped")
    return 0
