"""Rows an ingest key bound to devices may not write.

A key bound to device ids (server/auth.py) may ingest only rows whose ``DeviceId`` is one of
them. Anything else refuses the whole request with 403 ``device_not_allowed``, one entry per
refused row (at most ``MAX_ERRORS``) with ``row``, ``table``, ``column`` and ``value``, and
nothing is written: a request is one unit, as for invalid rows. Rows of tables without a
``DeviceId`` column (the TVM knowledge-base tables, AlertInfo) cannot be attributed to a device,
so a bound key may not write them at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from server.errors import ApiError
from server.ingest.convert import MAX_ERRORS, show

DEVICE_COLUMN = "DeviceId"


def refuse_foreign_devices(
    batches: Mapping[str, tuple[pa.Table, Sequence[int] | None]],
    allowed: frozenset[str],
) -> None:
    """Raise a 403 ApiError if any row of ``batches`` (table -> (rows, the request's row number
    of each row, or None when row i is request row i)) is not for an ``allowed`` device."""
    entries: list[dict[str, object]] = []
    refused = total = 0
    value_set = pa.array(sorted(allowed), pa.string())
    for table, (data, row_ids) in batches.items():
        total += data.num_rows
        if DEVICE_COLUMN in data.column_names:
            col = data[DEVICE_COLUMN]
            ok = pc.fill_null(pc.is_in(col, value_set=value_set), False)
            bad = pc.indices_nonzero(pc.invert(ok)).to_pylist()
            reason = "this key is not bound to device {value}"
        else:
            col = None
            bad = list(range(data.num_rows))
            reason = f"{table} has no DeviceId: a key bound to devices cannot write it"
        refused += len(bad)
        for i in bad[: MAX_ERRORS]:
            value = col[i].as_py() if col is not None else None
            entries.append({
                "code": "device_not_allowed",
                "message": reason.format(value=repr(show(value))),
                "row": row_ids[i] if row_ids is not None else i,
                "table": table,
                "column": DEVICE_COLUMN,
                "value": show(value),
            })
    if not refused:
        return
    entries.sort(key=lambda e: e["row"])  # type: ignore[arg-type, return-value]
    shown = entries[:MAX_ERRORS]
    more = f" (first {len(shown)} shown)" if refused > len(shown) else ""
    raise ApiError(
        403,
        f"{refused} of {total} rows are for devices this key is not bound to{more}; the batch "
        "was rejected and nothing was written",
        errors=shown,
    )
