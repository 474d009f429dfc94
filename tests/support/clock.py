"""A clock the test moves by hand, for storage (ingestion times) and detections (run times)."""

from __future__ import annotations

from datetime import datetime, timedelta


class ManualClock:
    """Naive UTC, like every stored datetime; ``advance(minutes=5)`` moves it on."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)
