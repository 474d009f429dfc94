"""Building the device fleet: a mix of Windows laptops, Macs and Linux servers."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta

from server.demo.model import TENANT_SID, Adapter, Device, User, rand_guid

FIRST_NAMES = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "nina", "oscar", "peggy", "rupert", "sybil", "trent", "ursula", "victor", "wendy", "xavier",
    "yolanda", "zach", "amir", "beatriz", "chen", "dmitri", "eun", "fatima", "gustavo", "hana",
]
SURNAMES = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "Larsen", "Kim", "Rossi", "Dubois", "Silva"]
SERVER_ROLES = ["web", "db", "build", "jump", "app", "files", "mon", "cache"]

# The user and Mac of the USB scenario: device 0 of every fleet.
SCENARIO_USER = "alice"


def _device_id(seed: int, index: int) -> str:
    # Defender DeviceIds are 40 hex digits.
    return hashlib.sha1(f"quarry-demo-device:{seed}:{index}".encode()).hexdigest()


def _mac_address(rng: random.Random) -> str:
    return "-".join(f"{rng.randrange(256):02X}" for _ in range(6))


def _os_plan(n: int) -> list[str]:
    """Which OS each device index runs: device 0 is the scenario Mac, then a realistic mix."""
    if n <= 0:
        return []
    n_mac = max(1, round(n * 0.25))
    n_linux = round(n * 0.2) if n >= 3 else 0
    n_win = n - n_mac - n_linux
    if n >= 2 and n_win == 0:
        n_win, n_mac = 1, n_mac - 1
    rest = ["Windows"] * n_win + ["macOS"] * (n_mac - 1) + ["Linux"] * n_linux
    # Interleave deterministically so small fleets (tests) still mix platforms.
    rest.sort(key=lambda os: {"Windows": 0, "Linux": 1, "macOS": 2}[os])
    interleaved: list[str] = []
    pools = {k: [x for x in rest if x == k] for k in ("Windows", "Linux", "macOS")}
    while any(pools.values()):
        for k in ("Windows", "Linux", "macOS", "Windows"):
            if pools[k]:
                interleaved.append(pools[k].pop())
    return ["macOS", *interleaved]


def build_fleet(n: int, seed: int, start: datetime) -> list[Device]:
    fleet: list[Device] = []
    user_i = 0
    role_i = 0
    for index, os in enumerate(_os_plan(n)):
        rng = random.Random(f"quarry-demo:{seed}:{index}")
        user: User | None = None
        if os != "Linux":
            base = FIRST_NAMES[user_i % len(FIRST_NAMES)]
            name = base if user_i < len(FIRST_NAMES) else f"{base}{user_i // len(FIRST_NAMES) + 1}"
            user_i += 1
            rid = 1100 + user_i
            user = User(name, f"{name.title()} {rng.choice(SURNAMES)}", f"{TENANT_SID}-{rid}", rand_guid(rng))
        if os == "Windows":
            assert user is not None
            fqdn = f"lt-{user.name}.corp.example.com"
            win11 = rng.random() < 0.7
            platform, version, build, info = (
                ("Windows11", "23H2", 22631, "23H2") if win11 else ("Windows10", "22H2", 19045, "22H2")
            )
            vendor, model = rng.choice([("Dell Inc.", "Latitude 7440"), ("LENOVO", "ThinkPad T14 Gen 4"),
                                        ("HP", "EliteBook 840 G10")])
            dtype, distro, group = "Workstation", None, "Workstations"
            client = "10.8760.22621.3527"
            adapters = [Adapter("Ethernet", "Ethernet", "Intel Corporation", _mac_address(rng),
                                f"10.10.{(index // 200) + 1}.{index % 200 + 20}", 16, "10.10.0.1")]
        elif os == "macOS":
            assert user is not None
            fqdn = f"mbp-{user.name}.corp.example.com"
            platform, version, build, info = "macOS", "14.5", None, "Sonoma"
            vendor, model = "Apple Inc.", rng.choice(["MacBookPro18,3", "Mac14,9", "Mac15,3"])
            dtype, distro, group = "Workstation", None, "Workstations"
            client = "101.24052.0004"
            adapters = [Adapter("en0", "Wireless80211", "Apple Inc.", _mac_address(rng),
                                f"10.10.{(index // 200) + 1}.{index % 200 + 20}", 16, "10.10.0.1")]
        else:
            role = SERVER_ROLES[role_i % len(SERVER_ROLES)]
            fqdn = f"srv-{role}-{role_i // len(SERVER_ROLES) + 1:02d}.corp.example.com"
            role_i += 1
            platform, version, build, info = "Linux", "22.04", None, "Jammy Jellyfish"
            vendor, model = "VMware, Inc.", "VMware Virtual Platform"
            dtype, distro, group = "Server", "Ubuntu", "Servers"
            client = "101.24052.0002"
            adapters = [Adapter("eth0", "Ethernet", "VMware", _mac_address(rng),
                                f"10.20.0.{index % 250 + 4}", 24, "10.20.0.1")]
        public_ip = "203.0.113.10" if dtype == "Workstation" else f"198.51.100.{20 + index % 200}"
        boot = start - timedelta(days=rng.uniform(0.5, 12))
        fleet.append(Device(
            index=index, device_id=_device_id(seed, index), name=fqdn, os=os,  # type: ignore[arg-type]
            platform=platform, os_version=version, os_build=build, os_version_info=info,
            distribution=distro, device_type=dtype, vendor=vendor, model=model,
            aad_device_id=rand_guid(rng), public_ip=public_ip, client_version=client,
            machine_group=group, user=user, adapters=adapters, boot=boot, rng=rng,
        ))
    return fleet
