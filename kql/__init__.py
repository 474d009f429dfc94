"""Quarry's KQL compiler: text and a catalog in, SQL (or diagnostics) out. No HTTP, no storage."""
