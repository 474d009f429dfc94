"""Ingest endpoints: ``POST /api/ingest/{Table}`` and ``POST /api/ingest/streaming``.

A request is answered 200 only after ``Storage.append`` returned, i.e. after its rows are
fsync'd in the write-ahead log. Validation happens before anything is appended, so a rejected
batch writes nothing. Decompression, parsing and conversion run in a worker thread (they are
CPU-bound and would stall the event loop), at most ``_SLOTS`` at a time so that many large
concurrent bodies cannot multiply memory use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from schema import default_catalog
from schema.catalog import Catalog, Table
from server.auth import IngestKey, request_key
from server.errors import ApiError
from server.ingest.body import decode_body, too_large
from server.ingest.convert import (
    MAX_ERRORS,
    BatchRejected,
    Converted,
    convert_ndjson,
    convert_records,
)
from server.ingest.devices import refuse_foreign_devices
from server.ingest.guard import (
    MAX_COLUMN_NAME,
    check_utf8,
    clip,
    count_lines,
    too_many_rows,
)
from server.ingest.parse import is_ndjson, parse_records, parse_streaming
from server.metrics import get_metrics
from server.responses import OrjsonResponse
from server.storage import Backpressure, BatchError, DiskFull, StorageClosed

router = APIRouter(prefix="/api/ingest", tags=["ingest"])
log = logging.getLogger("quarry.ingest")

# Conversions in flight at once. More than the cores buys nothing (the work is CPU-bound) and
# each one holds a decompressed body plus its parsed form.
_SLOTS = max(2, os.cpu_count() or 2)


def _catalog(request: Request) -> Catalog:
    cat = getattr(request.app.state, "catalog", None)
    return cat if isinstance(cat, Catalog) else default_catalog()


def _slots(request: Request) -> asyncio.Semaphore:
    sem = getattr(request.app.state, "ingest_slots", None)
    if sem is None:
        sem = asyncio.Semaphore(_SLOTS)
        request.app.state.ingest_slots = sem
    return sem


async def _read_raw(request: Request, limit: int) -> bytes:
    """The raw (possibly compressed) body, refused early when it cannot fit the limit.
    Compressed data may be a little larger than its content (incompressible input), hence the
    slack for encoded bodies."""
    encoded = request.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    raw_limit = limit + (limit // 64 + 4096 if encoded else 0)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > raw_limit:
        raise too_large(limit)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > raw_limit:
            raise too_large(limit)
    return bytes(buf)


def _rejected(entries: dict[int, dict[str, Any]], total: int) -> ApiError:
    ordered = [entries[k] for k in sorted(entries)]
    shown = ordered[:MAX_ERRORS]
    more = f" (first {len(shown)} shown)" if len(ordered) > len(shown) else ""
    return ApiError(
        400,
        f"{len(ordered)} of {total} rows are invalid{more}; the batch was rejected and nothing "
        "was written",
        errors=shown,
    )


def _unknown_table(name: str, catalog: Catalog) -> ApiError:
    close = catalog.suggest(name) if len(name) <= MAX_COLUMN_NAME else []
    name = clip(name)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ApiError(
        404,
        f"unknown table '{name}'{hint}",
        errors=[{"code": "unknown_table", "message": f"unknown table '{name}'{hint}",
                 "table": name, "hints": close}],
    )


def _insufficient_storage(e: DiskFull) -> ApiError:
    retry = max(1, math.ceil(float(e.retry_after_s)))
    return ApiError(507, str(e), code="insufficient_storage", headers={"Retry-After": str(retry)})


def _refuse_when_full(request: Request) -> None:
    """While the disk is full, refuse before reading and parsing the body: a storm of retries
    must not cost the CPU of converting bodies that cannot be stored."""
    try:
        request.app.state.storage.check_space()
    except DiskFull as e:
        raise _insufficient_storage(e) from e


def _append(request: Request, batches: dict[str, pa.Table]) -> dict[str, tuple[int, int]]:
    """Append the batches of one request as one unit (``Storage.append_many``): a refusal
    stores none of them, so the client's retry duplicates nothing."""
    try:
        results = request.app.state.storage.append_many(batches)
    except BatchError as e:
        # Storage's own last check (it never writes what it could not read back) refused what
        # validation let through: nothing was written, and the client learns why.
        log.error("ingest: storage refused a validated batch: %s", e)
        raise ApiError(400, f"the batch cannot be stored and was not written: {clip(str(e))}",
                       code="unstorable") from e
    except Backpressure as e:
        retry = max(1, math.ceil(float(e.retry_after_s)))
        raise ApiError(
            503,
            f"storage is catching up with a backlog; retry in {retry} s",
            code="backpressure",
            headers={"Retry-After": str(retry)},
        ) from e
    except DiskFull as e:
        raise _insufficient_storage(e) from e
    except (OSError, StorageClosed) as e:
        # The write-ahead log failed beyond a full disk (an fsync error leaves it unusable until
        # a restart) or the server is shutting down: not acknowledged, and the client should
        # retry rather than see an internal error. /healthz says which.
        log.error("ingest could not be stored: %s", e)
        raise ApiError(503, "storage cannot store events right now (see /healthz); the request "
                       "was not acknowledged", code="unavailable", headers={"Retry-After": "30"}) from e
    scheduler = getattr(request.app.state, "detection_scheduler", None)
    if scheduler is not None and any(r.accepted for r in results.values()):
        scheduler.ingested()  # continuous rules see the new rows now, not at their next poll
    return {name: (int(r.accepted), int(r.expired)) for name, r in results.items()}


def _count_rejected(request: Request, table: str, reason: str, n: int) -> None:
    m = get_metrics(request)
    if m is not None and n:
        m.ingest_rejected.labels(table=table, reason=reason).inc(n)


@dataclass
class _Prepared:
    batches: dict[str, Converted] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    row_ids: dict[str, list[int]] = field(default_factory=dict)  # request row of each table row


def _prepare_table(table: Table, body: bytes, ndjson: bool, max_rows: int) -> Converted:
    check_utf8(body, "ndjson" if ndjson else "json")
    if ndjson:
        if (n := count_lines(body)) > max_rows:
            raise too_many_rows(n, max_rows, "lines")
        fast = convert_ndjson(table, body)
        if fast is not None:
            return fast
    records, lines = parse_records(body, ndjson, max_rows)
    try:
        return convert_records(table, records, allow_unknown=False, lines=lines)
    except BatchRejected as e:
        raise _rejected(e.entries, len(records)) from e


def _prepare_streaming(catalog: Catalog, body: bytes, skip_unknown: bool, max_rows: int
                       ) -> _Prepared:
    check_utf8(body, "streaming")
    batch = parse_streaming(body, set(catalog.tables), max_rows)
    entries: dict[int, dict[str, Any]] = {e["row"]: e for e in batch.errors}
    if batch.unknown_tables and not skip_unknown:
        names = sorted(batch.unknown_tables)[:MAX_ERRORS]
        hints = {n: catalog.suggest(n) if len(n) <= MAX_COLUMN_NAME else [] for n in names}
        more = f" and {len(batch.unknown_tables) - len(names)} more" if (
            len(batch.unknown_tables) > len(names)) else ""
        raise ApiError(
            404,
            f"records for tables Quarry does not have: {', '.join(names)}{more}; nothing was "
            "written "
            "(add ?skipUnknownTables=true to store the rest and count these as skipped)",
            errors=[{"code": "unknown_table", "message": f"unknown table '{n}' "
                     f"({batch.unknown_tables[n]} records)", "table": n, "hints": hints[n]}
                    for n in names],
        )
    prepared = _Prepared(skipped=dict(batch.unknown_tables))
    for name, rows in batch.rows.items():
        table = catalog.table(name)
        assert table is not None  # parse_streaming only routes to known tables
        try:
            prepared.batches[name] = convert_records(
                table, rows, allow_unknown=True, row_ids=batch.indices[name]
            )
            prepared.row_ids[name] = batch.indices[name]
        except BatchRejected as e:
            entries.update(e.entries)
    if entries:
        raise _rejected(entries, batch.total)
    return prepared


@router.post("/streaming", summary="Replay a Defender streaming export (Event Hub or Storage)")
async def ingest_streaming(
    request: Request,
    _key: IngestKey,
    skip_unknown_tables: bool = Query(False, alias="skipUnknownTables"),
) -> OrjsonResponse:
    """Body: ``{"records": [...]}`` (Event Hub) or one record per line (Storage export). Each
    record goes to the table named by its ``category`` ("AdvancedHunting-<Table>"); columns newer
    than our schema are kept in the row's ``_extra`` bag and listed in ``unknownColumns``."""
    settings = request.app.state.settings
    catalog = _catalog(request)
    _refuse_when_full(request)
    raw = await _read_raw(request, settings.max_body_bytes)
    encoding = request.headers.get("content-encoding")
    devices = request_key(request).devices

    def work() -> _Prepared:
        body = decode_body(raw, encoding, settings.max_body_bytes)
        prepared = _prepare_streaming(catalog, body, skip_unknown_tables,
                                      settings.max_batch_rows)
        if devices is not None:
            refuse_foreign_devices({n: (c.table, prepared.row_ids.get(n))
                                    for n, c in prepared.batches.items()}, devices)
        return prepared

    async with _slots(request):
        try:
            prepared = await run_in_threadpool(work)
        except ApiError as e:
            _count_rejected(request, "streaming", e.errors[0].get("code", "invalid"), 1)
            raise
    results = (
        await run_in_threadpool(
            _append, request, {n: c.table for n, c in prepared.batches.items()}
        )
        if prepared.batches
        else {}
    )
    tables = {n: {"accepted": a, "expired": x} for n, (a, x) in results.items()}
    accepted = sum(a for a, _ in results.values())
    expired = sum(x for _, x in results.values())
    m = get_metrics(request)
    if m is not None:
        for name, (a, _) in results.items():
            m.ingest_events.labels(table=name).inc(a)
        m.ingest_bytes.labels(table="streaming").inc(len(raw))
    body: dict[str, Any] = {"accepted": accepted, "expired": expired, "tables": tables,
                            "unknownColumns": {n: c.unknown_columns
                                               for n, c in prepared.batches.items()
                                               if c.unknown_columns}}
    if prepared.skipped:
        body["skippedTables"] = prepared.skipped
    return OrjsonResponse(body)


@router.post("/{table}", summary="Ingest events into one table (JSON array or NDJSON)")
async def ingest_table(table: str, request: Request, _key: IngestKey) -> OrjsonResponse:
    """Body: a JSON array of objects, or NDJSON with ``Content-Type: application/x-ndjson``;
    ``Content-Encoding: gzip`` accepted. 200 ``{"accepted", "expired"}`` once durable."""
    settings = request.app.state.settings
    catalog = _catalog(request)
    spec = catalog.table(table)
    if spec is None:
        raise _unknown_table(table, catalog)
    _refuse_when_full(request)
    raw = await _read_raw(request, settings.max_body_bytes)
    encoding = request.headers.get("content-encoding")
    ndjson = is_ndjson(request.headers.get("content-type"))
    devices = request_key(request).devices

    # Conversion and append run in one worker thread (one hand-off per request, not two). The
    # conversion slot is given back as soon as conversion is done, not after the fsync: the
    # thread asks the event loop to release it, and the handler releases it if the thread could
    # not (exactly once, both on the loop).
    slots = _slots(request)
    loop = asyncio.get_running_loop()
    await slots.acquire()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            slots.release()

    def work() -> tuple[int, int]:
        try:
            body = decode_body(raw, encoding, settings.max_body_bytes)
            conv = _prepare_table(spec, body, ndjson, settings.max_batch_rows)
            del body
            if devices is not None:
                refuse_foreign_devices({table: (conv.table, None)}, devices)
        except ApiError as e:
            _count_rejected(request, table, e.errors[0].get("code", "invalid"),
                            max(1, len(e.errors)))
            raise
        finally:
            loop.call_soon_threadsafe(release)
        if not conv.table.num_rows:
            return 0, 0
        return _append(request, {table: conv.table})[table]

    try:
        accepted, expired = await run_in_threadpool(work)
    finally:
        release()
    m = get_metrics(request)
    if m is not None:
        m.ingest_events.labels(table=table).inc(accepted)
        m.ingest_bytes.labels(table=table).inc(len(raw))
    return OrjsonResponse({"accepted": accepted, "expired": expired, "table": table})
