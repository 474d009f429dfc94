"""Path parameters and request fields shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator

from kql.limits import bad_value_path

# SQLite rowids are signed 64-bit: a larger id cannot exist, and passing one to SQLite raises
# OverflowError (a 500). Bounding the parameter makes it a 400 in the one error shape instead.
RowId = Annotated[int, Path(ge=-(2**63), le=2**63 - 1)]


def _no_lone_surrogate(value: Any) -> Any:
    """A JSON body may escape a lone UTF-16 surrogate (`"\\ud800"`); Python's json decodes it into a
    str that cannot be encoded as UTF-8, so every later step (the engine, SQLite, a response that
    echoes it) would fail with a 500. Refused here, while the request is decoded."""
    where = bad_value_path(value)
    if where is not None:
        raise ValueError(f"holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair) "
                         f"at {where}; send valid Unicode text")
    return value


# KQL text and query parameters as the hunting, Kusto-shaped and detection routes take them.
KqlText = Annotated[str, AfterValidator(_no_lone_surrogate)]
KqlParameters = Annotated[dict[str, Any] | None, AfterValidator(_no_lone_surrogate)]
