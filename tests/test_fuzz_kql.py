"""Fuzzing KQL (issue 9, "keep it so"): queries derived from the grammar and mutations of the
corpus go through the compiler (never an exception, always within its limits) and through the
real server run as a separate process (never a 5xx, never a dead process, an answer within the
timeout plus 2 s).

Seeded and short here (``QUARRY_FUZZ_EXAMPLES``, default 20 per property); ``make fuzz`` runs
the same properties with many more examples (figures in docs/limits.md#fuzzing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kql import CompileOptions, compile_kql
from schema.catalog import default_catalog
from tests.support.kqlgen import mutations, queries
from tests.test_query_hardening import ServerProcess

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("QUARRY_FUZZ_EXAMPLES", "20"))
# each live example is an HTTP round trip (a few reach the timeout): a tenth of the budget
LIVE_EXAMPLES = max(EXAMPLES // 10, min(EXAMPLES, 20))
TIMEOUT_S = 5.0
CATALOG = default_catalog()
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                suppress_health_check=list(HealthCheck), database=None)


COMPILE_S = 5.0


def _compiles_or_explains(text: str) -> None:
    t0 = time.monotonic()
    # raises only on a compiler bug; stops itself at its deadline, as under a query's timeout
    compiled = compile_kql(text, CATALOG, CompileOptions(deadline=t0 + COMPILE_S))
    # past the deadline only by the step running when it passed (rendering `search *`'s SQL, the
    # largest, takes ~2 s here; more on a loaded machine)
    assert time.monotonic() - t0 < COMPILE_S + 8, text[:200]
    if not compiled.ok:
        assert compiled.errors and all(e.message for e in compiled.errors)
    else:
        assert compiled.sql is not None or compiled.needs_probe


@FUZZ
@given(queries())
def test_grammar_derivations_compile_or_explain(text: str) -> None:
    _compiles_or_explains(text)


@FUZZ
@given(mutations())
def test_corpus_mutations_compile_or_explain(text: str) -> None:
    _compiles_or_explains(text)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("fuzz-kql"), QUARRY_QUERY_TIMEOUT_S=str(TIMEOUT_S),
                      QUARRY_QUERY_MEMORY_LIMIT="1GB")
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.slow
def test_the_server_never_fails_on_fuzzed_queries(srv: ServerProcess) -> None:
    seen: list[tuple[int, float, str]] = []

    @settings(FUZZ, max_examples=LIVE_EXAMPLES)
    @given(st.one_of(queries(), mutations()))
    def run(text: str) -> None:
        t0 = time.monotonic()
        with srv.client(timeout=TIMEOUT_S + 30) as c:
            r = c.post("/api/query", json={"query": text})
        elapsed = time.monotonic() - t0
        seen.append((r.status_code, elapsed, text[:120]))
        assert r.status_code < 500 or r.status_code in (503, 504), (r.status_code, r.text[:300], text[:300])
        assert elapsed < TIMEOUT_S + 2, (elapsed, text[:300])
        assert srv.alive()

    run()
    assert srv.alive()
    assert seen
