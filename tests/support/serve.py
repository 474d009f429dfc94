"""``quarry serve`` as a subprocess on a free loopback port, for tests that kill it (SIGKILL,
SIGTERM) and start it again on the same data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.live import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
ADMIN_KEY = "e2e-subprocess-admin-key"


def quarry_bin() -> list[str]:
    exe = Path(sys.executable).with_name("quarry")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


class QuarryProcess:
    """Started in the constructor; ready once ``/healthz`` answers 200. ``env`` adds QUARRY_*
    settings (and test hooks) to the test's environment."""

    def __init__(self, data_dir: Path, log: Path, env: dict[str, str] | None = None,
                 key: str = ADMIN_KEY) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = key
        self.log_path = log
        full_env = {**os.environ, "QUARRY_ADMIN_KEY": key, "QUARRY_SCHEDULER_ENABLED": "false",
                    **(env or {})}
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [*quarry_bin(), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not come up; see {log}")
            time.sleep(0.05)

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10,
                            headers={"Authorization": f"Bearer {self.key}", **headers})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (from /proc): steadier than wall time on
        a shared machine."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL: nothing is flushed or closed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        """SIGTERM: uvicorn's clean shutdown (the lifespan closes storage)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        """Until ``text`` appears in the server's output (e.g. a test pause point's marker)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before {text!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server log within {timeout} s")
            time.sleep(0.02)
