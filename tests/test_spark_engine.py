"""QUARRY_ENGINE=spark end to end: the real server over HTTP, real pyspark (local), real storage.

Runs with `pytest --engine spark` (the Makefile's Spark step; one Spark session for the whole
run, shared with the KQL suite); skipped without pyspark or Java.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from kql import CompileOptions, compile_kql
from schema import default_catalog
from tests.test_api_support import (
    SEED_EXPECTED_IDS,
    SEED_QUERY,
    ingest,
    process_events,
    seeded_server,
    utcnow,
)


@pytest.fixture(autouse=True)
def _spark_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--engine") != "spark":
        pytest.skip("Spark engine tests run with --engine spark (make test runs them)")
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'quarry[spark]')")
    if shutil.which("java") is None:
        pytest.skip("no Java runtime (Spark needs Java 17+; .ci/run installs default-jre-headless)")


def _ids(body: dict[str, Any]) -> list[Any]:
    names = [c["name"] for c in body["columns"]]
    return [dict(zip(names, r, strict=True))["ReportId"] for r in body["rows"]]


def test_seed_query_over_http_on_spark_reads_tail_then_parquet(tmp_path: Path) -> None:
    from server.query.spark import spark_session

    spark_session("local[2]")  # the JVM starts here (the server's runner then gets this session)
    # a generous client timeout: Spark's first queries compile code on a loaded 2-core machine
    with seeded_server(tmp_path, engine="spark", spark_master="local[2]") as srv, srv.client(timeout=300) as c:
        # the rows are all in the hot tail (not flushed): shipped to Spark as Arrow
        r = c.post("/api/query", json={"query": SEED_QUERY})
        assert r.status_code == 200, r.text
        body = r.json()
        assert _ids(body) == SEED_EXPECTED_IDS
        assert [(col["name"], col["type"]) for col in body["columns"]] == [
            (col.name, col.type.name) for col in default_catalog().tables["DeviceProcessEvents"].columns]
        # Kusto's datetime form, as DuckDB's answer has it
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", body["rows"][0][0])
        srv.app.state.storage.flush()
        # now from Parquet, plus newer rows in the tail: both, once each
        ingest(srv, "DeviceProcessEvents", [dict(process_events(utcnow())[0], ReportId=101)])
        r = c.post("/api/query", json={"query": SEED_QUERY + " | project ReportId"})
        assert r.status_code == 200, r.text
        assert sorted(_ids(r.json())) == sorted([*SEED_EXPECTED_IDS, 101])
        r = c.post("/api/query", json={"query": "DeviceProcessEvents | summarize n = count()"})
        assert r.json()["rows"] == [[7]]
        assert r.json()["stats"]["partitionsScanned"] >= 1
        # what Spark cannot run is a diagnostic before anything runs, not an engine error
        r = c.post("/api/query", json={"query": "DeviceProcessEvents | mv-expand x = dynamic([1, 2])"})
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["code"] == "unsupported_target"


def test_time_filter_prunes_date_partitions_in_the_physical_plan(tmp_path: Path) -> None:
    from server.query.spark import register_table, spark_session
    from server.settings import Settings
    from server.storage import Storage

    catalog = default_catalog()
    storage = Storage(Settings(data_dir=tmp_path, scheduler_enabled=False), catalog)
    storage.start()
    try:
        from server.ingest.convert import convert_records

        now = utcnow()
        days = [now - dt.timedelta(days=d) for d in (3, 2, 1, 0)]
        rows = [dict(process_events(t)[0], ReportId=i) for i, t in enumerate(days)]
        table = catalog.tables["DeviceProcessEvents"]
        storage.append("DeviceProcessEvents", convert_records(table, rows, allow_unknown=False).table)
        storage.flush()
        files, tail = storage.snapshot("DeviceProcessEvents")
        assert len(files) == 4 and tail.num_rows == 0  # one date partition per day
        spark = spark_session("local[2]")
        register_table(spark, table, files, tail, tmp_path / "DeviceProcessEvents")
        since = (now - dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        compiled = compile_kql(f"DeviceProcessEvents | where Timestamp >= datetime({since.isoformat()}) "
                               "| project ReportId", catalog, CompileOptions(dialect="spark"))
        assert compiled.sql is not None, compiled.diagnostics
        df = spark.sql(compiled.sql)
        plan = df._jdf.queryExecution().executedPlan().toString()
        assert re.search(r"PartitionFilters: \[[^\]]*date", plan), plan
        assert sorted(r[0] for r in df.collect()) == [2, 3]
    finally:
        storage.close()
