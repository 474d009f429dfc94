"""quarry-agent device actions against the real server: the investigation package is built and
uploaded, an antivirus scan and an automated investigation are answered honestly, and isolation
is tested in a network namespace the test makes (ip netns + veth): while isolated, the agent's
host reaches the Quarry server's address and port and nothing else; released, it reaches both."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.auth import create_key
from tests.notify_helpers import LiveServer, settings_for
from tests.support.agent import agent_process, hunt, wait_for

pytestmark = pytest.mark.slow
DEVICE = "a9e1c0ffee0000000000000000000000000000aa"


def finished(admin: httpx.Client, action_id: str) -> dict[str, Any] | None:
    actions = admin.get(f"/api/devices/{DEVICE}/actions").json()["value"]
    [a] = [x for x in actions if x["id"] == action_id]
    return a if a["status"] in ("Succeeded", "Failed") else None


def run_action(admin: httpx.Client, kind: str) -> dict[str, Any]:
    r = admin.post(f"/api/devices/{DEVICE}/actions", json={"type": kind, "comment": "test"})
    assert r.status_code == 201, r.text
    return wait_for(lambda: finished(admin, r.json()["id"]), 20, f"the {kind} result")


def test_package_scan_and_unsupported_actions(tmp_path: Path) -> None:
    with LiveServer(create_app(settings_for(tmp_path / "data"))) as srv, srv.client() as admin:
        with agent_process(srv.url, srv.key("ingest"), tmp_path / "state",
                           ["--sources", "heartbeat,actions", "--action-poll-s", "0.3", "--device-id", DEVICE]):
            wait_for(lambda: hunt(admin, "DeviceInfo"), 15, "the heartbeat")
            wait_for(lambda: list((tmp_path / "state" / "recent").glob("*DeviceInfo*")), 10, "a sent batch")
            pkg = run_action(admin, "collectInvestigationPackage")
            assert pkg["status"] == "Succeeded", pkg
            r = admin.get(f"/api/devices/{DEVICE}/actions/{pkg['id']}/package")
            assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
            assert hashlib.sha256(r.content).hexdigest() == pkg["resultDetails"]["sha256"]
            with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
                names = tar.getnames()
                manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            assert manifest["deviceId"] == DEVICE
            assert any(n.startswith("events/recent/") and "DeviceInfo" in n for n in names)
            assert "system/mountinfo.txt" in names and sorted(names) == sorted(pkg["resultDetails"]["files"])
            audit = admin.get(f"/api/devices/{DEVICE}/actions/audit").json()["value"]
            assert [e["detail"]["sha256"] for e in audit if e["event"] == "package_uploaded"] == [pkg["resultDetails"]["sha256"]]

            scan = run_action(admin, "runAntivirusScan")
            if shutil.which("clamscan") is None:
                assert scan["status"] == "Failed" and "clamscan is not installed" in scan["resultComment"]
            else:
                assert scan["status"] == "Succeeded" and "ClamAV scan" in scan["resultComment"]
            inv = run_action(admin, "initiateInvestigation")
            assert inv["status"] == "Failed" and inv["resultComment"].startswith("unsupported")
        # A closed action's upload is refused; bad bodies get clear errors.
        with srv.client(srv.key("ingest")) as agent:
            url = f"/api/devices/{DEVICE}/actions/{pkg['id']}/package"
            assert agent.put(url, content=b"\x1f\x8b...").status_code == 409
            assert agent.put(f"/api/devices/{DEVICE}/actions/{inv['id']}/package", content=b"x").json()["errors"][0]["code"] == "invalid_action"
        # A key bound to another device cannot upload for this one.
        other = create_key(srv.app.state.metadata, "ingest", "other agent", devices=["another-device"])
        with srv.client(other) as agent:
            r = agent.put(f"/api/devices/{DEVICE}/actions/{pkg['id']}/package", content=b"\x1f\x8b")
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == "device_not_allowed"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """(namespace, host-side address, namespace-side address) of a fresh veth link."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces and nftables need root")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (.ci/run installs nftables)")
    tag = f"{random.randrange(16**6):06x}"
    ns, host_if, ns_if = f"qa{tag}", f"qh{tag}", f"qn{tag}"
    net = random.randrange(1, 250)
    host_ip, ns_ip = f"10.231.{net}.1", f"10.231.{net}.2"
    try:
        _run("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create a network namespace: {e.stderr.strip()}")
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)


def reachable(ns: str, host: str, port: int) -> bool:
    code = f"import socket\ntry:\n socket.create_connection(({host!r}, {port}), timeout=1).close()\nexcept OSError:\n raise SystemExit(1)"
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def test_isolation_keeps_only_the_server_reachable(tmp_path: Path, netns: tuple[str, str, str]) -> None:
    ns, host_ip, _ = netns
    other = socket.create_server((host_ip, 0))  # any other service on the same host
    other_port = other.getsockname()[1]
    try:
        app = create_app(settings_for(tmp_path / "data"))
        with LiveServer(app, host=host_ip) as srv, srv.client() as admin, agent_process(
            srv.url, srv.key("ingest"), tmp_path / "state",
            ["--sources", "heartbeat,actions", "--action-poll-s", "0.3", "--device-id", DEVICE],
            prefix=["ip", "netns", "exec", ns],
        ):
            wait_for(lambda: hunt(admin, "DeviceInfo"), 15, "the heartbeat from the namespace")
            assert reachable(ns, host_ip, other_port) and reachable(ns, host_ip, srv.port)
            iso = run_action(admin, "isolate")
            assert iso["status"] == "Succeeded", iso
            assert iso["resultDetails"]["allowed"] == [f"{host_ip}:{srv.port}/tcp"]
            assert reachable(ns, host_ip, srv.port)
            assert not reachable(ns, host_ip, other_port)
            rel = run_action(admin, "unisolate")  # reported through the isolation itself
            assert rel["status"] == "Succeeded" and rel["resultDetails"]["wasIsolated"] is True
            assert reachable(ns, host_ip, other_port)
    finally:
        other.close()
