"""The scheduler picks due rules by their frequency, never runs a disabled rule, and runs a new
rule at once; time is the test's clock, ticks are driven by hand."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from server.detections.scheduler import Scheduler
from tests.test_detections_support import T0, detection_env, proc

VOLUME_RULE = 'DeviceProcessEvents | where ProcessCommandLine contains "/Volume"'


async def _tick(s: Scheduler) -> None:
    await s.tick()
    while s._running:  # wait for the runs the tick started
        await asyncio.gather(*s._running.values())


def test_due_rules_run_on_their_schedule(tmp_path: Path) -> None:
    with detection_env(tmp_path, continuous_poll_s=5.0) as env:
        hourly = env.rule(VOLUME_RULE, "1h", name="hourly")
        daily = env.rule(VOLUME_RULE, "24h", name="daily")
        nrt = env.rule(VOLUME_RULE, "continuous", name="nrt")
        off = env.rule(VOLUME_RULE, "1h", name="off", enabled=0)
        assert [r["id"] for r in env.engine.due_rules(env.clock())] == [nrt, hourly, daily]
        sched = Scheduler(env.engine, tick_s=0.01, max_parallel=4)

        def runs(rid: int) -> int:
            return len(env.engine.store.list_runs(rid))

        asyncio.run(_tick(sched))  # new rules run at once
        assert (runs(hourly), runs(daily), runs(nrt), runs(off)) == (1, 1, 1, 0)
        env.clock.advance(seconds=6)
        asyncio.run(_tick(sched))
        assert (runs(hourly), runs(daily), runs(nrt)) == (1, 1, 2)
        env.ingest("DeviceProcessEvents", [proc(env.clock(), 1, cmd="cp a /Volumes/X/a")])
        env.clock.advance(minutes=61)
        asyncio.run(_tick(sched))
        assert (runs(hourly), runs(daily), runs(nrt)) == (2, 1, 3)
        # Each rule alerted once on the event; the runs were "scheduled".
        assert len(env.alerts(hourly)) == len(env.alerts(nrt)) == 1
        assert {r["trigger"] for r in env.engine.store.list_runs(hourly)} == {"scheduled"}
        rule = env.engine.store.get_rule(hourly)
        assert rule is not None and rule["next_run_at"].startswith((env.clock() + timedelta(hours=1)).isoformat())
        assert env.clock() > T0


def test_ingest_wakes_continuous_rules_before_their_poll(tmp_path: Path) -> None:
    """With a poll of a minute, a continuous rule still alerts seconds after ingest: the ingest
    API wakes the scheduler once rows are durable."""
    from datetime import UTC, datetime

    from tests.notify_helpers import iso, live_server, settings_for, wait_until

    settings = settings_for(
        tmp_path, scheduler_enabled=True, continuous_poll_s=60.0, scheduler_tick_s=60.0
    )
    with live_server(settings) as srv, srv.client() as c:
        r = c.post("/api/detections/rules", json={
            "name": "usb copy (nrt)", "query": VOLUME_RULE + " | project Timestamp, DeviceId, ReportId",
            "frequency": "continuous", "severity": "informational",
            "alertTitle": "copy to removable volume",
        })
        assert r.status_code in (200, 201), r.text
        # Its first run happens at once; wait for it so that the next one can only be woken.
        wait_until(lambda: c.get(f"/api/detections/rules/{r.json()['id']}/runs").json().get("value"),
                   what="the first run")
        row = {"Timestamp": iso(datetime.now(UTC)), "DeviceId": "dev-9", "DeviceName": "mac9",
               "ActionType": "ProcessCreated", "ReportId": 7,
               "ProcessCommandLine": "cp leak.txt /Volumes/TEST-USB/leak.txt"}
        assert c.post("/api/ingest/DeviceProcessEvents", json=[row]).status_code == 200
        alerts = wait_until(lambda: c.get("/api/alerts").json()["value"], timeout=10.0,
                            what="an alert well before the 60 s poll")
        assert [a["deviceId"] for a in alerts] == ["dev-9"]


def test_ingest_wakes_only_when_a_continuous_rule_exists(tmp_path: Path) -> None:
    """Ingest calls ingested() on every request: without an enabled continuous rule it must not
    wake the scheduler (each wake reads the rules from SQLite)."""

    async def scenario() -> tuple[bool, bool]:
        with detection_env(tmp_path) as env:
            env.rule(VOLUME_RULE, "1h", name="hourly")
            sched = Scheduler(env.engine, tick_s=60.0)
            sched.start()
            await asyncio.sleep(0.2)  # the first tick has looked at the rules
            sched.ingested()
            no_continuous = sched._ingest_pending
            env.rule(VOLUME_RULE, "continuous", name="nrt")
            sched.wake()
            await asyncio.sleep(0.2)
            sched.ingested()
            with_continuous = sched._ingest_pending
            await sched.stop()
            return no_continuous, with_continuous

    assert asyncio.run(scenario()) == (False, True)
