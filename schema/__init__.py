"""The replicated Defender schema: single source of truth for tables, columns and types."""

from schema.catalog import Catalog, Column, Table, default_catalog
from schema.types import KQL_TYPES, KqlType, kql_type

__all__ = ["Catalog", "Column", "KQL_TYPES", "KqlType", "Table", "default_catalog", "kql_type"]
