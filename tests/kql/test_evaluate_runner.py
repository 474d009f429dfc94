"""The query runner learns `evaluate pivot` / `bag_unpack` columns with its probe on the query's
own connection: real Storage over Parquet, the time-range views applying to the probe too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from schema import default_catalog
from server.demo.arrow import rows_to_table
from server.query.runner import QueryLimits, QueryRunner
from server.query.timerange import TimeRange
from server.settings import Settings
from server.storage import Storage

CATALOG = default_catalog()
NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    s = Storage(Settings(data_dir=tmp_path_factory.mktemp("evaluate"), scheduler_enabled=False), CATALOG)
    s.start()
    table = CATALOG.tables["DeviceEvents"]
    rows = [
        {"Timestamp": NOW - dt.timedelta(days=3), "DeviceId": "d1", "ActionType": "Old", "ReportId": 1,
         "AdditionalFields": '{"OldKey": 1}'},
        {"Timestamp": NOW - dt.timedelta(hours=1), "DeviceId": "d1", "ActionType": "New", "ReportId": 2,
         "AdditionalFields": '{"Rule": "r1"}'},
        {"Timestamp": NOW - dt.timedelta(hours=2), "DeviceId": "d2", "ActionType": "New", "ReportId": 3,
         "AdditionalFields": '{"Rule": "r2"}'},
    ]
    s.append("DeviceEvents", rows_to_table(table, rows))
    s.flush()
    try:
        yield s
    finally:
        s.close()


def test_pivot_columns_follow_the_time_range(storage: Storage) -> None:
    runner = QueryRunner(storage, CATALOG, QueryLimits())
    try:
        q = "DeviceEvents | project DeviceId, ActionType | evaluate pivot(ActionType)"
        everything = runner.run(q)
        assert [c for c, _ in everything.columns] == ["DeviceId", "New", "Old"]
        assert sorted(everything.rows) == [("d1", 1, 1), ("d2", 1, 0)]
        recent = runner.run(q, time_range=TimeRange(NOW - dt.timedelta(days=1), None))
        assert [c for c, _ in recent.columns] == ["DeviceId", "New"]  # the probe saw the view
        assert sorted(recent.rows) == [("d1", 1), ("d2", 1)]
    finally:
        runner.close()


def test_bag_unpack_through_the_runner_and_export(storage: Storage) -> None:
    runner = QueryRunner(storage, CATALOG, QueryLimits())
    try:
        q = ("DeviceEvents | where ActionType == 'New' | project ReportId, AF = parse_json(AdditionalFields)"
             " | evaluate bag_unpack(AF) | project ReportId, Rule")
        res = runner.run(q)
        assert res.columns == [("ReportId", "long"), ("Rule", "string")]
        assert sorted(res.rows) == [(2, "r1"), (3, "r2")]
        columns, batches = runner.export_batches(q)
        assert next(batches) is None  # primed: the columns are known from here on
        assert columns == [("ReportId", "long"), ("Rule", "string")]
        assert sum(b.num_rows for b in batches if b is not None) == 2
    finally:
        runner.close()
