"""API documentation: Swagger UI at ``GET /docs`` for a signed-in browser or a bearer key of
query (or admin) scope, with its assets served from this server (``fastapi-offline`` ships
Swagger UI 5's bundle; FastAPI's default page loads it from a CDN, unreachable offline).

``GET /docs/openapi.json`` is the app's OpenAPI document plus what the docs add: the bearer
security scheme (so Swagger UI's "Authorize" sends the key), each operation's scope
(``x-quarry-scope`` and a line in its description) and a request example for each operation. The
page also renders that endpoint list server-side inside Swagger UI's container: it is what a
browser without JavaScript (or a client reading the HTML) sees, until Swagger UI replaces it.

An anonymous browser is redirected to the sign-in form with ``next=/docs``; an API client
without a valid key gets the usual 401 JSON error, with a key of another scope 403.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from collections.abc import Iterator
from functools import cache
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from server.auth import allows
from server.errors import ApiError
from server.web import login, sessions
from server.web.html import HEADERS, render
from server.web.sessions import Principal

router = APIRouter(include_in_schema=False)

SCHEME = "bearerAuth"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
# Swagger UI runs scripts and inline styles, loads its assets and the spec from this server only;
# no CDN, no validator badge, no framing.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_INIT_JS = """\
// Swagger UI start-up (a file, not an inline script, so the page's CSP can forbid inline code).
window.addEventListener("load", function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: el.getAttribute("data-spec"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
"""
_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return (importlib.resources.files("fastapi_offline") / "static" / name).read_bytes()


# -- scopes ------------------------------------------------------------------------------------


def _dep_scopes(dependant: Any) -> set[str]:
    out: set[str] = set()
    call = getattr(dependant, "call", None)
    scope = getattr(call, "quarry_scope", None)
    if isinstance(scope, str):
        out.add(scope)
    for sub in getattr(dependant, "dependencies", []) or []:
        out |= _dep_scopes(sub)
    return out


def iter_routes(app: FastAPI) -> Iterator[Any]:
    """Every HTTP endpoint of the app: APIRoutes, and what FastAPI (>= 0.16x) keeps as lazily
    included routers, whose effective contexts have the same attributes (path, path_format,
    methods, dependant, endpoint, tags, include_in_schema, summary, name)."""

    def walk(routes: list[BaseRoute]) -> Iterator[Any]:
        for r in routes:
            contexts = getattr(r, "effective_route_contexts", None)
            if contexts is not None:
                yield from contexts()
            elif isinstance(r, APIRoute):
                yield r

    return walk(list(app.routes))


def route_scope(route: Any) -> str | None:
    """The scope an endpoint needs, from its ``require(...)`` dependencies or a ``quarry_scope``
    tag on the endpoint; "open" for /healthz and the sign-in form; None if unknown."""
    path = getattr(route, "path", "")
    if path == "/healthz" or path == "/login":
        return "open"
    if path == "/logout":
        return "session"
    scopes = _dep_scopes(getattr(route, "dependant", None))
    tagged = getattr(getattr(route, "endpoint", None), "quarry_scope", None)
    if isinstance(tagged, str):
        scopes.add(tagged)
    if not scopes and "kusto" in (getattr(route, "tags", None) or []):
        # The Kusto handlers check their query key inside (to answer in Kusto's error shape).
        return "query"
    if not scopes:
        return None
    # Several requirements: the narrowest one decides (admin implies the others).
    return "admin" if "admin" in scopes else sorted(scopes)[0]


# -- examples ----------------------------------------------------------------------------------


def _resolve(spec: dict[str, Any], schema: Any) -> Any:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 20:
        ref = str(schema["$ref"])
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node
        seen += 1
    return schema


def sample(spec: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """An example value for a JSON schema: its own example if it has one, else one built from
    its type (first enum value, default, properties)."""
    schema = _resolve(spec, schema)
    if not isinstance(schema, dict) or depth > 6:
        return None
    if "example" in schema:
        return schema["example"]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if _resolve(spec, o).get("type") != "null"]
        if options:
            return sample(spec, options[0], depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        # Required fields always; optional ones only for small objects, to keep examples short.
        keep = [k for k in props if k in required or len(props) <= 6]
        return {k: sample(spec, props[k], depth + 1) for k in keep}
    if kind == "array":
        item = sample(spec, schema.get("items", {}), depth + 1)
        return [] if item is None else [item]
    return {"string": "string", "integer": 0, "number": 0, "boolean": False}.get(str(kind))


def _param_value(spec: dict[str, Any], param: dict[str, Any]) -> str:
    if "example" in param:
        return str(param["example"])
    examples = param.get("examples")
    if isinstance(examples, dict) and examples:
        first = next(iter(examples.values()))
        if isinstance(first, dict) and "value" in first:
            return str(first["value"])
    schema = _resolve(spec, param.get("schema", {}))
    value = sample(spec, schema)
    if value in (None, "string", 0) and str(schema.get("type")) in ("string", "integer", "None"):
        if param.get("in") == "path" and "table" in str(param.get("name", "")).lower():
            return "DeviceProcessEvents"
        return "1" if schema.get("type") == "integer" else f"<{param.get('name')}>"
    return str(value)


def _body_example(spec: dict[str, Any], op: dict[str, Any]) -> tuple[str, Any] | None:
    content = (op.get("requestBody") or {}).get("content") or {}
    for media, item in content.items():
        if "example" in item:
            return media, item["example"]
        examples = item.get("examples")
        if isinstance(examples, dict) and examples:
            first = next(iter(examples.values()))
            if isinstance(first, dict) and "value" in first:
                return media, first["value"]
        return media, sample(spec, item.get("schema", {}))
    return None


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def example_request(spec: dict[str, Any], base_url: str, path: str, method: str, op: dict[str, Any]) -> str:
    """A curl command that calls the operation (with the key in $QUARRY_KEY)."""
    url_path = path
    query: list[str] = []
    for param in op.get("parameters") or []:
        param = _resolve(spec, param)
        value = _param_value(spec, param)
        if param.get("in") == "path":
            url_path = url_path.replace("{" + str(param["name"]) + "}", quote(value, safe="<>"))
        elif param.get("in") == "query" and param.get("required"):
            query.append(f"{param['name']}={quote(value, safe='')}")
    if method == "get" and not op.get("parameters") and "query string" in str(op.get("summary", "")):
        # A GET form of a POST route ("parameters in the query string", the Kusto REST routes):
        # its parameters are the POST body's fields, which only the POST body example shows.
        sibling = _body_example(spec, (spec.get("paths", {}).get(path) or {}).get("post") or {})
        if sibling is not None and isinstance(sibling[1], dict):
            query += [f"{k}={quote(str(v), safe='')}" for k, v in sibling[1].items() if isinstance(v, (str, int, float))]
    url = base_url.rstrip("/") + url_path + (("?" + "&".join(query)) if query else "")
    parts = ["curl"]
    if method != "get":
        parts.append(f"-X {method.upper()}")
    if op.get("x-quarry-scope") != "open":
        parts.append('-H "Authorization: Bearer $QUARRY_KEY"')
    body = _body_example(spec, op)
    if body is not None:
        media, value = body
        text = value if isinstance(value, str) else json.dumps(value, indent=None)
        parts.append(f"-H {_shell_quote('Content-Type: ' + media)}")
        parts.append(f"--data {_shell_quote(text)}")
    elif method in ("post", "put", "patch") and op.get("x-quarry-body"):
        parts.append(str(op["x-quarry-body"]))
    parts.append(_shell_quote(url))
    return " ".join(parts)


def _response_example(op: dict[str, Any]) -> Any:
    for status in ("200", "201", "202"):
        content = ((op.get("responses") or {}).get(status) or {}).get("content") or {}
        for item in content.values():
            if "example" in item:
                return item["example"]
    return None


# -- the document --------------------------------------------------------------------------


def docs_spec(app: FastAPI, base_url: str) -> dict[str, Any]:
    """The OpenAPI document with the security scheme, scopes and a request example per operation."""
    spec = copy.deepcopy(app.openapi())
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`quarry keys create --scope query|ingest|admin`); admin implies every scope.",
    }
    scopes: dict[tuple[str, str], str | None] = {}
    for route in iter_routes(app):
        for m in route.methods or ():
            scopes[(m.lower(), route.path_format)] = route_scope(route)
    for path, ops in (spec.get("paths") or {}).items():
        for method, op in ops.items():
            if method not in HTTP_METHODS or not isinstance(op, dict):
                continue
            scope = scopes.get((method, path))
            op["x-quarry-scope"] = scope or "unknown"
            if scope == "open":
                op["security"] = []
                line = "**Scope:** none (open)."
            else:
                op["security"] = [{SCHEME: []}]
                line = (
                    "**Scope:** see the description."
                    if not scope
                    else "**Scope:** `admin`."
                    if scope == "admin"
                    else f"**Scope:** `{scope}` (or `admin`)."
                )
            if path.startswith("/api/ingest/") and "requestBody" not in op:
                op["x-quarry-body"] = "-H 'Content-Type: application/json' --data @events.json"
            example = example_request(spec, base_url, path, method, op)
            op["x-quarry-example"] = example
            desc = str(op.get("description") or "").strip()
            op["description"] = f"{line}\n\n{desc}\n\n**Example:**\n\n```\n{example}\n```".replace("\n\n\n\n", "\n\n")
    return spec


def _spec_for(request: Request) -> dict[str, Any]:
    state = request.app.state
    cached = getattr(state, "docs_spec", None)
    if cached is None:
        cached = docs_spec(request.app, str(state.settings.public_url))
        state.docs_spec = cached
    return cached  # type: ignore[no-any-return]


# -- auth --------------------------------------------------------------------------------------


def _gate(request: Request, browser_page: bool = False) -> Principal | Response:
    who = sessions.principal(request)
    if who is None:
        wants_html = "text/html" in request.headers.get("accept", "")
        if browser_page and wants_html and not request.headers.get("authorization"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                f"/login?next={quote(sessions.safe_next(target), safe='/')}", status_code=303, headers=HEADERS
            )
        raise ApiError(
            401,
            "missing or invalid credentials: send 'Authorization: Bearer <key>' or sign in at /login",
            code="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not allows(who.scope, login.PAGE_SCOPE):
        raise ApiError(
            403, f"this key has scope '{who.scope}'; the API docs need 'query'", code="forbidden"
        )
    return who


# -- routes ------------------------------------------------------------------------------------


def _index_rows(spec: dict[str, Any], app: FastAPI) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fallback lists of the docs page (shown until Swagger UI replaces them): the API's
    operations with their example and answer, and the other routes (pages, documents)."""
    rows = []
    for path, ops in (spec.get("paths") or {}).items():
        for method, op in ops.items():
            if method not in HTTP_METHODS or not isinstance(op, dict):
                continue
            resp = _response_example(op)
            rows.append({"method": method.upper(), "path": path, "summary": op.get("summary"),
                         "scope": op.get("x-quarry-scope"), "example": op.get("x-quarry-example"),
                         "response": None if resp is None else json.dumps(resp, indent=2)})
    other = []
    for route in iter_routes(app):
        if not route.include_in_schema:
            for m in sorted(route.methods or ()):
                if m != "HEAD":
                    other.append({"method": m, "path": route.path,
                                  "summary": route.summary or route.name.replace("_", " "),
                                  "scope": route_scope(route) or "unknown"})
    return rows, other


@router.get("/docs")
async def docs_page(request: Request) -> Response:
    who = _gate(request, browser_page=True)
    if isinstance(who, Response):
        return who
    spec = _spec_for(request)
    info = spec.get("info") or {}
    rows, other = _index_rows(spec, request.app)
    headers = {**HEADERS, "Content-Security-Policy": DOCS_CSP}
    return render("docs.html", who=who, headers=headers, title=f"{info.get('title')} API docs", info=info,
                  root=request.scope.get("root_path", ""), rows=rows, other=other, active="")


@router.get("/docs/openapi.json")
async def docs_openapi(request: Request) -> Response:
    who = _gate(request)
    assert not isinstance(who, Response)
    return Response(
        json.dumps(_spec_for(request)),
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/docs/assets/{name}")
async def docs_asset(request: Request, name: str) -> Response:
    _gate(request)
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if name == "init.js":
        return Response(_INIT_JS, media_type="application/javascript; charset=utf-8", headers=headers)
    media = _ASSETS.get(name)
    if media is None:
        raise ApiError(404, f"no docs asset named {name[:100]!r}", code="not_found")
    return Response(_asset(name), media_type=media, headers=headers)


# Read by route_scope() for the "Browser pages and documents" list.
docs_page.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
docs_openapi.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
docs_asset.quarry_scope = login.PAGE_SCOPE  # type: ignore[attr-defined]
