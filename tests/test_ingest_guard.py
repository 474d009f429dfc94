"""The body checks of server/ingest/guard.py on their own: depth bounds, line counts, where
invalid UTF-8 is reported."""

from __future__ import annotations

import time

import orjson
import pytest

from server.errors import ApiError
from server.ingest.guard import (
    MAX_DEPTH,
    arrow_may_read,
    check_utf8,
    count_lines,
    too_deep,
)


def nest(depth: int) -> list[object]:
    v: list[object] = []
    for _ in range(depth - 1):
        v = [v]
    return v


@pytest.mark.parametrize("depth", [1, MAX_DEPTH - 1, MAX_DEPTH])
def test_too_deep_accepts_up_to_the_limit(depth: int) -> None:
    assert not too_deep(nest(depth))
    assert not too_deep({"a": [{"b": nest(depth - 3)}]} if depth > 3 else {"a": 1})


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 5_000])
def test_too_deep_refuses_past_the_limit_without_recursing(depth: int) -> None:
    # 5,000 levels would overflow Python's recursion limit in a recursive walk.
    assert too_deep(nest(depth))
    assert too_deep([1, {"x": [2, nest(depth)]}])


def test_arrow_may_read_bounds_each_line() -> None:
    ok = b"\n".join(orjson.dumps({"a": nest(MAX_DEPTH)}) for _ in range(200)) + b"\n"
    assert arrow_may_read(ok)  # each line: the row plus a value of MAX_DEPTH levels
    deep_line = b'{"a":' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}"
    assert not arrow_may_read(ok + deep_line + b"\n")
    # Brackets inside strings only ever make the estimate larger, never smaller.
    assert not arrow_may_read(b'{"s":"' + b"{" * 100 + b'"}\n')
    # Many lines, each with a few openers: no single line is deep.
    assert arrow_may_read(b'{"a":[{"b":[1]}]}\n' * 10_000)


def test_count_lines() -> None:
    assert [count_lines(b) for b in (b"", b"{}", b"{}\n", b"{}\n{}", b"\n\n\n")] == [0, 1, 1, 2, 3]


def _utf8_error(body: bytes, shape: str) -> dict[str, object]:
    with pytest.raises(ApiError) as exc:
        check_utf8(body, shape)
    assert exc.value.status == 400
    return exc.value.errors[0]


def test_invalid_utf8_named_by_row_and_column() -> None:
    good = b'{"FileName":"ok"}'
    bad = b'{"FileName":"ok","FolderPath":"C:\\\\x\xe9"}'
    e = _utf8_error(b"\n".join([good, b"", good, bad]) + b"\n", "ndjson")
    assert (e["code"], e["row"], e["line"], e["column"]) == ("invalid_utf8", 2, 4, "FolderPath")
    e = _utf8_error(b"[" + b",".join([good, good, bad]) + b"]", "json")
    assert (e["row"], e["column"]) == (2, "FolderPath")
    rec = b'{"category":"AdvancedHunting-DeviceProcessEvents","properties":' + bad + b"}"
    e = _utf8_error(b'{"records":[' + rec + b"," + rec + b"]}", "streaming")
    assert (e["row"], e["column"]) == (0, "FolderPath")
    e = _utf8_error(b'{"Fi\xffle":1}', "json")
    assert e["column"] == "Fi\ufffdle" and "column name" in str(e["message"])


def test_invalid_utf8_in_malformed_json_still_has_a_line() -> None:
    e = _utf8_error(b'{"a": 1}\n{"b": "\xff', "ndjson")
    assert e["line"] == 2 and "column" not in e


def test_valid_utf8_passes() -> None:
    check_utf8('{"FileName":"café 漢字 🙂"}'.encode(), "ndjson")
    check_utf8(b"", "json")


def test_arrow_may_read_only_one_object_per_line() -> None:
    assert arrow_may_read(b'{"a":1}\n{}\r\n{}\n\n')
    for body in (b"null\n", b'{}\nnull\n', b" {}\n", b"{}\n\n{}\n", b"", b"[{}]"):
        assert not arrow_may_read(body), body


def test_locating_invalid_utf8_after_millions_of_lines_is_cheap() -> None:
    body = b"\n" * 4_000_000 + b'{"a":1}\n\r\n{"FileName":"\xff"}\n'
    started = time.process_time()
    e = _utf8_error(body, "ndjson")
    assert (e["row"], e["line"], e["column"]) == (1, 4_000_003, "FileName")
    assert time.process_time() - started < 1.0  # no Python object per line


def _may_read_reference(body: bytes, limit: int = MAX_DEPTH + 1) -> bool:
    lines = body.rstrip(b" \t\r\n").split(b"\n")
    return bool(body) and all(ln.startswith(b"{") for ln in lines) and all(
        ln.count(b"{") + ln.count(b"[") <= limit for ln in lines)


def test_arrow_may_read_matches_a_line_by_line_reference() -> None:
    """Across the 64 KiB slices it counts in, and whatever the lines hold."""
    import random

    rnd = random.Random(7)
    pieces = [b'{"a":1}', b'{"a":[{"b":"{["}]}', b"null", b"", b" {}", b'{"x":' + b"[" * 70,
              b'{"k":"' + b"x" * 65_530 + b'"}', b"{}\r"]
    for _ in range(300):
        lines = [rnd.choice(pieces[:2]) for _ in range(rnd.randint(1, 4))]
        if rnd.random() < 0.5:
            lines.insert(rnd.randint(0, len(lines)), rnd.choice(pieces))
        body = b"\n".join(lines) + rnd.choice([b"", b"\n", b"\n\n", b"\r\n"])
        assert arrow_may_read(body) == _may_read_reference(body), body[:200]
