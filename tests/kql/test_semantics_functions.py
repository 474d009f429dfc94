"""Scalar functions, literals and arithmetic, with the values the Kusto documentation gives.

Each test names its page under https://learn.microsoft.com/kusto/query/ ; where a page has a
worked example, that example is used. Fixture rows: tests/kql/fixtures.py (now = 2024-05-15
12:00, a Wednesday).
"""

from __future__ import annotations

import datetime as dt

import pytest

from schema import default_catalog
from tests.kql.fixtures import assert_kql, ids_of, run_kql

D = dt.datetime
TD = dt.timedelta


def one(expr: str) -> object:
    """The single value of `print r = <expr>`."""
    r = run_kql(f"print r = {expr}")
    assert len(r.rows) == 1
    return r.rows[0][0]


# --- literals and arithmetic ------------------------------------------------------------------

def test_numeric_bool_and_datetime_literals() -> None:
    assert_kql(
        "print a = 42, b = 1.5, c = true, d = false, e = datetime(2024-05-15 10:30:00), f = datetime(2024-05-15)",
        [(42, 1.5, True, False, D(2024, 5, 15, 10, 30), D(2024, 5, 15))],
        types=["long", "real", "bool", "bool", "datetime", "datetime"],
    )


def test_timespan_literals() -> None:
    # scalar-data-types/timespan: 2d, 1.5h, 30m, 10s, 100ms, timespan(n) = n days, time(d.hh:mm:ss), 10microsecond.
    assert_kql(
        "print a = 2d, b = 1.5h, c = 30m, d = 10s, e = 100ms, f = time(2), g = time(0.12:34:56.7), h = 10microsecond",
        [(TD(days=2), TD(hours=1.5), TD(minutes=30), TD(seconds=10), TD(milliseconds=100),
          TD(days=2), TD(hours=12, minutes=34, seconds=56.7), TD(microseconds=10))],
        types=["timespan"] * 8,
    )


def test_timespan_arithmetic() -> None:
    # timespan page: 1d / 1s == 86400 (timespan / timespan is real); datetime - datetime is timespan.
    assert_kql(
        "print a = 1d / 1s, b = time(1d) / time(1s), c = 24 * 60 * time(00:01:00) / time(1s)",
        [(86400.0, 86400.0, 86400.0)],
    )
    assert_kql(
        "print d = datetime(2024-05-15 12:00) - datetime(2024-05-15 10:30),"
        " e = datetime(2024-05-15) + 1d + 2h, f = 2h * 3, g = 86400 * 1s",
        [(TD(hours=1, minutes=30), D(2024, 5, 16, 2), TD(hours=6), TD(days=1))],
        types=["timespan", "datetime", "timespan", "timespan"],
    )


def test_arithmetic_integer_division_and_modulo() -> None:
    # numerical-operators: long / long is an integer division; a real operand gives a real.
    assert_kql("print a = 7 / 2, b = 7.0 / 2, c = 7 % 3, d = -7 / 2, e = 2 + 3 * 4",
               [(3, 3.5, 1, -3, 14)])


def test_typed_null_literals() -> None:
    # null-values: T(null) for each scalar type.
    assert_kql(
        "print a = long(null), b = real(null), c = bool(null), d = datetime(null), e = timespan(null), f = int(null)",
        [(None, None, None, None, None, None)],
        types=["long", "real", "bool", "datetime", "timespan", "int"],
    )


# --- datetime functions -----------------------------------------------------------------------

def test_now_and_ago_use_the_fixed_clock() -> None:
    assert_kql("print n = now(), a = ago(1h), b = ago(2d), c = now(-1d)",
               [(D(2024, 5, 15, 12), D(2024, 5, 15, 11), D(2024, 5, 13, 12), D(2024, 5, 14, 12))])
    assert ids_of("DeviceProcessEvents | where Timestamp > ago(2h)") == [1, 5]
    assert ids_of("DeviceProcessEvents | where Timestamp >= ago(1d) and Timestamp < ago(1h)") == [2]


def test_bin_and_floor() -> None:
    # bin-function: bin(4.5, 1) == 4, bin(time(16d), 7d) == 14d, bin(datetime(1970-05-11 13:45:07), 1d) == 1970-05-11.
    assert_kql(
        "print a = bin(4.5, 1), b = bin(time(16d), 7d), c = bin(datetime(1970-05-11 13:45:07), 1d),"
        " d = floor(datetime(2024-05-15 11:47), 1h), e = bin(7, 5)",
        [(4.0, TD(days=14), D(1970, 5, 11), D(2024, 5, 15, 11), 5)],
    )


def test_start_and_end_of_periods() -> None:
    # startofweek: weeks start on Sunday. 2024-05-15 is a Wednesday.
    assert_kql(
        "let t = datetime(2024-05-15 11:47:12);\n"
        "print d = startofday(t), w = startofweek(t), m = startofmonth(t), e = endofday(t)",
        [(D(2024, 5, 15), D(2024, 5, 12), D(2024, 5, 1), D(2024, 5, 15, 23, 59, 59, 999999))],
    )


def test_datetime_diff_documented_examples() -> None:
    # datetime-diff-function examples.
    assert_kql(
        "print y = datetime_diff('year', datetime(2017-01-01), datetime(2000-12-31)),"
        " d = datetime_diff('day', datetime(2017-10-30 23:00:00.0000000), datetime(2017-09-30 23:59:59.0000000)),"
        " h = datetime_diff('hour', datetime(2017-10-31 01:00), datetime(2017-10-30 23:59)),"
        " mi = datetime_diff('minute', datetime(2017-10-30 23:05:01.0000000), datetime(2017-10-30 23:00:59.9999999))",
        [(17, 30, 2, 5)],
    )


def test_datetime_add() -> None:
    assert_kql(
        "print a = datetime_add('day', 1, datetime(2024-05-15)), b = datetime_add('hour', -2, datetime(2024-05-15)),"
        " c = datetime_add('month', 1, datetime(2024-04-15)), d = datetime_add('minute', 90, datetime(2024-05-15))",
        [(D(2024, 5, 16), D(2024, 5, 14, 22), D(2024, 5, 15), D(2024, 5, 15, 1, 30))],
    )


def test_format_datetime() -> None:
    # format-datetime-function.
    assert_kql(
        "let t = datetime(2015-12-14 02:03:04.12345);\n"
        "print a = format_datetime(t, 'yyyy-MM-dd [HH:mm:ss]'), b = format_datetime(t, 'yy-MM-dd HH:mm'),"
        " c = format_datetime(t, 'yyyy/MM/dd')",
        [("2015-12-14 [02:03:04]", "15-12-14 02:03", "2015/12/14")],
    )


def test_dayofweek_is_a_timespan_and_hourofday() -> None:
    # dayofweek-function: days since the preceding Sunday, as a timespan.
    assert_kql(
        "print w = dayofweek(datetime(2024-05-15)), s = dayofweek(datetime(2024-05-12)), h = hourofday(datetime(2024-05-15 11:47))",
        [(TD(days=3), TD(0), 11)],
        types=["timespan", "timespan", "int"],
    )
    assert ids_of("DeviceProcessEvents | where dayofweek(Timestamp) == 3d") == [1, 2, 5]


def test_conversions_to_datetime_and_timespan() -> None:
    assert_kql(
        'print a = todatetime("2024-05-15 11:47:00"), b = todatetime("2024-05-15T11:47:00Z"),'
        ' c = totimespan("0.00:01:00"), d = totimespan("00:10:00"),'
        " e = unixtime_seconds_todatetime(1546300800)",
        [(D(2024, 5, 15, 11, 47), D(2024, 5, 15, 11, 47), TD(minutes=1), TD(minutes=10), D(2019, 1, 1))],
    )
    assert one('todatetime("not a date")') is None


# --- string functions -------------------------------------------------------------------------

def test_case_and_concatenation() -> None:
    assert_kql(
        'print a = tolower("AbC"), b = toupper("AbC"), c = strcat("a", 1, "b"),'
        ' d = strcat_delim("-", "a", "b", "c"), e = strlen("hello"), f = strlen("")',
        [("abc", "ABC", "a1b", "a-b-c", 5, 0)],
    )


def test_substring() -> None:
    # substring-function examples.
    assert_kql('print a = substring("123456", 1, 3), b = substring("123456", 2), c = substring("ABCD", 0, 2)',
               [("234", "3456", "AB")])


def test_split() -> None:
    # split-function examples.
    assert_kql(
        'print a = split("aa_bb", "_"), b = split("aaa_bbb_ccc", "_", 1), c = split("aa_bb", "_")[1]',
        [(["aa", "bb"], ["bbb"], "bb")],
    )


def test_extract_and_extract_all() -> None:
    # extract-function: extract("x=([0-9.]+)", 1, "hello x=45.6|wo") == "45.6".
    assert_kql(
        'print a = extract("x=([0-9.]+)", 1, "hello x=45.6|wo"),'
        ' b = extract("x=([0-9.]+)", 1, "hello x=45.6|wo", typeof(real)),'
        ' c = isempty(extract("y=([0-9]+)", 1, "hello x=45.6|wo")),'
        ' d = extract("(\\\\w+)@", 0, "mail bob@contoso.com")',
        [("45.6", 45.6, True, "bob@")],
    )
    # extract-all-function: one capture group gives an array of strings.
    assert_kql(r'print a = extract_all(@"(\d+)", "a1 b22 c333")', [(["1", "22", "333"],)])


def test_replace_string_and_replace_regex() -> None:
    assert_kql(
        'print a = replace_string("A magic trick can turn a cat into a dog", "cat", "hamster"),'
        ' b = replace_regex("abc123", @"\\d", "X"), c = replace_regex("ab", "(a)(b)", @"\\2\\1"),'
        ' d = replace_string("a.b.c", ".", "-")',
        [("A magic trick can turn a hamster into a dog", "abcXXX", "ba", "a-b-c")],
    )


def test_trim_functions_take_a_regex() -> None:
    # trim-function / trim-start-function / trim-end-function examples.
    assert_kql(
        r'print a = trim("--", "--https://bing.com--"), b = trim(@"[^\w]+", "- Te st1// $"),'
        r' c = trim_start(@"[^\w]+", "- Te st1// $"), d = trim_end(@"[^\w]+", "- Te st1// $"),'
        r' e = trim(@"\s+", "  padded  ")',
        [("https://bing.com", "Te st1", "Te st1// $", "- Te st1", "padded")],
    )


def test_indexof_and_reverse() -> None:
    # indexof-function examples.
    assert_kql(
        'print a = indexof("abcdefg", "cde"), b = indexof("abcdefg", "cde", 1, 4),'
        ' c = indexof("abcdefg", "cde", 1, 2), d = indexof("abcdefg", "z"), e = reverse("abc")',
        [(2, 2, -1, -1, "cba")],
    )


def test_parse_path() -> None:
    assert_kql(
        r'let p = parse_path(@"C:\Windows\System32\cmd.exe");'
        "\nprint f = tostring(p.Filename), e = tostring(p.Extension), d = tostring(p.DirectoryPath),"
        " n = tostring(p.DirectoryName)",
        [("cmd.exe", "exe", "C:\\Windows\\System32", "System32")],
    )


def test_parse_url() -> None:
    # parse-url-function example.
    assert_kql(
        'let u = parse_url("https://user:pass@contoso.com:1234/this/is/a/path?k1=v1&k2=v2#fragment");'
        "\nprint s = tostring(u.Scheme), h = tostring(u.Host), p = tostring(u.Port),"
        ' pa = tostring(u.Path), q = tostring(u["Query Parameters"].k1), f = tostring(u.Fragment)',
        [("https", "contoso.com", "1234", "/this/is/a/path", "v1", "fragment")],
    )


def test_base64_and_url_decode() -> None:
    assert_kql(
        'print a = base64_decode_tostring("S3VzdG8="), b = url_decode("https%3a%2f%2fwww.bing.com%2f")',
        [("Kusto", "https://www.bing.com/")],
    )


# --- conversions ------------------------------------------------------------------------------

def test_scalar_conversions() -> None:
    assert_kql(
        'print a = tostring(123), b = toint("123"), c = tolong("9000000000"), d = toreal("1.5"),'
        ' e = todouble("2.5"), f = tobool("true"), g = tobool("false"), h = tobool(1)',
        [("123", 123, 9000000000, 1.5, 2.5, True, False, True)],
        types=["string", "int", "long", "real", "real", "bool", "bool", "bool"],
    )


def test_failed_conversions_give_null() -> None:
    assert_kql('print a = toint("abc"), b = tolong("1x"), c = toreal("x"), d = tobool("maybe")',
               [(None, None, None, None)])


def test_toguid() -> None:
    assert_kql(
        'print g = tostring(toguid("74be27de-1e4e-49d9-b579-fe0b331d3642")), n = isnull(toguid("nope"))',
        [("74be27de-1e4e-49d9-b579-fe0b331d3642", True)],
    )


# --- dynamic ----------------------------------------------------------------------------------

def test_dynamic_literals_and_access() -> None:
    assert_kql(
        'let d = dynamic({"a": {"b": [10, 20]}, "s": "x"});\n'
        'print a = d.a.b[1], b = d["a"]["b"][0], c = d.s, e = tostring(d.s), f = d.missing',
        [(20, 10, "x", "x", None)],
        types=["dynamic", "dynamic", "dynamic", "string", "dynamic"],
    )


def test_parse_json_and_todynamic_from_columns() -> None:
    assert_kql(
        "DeviceEvents | extend af = parse_json(AdditionalFields)\n"
        '| where tostring(af.ThreatName) has "Trojan"\n'
        "| project ReportId, t = tostring(af.ThreatName), n = toint(af.Count), r = tobool(af.WasRemediated)",
        [(1, "Trojan:Win32/Evil", 3, True)],
    )
    assert ids_of('DeviceEvents | where tostring(todynamic(AdditionalFields).Command) == "Invoke-WebRequest"') == [2]
    # Dot access directly on a parse_json call.
    assert ids_of('DeviceEvents | where parse_json(AdditionalFields).Count == 3') == [1]
    assert ids_of('DeviceEvents | where parse_json(AdditionalFields)["Command"] == "Invoke-WebRequest"') == [2]


def test_dynamic_functions() -> None:
    assert_kql(
        'print a = array_length(dynamic([1, 2, 3])), b = array_length(parse_json("[]")),'
        ' c = bag_keys(dynamic({"a": 1, "b": 2})), d = pack("k1", 1, "k2", "v"),'
        ' e = bag_pack("k", 2), f = pack_array(1, 2, "x")',
        [(3, 0, ["a", "b"], {"k1": 1, "k2": "v"}, {"k": 2}, [1, 2, "x"])],
    )
    assert_kql(
        'print a = set_has_element(dynamic(["a", "b"]), "b"), b = set_has_element(dynamic(["a"]), "z"),'
        ' c = array_index_of(dynamic(["a", "b", "c"]), "c"), d = array_index_of(dynamic(["a"]), "z")',
        [(True, False, 2, -1)],
    )


# --- conditionals and emptiness ---------------------------------------------------------------

def test_iff_iif_case_coalesce() -> None:
    assert_kql(
        'print a = iff(1 > 2, "y", "n"), b = iif(2 > 1, "y", "n"),'
        ' c = case(7 > 10, "big", 7 > 5, "mid", "small"), d = case(1 > 10, "big", "small"),'
        ' e = coalesce(tolong("not a number"), tolong("42"), 33), f = coalesce("", "x")',
        [("n", "y", "mid", "small", 42, "x")],
    )
    assert_kql(
        "DeviceProcessEvents | extend Size = iff(FileSize > 1500, 'big', 'small') | summarize n = count() by Size",
        [("big", 2), ("small", 4)],
    )


def test_isempty_isnotempty_isnull_isnotnull() -> None:
    # isempty: true for "" and null; isnull of a string is never true (strings are not nullable).
    assert_kql(
        'print a = isempty(""), b = isempty(" "), c = isempty(long(null)), d = isnotempty("x"),'
        ' e = isnull(long(null)), f = isnull(""), g = isnotnull(5), h = isnotempty(long(null))',
        [(True, False, True, True, True, False, True, False)],
    )


# --- math -------------------------------------------------------------------------------------

def test_math_functions() -> None:
    # round-function examples: round(2.98765, 3) == 2.988, round(2.15, 1) == 2.2, round(-50.55, -2) == -100.
    assert_kql(
        "print a = round(2.98765, 3), b = round(2.15, 1), c = round(-50.55, -2),"
        " e = abs(-5), f = pow(2, 10), g = round(log(exp(1)), 6)",
        [(2.988, 2.2, -100.0, 5, 1024.0, 1.0)],
    )


# --- IP functions -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("ip", "private"),
    [("10.1.2.3", True), ("192.168.1.1", True), ("172.16.0.1", True), ("172.31.255.255", True),
     ("172.32.0.1", False), ("8.8.8.8", False), ("127.0.0.1", False)],
)
def test_ipv4_is_private(ip: str, private: bool) -> None:
    # ipv4-is-private-function: RFC 1918 ranges only.
    assert one(f'ipv4_is_private("{ip}")') is private


def test_ipv4_is_in_range_and_parse_ipv4() -> None:
    # ipv4-is-in-range-function and parse-ipv4-function examples.
    assert_kql(
        "print a = ipv4_is_in_range('192.168.1.1', '192.168.1.1'),"
        " b = ipv4_is_in_range('192.168.1.1', '192.168.1.255'),"
        " c = ipv4_is_in_range('192.168.1.1', '192.168.1.1/24'),"
        " d = ipv4_is_in_range('10.1.2.3', '10.1.0.0/16'),"
        " e = parse_ipv4('127.0.0.1'), f = parse_ipv4('192.1.168.1')",
        [(True, False, True, True, 2130706433, 3221334017)],
    )
    assert ids_of("DeviceNetworkEvents | where ipv4_is_private(RemoteIP)") == [1, 3, 4]
    assert ids_of("DeviceNetworkEvents | where ipv4_is_in_range(RemoteIP, '192.168.0.0/16')") == [3]


# --- ingestion_time ---------------------------------------------------------------------------

def test_ingestion_time_reads_the_system_column() -> None:
    # The fixture stamps _ingestion_time one minute after Timestamp.
    assert_kql("DeviceProcessEvents | where ReportId == 1 | project it = ingestion_time()",
               [(D(2024, 5, 15, 11, 1),)])


def test_system_columns_are_not_in_the_output() -> None:
    r = run_kql("DeviceInfo | take 1")
    assert r.names[0] == "Timestamp"
    assert not {"_ingestion_time", "_extra", "date", "hour"} & set(r.names)
    assert r.names == default_catalog().tables["DeviceInfo"].column_names


def test_dynamic_index_with_a_runtime_key() -> None:
    # A property bag used as a lookup table, keyed by a column (a common hunting idiom). A key
    # that is absent (SYSTEM) or empty (row 5) gives null, which tostring() turns into "".
    assert_kql(
        'let names = dynamic({"alice": "A", "bob": "B", "a.b": "dot"});\n'
        "DeviceProcessEvents | project ReportId, n = tostring(names[AccountName])",
        [(1, "A"), (2, "A"), (3, "B"), (4, ""), (5, ""), (6, "A")],
    )
    assert_kql('let m = dynamic({"a.b": "dot", "x\\"y": "q"});\nprint a = tostring(m["a.b"]), b = tostring(m[strcat("a", ".b")])',
               [("dot", "dot")])


def test_datetimes_with_utc_offsets_are_converted_to_utc() -> None:
    # scalar-data-types/datetime: ISO 8601 with an offset denotes that instant; values are UTC.
    assert_kql(
        'print a = datetime(2024-05-15T13:00:00+02:00), b = todatetime("2024-05-15T13:00:00+02:00"),'
        ' c = todatetime("2024-05-15T11:00:00Z")',
        [(D(2024, 5, 15, 11), D(2024, 5, 15, 11), D(2024, 5, 15, 11))],
    )


def test_bin_of_datetimes_counts_from_year_one() -> None:
    # bin-function: datetimes are rounded down to a multiple of the bin size; Kusto datetimes count
    # ticks from 0001-01-01 (a Monday), so 7d bins start on Mondays.
    assert_kql(
        "print a = bin(datetime(2024-05-15 10:00), 7d), b = bin(datetime(2024-05-15 10:17), 15m)",
        [(D(2024, 5, 13), D(2024, 5, 15, 10, 15))],
    )
