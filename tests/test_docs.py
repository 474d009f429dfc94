"""The documentation lists everything the code offers (after datasette's tests/test_docs.py).

Each item is read from the code when the tests are collected — the app's routes, the Settings
fields, the compiler's operator handlers, function tables and grammar terminals, the CLI's
argparse tree — and gets its own test id, so a failure names what is missing from which page.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


# -- HTTP routes (docs/api.md) ---------------------------------------------------------------


def _routes() -> list[tuple[str, str, str | None]]:
    """(method, path, scope the code enforces) for every endpoint of a freshly built app."""
    from server.app import create_app
    from server.settings import Settings
    from server.web.docs import iter_routes, route_scope

    # create_app builds routers only; the data directory is touched in the lifespan, never run here.
    app = create_app(Settings(data_dir=ROOT / "build" / "test-docs-unused", scheduler_enabled=False))
    out = set()
    for route in iter_routes(app):
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                out.add((method, route.path, route_scope(route)))
    return sorted(out)


ROUTES = _routes()


def _api_sections() -> dict[str, str]:
    """Map "METHOD /path" to the text of the api.md section whose heading names it."""
    text = _read("docs/api.md")
    sections: dict[str, str] = {}
    parts = re.split(r"^#{2,4} ", text, flags=re.M)
    for part in parts[1:]:
        heading, _, body = part.partition("\n")
        for m in re.finditer(r"`([A-Z]+) (/[^`\s]*)`", heading):
            sections[f"{m.group(1)} {m.group(2)}"] = body
    return sections


API_SECTIONS = _api_sections()


def test_routes_are_found() -> None:
    # Guards the walk itself: an empty or tiny list would make the parametrized tests vacuous.
    paths = {p for _, p, _ in ROUTES}
    assert {"/healthz", "/api/query", "/v2/rest/query", "/login", "/docs", "/alerts/{alert_id}"} <= paths
    assert len(ROUTES) > 50


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_route_documented(method: str, path: str, scope: str | None) -> None:
    key = f"{method} {path}"
    assert key in API_SECTIONS, f"docs/api.md has no section headed `{key}`"
    assert scope is not None, f"{key}: the code declares no scope (server.web.docs.route_scope)"
    documented = re.search(r"^Scope: `(\w+)`", API_SECTIONS[key], flags=re.M)
    assert documented, f"docs/api.md, section `{key}`: no 'Scope: `...`' line"
    assert documented.group(1) == scope, f"docs/api.md says {key} needs {documented.group(1)!r}; the code enforces {scope!r}"


def test_api_documents_no_route_that_does_not_exist() -> None:
    real = {f"{m} {p}" for m, p, _ in ROUTES}
    stale = sorted(set(API_SECTIONS) - real)
    assert not stale, f"docs/api.md documents routes the app does not have: {stale}"


# -- Settings (docs/settings.md) -------------------------------------------------------------


def _settings_fields() -> list[tuple[str, Any]]:
    from server.settings import Settings

    return [(name, field.default) for name, field in Settings.model_fields.items()]


SETTINGS = _settings_fields()


def _default_forms(value: Any) -> set[str]:
    """How a default may be written in the table: `unset` for None, true/false, and numbers with
    or without a trailing .0."""
    if value is None:
        return {"unset"}
    if isinstance(value, bool):
        return {str(value).lower()}
    if isinstance(value, Path):
        return {str(value), "./" + str(value), value.as_posix()}
    if isinstance(value, float) and value.is_integer():
        return {str(int(value)), str(value)}
    return {str(value)}


@pytest.mark.parametrize(("name", "default"), SETTINGS, ids=[n for n, _ in SETTINGS])
def test_setting_documented(name: str, default: Any) -> None:
    env = f"QUARRY_{name.upper()}"
    rows = [line for line in _read("docs/settings.md").splitlines() if line.startswith(f"| `{env}` |")]
    assert rows, f"docs/settings.md has no table row for {env}"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    written = cells[1].strip("`") if len(cells) > 1 else ""
    assert written in _default_forms(default), f"docs/settings.md: {env} default is {written!r}, the code says {default!r}"


# -- KQL (docs/kql.md) -----------------------------------------------------------------------


def _kql_items() -> list[tuple[str, str]]:
    """(kind, word) for every operator, source, keyword alias, operator parameter, unsupported
    operator, scalar/aggregate function, alias, unsupported function, special form, scalar
    operator and type the compiler knows, read from its own tables at collection time."""
    from lark import Lark

    from kql import compiler  # noqa: F401  (fills the registry)
    from kql import functions as F
    from kql.expressions.calls import x_Call
    from kql.registry import OPERATORS, SOURCES
    from schema.types import KQL_TYPES, TYPE_ALIASES

    items: set[tuple[str, str]] = set()
    for kind in OPERATORS:
        if kind != "other":
            items.add(("operator", kind))
    for kind in SOURCES:
        items.add(("source", kind))
    # The grammar file itself, built as the parser builds it, so its terminals are the real ones.
    lark = Lark((ROOT / "kql" / "grammar.lark").read_text(encoding="utf-8"), parser="lalr", lexer="contextual")
    # Keyword spellings of operators (filter, order, limit, mvexpand, parse-where...): the
    # anonymous string terminals that open each *_op rule of the grammar.
    for rule in lark.rules:
        origin = str(rule.origin.name)
        if origin.endswith("_op") and rule.expansion:
            first = rule.expansion[0]
            if getattr(first, "is_term", False):
                pattern = lark.get_terminal(first.name).pattern
                if pattern.type == "str":
                    items.add(("operator keyword", pattern.value))

    def words(terminal: str) -> list[str]:
        """The words of a terminal's alternation groups, e.g. (evaluate|make-series|...)."""
        src = lark.get_terminal(terminal).pattern.value
        out = []
        for group in re.findall(r"\(([^()?]*\|[^()]*)\)", src):
            for alt in group.split("|"):
                alt = "hint.*" if alt.startswith("hint") else re.sub(r"\\(.)", r"\1", alt)
                if alt not in ("!", "not"):
                    out.append(alt)
        return out

    for w in words("OTHER_OP"):
        items.add(("unsupported or ignored operator", w))
    for w in words("PARAM_NAME"):
        items.add(("operator parameter", w))
    for w in words("STR_OP"):
        items.add(("string operator", w))
        items.add(("string operator", "!" + w))
    in_re = lark.get_terminal("IN_OP").pattern.value
    for w in set(re.findall(r"[a-z_]+", in_re)):
        for form in (w, "!" + w, w + "~", "!" + w + "~"):
            if re.fullmatch(in_re, form):
                items.add(("string operator", form))
    cmp_src = lark.get_terminal("CMP_OP").pattern.value
    for alt in cmp_src.removeprefix("(?:").removesuffix(")").split("|"):
        items.add(("comparison operator", re.sub(r"\\(.)", r"\1", alt)))
    for name in F.SCALARS:
        items.add(("scalar function", name))
    for name in F.AGGREGATES:
        items.add(("aggregate function", name))
    for name in F.ALIASES:
        items.add(("function alias", name))
    for name in F.UNSUPPORTED_FUNCTIONS:
        items.add(("unsupported function", name))
    # Forms the compiler handles before its function table: names compared with `name` in
    # kql.expressions.calls.x_Call (dynamic, toscalar, ingestion_time, column_ifexists, typed nulls...).
    tree = ast.parse(inspect.getsource(x_Call))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "name":
            for comp in node.comparators:
                for const in ast.walk(comp):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        items.add(("special form", const.value))
    for t in list(KQL_TYPES) + list(TYPE_ALIASES):
        items.add(("type", t))
    return sorted(items)


KQL_ITEMS = _kql_items()


def test_kql_items_are_found() -> None:
    kinds = {k for k, _ in KQL_ITEMS}
    assert {"operator", "scalar function", "aggregate function", "string operator", "special form"} <= kinds
    words = {w for _, w in KQL_ITEMS}
    assert {"where", "filter", "summarize", "mv-expand", "has_any", "!in~", "=~", "ago", "arg_max",
            "ingestion_time", "evaluate", "externaldata"} <= words


@pytest.mark.parametrize(("kind", "word"), KQL_ITEMS, ids=[f"{k}: {w}" for k, w in KQL_ITEMS])
def test_kql_item_documented(kind: str, word: str) -> None:
    text = _read("docs/kql.md")
    forms = [f"`{word}`", f"`{word}(", f"`{word} "]
    assert any(f in text for f in forms), f"docs/kql.md does not mention {kind} `{word}`"


UNSUPPORTED = [w for k, w in KQL_ITEMS if k == "unsupported function"]


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_function_in_unsupported_section(name: str) -> None:
    text = _read("docs/kql.md")
    section = text.split("## What is not supported", 1)[-1].split("\n## ", 1)[0]
    assert f"`{name}(" in section, f"docs/kql.md: {name}() is unsupported but not in 'What is not supported'"


# -- CLI (docs/cli.md) -----------------------------------------------------------------------


def _cli_items() -> list[tuple[str, str]]:
    """(command path, option or positional) for every subcommand of `quarry`; option "" stands
    for the command itself."""
    from server.cli import build_parser

    out: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    cmd = f"{path} {name}"
                    has_sub = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                    if not has_sub:
                        out.append((cmd, ""))
                    walk(sub, cmd)
            elif isinstance(action, argparse._HelpAction):
                continue
            elif path != "quarry":
                opt = max(action.option_strings, key=len) if action.option_strings else action.dest
                out.append((path, opt))

    walk(build_parser(), "quarry")
    return out


CLI_ITEMS = _cli_items()


def _cli_sections() -> dict[str, str]:
    text = _read("docs/cli.md")
    out: dict[str, str] = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        m = re.fullmatch(r"`(quarry[ a-z-]*)`", heading.strip())
        if m:
            out[m.group(1)] = body
    return out


def test_cli_items_are_found() -> None:
    commands = {c for c, o in CLI_ITEMS if o == ""}
    assert {"quarry serve", "quarry demo", "quarry keys create", "quarry query", "quarry check", "quarry sql"} <= commands


@pytest.mark.parametrize(("command", "option"), CLI_ITEMS, ids=[f"{c} {o}".strip() for c, o in CLI_ITEMS])
def test_cli_documented(command: str, option: str) -> None:
    sections = _cli_sections()
    assert command in sections, f"docs/cli.md has no section `## \\`{command}\\``"
    if option:
        assert f"`{option}" in sections[command], f"docs/cli.md, `{command}`: option {option} is not documented"


# -- README and the docs index ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["demo", "test"])
def test_readme_commands_exist_in_makefile(target: str) -> None:
    assert f"make {target}" in _read("README.md"), f"README.md does not show `make {target}`"
    assert re.search(rf"^{target}:", _read("Makefile"), flags=re.M), f"Makefile has no `{target}` target"


DOC_FILES = sorted(p.name for p in DOCS.glob("*.md"))


@pytest.mark.parametrize("name", DOC_FILES)
def test_doc_linked_from_readme(name: str) -> None:
    assert f"(docs/{name})" in _read("README.md"), f"README.md does not link docs/{name}"


def test_readme_links_resolve() -> None:
    readme = _read("README.md")
    missing = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
               if "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


# -- the console (docs/console.md) -----------------------------------------------------------------


def _console_pages() -> list[str]:
    """Every page the console serves (its router's GET routes, and the alert and incident pages)."""
    from server.web import alerts, console

    paths = [r.path for r in list(console.router.routes) + list(alerts.router.routes)
             if "GET" in getattr(r, "methods", set()) and not r.path.startswith(("/console/assets", "/login"))]
    return sorted({re.sub(r"\{[^}]+\}", "{id}", p) for p in paths})


CONSOLE_PAGES = _console_pages()


def test_console_pages_are_found() -> None:
    assert {"/", "/hunting", "/alerts", "/alerts/{id}", "/devices/{id}"} <= set(CONSOLE_PAGES)


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_console_page_documented(path: str) -> None:
    text = _read("docs/console.md")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert any(f"`{path}`" in row for row in rows), f"docs/console.md has no table row naming `{path}`"
