"""Spark SQL: sqlglot's Spark dialect, with our own rendering where sqlglot's is wrong for KQL.

The compiler builds one sqlglot tree (typed nodes where sqlglot has them, DuckDB-named
anonymous calls where it does not). sqlglot renders most typed nodes correctly for Spark; the
overrides below are the ones it gets silently wrong for us, each covered by a test that runs it
on both engines (tests/kql/test_dialects.py):

- day of week: DuckDB numbers Sunday 0, Spark's DAYOFWEEK Sunday 1;
- datetime_diff: DuckDB's DATE_DIFF counts unit boundaries crossed, Spark's DATEDIFF(unit, ...)
  whole units elapsed: we diff the truncated values;
- sub-day binning: DuckDB's TIME_BUCKET has no Spark twin (DATE_BIN is not Spark SQL): we bin on
  microseconds since the origin;
- percentiles: QUANTILE_DISC(x, p) is PERCENTILE_DISC(p) WITHIN GROUP (ORDER BY x) in Spark;
- JSON: `dynamic` is JSON text in both engines, but Spark has no JSON type: a cast to JSON
  validates and normalises the text through VARIANT, `x -> path` (JSON out) goes through
  VARIANT_GET + TO_JSON, and JSON arrays (TO_JSON of a list) stay JSON text;
- case-insensitive regex: KQL writes `(?i)` inline, which Java regex reads the same: RLIKE keeps it.

DuckDB functions sqlglot does not know (epoch_us, to_microseconds, json_type, ...) are mapped by
name in ``_ANONYMOUS``. Anything else the compiler could emit for Spark but Spark cannot do is
refused before lowering by kql/lower/capabilities.py, with a diagnostic.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.generators.spark import SparkGenerator

from schema.types import KQL_TYPES

# DuckDB type name (what the compiler casts to) -> Spark type name, from the one type map
_SPARK_TYPES = {t.duckdb: t.spark for t in KQL_TYPES.values()} | {
    "TIMESTAMPTZ": "TIMESTAMP", "INT128": "DECIMAL(38, 0)", "HUGEINT": "DECIMAL(38, 0)"}
_EPOCH = "TIMESTAMP '1970-01-01 00:00:00'"


def _micros(self: SparkGenerator, e: exp.Expr) -> str:
    """An interval as a number of microseconds (a constant when the interval is a literal)."""
    if isinstance(e, exp.Interval) and isinstance(e.this, exp.Literal):
        unit = str(e.unit.name if isinstance(e.unit, exp.Var) else e.text("unit")).upper()
        size = {"DAY": 86_400_000_000, "HOUR": 3_600_000_000, "MINUTE": 60_000_000, "SECOND": 1_000_000,
                "MILLISECOND": 1_000, "MICROSECOND": 1}.get(unit)
        if size is not None:
            return str(int(e.this.name) * size)
    return f"UNIX_MICROS({_EPOCH} + {self.sql(e)})"


# strftime (as sqlglot normalises DuckDB's) -> Java DateTimeFormatter, which needs literal text
# quoted: sqlglot passes `T` and `Z` through bare, which Spark rejects
_JAVA_FORMAT = {"%Y": "yyyy", "%y": "yy", "%m": "MM", "%-m": "M", "%d": "dd", "%-d": "d", "%H": "HH",
                "%-H": "H", "%I": "hh", "%-I": "h", "%M": "mm", "%-M": "m", "%S": "ss", "%-S": "s",
                "%f": "SSSSSS", "%g": "SSS", "%p": "a", "%b": "MMM", "%B": "MMMM", "%a": "EEE", "%A": "EEEE"}


def _quoted(text: str) -> str:
    # Java reserves letters, [ ] (optional sections), { } and #; other text may stand bare
    special = any(c.isalpha() or c in "'[]{}#" for c in text)
    return "'" + text.replace("'", "''") + "'" if special else text


# parsing: one letter reads one or two digits (Spark 3+ reads MM strictly as two)
_JAVA_PARSE = {**_JAVA_FORMAT, "%m": "M", "%d": "d", "%H": "H", "%I": "h", "%M": "m", "%S": "s"}


def java_format(fmt: str, parse: bool = False) -> str:
    table = _JAVA_PARSE if parse else _JAVA_FORMAT
    out: list[str] = []
    literal = ""
    i = 0
    while i < len(fmt):
        key = fmt[i:i + 3] if fmt.startswith("%-", i) else fmt[i:i + 2]
        if key in table:
            if literal:
                out.append(_quoted(literal))
                literal = ""
            out.append(table[key])
            i += len(key)
        elif fmt.startswith("%%", i):
            literal += "%"
            i += 2
        else:
            literal += fmt[i]
            i += 1
    if literal:
        out.append(_quoted(literal))
    return "".join(out)


def _args(self: SparkGenerator, e: exp.Anonymous) -> list[str]:
    return [self.sql(a) for a in e.expressions]


# DuckDB function (anonymous in sqlglot) -> Spark rendering of its arguments
def _json_type(g: SparkGenerator, e: exp.Expr) -> str:
    """DuckDB's json_type names (ARRAY, OBJECT, VARCHAR, BIGINT, DOUBLE, BOOLEAN, NULL) from the
    VARIANT schema Spark infers for the JSON text."""
    kind = f"REGEXP_EXTRACT(SCHEMA_OF_VARIANT(PARSE_JSON({g.sql(e)})), '^[A-Z]+', 0)"
    return (f"CASE {kind} WHEN 'STRING' THEN 'VARCHAR' WHEN 'VOID' THEN 'NULL' WHEN 'DECIMAL' THEN 'DOUBLE' "
            f"ELSE {kind} END")


def _strptime(g: SparkGenerator, e: exp.Anonymous) -> str:
    value, formats = e.expressions[0], e.expressions[1]
    fmts = formats.expressions if isinstance(formats, exp.Array) else [formats]
    tries = [f"TRY_TO_TIMESTAMP({g.sql(value)}, {g.sql(exp.Literal.string(java_format(f.name, parse=True)))})"
             for f in fmts if isinstance(f, exp.Literal)]
    return f"COALESCE({', '.join(tries)})" if len(tries) > 1 else tries[0]


_ANONYMOUS: dict[str, Callable[[SparkGenerator, exp.Anonymous], str]] = {
    # DuckDB: timezone('UTC', timestamptz) is the UTC wall time; the session is in UTC already
    "timezone": lambda g, e: g.sql(e.expressions[1]),
    "try_strptime": _strptime,
    "json_type": lambda g, e: _json_type(g, e.expressions[0]),
    "list_bool_or": lambda g, e: f"EXISTS({_args(g, e)[0]}, _b -> _b)",
    "list_bool_and": lambda g, e: f"FORALL({_args(g, e)[0]}, _b -> _b)",
    # DuckDB lists are 1-based, as ELEMENT_AT; a missing element is null in both
    "list_extract": lambda g, e: f"TRY_ELEMENT_AT({_args(g, e)[0]}, {_args(g, e)[1]})",
    "list_position": lambda g, e: f"NULLIF(ARRAY_POSITION({_args(g, e)[0]}, {_args(g, e)[1]}), 0)",
    "epoch_us": lambda g, e: _micros(g, e.expressions[0]),
    # a difference of two timestamps is Spark's INTERVAL DAY TO SECOND, exact to the microsecond
    "to_microseconds": lambda g, e: f"(TIMESTAMP_MICROS({_args(g, e)[0]}) - TIMESTAMP_MICROS(0))",
    # TO_JSON takes structs, arrays, maps and variants: a scalar goes through VARIANT
    "to_json": lambda g, e: f"TO_JSON(CAST({_args(g, e)[0]} AS VARIANT))",
    "regexp_escape": lambda g, e: f"REGEXP_REPLACE({_args(g, e)[0]}, '([\\\\\\\\^$.|?*+()\\\\[\\\\]{{}}])', '\\\\\\\\$1')",
    "octet_length": lambda g, e: f"OCTET_LENGTH({_args(g, e)[0]})",
    "string_agg": lambda g, e: f"ARRAY_JOIN(COLLECT_LIST({_args(g, e)[0]}), {_args(g, e)[1]})",
    "json_array_length": lambda g, e: f"JSON_ARRAY_LENGTH({_args(g, e)[0]})",
    "list_slice": lambda g, e: f"SLICE({_args(g, e)[0]}, {_args(g, e)[1]}, ({_args(g, e)[2]}) - ({_args(g, e)[1]}) + 1)",
}


class QuarrySparkGenerator(SparkGenerator):
    def generate(self, expression: exp.Expr, copy: bool = True) -> str:
        # A series as a table (`range`) is a generator in Spark's FROM: EXPLODE(SEQUENCE(...)) AS
        # t(x). Wrapped before sqlglot's own rewrites, which mangle the bare series.
        if copy:
            expression = expression.copy()
        for table in list(expression.find_all(exp.Table)):
            if isinstance(table.this, exp.GenerateSeries):
                table.set("this", exp.Explode(this=table.this))
        return super().generate(expression, copy=False)

    def bracket_sql(self, expression: exp.Bracket) -> str:
        # sqlglot turns DuckDB's 1-based literal indexes 0-based but leaves a computed index as
        # written (1-based): Spark's [] is 0-based
        index = expression.expressions
        if len(index) == 1 and not isinstance(index[0], exp.Literal) and not expression.args.get("json_access"):
            return f"{self.sql(expression, 'this')}[({self.sql(index[0])}) - 1]"
        return super().bracket_sql(expression)

    def datatype_sql(self, expression: exp.DataType) -> str:
        name = expression.this.value if isinstance(expression.this, exp.DataType.Type) else None
        mapped = _SPARK_TYPES.get(str(name)) if name else None
        if mapped is not None and not expression.expressions:
            return mapped
        return super().datatype_sql(expression)

    def _json_text(self, e: exp.Cast) -> str | None:
        to = e.args.get("to")
        if isinstance(to, exp.DataType) and to.is_type(exp.DataType.Type.ARRAY):
            # the compiler casts JSON text to a list (VARCHAR[], JSON[]): Spark parses it
            return f"FROM_JSON({self.sql(e, 'this')}, 'ARRAY<STRING>')"
        if isinstance(to, exp.DataType) and to.is_type(exp.DataType.Type.UUID):
            # Spark has no UUID type: a guid is its lower-case text, when it is one
            inner = self.sql(e, "this")
            return (f"CASE WHEN {inner} RLIKE '^[0-9a-fA-F]{{8}}-([0-9a-fA-F]{{4}}-){{3}}[0-9a-fA-F]{{12}}$' "
                    f"THEN LOWER({inner}) END")
        if isinstance(to, exp.DataType) and to.is_type(exp.DataType.Type.JSON):
            inner = self.sql(e, "this")
            parse = "TRY_PARSE_JSON" if isinstance(e, exp.TryCast) else "PARSE_JSON"
            return f"TO_JSON({parse}({inner}))"
        return None

    def cast_sql(self, expression: exp.Cast, safe_prefix: str | None = None) -> str:
        return self._json_text(expression) or super().cast_sql(expression, safe_prefix)

    def trycast_sql(self, expression: exp.TryCast) -> str:
        return self._json_text(expression) or super().trycast_sql(expression)

    def cte_sql(self, expression: exp.CTE) -> str:
        # Spark has no MATERIALIZED hint: it decides on reuse itself
        if expression.args.get("materialized") is not None:
            expression = expression.copy()
            expression.set("materialized", None)
        return super().cte_sql(expression)

    def dayofweek_sql(self, expression: exp.DayOfWeek) -> str:
        return f"(DAYOFWEEK({self.sql(expression, 'this')}) - 1)"

    def datediff_sql(self, expression: exp.DateDiff) -> str:
        unit = str(expression.text("unit") or "DAY").upper()
        end, start = self.sql(expression, "this"), self.sql(expression, "expression")
        if unit in ("WEEK",):
            # Kusto weeks start on Sunday: shift by a day so ISO (Monday) truncation counts Sundays
            end, start = f"({end} + INTERVAL '1' DAY)", f"({start} + INTERVAL '1' DAY)"
        return f"TIMESTAMPDIFF({unit}, DATE_TRUNC('{unit}', {start}), DATE_TRUNC('{unit}', {end}))"

    def datebin_sql(self, expression: exp.DateBin) -> str:
        width = _micros(self, expression.this)
        value = self.sql(expression, "expression")
        # DuckDB's parser files TIME_BUCKET's third argument (the origin) under "unit"
        origin = expression.args.get("origin")
        unit = expression.args.get("unit")
        if origin is None and unit is not None and not isinstance(unit, exp.Var):
            origin = unit
        o = f"UNIX_MICROS({self.sql(origin)})" if origin is not None else "0"
        return (f"TIMESTAMP_MICROS(FLOOR((UNIX_MICROS({value}) - {o}) / {width}) * {width} + {o})")

    def percentiledisc_sql(self, expression: exp.PercentileDisc) -> str:
        return (f"PERCENTILE_DISC({self.sql(expression, 'expression')}) WITHIN GROUP "
                f"(ORDER BY {self.sql(expression, 'this')})")

    def jsonextract_sql(self, expression: exp.JSONExtract) -> str:
        return f"TO_JSON(VARIANT_GET(PARSE_JSON({self.sql(expression, 'this')}), {self.sql(expression, 'expression')}))"

    def timestampfromparts_sql(self, expression: exp.TimestampFromParts) -> str:
        # DuckDB's one-argument MAKE_TIMESTAMP takes microseconds since the epoch
        parts = [a for a in expression.args.values() if isinstance(a, exp.Expr)]
        if len(parts) == 1:
            return f"TIMESTAMP_MICROS({self.sql(parts[0])})"
        return self.function_fallback_sql(expression)

    def timetostr_sql(self, expression: exp.TimeToStr) -> str:
        fmt = expression.args.get("format")
        if isinstance(fmt, exp.Literal) and fmt.is_string:
            return f"DATE_FORMAT({self.sql(expression, 'this')}, {self.sql(exp.Literal.string(java_format(fmt.name)))})"
        return f"DATE_FORMAT({self.sql(expression, 'this')}, {self.sql(fmt)})"

    def mul_sql(self, expression: exp.Mul) -> str:
        # KQL integers are 64-bit; a Spark integer literal is a 32-bit INT, and INT * INT wraps
        # around (24 * 60 * 60000000): multiply integer literals as BIGINT
        def operand(e: exp.Expr) -> str:
            if isinstance(e, exp.Literal) and e.is_int:
                return f"CAST({self.sql(e)} AS BIGINT)"
            return self.sql(e)
        return f"{operand(expression.this)} * {operand(expression.expression)}"

    def length_sql(self, expression: exp.Length) -> str:
        # DuckDB's len() of a list is Spark's SIZE (LENGTH there takes strings only)
        if expression.meta.get("fn") == "len":
            return f"SIZE({self.sql(expression, 'this')})"
        return self.function_fallback_sql(expression)

    def todays_sql(self, expression: exp.ToDays) -> str:
        return f"MAKE_DT_INTERVAL({self.sql(expression, 'this')})"

    def regexpfullmatch_sql(self, expression: exp.RegexpFullMatch) -> str:
        pattern = expression.expression
        if isinstance(pattern, exp.Literal) and pattern.is_string:
            anchored = self.sql(exp.Literal.string(f"^(?:{pattern.name})$"))
        else:
            anchored = f"CONCAT('^(?:', {self.sql(pattern)}, ')$')"
        return f"({self.sql(expression, 'this')} RLIKE {anchored})"

    def regexpreplace_sql(self, expression: exp.RegexpReplace) -> str:
        # DuckDB (RE2) refers to groups as \1, Java as $1 (and a literal $ must be escaped); DuckDB
        # replaces the first match unless the 'g' option is given, Spark always replaces all
        repl = expression.args.get("replacement")
        if isinstance(repl, exp.Literal) and repl.is_string:
            java = re.sub(r"\\(\d)", r"$\1", repl.name.replace("$", "\\$"))
            r = self.sql(exp.Literal.string(java))
        elif repl is not None:
            r = f"REGEXP_REPLACE(REPLACE({self.sql(repl)}, '$', '\\\\$'), '\\\\\\\\(\\\\d)', '\\\\$$1')"
        else:
            r = "''"
        return f"REGEXP_REPLACE({self.sql(expression, 'this')}, {self.sql(expression, 'expression')}, {r})"

    def jsontype_sql(self, expression: exp.JSONType) -> str:
        return _json_type(self, expression.this)

    def window_sql(self, expression: exp.Window) -> str:
        # Spark requires an order for row_number(); DuckDB numbers in scan order without one
        if isinstance(expression.this, exp.RowNumber) and not expression.args.get("order"):
            expression = expression.copy()
            expression.set("order", exp.Order(expressions=[exp.Ordered(this=exp.Literal.number(1))]))
        return super().window_sql(expression)

    def _like(self, expression: exp.Like | exp.ILike, op: str) -> str:
        # Spark's LIKE escapes with a backslash by default, DuckDB's only with ESCAPE: a pattern
        # without ESCAPE keeps its backslashes literal by doubling them
        pattern = expression.expression
        if isinstance(pattern, exp.Literal) and pattern.is_string and not isinstance(expression.parent, exp.Escape):
            pattern = exp.Literal.string(pattern.name.replace("\\", "\\\\"))
        return f"{self.sql(expression, 'this')} {op} {self.sql(pattern)}"

    def like_sql(self, expression: exp.Like) -> str:
        return self._like(expression, "LIKE")

    def ilike_sql(self, expression: exp.ILike) -> str:
        return self._like(expression, "ILIKE")

    def anonymous_sql(self, expression: exp.Anonymous) -> str:
        render = _ANONYMOUS.get(str(expression.name).lower())
        if render is not None:
            return render(self, expression)
        return super().anonymous_sql(expression)


# sqlglot's dispatch prefers TRANSFORMS entries to `<name>_sql` methods: drop the entries our
# methods replace.
_OURS = {exp.EXPR_CLASSES[a[:-4]] for a in vars(QuarrySparkGenerator) if a.endswith("_sql") and a[:-4] in exp.EXPR_CLASSES}
QuarrySparkGenerator.TRANSFORMS = {k: v for k, v in SparkGenerator.TRANSFORMS.items() if k not in _OURS}


class QuarrySpark(Spark):
    Generator = QuarrySparkGenerator
