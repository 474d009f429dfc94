"""quarry-agent end to end, as root, with the real kernel interfaces and the real server over HTTP:

the agent runs; a tmpfs is mounted as a stand-in USB stick under a path the test made (passed
with --removable-mounts); a shell copies a file onto it. Within seconds the cp's process row
(command line, the shell as initiating process), the file row and the mount event are
queryable, and the seed rule, adapted to the mount path, raises an alert with the process tree."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from quarry_agent.procinfo import Hashes, ProcessTable
from quarry_agent.sources.linux_files import FanotifySource
from quarry_agent.sources.linux_mounts import Mount

from tests.notify_helpers import live_server, settings_for
from tests.support.agent import (
    agent_process,
    hunt,
    kernel_sources_missing,
    mount_tmpfs,
    umount,
    wait_for,
)

pytestmark = pytest.mark.slow
SHELLS = {"sh", "dash", "bash"}


@pytest.fixture(scope="module")
def kernel_ok() -> None:
    reason = kernel_sources_missing()
    if reason:
        pytest.skip(reason)


def test_usb_copy_seen_by_the_agent_end_to_end(tmp_path: Path, kernel_ok: None) -> None:
    media = tmp_path / "media"
    stick = media / "TEST-USB"
    src = tmp_path / "leak.txt"
    # The source is a named pipe that the test feeds once the agent has reported the cp: the
    # proc connector gives only a pid, /proc is read when the message arrives, and a copy of a
    # small file ends in about a millisecond, sooner than a loaded CI machine may schedule the
    # reader (the row then comes without its command line, see docs/agent.md and
    # benchmarks/agent.py). A pipe is a slow source, like a network share or a big file.
    os.mkfifo(src)
    content = b"quarterly numbers\n" * 1000
    dst = stick / "leak.txt"
    copy: subprocess.Popen[bytes] | None = None
    with live_server(settings_for(tmp_path / "data")) as srv, srv.client() as admin:
        key = srv.key("ingest", "agent e2e")
        state = tmp_path / "state"
        extra = ["--removable-mounts", str(media / "*"), "--sources", "process,mounts,files,heartbeat"]
        with agent_process(srv.url, key, state, extra):
            info = wait_for(lambda: hunt(admin, "DeviceInfo | take 1"), 30, "the agent's heartbeat")[0]
            device = info["DeviceId"]
            assert len(device) == 40 and info["OSPlatform"] == "Linux"
            assert json.loads(info["AdditionalFields"])["AgentDroppedEvents"] == 0
            reason = mount_tmpfs(stick)
            if reason:
                pytest.skip(reason)
            try:
                mounted = wait_for(
                    lambda: hunt(admin, f'DeviceEvents | where ActionType == "UsbDriveMounted" and FolderPath == "{stick}"'),
                    30, "the UsbDriveMounted row",
                )
                fields = json.loads(mounted[0]["AdditionalFields"])
                assert fields["DriveLetter"] == str(stick) and fields["FileSystem"] == "tmpfs"
                assert fields["RemovableBy"] == "mount point glob"
                # The agent reported the mount, so it watches it: a user copies a file onto it.
                # `; true` keeps the shell from exec'ing cp in place: the shell stays cp's parent.
                copy = subprocess.Popen(["sh", "-c", f"cp {src} {dst}; true"])
                procs = wait_for(
                    lambda: hunt(admin, f'DeviceProcessEvents | where FileName == "cp" and ProcessCommandLine has "{dst}"'),
                    30, "cp's DeviceProcessEvents row",
                )
                with open(src, "wb") as pipe:  # the data flows: cp writes the file on the stick
                    pipe.write(content)
                assert copy.wait(30) == 0
                cp = procs[0]
                assert cp["ActionType"] == "ProcessCreated" and cp["DeviceId"] == device
                assert cp["ProcessCommandLine"] == f"cp {src} {dst}"
                assert cp["FolderPath"].endswith("/cp") and len(cp["SHA256"]) == 64
                assert cp["InitiatingProcessFileName"] in SHELLS
                assert cp["InitiatingProcessCommandLine"] == f"sh -c 'cp {src} {dst}; true'"
                assert cp["AccountName"] == "root" and cp["InitiatingProcessAccountName"] == "root"
                files = wait_for(
                    lambda: hunt(admin, f'DeviceFileEvents | where FolderPath == "{dst}"'), 30, "the DeviceFileEvents row",
                )
                f = files[0]
                assert (f["ActionType"], f["FileName"]) == ("FileCreated", "leak.txt")
                assert f["SHA256"] == hashlib.sha256(content).hexdigest() and f["FileSize"] == len(content)
                assert f["InitiatingProcessFileName"] == "cp" and f["InitiatingProcessId"] == cp["ProcessId"]
                assert f["InitiatingProcessParentFileName"] in SHELLS
                # Rewriting the file is a modification by the new writer.
                subprocess.run(["sh", "-c", f"echo more >> {dst}; true"], check=True)
                wait_for(
                    lambda: hunt(admin, f'DeviceFileEvents | where FolderPath == "{dst}" and ActionType == "FileModified"'),
                    30, "the FileModified row",
                )
            finally:
                if copy is not None and copy.poll() is None:
                    copy.kill()
                    with contextlib.suppress(OSError):  # unblock cp's open() of the pipe
                        os.close(os.open(src, os.O_WRONLY | os.O_NONBLOCK))
                    copy.wait()
                umount(stick)
            wait_for(
                lambda: hunt(admin, f'DeviceEvents | where ActionType == "UsbDriveUnmounted" and FolderPath == "{stick}"'),
                30, "the UsbDriveUnmounted row",
            )

        report_ids = hunt(admin, "union DeviceProcessEvents, DeviceFileEvents, DeviceEvents, DeviceInfo | summarize n = count(), d = dcount(ReportId)")
        assert report_ids[0]["n"] == report_ids[0]["d"]

        # The seed rule, adapted to the test's mount path, raises an alert with the process tree.
        r = admin.post("/api/detections/rules", json={
            "name": "File copied to removable media",
            "query": f'DeviceProcessEvents | where Timestamp > ago(2h) | where ProcessCommandLine contains "{stick}"',
            "frequency": "1h", "severity": "medium", "category": "Exfiltration",
            "alertTitle": "File copied to USB on {{DeviceName}}",
        })
        assert r.status_code == 201, r.text
        run = admin.post(f"/api/detections/rules/{r.json()['id']}/run").json()
        # mount, the shells, cp, umount: each command line names the stick.
        assert run["status"] == "completed" and run["alertsCreated"] >= 2, run
        [alert] = [a for a in admin.get("/api/alerts").json()["value"] if a["reportId"] == str(cp["ReportId"])]
        assert alert["deviceId"] == device
        tree = admin.get(f"/api/alerts/{alert['id']}/process-tree").json()
        assert tree["process"]["commandLine"] == f"cp {src} {dst}"
        assert tree["path"][-1] == "cp" and tree["path"][-2] in SHELLS
        # The shell's own creation was captured too, so the tree goes above it (to pytest's python).
        assert len(tree["path"]) >= 3 and tree["ancestors"][-1]["commandLine"] == f"sh -c 'cp {src} {dst}; true'"


def test_filesystems_without_file_handles_fall_back_to_a_mount_mark(tmp_path: Path, kernel_ok: None) -> None:
    """exFAT or NTFS sticks refuse fanotify's FID mode: the fallback still reports the writes
    (as FileModified, hashed, with the writer), forced here on a tmpfs."""
    stick = tmp_path / "exfat-stick"
    reason = mount_tmpfs(stick)
    if reason:
        pytest.skip(reason)
    src = FanotifySource(ProcessTable(Hashes()), "host", exec_wait_s=0.0, force_classic=True)
    stop = threading.Event()
    got: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: got.extend(e.row for e in src.events(stop)))
    try:
        src.watch(Mount(0, 0, 0, str(stick), "exfat", "/dev/sdz1"))
        reader.start()
        # A shell that lives a moment after writing, so its /proc can be read for the row.
        subprocess.run(["sh", "-c", f"printf secret > {stick}/a.txt; sleep 0.3"], check=True)
        wait_for(lambda: got, 10, "the file event")
    finally:
        stop.set()
        if reader.is_alive():
            reader.join(5)
        umount(stick)
    row = got[0]
    assert (row["ActionType"], row["FolderPath"]) == ("FileModified", f"{stick}/a.txt")
    assert row["SHA256"] == hashlib.sha256(b"secret").hexdigest()
    assert row["InitiatingProcessFileName"] in SHELLS
    assert "no file handles" in json.loads(str(row["AdditionalFields"]))["FanotifyMode"]
