"""Quarry's KQL compiler: text and a catalog in, SQL (or diagnostics) out. No HTTP, no storage."""

from kql.api import Compiled, CompileOptions, compile_kql
from kql.diagnostics import Diagnostic, render

__all__ = ["CompileOptions", "Compiled", "Diagnostic", "compile_kql", "render"]
