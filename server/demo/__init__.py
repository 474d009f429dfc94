"""Synthetic Defender telemetry: the `quarry demo` dataset, the USB scenario and bulk rows.

The stable API other parts (tests, benchmarks, the KQL corpus) build on:

- ``generate(catalog, *, start, end, devices=40, seed=0, events_per_device_per_day=300,
  tables=None) -> dict[str, pyarrow.Table]``: every catalog table with its exact schema.
- ``usb_scenario(device_id, device_name, at) -> dict[str, list[dict]]``: JSON-ready rows.
- ``bulk_process_events(n_rows, start, end, seed=0, devices=200) -> pyarrow.Table``: fast
  DeviceProcessEvents rows for benchmarks; ``iter_bulk_process_events(..., batch_rows=250_000)``
  yields the same in time-ordered batches with bounded memory.
"""

from server.demo.arrow import arrow_schema, json_ready, rows_to_table
from server.demo.bulk import bulk_process_events, iter_bulk_process_events
from server.demo.generator import DEFAULT_EVENTS_PER_DEVICE_PER_DAY, generate
from server.demo.scenario import CP_COMMAND_LINE, LEAK_TARGET, USB_FIELDS, VOLUME, usb_scenario

__all__ = [
    "CP_COMMAND_LINE",
    "DEFAULT_EVENTS_PER_DEVICE_PER_DAY",
    "LEAK_TARGET",
    "USB_FIELDS",
    "VOLUME",
    "arrow_schema",
    "bulk_process_events",
    "generate",
    "iter_bulk_process_events",
    "json_ready",
    "rows_to_table",
    "usb_scenario",
]
