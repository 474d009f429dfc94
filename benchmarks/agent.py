"""quarry-agent under a storm of process executions: its CPU and memory, and how many execs it
missed, while the machine runs ``--rate`` (default 1,000) executions per second.

As root (the proc connector needs it). The real server runs on loopback (in this process); the
agent runs as ``python -m quarry_agent run --sources process`` (a separate process; it and its
exec reader child are measured through /proc/<pid>/stat and /proc/<pid>/status, summed); a generator process posix_spawn()s programs at
the given rate, each with a unique argv[0] (``<marker>-<n>``) so its row can be found. Two loads:

* ``true``: /bin/true, which exits within about a millisecond: the agent must read /proc before
  it is gone, the hard case for any proc-connector sensor;
* ``sleep``: /bin/sleep 0.02, processes that live 20 ms.

For each: executions spawned; rows with the command line ("captured"), rows whose process was
gone before /proc could be read ("unreadable": reported, without command line), and the rest
("missed": no row at all, derived from the agent's row count over the window); the agent's CPU
time per execution as a ratio of the generator's own CPU per spawn (the baseline, measured in
the same run), the agent's CPU as a share of one core, and its peak RSS.

    sudo .venv/bin/python benchmarks/agent.py [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.app import create_app  # noqa: E402
from tests.notify_helpers import LiveServer, settings_for  # noqa: E402
from tests.support.agent import hunt, kernel_sources_missing  # noqa: E402

GENERATOR = r"""
import json, os, resource, sys, time
rate, secs, path, marker = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
extra = sys.argv[5:]
interval, n, t0 = 1.0 / rate, 0, time.monotonic()
def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
while True:
    now = time.monotonic()
    if now - t0 >= secs:
        break
    target = t0 + n * interval
    if now < target:
        time.sleep(target - now)
    os.posix_spawn(path, [f"{marker}-{n}", *extra], {})
    n += 1
    reap()
elapsed = time.monotonic() - t0
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
me = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"spawned": n, "elapsed": elapsed, "cpu": me.ru_utime + me.ru_stime}))
"""


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def agent_pids(pid: int) -> list[int]:
    """The agent and its children (the exec reader process)."""
    out = [pid]
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int(_stat(int(p.name))[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError):
                continue
    return out


def cpu_s(pid: int) -> float:
    total = 0
    for p in agent_pids(pid):
        try:
            fields = _stat(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    total = 0
    for p in agent_pids(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))
    return total / 1024


def wait_drained(state: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while list((state / "queue").glob("*.ndjson.gz")) and time.monotonic() < deadline:
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    reason = kernel_sources_missing()
    if reason:
        print(f"skipped: {reason}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        app = create_app(settings_for(root / "data"))
        with LiveServer(app) as srv, srv.client() as admin, (root / "agent.log").open("wb") as log:
            state = root / "state"
            agent = subprocess.Popen(
                [sys.executable, "-m", "quarry_agent", "run", "--server", srv.url, "--key", srv.key("ingest"),
                 "--state-dir", str(state), "--sources", "process", "--log-level", "WARNING"],
                stderr=log,
            )
            try:
                time.sleep(2.0)
                idle0 = cpu_s(agent.pid)
                time.sleep(args.seconds)
                idle_share = (cpu_s(agent.pid) - idle0) / args.seconds
                print(f"agent idle: {idle_share * 100:.1f}% of a core over {args.seconds:.0f} s")
                print(f"{'load':6} {'spawned':>8} {'rate/s':>7} {'captured':>9} {'unreadable':>10} {'missed':>7} "
                      f"{'agent CPU':>9} {'agent/spawn CPU':>15} {'peak RSS':>9}")
                for load, path, extra in (("true", "/bin/true", []), ("sleep", "/bin/sleep", ["0.02"])):
                    marker = f"qbench{uuid.uuid4().hex[:10]}"
                    before = hunt(admin, "DeviceProcessEvents | count")[0]["Count"]
                    c0 = cpu_s(agent.pid)
                    gen = subprocess.run(
                        [sys.executable, "-c", GENERATOR, str(args.rate), str(args.seconds), path, marker, *extra],
                        capture_output=True, text=True, check=True,
                    )
                    g = json.loads(gen.stdout)
                    time.sleep(1.0)  # the agent's backlog
                    agent_cpu = cpu_s(agent.pid) - c0
                    wait_drained(state)
                    time.sleep(1.0)
                    after = hunt(admin, "DeviceProcessEvents | count")[0]["Count"]
                    captured = hunt(admin, f'DeviceProcessEvents | where ProcessCommandLine startswith "{marker}-" | count')[0]["Count"]
                    rows = after - before
                    # Rows in the window that are not the generator's captured ones: mostly its
                    # processes that exited before /proc was read (the machine is shared, so a few
                    # may be other programs': "missed" is then a lower bound).
                    unreadable = max(0, rows - captured)
                    missed = max(0, g["spawned"] - captured - unreadable)
                    n = g["spawned"]
                    print(f"{load:6} {n:8d} {n / g['elapsed']:7.0f} {captured / n:9.1%} {unreadable / n:10.1%} "
                          f"{missed / n:7.1%} {agent_cpu / g['elapsed']:8.0%}c {agent_cpu / max(g['cpu'], 1e-9):14.2f}x "
                          f"{peak_rss_mib(agent.pid):7.0f}MiB")
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(30)
    print("captured: row with command line; unreadable: row without (process gone first); missed: no row.")
    print("agent/spawn CPU: agent CPU seconds over the generator's own CPU seconds for the same execs.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
