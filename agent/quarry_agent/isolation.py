"""Network isolation with nftables: only the Quarry server stays reachable.

``isolate`` loads one table, ``inet quarry_isolation``, whose input and output chains drop
everything except loopback and TCP to/from the server's addresses and port (resolved when the
action runs: a server that later moves to another address is cut off too; docs/agent.md says
so). Loading is atomic (``nft -f``) and idempotent (the table is replaced); ``release`` deletes the
table. The rules live in the kernel, so isolation survives an agent restart, as it should.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
from typing import Any
from urllib.parse import urlsplit

TABLE = "quarry_isolation"


class IsolationError(Exception):
    pass


def _nft(script: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    nft = shutil.which("nft")
    if nft is None:
        raise IsolationError("nftables is not installed (no nft command): cannot isolate")
    return subprocess.run(
        [nft, *args], input=script, capture_output=True, text=True, timeout=30, check=False
    )


def server_endpoint(url: str) -> tuple[list[str], int]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise IsolationError(f"cannot tell the server's host from {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise IsolationError(f"cannot resolve the server {parts.hostname}: {e}") from None
    return sorted({str(i[4][0]) for i in infos}), port


def ruleset(addresses: list[str], port: int) -> str:
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    out_rules, in_rules = [], []
    if v4:
        out_rules.append(f"ip daddr {{ {', '.join(v4)} }} tcp dport {port} accept")
        in_rules.append(f"ip saddr {{ {', '.join(v4)} }} tcp sport {port} accept")
    if v6:
        out_rules.append(f"ip6 daddr {{ {', '.join(v6)} }} tcp dport {port} accept")
        in_rules.append(f"ip6 saddr {{ {', '.join(v6)} }} tcp sport {port} accept")
        # IPv6 cannot reach even the server without neighbour discovery.
        nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept"
        out_rules.append(nd)
        in_rules.append(nd)
    body_in = "\n        ".join(in_rules)
    body_out = "\n        ".join(out_rules)
    return f"""add table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain input {{
        type filter hook input priority -200; policy drop;
        iif "lo" accept
        {body_in}
    }}
    chain output {{
        type filter hook output priority -200; policy drop;
        oif "lo" accept
        {body_out}
    }}
}}
"""


def isolate(server_url: str) -> dict[str, Any]:
    addresses, port = server_endpoint(server_url)
    r = _nft(ruleset(addresses, port), "-f", "-")
    if r.returncode != 0:
        raise IsolationError(f"nft refused the isolation rules: {r.stderr.strip()}")
    return {"table": f"inet {TABLE}", "allowed": [f"{a}:{port}/tcp" for a in addresses]}


def release() -> dict[str, Any]:
    r = _nft(None, "delete", "table", "inet", TABLE)
    if r.returncode != 0:
        if "No such file" in r.stderr:
            return {"table": f"inet {TABLE}", "wasIsolated": False}
        raise IsolationError(f"nft could not remove the isolation rules: {r.stderr.strip()}")
    return {"table": f"inet {TABLE}", "wasIsolated": True}


def is_isolated() -> bool:
    try:
        return _nft(None, "list", "table", "inet", TABLE).returncode == 0
    except IsolationError:
        return False
