"""format_timespan, format_bytes, format_ipv4(_mask) and binary_*: the examples of each
function's page in the Kusto documentation, executed."""

from __future__ import annotations

import pytest

from tests.kql.fixtures import assert_kql, assert_kql_error


def test_format_timespan_documented_example() -> None:
    # Kusto docs: let t = time(29.09:00:05.12345); v1 = 29.09:00:05:12, v2 = 029.9:00:05 [1234500]
    assert_kql(
        "let t = time(29.09:00:05.12345);\n"
        "print v1 = format_timespan(t, 'dd.hh:mm:ss:FF'), v2 = format_timespan(t, 'ddd.h:mm:ss [fffffff]')",
        [("29.09:00:05:12", "029.9:00:05 [1234500]")], types=["string", "string"],
    )


@pytest.mark.parametrize(("ts", "fmt", "want"), [
    ("15.13:45:30", "d", "15"), ("15.13:45:30", "ddd", "015"),
    ("15.13:45:30.617", "f", "6"), ("15.13:45:30.617", "fff", "617"),
    ("15.13:45:30.05", "f", "0"), ("15.13:45:30.05", "F", ""), ("15.13:45:30.617", "FF", "61"),
    ("1d", 'd" days"', "1 days"), ("1h", "hh:mm", "01:00"),
])
def test_format_timespan_elements(ts: str, fmt: str, want: str) -> None:
    assert_kql(f"print x = format_timespan(time({ts}), '{fmt}')", [(want,)])


def test_format_bytes_documented_examples() -> None:
    assert_kql(
        'print v1 = format_bytes(564), v2 = format_bytes(10332, 1), v3 = format_bytes(20010332),\n'
        '      v4 = format_bytes(20010332, 2), v5 = format_bytes(20010332, 0, "KB")',
        [("564 Bytes", "10.1 KB", "19 MB", "19.08 MB", "19541 KB")],
    )


def test_format_ipv4_and_mask_documented_examples() -> None:
    assert_kql(
        "datatable(address:string, mask:long)\n"
        "['192.168.1.1', 24, '192.168.1.1', 32, '192.168.1.1/24', 32, '192.168.1.1/24', long(-1)]\n"
        "| extend result = format_ipv4(address, mask), result_mask = format_ipv4_mask(address, mask)",
        [("192.168.1.1", 24, "192.168.1.0", "192.168.1.0/24"),
         ("192.168.1.1", 32, "192.168.1.1", "192.168.1.1/32"),
         ("192.168.1.1/24", 32, "192.168.1.0", "192.168.1.0/24"),
         ("192.168.1.1/24", -1, "", "")],
    )
    # numbers in big-endian order; the prefix defaults to 32; bad input gives ""
    assert_kql("print a = format_ipv4(3232236031, 24), b = format_ipv4_mask(3232236031, 24), "
               "c = format_ipv4('192.168.1.255'), d = format_ipv4('300.1.1.1'), e = format_ipv4_mask('10.1.2.3')",
               [("192.168.1.0", "192.168.1.0/24", "192.168.1.255", "", "10.1.2.3/32")])


def test_binary_functions_documented_examples() -> None:
    assert_kql(
        "print a = binary_and(6, 3), o = binary_or(6, 3), x = binary_xor(6, 3), n = binary_not(100),\n"
        "      l = binary_shift_left(1, 2), r = binary_shift_right(8, 2), c = bitset_count_ones(42)",
        [(2, 7, 5, -101, 4, 2, 3)], types=["long"] * 7,
    )


def test_binary_shift_wraps_and_takes_the_count_modulo_64() -> None:
    # value << (shift % 64); a negative shift is null (Kusto docs); longs wrap around
    assert_kql("print a = binary_shift_left(1, 66), b = binary_shift_left(1, 63), "
               "c = binary_shift_left(1, -1), d = binary_shift_right(-8, 1)",
               [(4, -9223372036854775808, None, -4)])


def test_format_timespan_needs_a_constant_format() -> None:
    assert_kql_error("DeviceProcessEvents | extend x = format_timespan(1h, FileName)", "unsupported")


def test_ipv4_ranges_known_only_at_run_time() -> None:
    # ranges from a column, or from an array computed by the query (toscalar of make_set)
    assert_kql(
        'let r = toscalar(datatable(c:string)["10.0.0.0/8", "192.168.1.0/24"] | summarize make_set(c));\n'
        'datatable(ip:string)["10.1.2.3", "192.168.2.1", "192.168.1.9"] | extend a = ipv4_is_in_any_range(ip, r)',
        [("10.1.2.3", True), ("192.168.2.1", False), ("192.168.1.9", True)],
    )
    assert_kql(
        'datatable(ip:string, r:string)["10.1.2.3", "10.0.0.0/8", "11.1.1.1", "10.0.0.0/8", "10.0.0.1", "10.0.0.1"]\n'
        '| extend a = ipv4_is_in_range(ip, r)',
        [("10.1.2.3", "10.0.0.0/8", True), ("11.1.1.1", "10.0.0.0/8", False), ("10.0.0.1", "10.0.0.1", True)],
    )
