"""Device actions: poll ``GET /api/devices/{id}/actions/pending``, run what this agent honestly
can, report each result with ``POST .../actions/{actionId}/result``.

* isolate / unisolate: nftables, only the Quarry server stays reachable (isolation.py);
* collectInvestigationPackage: a tar.gz of the agent's recent and queued events, system logs and
  a snapshot of processes, mounts and network, uploaded with
  ``PUT .../actions/{actionId}/package``;
* runAntivirusScan: ClamAV's ``clamscan`` over removable media, /home and /tmp when installed,
  otherwise Failed, saying that no scanner is installed;
* initiateInvestigation (Defender's cloud-side automated investigation) and anything unknown:
  Failed, "unsupported".

The server returns an action until its result arrives, so a result is written to
``<state>/actions/<id>.json`` before it is reported: after a crash the saved result is reported
again instead of running the action twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from quarry_agent import isolation
from quarry_agent.timefmt import now_iso

if TYPE_CHECKING:
    from quarry_agent.runner import Agent

log = logging.getLogger("quarry_agent.actions")
LOG_FILES = ("/var/log/syslog", "/var/log/messages", "/var/log/auth.log", "/var/log/kern.log",
             "/var/log/system.log", "/var/log/install.log")
MAX_LOG_BYTES = 8 * 1024 * 1024  # the tail of each log file
MAX_PACKAGE_BYTES = 60 * 1024 * 1024
Result = tuple[str, str, dict[str, Any]]  # status, comment, details


class ActionPoller:
    def __init__(self, agent: Agent, poll_s: float) -> None:
        self.agent = agent
        self.poll_s = poll_s
        self.dir = agent.cfg.state_dir / "actions"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handlers: dict[str, Callable[[dict[str, Any]], Result]] = {
            "isolate": self.isolate,
            "unisolate": self.unisolate,
            "collectInvestigationPackage": self.collect_package,
            "runAntivirusScan": self.antivirus_scan,
        }

    @property
    def client(self) -> httpx.Client:
        return self.agent.client

    def run(self) -> None:
        while not self.agent.stop.is_set():
            try:
                self.poll_once()
            except httpx.HTTPError as e:
                log.warning("cannot poll device actions: %s", e)
            except Exception:
                log.exception("device action poll failed")
            self.agent.stop.wait(self.poll_s)

    def poll_once(self) -> None:
        r = self.client.get(f"/api/devices/{self.agent.device_id}/actions/pending")
        if r.status_code != 200:
            log.warning("device action poll: %s %s", r.status_code, r.text[:300])
            return
        for action in r.json().get("value", []):
            if self.agent.stop.is_set():
                return
            saved = self.dir / f"{action['id']}.json"
            if saved.exists():
                result: Result = tuple(json.loads(saved.read_text()))  # type: ignore[assignment]
            else:
                result = self.execute(action)
                tmp = saved.with_suffix(".tmp")
                tmp.write_text(json.dumps(result))
                os.replace(tmp, saved)
            self.report(action, result, saved)

    def execute(self, action: dict[str, Any]) -> Result:
        kind = action.get("type", "")
        log.info("running device action %s %s (%s)", kind, action.get("id"), action.get("requestorComment", ""))
        handler = self.handlers.get(kind)
        if handler is None:
            return ("Failed", f"unsupported: quarry-agent does not implement {kind!r}", {"supported": sorted(self.handlers)})
        try:
            return handler(action)
        except (isolation.IsolationError, OSError, subprocess.SubprocessError) as e:
            return ("Failed", f"{kind} failed: {e}", {})

    def report(self, action: dict[str, Any], result: Result, saved: Path) -> None:
        status, comment, details = result
        r = self.client.post(
            f"/api/devices/{self.agent.device_id}/actions/{action['id']}/result",
            json={"status": status, "comment": comment[:4000], "details": details},
        )
        if r.status_code in (200, 409):  # 409: closed already (cancelled, or reported before)
            saved.unlink(missing_ok=True)
            log.info("device action %s %s: %s %s", action.get("type"), action["id"], status, comment)
        else:
            log.warning("could not report action %s: %s %s", action["id"], r.status_code, r.text[:300])

    # --- handlers -------------------------------------------------------------------------
    def isolate(self, action: dict[str, Any]) -> Result:
        if platform.system() != "Linux":
            return ("Failed", "unsupported: isolation is implemented with nftables (Linux only)", {})
        details = isolation.isolate(self.agent.cfg.server)
        return ("Succeeded", "isolated: only " + ", ".join(details["allowed"]) + " is reachable", details)

    def unisolate(self, action: dict[str, Any]) -> Result:
        if platform.system() != "Linux":
            return ("Failed", "unsupported: isolation is implemented with nftables (Linux only)", {})
        details = isolation.release()
        return ("Succeeded", "released from isolation" if details["wasIsolated"] else "was not isolated", details)

    def antivirus_scan(self, action: dict[str, Any]) -> Result:
        clamscan = shutil.which("clamscan")
        if clamscan is None:
            return ("Failed", "unsupported: no antivirus scanner on this device (ClamAV's clamscan is not installed)", {})
        targets = [p for p in ("/home", "/tmp", "/media", "/run/media", "/Volumes") if os.path.isdir(p)]
        r = subprocess.run([clamscan, "-r", "--infected", "--no-summary", *targets],
                           capture_output=True, text=True, timeout=3600, check=False)
        infected = [line for line in r.stdout.splitlines() if line.endswith("FOUND")]
        if r.returncode in (0, 1):
            return ("Succeeded", f"ClamAV scan of {', '.join(targets)}: {len(infected)} infected",
                    {"scanner": "clamscan", "targets": targets, "infected": infected[:200]})
        return ("Failed", f"clamscan failed ({r.returncode}): {r.stderr.strip()[:500]}", {"scanner": "clamscan"})

    def collect_package(self, action: dict[str, Any]) -> Result:
        data, members = self.build_package()
        digest = hashlib.sha256(data).hexdigest()
        r = self.client.put(
            f"/api/devices/{self.agent.device_id}/actions/{action['id']}/package",
            content=data, headers={"Content-Type": "application/gzip"},
        )
        if r.status_code != 200:
            return ("Failed", f"package upload refused: {r.status_code} {r.text[:500]}", {"sha256": digest})
        return ("Succeeded", f"investigation package uploaded ({len(data)} bytes, {len(members)} files)",
                {"sha256": digest, "bytes": len(data), "files": members})

    def build_package(self) -> tuple[bytes, list[str]]:
        buf = io.BytesIO()
        members: list[str] = []
        state = self.agent.cfg.state_dir

        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
            members.append(name)

        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for sub in ("recent", "queue"):
                for seg in sorted((state / sub).glob("*.ndjson.gz")):
                    tar.add(seg, arcname=f"events/{sub}/{seg.name}")
                    members.append(f"events/{sub}/{seg.name}")
            for path in LOG_FILES:
                try:
                    with open(path, "rb") as f:
                        size = f.seek(0, os.SEEK_END)
                        f.seek(max(0, size - MAX_LOG_BYTES))
                        add_bytes("logs/" + os.path.basename(path), f.read())
                except OSError:
                    continue
            for name, cmd in (("logs/journal.txt", ["journalctl", "--no-pager", "-n", "20000"]),
                              ("system/processes.txt", ["ps", "-eo", "pid,ppid,user,lstart,args"]),
                              ("system/network.txt", ["ip", "addr"]),
                              ("system/sockets.txt", ["ss", "-tupan"])):
                exe = shutil.which(cmd[0])
                if exe is None:
                    continue
                try:
                    out = subprocess.run([exe, *cmd[1:]], capture_output=True, timeout=60, check=False).stdout
                except (OSError, subprocess.SubprocessError):
                    continue
                add_bytes(name, out[-MAX_LOG_BYTES:])
            for name, path in (("system/mountinfo.txt", "/proc/self/mountinfo"), ("system/os-release", "/etc/os-release")):
                try:
                    add_bytes(name, Path(path).read_bytes())
                except OSError:
                    continue
            add_bytes("manifest.json", json.dumps({
                "deviceId": self.agent.device_id, "deviceName": self.agent.device_name,
                "createdAt": now_iso(), "agentStats": self.agent.stats(),
            }, indent=1).encode())
        data = buf.getvalue()
        if len(data) > MAX_PACKAGE_BYTES:
            raise OSError(f"the package is {len(data)} bytes, over the {MAX_PACKAGE_BYTES} byte limit")
        return data, members
