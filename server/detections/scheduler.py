"""The detection scheduler: an asyncio task that starts due rules on worker threads.

Every ``scheduler_tick_s`` it asks the engine which enabled rules are due (``next_run_at`` passed
or never run) and starts each on a thread, at most ``max_parallel`` at once and never the same
rule twice. Continuous rules are due every ``continuous_poll_s`` and come first, so their
latency is a poll interval plus the run. Off when ``settings.scheduler_enabled`` is false: tests
drive runs explicitly with their own times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any

from server.detections.runner import DetectionEngine

log = logging.getLogger("quarry.detections")


class Scheduler:
    def __init__(self, engine: DetectionEngine, tick_s: float = 1.0, max_parallel: int = 2) -> None:
        self.engine = engine
        self.tick_s = tick_s
        self.max_parallel = max_parallel
        self._task: asyncio.Task[None] | None = None
        self._running: dict[int, asyncio.Task[Any]] = {}
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="quarry-detection-scheduler")

    def wake(self) -> None:
        """Look for due rules now (after ingest, say) instead of at the next tick."""
        self._wake.set()

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
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_s)
            self._wake.clear()

    async def tick(self) -> None:
        now = self.engine.clock()
        due = await asyncio.to_thread(self.engine.due_rules, now)
        for rule in due:
            rid = int(rule["id"])
            if rid in self._running or len(self._running) >= self.max_parallel:
                continue
            task = asyncio.create_task(asyncio.to_thread(self.engine.run_rule, rid, "scheduled"))
            self._running[rid] = task
            task.add_done_callback(functools.partial(self._done, rid))

    def _done(self, rid: int, task: asyncio.Task[Any]) -> None:
        self._running.pop(rid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduled run of rule %s raised", rid, exc_info=task.exception())
