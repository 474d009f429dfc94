"""Kusto.Language as a referee: every corpus query through Microsoft's KQL parser and binder and
through Quarry, compared.

Microsoft publishes the code behind Azure Data Explorer's editor on npm
(`@kusto/language-service-next`); `../shared/tools/kusto-check/check.js` asks it, per query,
whether Kusto accepts it against the Defender schema and which result columns (names and types)
Kusto infers. This module runs all queries through one node process (starting node costs about
a second; one process for all keeps the whole corpus at ~25 s, in parallel with Quarry's run),
then classifies each eligible query:

- Kusto accepts it: Quarry must compile and run it (`accepted_ran` / `accepted_failed`), and
  the result columns must be Kusto's, in order, with Kusto's types (`columns_agree`);
- Kusto rejects it: Quarry must reject it or run it with a `kusto_rejects` warning
  (`rejected_rejected` / `rejected_warned` / `rejected_ran`).

Queries that are not eligible (externaldata, tables outside the catalog: see
benchmarks/corpus.py) are counted apart, as the corpus README asks.

    .venv/bin/python -m benchmarks.differential            # both corpora, prints counts
    .venv/bin/python -m benchmarks.differential --show accepted_failed

tests/kql/test_kusto_differential.py runs the same comparison as a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/differential.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import BUILD
from benchmarks.corpus import CORPUS_DIR, build_dataset, read_corpus, run_one
from benchmarks.kusto_referee import (
    CORPORA,
    Referee,
    RefereeUnavailable,
    Verdict,
    classify,
    format_summary,
    summarize,
)
from kql import geoip
from kql.testing import write_geoip_db
from schema import default_catalog

__all__ = ["RefereeUnavailable", "Verdict", "format_summary", "run", "summarize"]


def run(corpora: Iterable[str] = CORPORA, days: int = 2, devices: int = 6, seed: int = 7,
        timeout_s: float = 30.0, max_rows: int = 1000, limit: int | None = None) -> list[Verdict]:
    """Every query of the corpora through Kusto.Language (one node process, started first) and
    through Quarry on the synthetic dataset."""
    catalog = default_catalog()
    known = set(json.loads((CORPUS_DIR / "kql_tables.json").read_text())["tables"]) | set(catalog.tables)
    records = {c: list(read_corpus(CORPUS_DIR / f"{c}.dev.jsonl"))[:limit] for c in corpora}
    referee = Referee({f"{c}:{r['id']}": r["query"] for c, rs in records.items() for r in rs})
    con = build_dataset(catalog, days, devices, seed)
    # geo_info_from_ip_address() runs on an operator-supplied MaxMind database: a tiny one here
    with tempfile.TemporaryDirectory() as tmp:
        write_geoip_db(Path(tmp) / "city.mmdb")
        geoip.configure(Path(tmp) / "city.mmdb")
        try:
            outcomes = [(c, run_one(c, r, catalog, known, con, timeout_s, max_rows))
                        for c, rs in records.items() for r in rs]
        finally:
            geoip.configure(None)
    answers = referee.results()
    return [classify(c, o, None if o.status == "ineligible" else answers.get(f"{c}:{o.id}"))
            for c, o in outcomes]


def cause(v: Verdict) -> str:
    """A disagreement's cause in KQL terms, from Quarry's diagnostic or Kusto's error."""
    r = v.reason
    if v.kind == "rejected_ran":
        return f"Quarry is more lenient than Kusto here and does not warn yet ({r})"
    if v.columns_agree is False:
        return f"result columns differ: {v.columns_detail}"
    if "geo_info_from_ip_address" in r:
        return "geo_info_from_ip_address() needs an operator-supplied MaxMind database (QUARRY_GEOIP_DB)"
    if "cannot compare" in r or "the list has strings" in r:
        return f"implicit conversion of a literal to the column's type not done yet ({r})"
    if r.startswith("unknown_column") and "bag_unpack" in v.query:
        return f"missing data: a column evaluate bag_unpack() finds only in real data ({r})"
    if r.startswith("unsupported"):
        return f"not supported ({r})"
    return r


def expected_list(verdicts: Iterable[Verdict]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {"accepted_failed": {}, "rejected_ran": {}, "columns": {}}
    for v in verdicts:
        key = f"{v.corpus}:{v.id}"
        if v.kind in ("accepted_failed", "rejected_ran"):
            out[v.kind][key] = cause(v)
        elif v.columns_agree is False:
            out["columns"][key] = cause(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", action="append", choices=CORPORA)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--show", action="append", default=[],
                    help="print the queries of this verdict kind (or 'columns' for disagreements)")
    ap.add_argument("--json", type=Path, default=BUILD / "kql_differential.json")
    ap.add_argument("--write-expected", type=Path, default=None,
                    help="write today's disagreements, each with its cause, as the test's "
                         "expected-failure list (tests/kql/kusto_differential_expected.json)")
    args = ap.parse_args(argv)
    try:
        verdicts = run(args.corpus or CORPORA, limit=args.limit)
    except RefereeUnavailable as e:
        print(f"kusto-check unavailable: {e}", file=sys.stderr)
        return 2
    for corpus in args.corpus or CORPORA:
        print(format_summary(corpus, summarize(v for v in verdicts if v.corpus == corpus)))
    print(format_summary("all", summarize(verdicts)))
    for v in verdicts:
        if v.kind in args.show or ("columns" in args.show and v.columns_agree is False):
            print(f"--- {v.corpus}:{v.id} {v.kind} {v.reason} {v.columns_detail}\n{v.query[:600]}")
    reasons = Counter(v.reason for v in verdicts if v.kind == "accepted_failed")
    print("accepted by Kusto, failing in Quarry, by reason:")
    for reason, n in reasons.most_common(40):
        print(f"  {n:4d}  {reason}")
    cols = Counter(v.columns_detail.split(":")[0] for v in verdicts if v.columns_agree is False)
    print("column disagreements by kind:", dict(cols))
    if args.write_expected:
        args.write_expected.write_text(json.dumps(expected_list(verdicts), indent=1, sort_keys=True) + "\n")
        print(f"expected-failure list: {args.write_expected}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([v.__dict__ for v in verdicts if v.kind != "ineligible"], indent=1))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
