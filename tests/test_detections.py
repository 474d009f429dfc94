"""Detection runs over real storage (WAL, DuckDB tail, Parquet) and the real metadata database:
late events, de-duplication, the alert cap, a failing rule's health alert, incidents, device
group scope, rule actions, continuous rules and backtests. Time is driven by hand: storage stamps
ingestion times and the engine picks run times from the same clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from schema.catalog import default_catalog
from server.detections.rulecheck import check_rule
from tests.test_detections_support import T0, detection_env, proc

VOLUME_RULE = 'DeviceProcessEvents | where ProcessCommandLine contains "/Volume"'


def test_late_event_is_caught_by_the_next_run_and_old_rows_are_not_rescanned(tmp_path: Path) -> None:
    with detection_env(tmp_path) as env:
        # Ingested before the first run; event time 10 h ago (inside the first run's 30 days).
        env.clock.advance(minutes=-2)
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(hours=10), 1, cmd="cp a /Volumes/X/a")])
        env.clock.advance(minutes=1)
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(hours=1), 2, cmd="cp b /Volumes/X/b")])
        env.clock.advance(minutes=1)
        rid = env.rule(VOLUME_RULE, "1h")
        first = env.engine.run_rule(rid, "scheduled")
        assert first["status"] == "completed", first
        assert first["alertsCreated"] == 2
        assert first["windowStart"].startswith((T0 - timedelta(days=30)).date().isoformat())

        env.storage.flush()  # the next run reads Parquet as well as the tail
        # An hour later a late event arrives: event time 10 h ago, outside the 4 h lookback.
        env.clock.advance(minutes=30)
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(hours=9), 3, cmd="cp c /Volumes/X/c")])
        env.clock.advance(minutes=30)
        second = env.engine.run_rule(rid, "scheduled")
        assert second["status"] == "completed", second
        # Seen: report 2 (inside 4 h, a duplicate) and report 3 (late, ingested since run 1).
        # Not seen: report 1, outside the lookback and ingested before the last watermark.
        assert second["rowsMatched"] == 2
        assert second["duplicates"] == 1
        assert second["alertsCreated"] == 1
        assert [a["report_id"] for a in env.alerts(rid)] == ["1", "3", "2"]
        rule = env.engine.store.get_rule(rid)
        assert rule is not None
        assert rule["covered_through"].startswith((T0 + timedelta(hours=1)).isoformat())
        assert rule["ingest_watermark"].startswith((T0 + timedelta(minutes=30)).isoformat())


def test_a_match_alerts_once_per_rule(tmp_path: Path) -> None:
    with detection_env(tmp_path) as env:
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(minutes=30), 7, cmd="cp x /Volumes/U/x")])
        rid = env.rule(VOLUME_RULE, "1h")
        other = env.rule(VOLUME_RULE, "3h", name="second rule")
        for _ in range(3):
            env.clock.advance(minutes=20)
            env.engine.run_rule(rid, "manual")
        assert len(env.alerts(rid)) == 1
        runs = env.engine.store.list_runs(rid)
        assert [r["alerts_created"] for r in reversed(runs)] == [1, 0, 0]
        assert [r["duplicates"] for r in reversed(runs)] == [0, 1, 1]
        # De-duplication is per rule: another rule on the same event alerts on its own.
        env.engine.run_rule(other, "manual")
        assert len(env.alerts(other)) == 1
        # Same DeviceId and ReportId at another Timestamp is another event.
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(minutes=29), 7, cmd="cp x /Volumes/U/x")])
        env.engine.run_rule(rid, "manual")
        assert len(env.alerts(rid)) == 2


def test_alerts_per_run_are_capped_and_the_run_says_so(tmp_path: Path) -> None:
    with detection_env(tmp_path, alerts_per_run_cap=5) as env:
        env.ingest(
            "DeviceProcessEvents",
            [proc(T0 - timedelta(minutes=60 - i), 100 + i, cmd=f"cp {i} /Volumes/U/") for i in range(12)],
        )
        rid = env.rule(VOLUME_RULE, "1h")
        run = env.engine.run_rule(rid, "manual")
        assert run["rowsMatched"] == 12
        assert run["alertsCreated"] == 5
        assert run["capped"] is True
        assert run["errorCode"] == "queryExceededResultSize"
        assert "capped" in run["message"] and "7 were not alerted" in run["message"]
        # The earliest events are the ones alerted.
        assert [a["report_id"] for a in env.alerts(rid)] == [str(100 + i) for i in range(5)]
        # The next run alerts the next ones (still in its window), the one after the rest.
        env.clock.advance(minutes=5)
        assert env.engine.run_rule(rid, "manual")["alertsCreated"] == 5
        env.clock.advance(minutes=5)
        last = env.engine.run_rule(rid, "manual")
        assert last["alertsCreated"] == 2 and last["capped"] is False


def test_failing_rule_raises_a_health_alert_with_its_error(tmp_path: Path) -> None:
    with detection_env(tmp_path) as env:
        rid = env.rule(VOLUME_RULE, "1h", name="usb copy")
        # The query stops compiling after it was saved (as after a schema change): the run fails.
        env.engine.store.update_rule(rid, {"query": "DeviceProcessEvents | where NoSuchColumn == 1"}, env.clock())
        run = env.engine.run_rule(rid, "scheduled")
        assert run["status"] == "failed"
        assert "NoSuchColumn" in run["error"]
        rule = env.engine.store.get_rule(rid)
        assert rule is not None
        assert rule["last_run_status"] == "failed" and "NoSuchColumn" in rule["last_error"]
        assert rule["covered_through"] is None  # nothing was covered
        health = env.metadata.query("SELECT * FROM alerts WHERE kind = 'health'")
        assert len(health) == 1
        assert health[0]["rule_id"] == rid
        assert "usb copy" in health[0]["title"] and "NoSuchColumn" in health[0]["description"]
        assert [a["id"] for a in env.notifier.received] == [health[0]["id"]]
        # A second failure refreshes the same open health alert rather than adding another.
        env.clock.advance(hours=1)
        env.engine.run_rule(rid, "scheduled")
        health = env.metadata.query("SELECT * FROM alerts WHERE kind = 'health'")
        assert len(health) == 1 and health[0]["occurrences"] == 2
        assert [r["status"] for r in env.engine.store.list_runs(rid)] == ["failed", "failed"]
        # Fixed, it runs again and catches up on what it missed.
        env.ingest("DeviceProcessEvents", [proc(T0, 1, cmd="cp a /Volumes/X/a")])
        env.engine.store.update_rule(rid, {"query": VOLUME_RULE}, env.clock())
        env.clock.advance(hours=1)
        ok = env.engine.run_rule(rid, "scheduled")
        assert ok["status"] == "completed" and ok["alertsCreated"] == 1


def test_a_successful_run_resolves_the_rules_open_health_alert(tmp_path: Path) -> None:
    with detection_env(tmp_path) as env:
        rid = env.rule(VOLUME_RULE, "1h", name="usb copy")
        other = env.rule(VOLUME_RULE, "3h", name="other rule")
        broken = {"query": "DeviceProcessEvents | where NoSuchColumn == 1"}
        env.engine.store.update_rule(rid, broken, env.clock())
        env.engine.store.update_rule(other, broken, env.clock())
        failed = env.engine.run_rule(rid, "scheduled")
        env.engine.run_rule(other, "scheduled")
        first_id = failed["healthAlertId"]
        opened = env.engine.store.get_alert(first_id)
        assert opened is not None and opened["status"] == "new" and opened["resolved_at"] is None

        # Fixed: the next successful run resolves that health alert, and only that rule's.
        env.engine.store.update_rule(rid, {"query": VOLUME_RULE}, env.clock())
        env.clock.advance(hours=1)
        recovered_at = env.clock()
        ok = env.engine.run_rule(rid, "scheduled")
        assert ok["status"] == "completed"
        closed = env.engine.store.get_alert(first_id)
        assert closed is not None
        assert closed["status"] == "resolved"
        assert closed["resolved_at"] is not None and closed["resolved_at"].startswith(recovered_at.isoformat()[:19])
        assert closed["classification"] is None  # left for a person to judge
        assert len(closed["comments"]) == 1
        assert "recovered at" in closed["comments"][0]["comment"]
        assert recovered_at.isoformat()[:19] in closed["comments"][0]["comment"]
        still = env.metadata.query("SELECT status FROM alerts WHERE kind = 'health' AND rule_id = ?", (other,))
        assert [r["status"] for r in still] == ["new"]
        # Another success has nothing to resolve and adds no comment.
        env.clock.advance(hours=1)
        env.engine.run_rule(rid, "scheduled")
        again = env.engine.store.get_alert(first_id)
        assert again is not None and len(again["comments"]) == 1

        # Broken again: a new health alert opens; the resolved one stays resolved.
        env.engine.store.update_rule(rid, broken, env.clock())
        env.clock.advance(hours=1)
        second = env.engine.run_rule(rid, "scheduled")
        assert second["status"] == "failed" and second["healthAlertId"] != first_id
        rows = env.metadata.query(
            "SELECT id, status, occurrences FROM alerts WHERE kind = 'health' AND rule_id = ? ORDER BY created_at",
            (rid,),
        )
        assert [(r["id"], r["status"]) for r in rows] == [(first_id, "resolved"), (second["healthAlertId"], "new")]
        assert rows[1]["occurrences"] == 1


def test_alerts_on_one_device_or_sharing_an_entity_join_one_incident(tmp_path: Path) -> None:
    with detection_env(tmp_path, correlation_window_h=24) as env:
        sid = "S-1-5-21-1-2-3-1001"
        env.ingest(
            "DeviceProcessEvents",
            [
                proc(T0 - timedelta(hours=3), 1, device="mac-1", cmd="cp a /Volumes/X/a"),
                proc(T0 - timedelta(hours=2), 2, device="mac-1", cmd="cp b /Volumes/X/b"),
                # Another device, same user account: shares an entity with the first device.
                proc(T0 - timedelta(hours=1), 3, device="mac-2", cmd="cp c /Volumes/X/c", AccountSid=sid),
                proc(T0 - timedelta(hours=3, minutes=1), 4, device="mac-1", cmd="id", AccountSid=sid),
                # A third device with nothing in common: its own incident.
                proc(T0 - timedelta(hours=1), 5, device="pc-9", cmd="cp d /Volumes/X/d"),
            ],
        )
        rid = env.rule('DeviceProcessEvents | where ProcessCommandLine contains "/Volume" or ProcessCommandLine == "id"')
        env.engine.run_rule(rid, "manual")
        by_report = {a["report_id"]: a["incident_id"] for a in env.alerts(rid)}
        assert by_report["1"] == by_report["2"] == by_report["3"] == by_report["4"]
        assert by_report["5"] != by_report["1"]
        # Outside the window, the same device starts a new incident.
        env.clock.advance(hours=30)
        env.ingest("DeviceProcessEvents", [proc(env.clock() - timedelta(minutes=1), 6, device="pc-9", cmd="cp e /Volumes/X/e")])
        env.engine.run_rule(rid, "manual")
        by_report = {a["report_id"]: a["incident_id"] for a in env.alerts(rid)}
        assert by_report["6"] not in (by_report["5"], by_report["1"])
        inc = env.engine.store.get_incident(by_report["1"])
        assert inc is not None and inc["first_activity"].startswith((T0 - timedelta(hours=3, minutes=1)).isoformat())


def test_device_group_scope_and_rule_actions(tmp_path: Path) -> None:
    from server.devices import groups as g

    with detection_env(tmp_path) as env:
        env.ingest(
            "DeviceInfo",
            [
                {"Timestamp": T0 - timedelta(hours=5), "DeviceId": "mac-1", "DeviceName": "mac-1.corp", "OSPlatform": "macOS", "ReportId": 1},
                {"Timestamp": T0 - timedelta(hours=5), "DeviceId": "pc-1", "DeviceName": "pc-1.corp", "OSPlatform": "Windows11", "ReportId": 2},
            ],
        )
        env.ingest(
            "DeviceProcessEvents",
            [
                proc(T0 - timedelta(hours=1), 10, device="mac-1", cmd="cp a /Volumes/X/a"),
                proc(T0 - timedelta(hours=1), 11, device="pc-1", cmd="copy a /Volumes/X/a"),
            ],
        )
        macs = g.create_group(env.metadata, "macs", os_platforms=["macOS"])
        rid = env.rule(VOLUME_RULE, device_groups=[macs.id], actions=["isolate", "collectInvestigationPackage"])
        run = env.engine.run_rule(rid, "manual")
        # pc-1 is outside the scope: not even seen by the query.
        assert run["rowsMatched"] == 1
        assert [a["device_id"] for a in env.alerts(rid)] == ["mac-1"]
        actions = env.metadata.query("SELECT device_id, type, rule_id, status FROM device_actions ORDER BY type")
        assert [(a["device_id"], a["type"], a["rule_id"], a["status"]) for a in actions] == [
            ("mac-1", "collectInvestigationPackage", str(rid), "Pending"),
            ("mac-1", "isolate", str(rid), "Pending"),
        ]


def test_continuous_rule_sees_only_newly_ingested_rows(tmp_path: Path) -> None:
    with detection_env(tmp_path) as env:
        rid = env.rule(VOLUME_RULE, "continuous")
        assert env.engine.run_rule(rid, "scheduled")["alertsCreated"] == 0
        env.clock.advance(seconds=1)
        # An event from two days ago, ingested now: continuous rules judge by ingestion.
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(days=2), 42, cmd="cp z /Volumes/Z/z")])
        env.clock.advance(seconds=1)
        run = env.engine.run_rule(rid, "scheduled")
        assert run["alertsCreated"] == 1 and run["windowStart"] is None
        rule = env.engine.store.get_rule(rid)
        assert rule is not None and rule["next_run_at"].startswith((env.clock() + timedelta(seconds=1)).isoformat()[:19])
        env.clock.advance(minutes=1)
        again = env.engine.run_rule(rid, "scheduled")
        # Nothing new: at most the overlap before the watermark is read again, and de-duplicated.
        assert again["alertsCreated"] == 0 and again["rowsMatched"] == again["duplicates"]


def test_backtest_replays_history_and_creates_nothing(tmp_path: Path) -> None:
    from server.notify import Notifier
    from server.notify import rules as nrules

    with detection_env(tmp_path, notifier=None) as env:
        notifier = Notifier(env.settings, env.metadata, storage=env.storage)
        env.engine._notifier = lambda: notifier
        nrules.create_rule(env.metadata, {"name": "admins", "minSeverity": "low", "emails": ["admin@example.com", "soc@example.com"]})
        rows = []
        for day in range(5):
            for i in range(day + 1):
                rows.append(proc(T0 - timedelta(days=day, minutes=i), day * 10 + i, device=f"mac-{i % 2}", cmd="cp x /Volumes/U/x"))
        rows.append(proc(T0 - timedelta(days=40), 999, cmd="cp old /Volumes/U/old"))  # beyond 30 days
        env.ingest("DeviceProcessEvents", rows)
        env.storage.flush()
        rid = env.rule(VOLUME_RULE, "24h", severity="medium")
        result = env.engine.backtest(env.engine.store.get_rule(rid) or {}, 30)
        assert result["rowsMatched"] == 15
        assert result["matchesPerDay"] == [
            {"day": (T0 - timedelta(days=d)).date().isoformat(), "count": d + 1} for d in range(4, -1, -1)
        ]
        assert {d["deviceId"]: d["count"] for d in result["matchesPerDevice"]} == {"mac-0": 9, "mac-1": 6}
        assert result["alertsWouldCreate"] == 15
        assert len(result["sampleRows"]) == 15 and "ProcessCommandLine" in result["sampleRows"][0]
        assert result["emailsWouldSend"]["emails"] == 2
        # Nothing was created or moved.
        assert env.alerts() == []
        assert env.engine.store.list_runs(rid) == []
        rule = env.engine.store.get_rule(rid)
        assert rule is not None and rule["covered_through"] is None
        assert env.metadata.query("SELECT COUNT(*) AS n FROM notification_inbox")[0]["n"] == 0
        # A shorter replay sees less; the cap per run applies to what it would alert.
        assert env.engine.backtest(rule, 1.5)["rowsMatched"] == 1 + 2
        env.settings.alerts_per_run_cap = 2
        capped = env.engine.backtest(rule, 30)
        assert capped["alertsWouldCreate"] + capped["alertsDroppedByCap"] == 15
        assert capped["alertsDroppedByCap"] > 0


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("DeviceProcessEvents | project Timestamp, DeviceId", "missing_required_columns"),
        ("DeviceProcessEvents | summarize count() by DeviceId", "missing_required_columns"),
        ("DeviceProcessEvents | where NoSuchColumn == 1", "unknown_column"),
        ("DeviceProcessEvnts", "unknown_table"),
    ],
)
def test_a_rule_must_compile_and_return_the_event_key(query: str, code: str) -> None:
    check = check_rule(query, "1h", default_catalog(), T0)
    assert not check.ok
    assert code in [e["code"] for e in check.errors], check.errors


def test_continuous_rules_take_one_table_without_joins() -> None:
    ok = check_rule(VOLUME_RULE, "continuous", default_catalog(), T0)
    assert ok.ok, ok.errors
    joined = (
        "DeviceProcessEvents | join kind=inner (DeviceFileEvents | project DeviceId, FileName) on DeviceId"
        " | project Timestamp, DeviceId, ReportId"
    )
    bad = check_rule(joined, "continuous", default_catalog(), T0)
    assert "continuous_unsupported" in [e["code"] for e in bad.errors]
    titled = check_rule(VOLUME_RULE, "1h", default_catalog(), T0, title="USB copy by {{NoSuch}}")
    assert [e["code"] for e in titled.errors] == ["unknown_column"]


def test_process_tree_walks_ancestors_and_children(tmp_path: Path) -> None:
    from server.detections.process_tree import build_tree

    with detection_env(tmp_path) as env:
        t_term, t_zsh, t_cp, t_ls = (T0 - timedelta(hours=5), T0 - timedelta(minutes=30), T0 - timedelta(minutes=20), T0 - timedelta(minutes=19))
        common = {"DeviceId": "mac-1", "DeviceName": "mac-1.corp", "ActionType": "ProcessCreated"}

        def created(ts, rid, name, pid, cmd, parent):  # type: ignore[no-untyped-def]
            pname, ppid, pcreated, pcmd, gp = parent
            return {
                **common, "Timestamp": ts, "ReportId": rid, "FileName": name, "ProcessId": pid,
                "ProcessCommandLine": cmd, "ProcessCreationTime": ts, "InitiatingProcessFileName": pname,
                "InitiatingProcessId": ppid, "InitiatingProcessCreationTime": pcreated,
                "InitiatingProcessCommandLine": pcmd, "InitiatingProcessParentFileName": gp,
            }

        env.ingest(
            "DeviceProcessEvents",
            [
                created(t_term, 1, "Terminal", 100, "/Applications/Terminal", ("launchd", 1, None, None, "kernel_task")),
                created(t_zsh, 2, "zsh", 200, "-zsh", ("Terminal", 100, t_term, "/Applications/Terminal", "launchd")),
                created(t_cp, 3, "cp", 300, "cp a /Volumes/U/a", ("zsh", 200, t_zsh, "-zsh", "Terminal")),
                created(t_ls, 4, "ls", 301, "ls /Volumes/U", ("zsh", 200, t_zsh, "-zsh", "Terminal")),
                # Same pid 200 on another day: a different process, not a child of this zsh.
                created(t_ls, 5, "rm", 302, "rm x", ("zsh", 200, t_zsh - timedelta(days=1), "-zsh", "Terminal")),
            ],
        )
        rid = env.rule('DeviceProcessEvents | where ProcessCommandLine == "-zsh"')
        env.engine.run_rule(rid, "manual")
        [alert] = env.alerts(rid)
        con = env.storage.connect()
        try:
            tree = build_tree(con, env.engine.store.get_alert(alert["id"]) or {})
        finally:
            con.close()
        # Terminal's creation event names launchd (no event of its own) and launchd's parent.
        assert tree["path"] == ["kernel_task", "launchd", "Terminal", "zsh"]
        assert [a["source"] for a in tree["ancestors"]] == [
            "InitiatingProcessParent columns",
            "InitiatingProcess columns",
            "DeviceProcessEvents",
        ]
        assert tree["ancestors"][2]["commandLine"] == "/Applications/Terminal"
        assert [(c["fileName"], c["commandLine"]) for c in tree["children"]] == [
            ("cp", "cp a /Volumes/U/a"),
            ("ls", "ls /Volumes/U"),
        ]
        zsh = tree["tree"]["children"][0]["children"][0]["children"][0]
        assert zsh["isAlertProcess"] is True and len(zsh["children"]) == 2


def test_a_rule_deleted_during_its_run_ends_the_run_cleanly(tmp_path: Path) -> None:
    # DELETE /api/detections/rules/{id} while the rule's query runs (it may run for minutes):
    # the run must end as "no such rule" (404 for run-now), not an internal error.
    with detection_env(tmp_path) as env:
        env.ingest("DeviceProcessEvents", [proc(T0 - timedelta(minutes=30), 1, cmd="cp x /Volumes/U/x")])
        rid = env.rule(VOLUME_RULE, "1h")
        real_query = env.engine.query

        def query_then_delete(*args: Any, **kw: Any) -> Any:
            out = real_query(*args, **kw)
            assert env.engine.store.delete_rule(rid)
            return out

        env.engine.query = query_then_delete  # type: ignore[method-assign]
        with pytest.raises(KeyError):
            env.engine.run_rule(rid, "manual")
        assert env.alerts() == []


def test_a_run_whose_query_returns_too_many_rows_says_so(tmp_path: Path) -> None:
    # Rows past detection_max_rows are never evaluated: the run must flag it as the cap does,
    # not end as a plain "completed" run with a note.
    with detection_env(tmp_path, detection_max_rows=3) as env:
        env.ingest(
            "DeviceProcessEvents",
            [proc(T0 - timedelta(minutes=50 - i), 200 + i, cmd=f"cp {i} /Volumes/U/") for i in range(5)],
        )
        rid = env.rule(VOLUME_RULE + " | sort by Timestamp asc", "1h")
        run = env.engine.run_rule(rid, "manual")
        assert run["rowsMatched"] == 3 and run["alertsCreated"] == 3
        assert run["errorCode"] == "queryExceededResultSize", run
        assert "more than 3 rows" in run["message"]
        assert sorted(a["report_id"] for a in env.alerts(rid)) == ["200", "201", "202"]
