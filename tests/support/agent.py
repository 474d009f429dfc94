"""Helpers for the quarry-agent tests: run the real agent as a subprocess (as an operator would,
``python -m quarry_agent run ...``), hunt over HTTP, and the checks that decide whether this
machine lets the agent use its kernel interfaces (root, proc connector, fanotify, mount)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.notify_helpers import wait_until as wait_for  # noqa: F401  (the agent tests' poll helper)


def kernel_sources_missing() -> str | None:
    """Why the Linux sources cannot run here, or None when they can."""
    if sys.platform != "linux":
        return "the Linux sources need Linux"
    if os.geteuid() != 0:
        return "the agent's kernel sources need root (proc connector, fanotify, mount)"
    from quarry_agent.sources.linux_exec import open_connector

    try:
        open_connector().close()
    except OSError as e:
        return f"no netlink proc connector here: {e}"
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.fanotify_init(0x200 | 0x400 | 0x800, os.O_RDONLY)
    if fd < 0:
        return f"fanotify with FAN_REPORT_DFID_NAME unavailable: {os.strerror(ctypes.get_errno())}"
    os.close(fd)
    return None


def mount_tmpfs(path: Path) -> str | None:
    """Mount a small tmpfs at ``path``; the reason when that is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "quarry-test-usb", str(path)],
        capture_output=True, text=True, check=False,
    )
    return None if r.returncode == 0 else f"cannot mount a tmpfs: {r.stderr.strip()}"


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def hunt(client: httpx.Client, query: str) -> list[dict[str, Any]]:
    r = client.post("/api/advancedhunting/run", json={"Query": query})
    assert r.status_code == 200, r.text
    return list(r.json()["Results"])


@contextmanager
def agent_process(
    server: str, key: str, state_dir: Path, extra: Sequence[str] = (), prefix: Sequence[str] = (),
    log_path: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The agent running; on exit SIGTERM and a check that it stopped cleanly (exit 0)."""
    log_path = log_path or state_dir.parent / f"{state_dir.name}-agent.log"
    cmd = [*prefix, sys.executable, "-m", "quarry_agent", "run", "--server", server, "--key", key,
           "--state-dir", str(state_dir), "--flush-interval-s", "0.1", *extra]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stderr=log, stdout=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("the agent did not stop within 20 s of SIGTERM") from None
        if proc.returncode != 0:
            raise AssertionError(f"agent exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")


def agent_log(state_dir: Path) -> str:
    p = state_dir.parent / f"{state_dir.name}-agent.log"
    return p.read_text() if p.exists() else ""
