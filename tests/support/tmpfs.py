"""A size-limited filesystem for disk-full tests: a tmpfs the test mounts itself (tests run as
root in CI); the test is skipped, with the reason, where mounting is not permitted."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``mount`` syntax: 8m, 512k) on ``where``; unmount on exit."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return int(st.f_bavail * st.f_frsize)


def fill(path: Path, leave: int = 0) -> int:
    """Append to ``path`` until its filesystem has about ``leave`` bytes free (0: until a write
    fails for want of space); returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12):
            while (room := free_bytes(path) - leave) >= chunk or not leave:
                try:
                    written += os.write(fd, b"\0" * (chunk if leave else min(chunk, 1 << 20)))
                except OSError:
                    break
                if leave == 0 and room <= 0:
                    break
    finally:
        os.close(fd)
    return written
