"""DeviceInfo and DeviceNetworkInfo heartbeats: at start, then every ``interval_s``.

DeviceInfo carries the OS facts and, in AdditionalFields, the agent's own health: events dropped
because the disk queue was full (AgentDroppedEvents), events the server refused
(AgentRejectedEvents), bytes waiting in the queue, events lost by the kernel sources.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import platform
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from quarry_agent import __version__
from quarry_agent.mapping import dumps
from quarry_agent.sources import Event

SIOCGIFADDR, SIOCGIFNETMASK = 0x8915, 0x891B


def os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k] = v.strip().strip('"')
    except OSError:
        pass
    return out


def _ipv4(ifname: str) -> tuple[str, int] | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", ifname.encode()[:15])
        try:
            addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])
            mask = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24])
        except OSError:
            return None
    return addr, ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen


def _ipv6() -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        hexaddr, _idx, plen, _scope, _flags, name = line.split()
        addr = str(ipaddress.IPv6Address(bytes.fromhex(hexaddr)))
        out.setdefault(name, []).append((addr, int(plen, 16)))
    return out


def _address_type(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.is_loopback:
        return "Loopback"
    if ip.is_link_local:
        return "LinkLocal"
    return "Private" if ip.is_private else "Public"


def _gateways() -> list[str]:
    out = []
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == "00000000" and int(f[3], 16) & 2:
                out.append(socket.inet_ntoa(struct.pack("<I", int(f[2], 16))))
    except (OSError, IndexError, ValueError):
        pass
    return out


def _dns() -> list[str]:
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        return []
    return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver ") and len(line.split()) > 1]


def interfaces() -> list[dict[str, Any]]:
    """One DeviceNetworkInfo row per network interface (Linux sysfs and procfs)."""
    rows = []
    v6 = _ipv6()
    gateways, dns = _gateways(), _dns()
    net = Path("/sys/class/net")
    names = sorted(p.name for p in net.iterdir()) if net.is_dir() else sorted(v6)
    for name in names:
        base = net / name

        def read(attr: str, base: Path = base) -> str:
            try:
                return (base / attr).read_text().strip()
            except OSError:
                return ""

        addrs = []
        v4 = _ipv4(name)
        if v4:
            addrs.append({"IPAddress": v4[0], "SubnetPrefix": v4[1], "AddressType": _address_type(v4[0])})
        for addr, plen in v6.get(name, []):
            addrs.append({"IPAddress": addr, "SubnetPrefix": plen, "AddressType": _address_type(addr)})
        kind = read("type")
        rows.append({
            "NetworkAdapterName": name,
            "MacAddress": read("address").replace(":", "").upper(),
            "NetworkAdapterType": {"1": "Ethernet", "772": "SoftwareLoopback"}.get(kind, "Other"),
            "NetworkAdapterStatus": "Up" if read("operstate") in ("up", "unknown") and read("carrier") != "0" else "Down",
            "IPAddresses": json.dumps(addrs),
            "DefaultGateways": json.dumps(gateways) if name != "lo" else "[]",
            "DnsAddresses": json.dumps(dns),
        })
    return rows


class HeartbeatSource:
    name = "heartbeat"

    def __init__(self, machine_id: str, stats: Callable[[], dict[str, Any]], interval_s: float = 300.0) -> None:
        self.machine_id = machine_id
        self.stats = stats
        self.interval_s = interval_s

    def device_info(self) -> Event:
        rel = os_release()
        system = platform.system()
        ips = sorted({a["IPAddress"] for r in interfaces() for a in json.loads(r["IPAddresses"])
                      if a["AddressType"] != "Loopback"}) if system == "Linux" else []
        extra = {"MachineId": self.machine_id, "KernelVersion": platform.release(), "IPAddresses": ips,
                 **self.stats()}
        row = {
            "ClientVersion": f"quarry-agent {__version__}",
            "OSPlatform": {"Darwin": "macOS"}.get(system, system),
            "OSArchitecture": "64-bit" if platform.architecture()[0] == "64bit" else "32-bit",
            "OSDistribution": rel.get("ID", ""),
            "OSVersion": rel.get("VERSION_ID", "") or platform.mac_ver()[0] or platform.release(),
            "OSVersionInfo": rel.get("PRETTY_NAME", ""),
            "LoggedOnUsers": dumps(logged_on_users()),
            "OnboardingStatus": "Onboarded",
            "SensorHealthState": "Active",
            "DeviceType": "Workstation",
            "AdditionalFields": dumps(extra),
        }
        return Event("DeviceInfo", {k: v for k, v in row.items() if v != ""})

    def events(self, stop: threading.Event) -> Iterator[Event]:
        while True:
            yield self.device_info()
            if platform.system() == "Linux":
                for row in interfaces():
                    yield Event("DeviceNetworkInfo", row)
            if stop.wait(self.interval_s):
                return


def logged_on_users() -> list[dict[str, str]]:
    """Users with a session, from ``who`` (utmp); empty where it is unavailable."""
    try:
        out = subprocess.run(["who"], capture_output=True, text=True, timeout=5, check=False).stdout
    except OSError:
        return []
    names = sorted({line.split()[0] for line in out.splitlines() if line.strip()})
    domain = socket.gethostname()
    return [{"UserName": n, "DomainName": domain} for n in names]

