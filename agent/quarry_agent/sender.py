"""Delivers queue segments to ``POST /api/ingest/{Table}`` (gzip'd NDJSON), oldest first.

A segment is acknowledged (removed from the queue) only on 200. 429, 503 and 507 (the server's
disk is full) wait for the server's Retry-After; connection errors and other 5xx back off exponentially (with jitter, up to
``max_backoff_s``). 400/404/413/415 mean the batch itself is unacceptable, so retrying would
block the queue forever: the segment is set aside and counted (see DiskQueue.reject).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time

import httpx

from quarry_agent.queue import DiskQueue, Segment

log = logging.getLogger("quarry_agent.sender")
REJECT_STATUSES = {400, 404, 413, 415, 422}
# 429 too many requests, 503 back-pressure, 507 the server's disk is full: all say when to retry.
RETRY_AFTER_STATUSES = {429, 503, 507}
MAX_RETRY_AFTER_S = 300.0


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date)."""
    if not value:
        return default
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class Sender:
    def __init__(
        self,
        client: httpx.Client,
        queue: DiskQueue,
        stop: threading.Event,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.client = client
        self.queue = queue
        self.stop = stop
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.backoff = min_backoff_s
        self.sent_events = 0

    def _wait(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _fail(self, what: str, wait: float | None = None) -> None:
        delay = wait if wait is not None else self.backoff * (0.5 + random.random())
        log.warning("%s; retrying in %.1f s", what, delay)
        self.backoff = min(self.backoff * 2, self.max_backoff_s)
        self._wait(delay)

    def send_one(self, seg: Segment) -> bool:
        """POST one segment; True when it left the queue (stored or set aside)."""
        try:
            body = seg.read()
        except FileNotFoundError:
            return True
        try:
            r = self.client.post(
                f"/api/ingest/{seg.table}",
                content=body,
                headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
            )
        except httpx.HTTPError as e:
            self._fail(f"server unreachable ({type(e).__name__}: {e}); {seg.count} {seg.table} events wait in the queue")
            return False
        if r.status_code == 200:
            self.queue.ack(seg)
            self.sent_events += seg.count
            self.backoff = self.min_backoff_s
            return True
        if r.status_code in RETRY_AFTER_STATUSES:
            self._fail(
                f"server busy ({r.status_code})",
                retry_after(r.headers.get("retry-after"), self.backoff),
            )
            return False
        if r.status_code in REJECT_STATUSES:
            self.queue.reject(seg, f"{r.status_code} {r.text[:1000]}")
            return True
        if r.status_code in (401, 403):
            self.backoff = self.max_backoff_s  # a wrong key will not fix itself quickly
            self._fail(f"the server refused the key ({r.status_code} {r.text[:200]})")
            return False
        self._fail(f"server error {r.status_code} {r.text[:200]}")
        return False

    def run(self) -> None:
        while not self.stop.is_set():
            segments = self.queue.pending()
            if not segments:
                self.queue.wait(1.0)
                continue
            for seg in segments:
                if self.stop.is_set() or not self.send_one(seg):
                    break
