"""Typed view of the replicated Defender schema (the generated ``schema.tables``).

Storage adds system columns to every stored table (see ``SYSTEM_COLUMNS``); they are not part
of the KQL schema, so ``getschema`` and ``project *`` never show them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cache

from schema.tables import TABLES
from schema.types import KqlType, kql_type

# Column names storage adds to every table. The compiler maps `ingestion_time()` to
# INGESTION_TIME_COLUMN; EXTRA_COLUMN holds, per row, a JSON bag of fields newer than our schema;
# DATE/HOUR are the Hive partition columns used for pruning.
INGESTION_TIME_COLUMN = "_ingestion_time"
EXTRA_COLUMN = "_extra"
DATE_PARTITION = "date"
HOUR_PARTITION = "hour"
SYSTEM_COLUMNS: tuple[str, ...] = (INGESTION_TIME_COLUMN, EXTRA_COLUMN)
PARTITION_COLUMNS: tuple[str, ...] = (DATE_PARTITION, HOUR_PARTITION)


@dataclass(frozen=True)
class Column:
    name: str
    type: KqlType
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    description: str = ""
    has_timestamp: bool = True
    nrt_supported: bool = False
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.columns})

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def is_event_table(self) -> bool:
        """Event tables must carry Timestamp and DeviceId on every row."""
        return self.has_timestamp and "DeviceId" in self._by_name


@dataclass(frozen=True)
class Catalog:
    tables: dict[str, Table]

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """Close table names, for "did you mean" hints."""
        return difflib.get_close_matches(name, list(self.tables), n=n, cutoff=0.6)


@cache
def default_catalog() -> Catalog:
    """The catalog of every table in the replicated schema."""
    tables: dict[str, Table] = {}
    for name, spec in TABLES.items():
        cols = tuple(Column(c[0], kql_type(c[1]), c[2]) for c in spec["columns"])
        tables[name] = Table(
            name=name,
            columns=cols,
            description=spec["description"],
            has_timestamp=spec["has_timestamp"],
            nrt_supported=spec["nrt_supported"],
        )
    return Catalog(tables)
