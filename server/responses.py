"""JSON responses rendered with orjson.

FastAPI deprecated its own ``ORJSONResponse``; this is the same idea in a few lines, kept because
orjson renders datetimes, numpy scalars and large result sets much faster than the stdlib.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
