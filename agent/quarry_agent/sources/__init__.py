"""Event sources. Each one yields Defender-shaped rows; the agent adds Timestamp (when the source
left it out), DeviceId, DeviceName and ReportId, and queues them.

A source runs in its own thread: ``events(stop)`` is an iterator that must return soon after
``stop`` is set (sources wait on their descriptors with a timeout for that).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    table: str  # DeviceProcessEvents, DeviceFileEvents, DeviceEvents, DeviceInfo, ...
    row: dict[str, Any]


class Source(Protocol):
    name: str

    def events(self, stop: threading.Event) -> Iterator[Event]: ...
