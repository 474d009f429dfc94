"""A test-only hook: hold the storage thread at a named point so a test can kill the process there.

``QUARRY_TEST_PAUSE_AT`` (comma-separated point names) makes the thread that reaches one of
these points log ``test pause at <point>`` on stderr and sleep for ``QUARRY_TEST_PAUSE_S``
seconds (default 3600), once per point and process. The crash-loop test
(tests/test_e2e_durability.py) sends SIGKILL while it sleeps. Unset, the hook is one dictionary
lookup. It exists for tests only: never set it on a server that keeps data you care about.

Points (each right after the step named, before the next one commits anything):

* ``flush``: the first Parquet file of a flushed WAL segment is renamed into place; the views
  have not moved and the segment is not deleted.
* ``compact``: the merged file of a compaction is in place; the commit marker is not written.
* ``retention``: a partition dropped by retention is partly deleted (one file gone).
"""

from __future__ import annotations

import os
import sys
import time

ENV_POINTS = "QUARRY_TEST_PAUSE_AT"
ENV_SECONDS = "QUARRY_TEST_PAUSE_S"
_done: set[str] = set()


def pause_point(name: str) -> None:
    points = os.environ.get(ENV_POINTS)
    if not points or name in _done or name not in points.split(","):
        return
    _done.add(name)
    sys.stderr.write(f"test pause at {name}\n")
    sys.stderr.flush()
    time.sleep(float(os.environ.get(ENV_SECONDS, "3600")))
