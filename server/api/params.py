"""Path parameters shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# SQLite rowids are signed 64-bit: a larger id cannot exist, and passing one to SQLite raises
# OverflowError (a 500). Bounding the parameter makes it a 400 in the one error shape instead.
RowId = Annotated[int, Path(ge=-(2**63), le=2**63 - 1)]
