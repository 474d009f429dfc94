"""Durability: a process appending from several threads is SIGKILLed at arbitrary moments (while
appending, flushing, compacting, or replaying a previous crash's WAL); after a restart on the same
data directory every acknowledged row is present exactly once.

Run as a module, this file is the child process: ``python -m tests.test_storage_crash DIR ROUND``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from tests.test_storage_support import TABLE, open_storage, process_batch

ROOT = Path(__file__).resolve().parent.parent
BATCH = 250
THREADS = 4
CHILD_SETTINGS = {
    # Flush and compact all the time, so the kill lands inside them as often as not.
    "flush_max_rows": 1_500,
    "flush_max_age_s": 0.1,
    "compaction_interval_s": 0.2,
}


def _child(data_dir: Path, round_no: int) -> None:
    out_lock = threading.Lock()
    now = datetime.utcnow()
    with open_storage(data_dir, **CHILD_SETTINGS) as st:
        print("READY", flush=True)

        def worker(w: int) -> None:
            base = round_no * 100_000_000 + w * 1_000_000
            for b in range(1_000_000 // BATCH):
                ids = list(range(base + b * BATCH, base + (b + 1) * BATCH))
                # Three days, so a flush writes several partitions.
                stamps = [now - timedelta(hours=(i * 5) % 60) for i in ids]
                st.append(TABLE, process_batch(ids, stamps, device=f"dev-{w}"))
                with out_lock:
                    sys.stdout.write(f"ACK {ids[0]} {ids[-1]}\n")
                    sys.stdout.flush()

        threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _run_and_kill(data_dir: Path, round_no: int, acks_before_kill: int) -> set[int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_storage_crash", str(data_dir), str(round_no)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    acked: set[int] = set()
    seen = 0
    deadline = time.monotonic() + 60
    try:
        for line in proc.stdout:
            if line.startswith("ACK"):
                lo, hi = map(int, line.split()[1:])
                acked.update(range(lo, hi + 1))
                seen += 1
            if seen >= acks_before_kill or time.monotonic() > deadline:
                break
        os.kill(proc.pid, signal.SIGKILL)
        # Lines already written before the kill are acknowledgements too.
        for line in proc.stdout:
            if line.startswith("ACK"):
                lo, hi = map(int, line.split()[1:])
                acked.update(range(lo, hi + 1))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_sigkill_at_any_moment_loses_no_acknowledged_row_and_duplicates_none(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("QUARRY_CRASH_SEED", "20250310")))
    acked: set[int] = set()
    # A kill straight after the first acks (often mid-replay of the previous round's WAL), and
    # kills once flushes and compactions are under way.
    for round_no, acks in enumerate([1, rng.randint(20, 60), rng.randint(60, 160), 2]):
        acked |= _run_and_kill(tmp_path, round_no, acks)
        with open_storage(tmp_path, **CHILD_SETTINGS) as st:
            con = st.connect()
            total, distinct = con.execute(
                f'SELECT count(*), count(DISTINCT ReportId) FROM "{TABLE}"'
            ).fetchone() or (0, 0)
            assert total == distinct, f"round {round_no}: {total - distinct} rows stored twice"
            stored = {r[0] for r in con.execute(f'SELECT ReportId FROM "{TABLE}"').fetchall()}
            missing = acked - stored
            assert not missing, f"round {round_no}: {len(missing)} acknowledged rows lost"
            con.close()
    assert len(acked) >= 4 * BATCH
    # Parquet actually holds the data (not only a replayed tail).
    assert list((tmp_path / TABLE).rglob("*.parquet"))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), int(sys.argv[2]))
