"""``quarry serve`` as a child process on a loopback port: for tests that kill it (kill -9) or
that must survive its crash (a segfault in the server fails the test, not the test run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.live import free_port

ROOT = Path(__file__).resolve().parents[2]


def quarry_bin() -> list[str]:
    exe = Path(sys.executable).with_name("quarry")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


class QuarryProcess:
    """Started by the constructor (waits for /healthz); ``stop()`` (SIGTERM) or ``kill()``.
    ``env`` adds QUARRY_* settings; the scheduler is off unless ``env`` says otherwise."""

    def __init__(self, data_dir: Path, log: Path, key: str, env: dict[str, str] | None = None
                 ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "QUARRY_ADMIN_KEY": key, "QUARRY_SCHEDULER_ENABLED": "false",
                    **(env or {})}
        self.log_path = log
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [*quarry_bin(), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not come up; see {log}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (from /proc): steadier than wall time on
        a shared machine."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
