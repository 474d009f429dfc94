"""The one mapping of KQL scalar types to Arrow, DuckDB and API type names.

Ingest, storage, the compiler and the API all import from here, so a type is decided once.

Datetimes are stored as naive microsecond timestamps that are always UTC: Defender's datetimes
are UTC by definition, and naive timestamps keep DuckDB's date functions free of session time
zone effects. ``dynamic`` is stored as JSON text (DuckDB reads it as JSON).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class KqlType:
    name: str  # KQL name: string, long, int, real, bool, datetime, timespan, dynamic, guid, decimal
    arrow: pa.DataType
    duckdb: str  # DuckDB SQL type name
    dotnet: str  # .NET name, as Defender's hunting API reports it (api_shapes.md (a))
    spark: str  # Spark SQL type name (dynamic is its JSON text there too)


KQL_TYPES: dict[str, KqlType] = {
    "string": KqlType("string", pa.string(), "VARCHAR", "String", "STRING"),
    "long": KqlType("long", pa.int64(), "BIGINT", "Int64", "BIGINT"),
    "int": KqlType("int", pa.int32(), "INTEGER", "Int32", "INT"),
    "real": KqlType("real", pa.float64(), "DOUBLE", "Double", "DOUBLE"),
    "decimal": KqlType("decimal", pa.float64(), "DOUBLE", "Decimal", "DOUBLE"),
    "bool": KqlType("bool", pa.bool_(), "BOOLEAN", "Boolean", "BOOLEAN"),
    "datetime": KqlType("datetime", pa.timestamp("us"), "TIMESTAMP", "DateTime", "TIMESTAMP"),
    "timespan": KqlType("timespan", pa.duration("us"), "INTERVAL", "TimeSpan", "INTERVAL DAY TO SECOND"),
    # Stored as JSON text; the compiler treats it as DuckDB JSON.
    "dynamic": KqlType("dynamic", pa.string(), "JSON", "Object", "STRING"),
    "guid": KqlType("guid", pa.string(), "VARCHAR", "Guid", "STRING"),
}

# Aliases KQL accepts in type positions (`x:double`, `datatable(a:boolean)`, `todouble`...).
TYPE_ALIASES: dict[str, str] = {
    "double": "real",
    "float": "real",
    "boolean": "bool",
    "date": "datetime",
    "time": "timespan",
    "int32": "int",
    "int64": "long",
    "uniqueid": "guid",
}


def kql_type(name: str) -> KqlType:
    """Return the type for a KQL type name or alias; KeyError if unknown."""
    key = name.lower()
    return KQL_TYPES[TYPE_ALIASES.get(key, key)]
