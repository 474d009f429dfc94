"""The scenario Quarry was born from: a Mac user copies a file onto a USB stick.

The stick mounts (DeviceEvents ``UsbDriveMounted``, with the volume, product and serial number in
AdditionalFields as Defender records them), then the user opens Terminal and runs
``cp Desktop/leak.txt /Volumes/TEST-USB/leak.txt`` from zsh: DeviceProcessEvents rows for
Terminal > zsh > cp whose InitiatingProcess* columns chain exactly, a DeviceFileEvents
``FileCreated`` for the copy, and the unmount ten minutes later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from server.demo import software as sw
from server.demo.model import Device

if TYPE_CHECKING:
    from server.demo.generator import Simulation

VOLUME = "/Volumes/TEST-USB"
LEAK_SOURCE = "Desktop/leak.txt"
LEAK_TARGET = f"{VOLUME}/leak.txt"
CP_COMMAND_LINE = f"cp {LEAK_SOURCE} {LEAK_TARGET}"
LEAK_SIZE = 18_432

# What Defender puts in AdditionalFields for a mounted USB drive. On macOS there is no drive
# letter; the mount point stands in for it, which keeps the classic hunting join
# (`FolderPath startswith DriveLetter`) working for Macs too. BusType 7 is STORAGE_BUS_TYPE USB.
USB_FIELDS: dict[str, Any] = {
    "DriveLetter": VOLUME,
    "BusType": 7,
    "Manufacturer": "SanDisk",
    "ProductName": "Cruzer Blade",
    "ProductRevision": "1.00",
    "SerialNumber": "4C530001120425116375",
    "Volume": VOLUME,
}


def plant_usb_scenario(sim: Simulation, dev: Device, at: datetime) -> None:
    """Emit the scenario's rows on the Mac ``dev`` (already booted) starting at ``at``."""
    from server.demo.generator import open_mac_terminal  # generator imports this module

    sim.device_event(dev, at, "UsbDriveMounted", AdditionalFields=dict(USB_FIELDS))
    _, zsh, _ = open_mac_terminal(sim, dev, at + timedelta(seconds=41, milliseconds=207))
    cp = dev.spawn(zsh, sw.MAC["cp"], CP_COMMAND_LINE, zsh.created + timedelta(seconds=28, milliseconds=530))
    sim.process_created(dev, cp)
    sim.file_event(dev, cp, cp.created + timedelta(milliseconds=14), LEAK_TARGET, "FileCreated", size=LEAK_SIZE)
    sim.device_event(dev, at + timedelta(minutes=10, seconds=3), "UsbDriveUnmounted",
                     AdditionalFields=dict(USB_FIELDS))


def usb_scenario(device_id: str, device_name: str, at: datetime, *, user: str = "alice") -> dict[str, list[dict[str, Any]]]:
    """The scenario's rows for one Mac as JSON-ready dicts (ISO 8601 datetimes), per table.

    Each row has only columns of its table, so the result can be POSTed as is to
    ``/api/ingest/{Table}``. ``at`` is when the stick mounts; every row is within 11 minutes after.
    """
    from schema.catalog import default_catalog
    from server.demo.arrow import json_ready
    from server.demo.fleet import build_fleet
    from server.demo.generator import Simulation, boot_mac
    from server.demo.model import User

    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    dev = build_fleet(1, 0, at)[0]
    dev.device_id, dev.name = device_id, device_name
    if dev.user is not None and user != dev.user.name:
        dev.user = User(user, user.title(), dev.user.sid, dev.user.object_id)
    boot_mac(dev)
    sim = Simulation(at - timedelta(days=1), at + timedelta(days=1), 0, 1)
    plant_usb_scenario(sim, dev, at)
    catalog = default_catalog()
    out: dict[str, list[dict[str, Any]]] = {}
    for table, rows in sim.rows.items():
        cols = set(catalog.tables[table].column_names)
        out[table] = [json_ready({k: v for k, v in r.items() if k in cols}) for r in sorted(rows, key=lambda r: r["Timestamp"])]
    return out
