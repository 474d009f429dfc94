"""Wires the Linux sources together: the exec source fills the process table that the file
source reads its writers from, and the mount source tells the file source what to watch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from quarry_agent.procinfo import Hashes, ProcessTable
from quarry_agent.sources import Event, Source
from quarry_agent.sources.linux_exec import ProcConnectorSource
from quarry_agent.sources.linux_files import FanotifySource
from quarry_agent.sources.linux_mounts import MountSource


def build(
    wanted: set[str], globs: tuple[str, ...], domain: str, counters: dict[str, Callable[[], int]]
) -> list[Source]:
    table = ProcessTable(Hashes())
    out: list[Source] = []
    if "process" in wanted:
        proc = ProcConnectorSource(table, domain)
        out.append(proc)
        counters["AgentProcessEventOverruns"] = lambda: proc.missed_overruns
        counters["AgentProcessEventsDropped"] = lambda: proc.missed_backlog
    files = None
    if "files" in wanted:
        files = FanotifySource(table, domain, exec_wait_s=0.5 if "process" in wanted else 0.0)
        out.append(files)
        counters["AgentFileEventOverflows"] = lambda: files.overflows if files else 0
    if "mounts" in wanted or files is not None:
        mounts = MountSource(
            globs,
            on_mount=files.watch if files else None,
            on_unmount=files.unwatch if files else None,
        )
        if "mounts" in wanted:
            out.append(mounts)
        else:
            # Files need to know the removable mounts even when mount events are not wanted.
            out.append(_Quiet(mounts))
    return out


class _Quiet:
    """A mount source whose rows are not sent (it only drives the file watcher)."""

    name = "mounts(watch only)"

    def __init__(self, inner: MountSource) -> None:
        self.inner = inner

    def events(self, stop: threading.Event) -> Iterator[Event]:
        for _ in self.inner.events(stop):
            pass
        yield from ()
