"""The detection scheduler: an asyncio task that starts due rules on worker threads.

Every ``scheduler_tick_s`` it asks the engine which enabled rules are due (``next_run_at`` passed
or never run) and starts each on a thread, at most ``max_parallel`` at once and never the same
rule twice. Continuous rules are due every ``continuous_poll_s`` and come first, so their
latency is a poll interval plus the run. Ingest calls ``ingested()`` after rows are durable, which
makes continuous rules due at once (at most once per ``min_gap_s`` each), so their latency is the
run itself rather than the poll. Off when ``settings.scheduler_enabled`` is false: tests
drive runs explicitly with their own times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from server.detections.runner import DetectionEngine
from server.detections.timeutil import parse_iso

log = logging.getLogger("quarry.detections")


class Scheduler:
    def __init__(
        self,
        engine: DetectionEngine,
        tick_s: float = 1.0,
        max_parallel: int = 2,
        min_gap_s: float = 0.2,
    ) -> None:
        self.engine = engine
        self.tick_s = tick_s
        self.max_parallel = max_parallel
        self.min_gap_s = min_gap_s
        self._task: asyncio.Task[None] | None = None
        self._running: dict[int, asyncio.Task[Any]] = {}
        self._last_start: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._ingest_pending = False
        # Refreshed at every tick: without an enabled continuous rule, ingest need not wake us
        # (ingest calls ingested() on every request, at thousands per second).
        self._has_continuous = True
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._task is None:
            self._loop_ref = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._loop(), name="quarry-detection-scheduler")

    def ingested(self) -> None:
        """New rows are durable: run continuous rules now. Safe to call from any thread."""
        if not self._has_continuous or self._ingest_pending:
            return  # nothing to run, or a wake-up is already on its way
        self._ingest_pending = True
        self.wake()

    def wake(self) -> None:
        """Look for due rules now (a rule was created or changed) instead of at the next tick.
        Safe to call from any thread."""
        loop = self._loop_ref
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("detection scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                wait = self.min_gap_s if self._ingest_pending else self.tick_s
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    async def tick(self) -> None:
        eager, self._ingest_pending = self._ingest_pending, False
        now = self.engine.clock()
        due = await asyncio.to_thread(self.engine.due_rules, now, eager)
        self._has_continuous = self.engine.has_continuous_rules
        started = time.monotonic()
        for rule in due:
            rid = int(rule["id"])
            if rid in self._running or len(self._running) >= self.max_parallel:
                if eager and rule["frequency"] == "continuous":
                    self._ingest_pending = True  # rows arrived during this run: look again after it
                continue
            nxt = rule.get("next_run_at")
            if (
                rule["frequency"] == "continuous"
                and nxt is not None
                and parse_iso(nxt) > now
                and started - self._last_start.get(rid, 0.0) < self.min_gap_s
            ):
                # An ingest storm must not run a rule back to back: at most once per min_gap_s.
                self._ingest_pending = True
                continue
            self._last_start[rid] = started
            task = asyncio.create_task(asyncio.to_thread(self.engine.run_rule, rid, "scheduled"))
            self._running[rid] = task
            task.add_done_callback(functools.partial(self._done, rid))

    def _done(self, rid: int, task: asyncio.Task[Any]) -> None:
        self._running.pop(rid, None)
        if self._ingest_pending:
            self._wake.set()
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, KeyError):
            log.info("rule %s was deleted before or during its scheduled run", rid)
        elif exc is not None:
            log.error("scheduled run of rule %s raised", rid, exc_info=exc)
