"""Ingest: request bodies to validated Arrow tables in the storage schema.

``body`` decompresses with a hard cap, ``parse`` turns bytes into records (JSON array, NDJSON,
Defender streaming export), ``convert`` validates records against the catalog and builds the
Arrow table that ``Storage.append`` takes. Nothing here knows about HTTP routing; problems are
raised as ``server.errors.ApiError`` in the one error shape.
"""

from server.ingest.body import decode_body
from server.ingest.convert import (
    BatchRejected,
    Converted,
    convert_ndjson,
    convert_records,
    ingest_schema,
    parse_datetimes,
)
from server.ingest.parse import parse_records, parse_streaming

__all__ = [
    "BatchRejected",
    "Converted",
    "convert_ndjson",
    "convert_records",
    "decode_body",
    "ingest_schema",
    "parse_datetimes",
    "parse_records",
    "parse_streaming",
]
