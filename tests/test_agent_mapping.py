"""quarry-agent's mapping and parsers, without the kernel: docs/agent.md documents every column
the agent fills; mountinfo, removable-mount globs and proc-connector messages parse as the kernel
writes them."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

from quarry_agent.identity import ReportIds
from quarry_agent.mapping import Proc, file_event, process_created
from quarry_agent.sources.heartbeat import HeartbeatSource
from quarry_agent.sources.linux_exec import PROC_EVENT_EXEC, parse_execs
from quarry_agent.sources.linux_mounts import MountSource, glob_matches, parse_mountinfo

from tests.test_agent_eslogger import mapped

DOC = (Path(__file__).resolve().parent.parent / "docs" / "agent.md").read_text()
REFERENCE = Path("/work/shared/reference/defender_device_tables.json")


def documented(table: str) -> dict[str, str]:
    """column -> 'yes'/'no' from the table's section of docs/agent.md."""
    section = DOC.split(f"### {table}\n", 1)[1].split("\n### ", 1)[0]
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (yes|no) \|", section, flags=re.M)}


def full_proc(pid: int) -> Proc:
    return Proc(pid=pid, path="/usr/bin/x", cmdline="x -y", creation_time="2026-01-01T00:00:00.000000Z",
                user="root", uid=0, euid=0, session=1, pgid=pid, sha1="a" * 40, sha256="b" * 64, md5="c" * 32,
                size=10, ppid=pid - 1, unreadable=["cmdline"])


def test_every_column_the_agent_fills_is_documented_as_filled() -> None:
    p, parent, grand = full_proc(30), full_proc(20), full_proc(10)
    rows = {
        "DeviceProcessEvents": [process_created(p, parent, grand, "host")],
        "DeviceFileEvents": [file_event("FileRenamed", "/m/a", p, parent, "host", ("1", "2", "3", 4), "/m/b")],
        "DeviceEvents": [r for t, r in mapped() if t == "DeviceEvents"],
        "DeviceInfo": [HeartbeatSource("mid", lambda: {}).device_info().row],
    }
    for table, table_rows in rows.items():
        doc = documented(table)
        for row in table_rows:
            for column in row:
                assert doc.get(column) == "yes", f"docs/agent.md, {table}: {column} is filled but documented {doc.get(column)!r}"
    if REFERENCE.exists():  # every documented Defender column has its row, filled or not
        ref = json.loads(REFERENCE.read_text())["tables"]
        for table in ("DeviceProcessEvents", "DeviceFileEvents", "DeviceEvents", "DeviceInfo", "DeviceNetworkInfo"):
            assert {c["name"] for c in ref[table]["columns"]} <= set(documented(table)), table


def test_mountinfo_lines_parse_with_escapes() -> None:
    text = ("36 25 0:45 / /mnt/My\\040Stick rw,relatime shared:1 - vfat /dev/sdb1 rw,fmask=0022\n"
            "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    mounts = parse_mountinfo(text)
    assert mounts[36].mount_point == "/mnt/My Stick" and (mounts[36].major, mounts[36].minor) == (0, 45)
    assert (mounts[36].fstype, mounts[36].source) == ("vfat", "/dev/sdb1")
    src = MountSource(("/mnt/*",))
    assert src.classify(mounts[36]) is not None and src.classify(mounts[22]) is None


def test_removable_globs_match_one_segment_per_star() -> None:
    assert glob_matches("/mnt/*", "/mnt/usb") and not glob_matches("/mnt/*", "/mnt/usb/inner")
    assert glob_matches("/run/media/*/*", "/run/media/alice/STICK") and not glob_matches("/media/*", "/mnt/x")


def test_proc_connector_messages_parse() -> None:
    def msg(what: int, pid: int) -> bytes:
        body = struct.pack("=IIQ", what, 0, 123456789) + struct.pack("=II", pid, pid) + b"\0" * 16
        cn = struct.pack("=IIIIHH", 1, 1, 0, 0, len(body), 0) + body
        return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn

    data = msg(PROC_EVENT_EXEC, 4242) + msg(0x80000000, 4242) + msg(PROC_EVENT_EXEC, 4300)
    assert list(parse_execs(data)) == [(4242, 123456789), (4300, 123456789)]


def test_bad_settings_get_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "quarry_agent", "run", *args], capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=30, check=False)

    base = ["--key", "k", "--state-dir", str(tmp_path)]
    r = run("--server", "ftp://quarry", *base)
    assert r.returncode == 1 and "--server must be an http:// or https:// URL" in r.stderr
    r = run("--server", "http://quarry", *base, env={"QUARRY_AGENT_HEARTBEAT_S": "often"})
    assert r.returncode == 2 and "--heartbeat-s: invalid float value: 'often'" in r.stderr
    r = run("--server", "http://quarry", *base, "--sources", "process,keylogger")
    assert r.returncode == 1 and "unknown source(s) ['keylogger']" in r.stderr
    assert "Traceback" not in r.stderr


def test_report_ids_never_repeat_across_restarts_and_reinstalls(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = ReportIds(tmp_path / "a", block=10)
    ids = [first.take() for _ in range(15)]  # two blocks reserved
    assert ids == list(range(ids[0], ids[0] + 15)) and abs(ids[0] - time.time_ns() // 1000) < 60_000_000
    restarted = ReportIds(tmp_path / "a", block=10)
    assert restarted.take() == ids[0] + 20  # the rest of the reserved block is skipped, never reused
    (tmp_path / "b").mkdir()
    assert ReportIds(tmp_path / "b").take() > ids[-1]  # a fresh state directory (a reinstall)
