"""What each target cannot do, as data: checked while the query is bound, so an unsupported
operator, plugin or function is a clear diagnostic (code ``unsupported_target``, at the place it
is written) before any lowering starts, never wrong SQL or an engine error.

Keys are ``operator:<kind>``, ``source:<kind>``, ``plugin:<name>`` and ``function:<name>``; the
value says why. DuckDB, the default target, can do everything the compiler emits.
"""

from __future__ import annotations

from kql import nodes as n
from kql.context import CompileError, Ctx

UNSUPPORTED: dict[str, dict[str, str]] = {
    "duckdb": {},
    "spark": {
        # JSON arrays and bags turned into rows or rebuilt element by element: DuckDB's JSON
        # functions and list lambdas, which have no faithful Spark SQL form here yet
        "operator:mv-expand": "expanding dynamic arrays and bags into rows is DuckDB-only so far",
        "operator:mv-apply": "expanding dynamic arrays and bags into rows is DuckDB-only so far",
        "plugin:bag_unpack": "unpacking property bags into columns is DuckDB-only so far",
        "source:find": "find packs each row's other columns into a bag, which is DuckDB-only so far",
        "feature:in-computed-array": "`in` over a computed dynamic array is DuckDB-only so far",
        "feature:in-dynamic-subquery": "`in` over a subquery of dynamic arrays is DuckDB-only so far",
        "feature:subquery-in-lambda": "Spark refuses a subquery (toscalar) inside the per-element test "
                                      "this needs; pass the ranges as a constant or a column",
        "feature:has_all-of-a-table": "Spark refuses the correlated aggregate has_all of a table needs",
        "feature:terms-from-a-computed-array": "Spark allows no subquery inside the per-term test this needs",
        "feature:computed-dynamic-index": "indexing a dynamic value with a computed key or position is "
                                          "DuckDB-only so far (a constant key or index works)",
        **{f"function:{name}": "it builds JSON element by element, which is DuckDB-only so far" for name in (
            "make_bag", "pack", "bag_pack", "bag_keys", "set_has_element", "array_index_of", "strcat_array",
            "set_difference", "set_intersect", "set_union", "array_concat", "array_sort_asc", "array_sort_desc",
            "array_slice", "parse_url", "parse_path", "parse_command_line", "base64_decode_toarray",
            "unicode_codepoints_to_string", "extract_all", "range", "split")},
        **{f"function:{name}": "64-bit wrap-around shifts need a 128-bit integer Spark lacks" for name in (
            "binary_shift_left", "binary_shift_right")},
        "function:geo_info_from_ip_address": "the geo-IP lookup is a function of Quarry's DuckDB connection",
        **{f"function:{name}": "Spark has no TRY() to turn its failure into null" for name in (
            "base64_decode_tostring", "url_decode")},
    },
}


def check(ctx: Ctx, kind: str, name: str, span: n.Span) -> None:
    """Report (and stop at) a construct ``ctx.dialect`` cannot run."""
    why = UNSUPPORTED.get(ctx.dialect, {}).get(f"{kind}:{name}")
    if why is not None:
        raise _fail(ctx, kind, name, why, span)


def _fail(ctx: Ctx, kind: str, name: str, why: str, span: n.Span) -> CompileError:
    shown = f"{name}()" if kind in ("function", "plugin") else name.replace("-", " ") if kind == "feature" else name
    return ctx.fail("unsupported_target", f"{shown} cannot run on the {ctx.dialect} engine: {why}", span,
                    ["run the query on the default engine (duckdb)"])
