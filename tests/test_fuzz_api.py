"""Schemathesis over the OpenAPI of every route, with a valid admin key, against the real server
run as a separate process: the property is "never a 5xx" (schemathesis' not_a_server_error),
and the process is alive afterwards.

The schema comes from the app itself (the served /openapi.json needs a key too). Seeded and short
here (one example per operation); ``make fuzz`` runs more (``QUARRY_FUZZ_EXAMPLES`` / 100 per
operation, or ``QUARRY_FUZZ_API_EXAMPLES``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from server.app import create_app
from server.settings import Settings
from tests.test_query_hardening import KEY, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

# per operation (66 of them): `make fuzz`'s QUARRY_FUZZ_EXAMPLES of 5000 gives 50 each
EXAMPLES = int(os.environ.get("QUARRY_FUZZ_API_EXAMPLES")
               or max(1, int(os.environ.get("QUARRY_FUZZ_EXAMPLES", "100")) // 100))

# The app only builds its routes here; nothing is opened until its lifespan runs.
_document = create_app(Settings(data_dir=Path("/nonexistent-fuzz-schema"), scheduler_enabled=False)).openapi()
schema = schemathesis.openapi.from_dict(_document)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("fuzz-api"), QUARRY_QUERY_TIMEOUT_S="5",
                      QUARRY_QUERY_MEMORY_LIMIT="1GB")
    try:
        yield s
    finally:
        s.stop()


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck),
          database=None)
def test_no_route_answers_5xx(case: schemathesis.Case, srv: ServerProcess) -> None:
    response = case.call(base_url=srv.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    # 503 is the documented answer of a route whose dependency is busy or unavailable
    if response.status_code != 503:
        case.validate_response(response, checks=[not_a_server_error])
    assert srv.alive()
