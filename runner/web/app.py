"""The ASGI app: routes, templates, fixed static files, security headers, HTML error pages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from runner.catalog.db import Catalog
from runner.web import routes_backlog, routes_media, routes_search
from runner.web.api_config import ApiConfig
from runner.web.api_errors import ApiError, api_error_handler, error_response
from runner.web.auth import TokenAuth
from runner.web.queries import clock, duration_words

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"media-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                                 b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


@dataclass(frozen=True)
class WebConfig:
    """What the pages need besides the catalog: the queue (if any) retried files go to."""

    redis_url: str | None = None
    queue_name: str = "scriptorium"


class SecurityHeaders:
    """Adds a strict Content-Security-Policy and friends to every response (pure ASGI, streams untouched)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(clock=clock, duration=duration_words)
    env.filters["when"] = lambda d: "" if d is None else f"{d:%Y-%m-%d %H:%M} UTC"
    return Jinja2Templates(env=env)


def _static_route() -> Route:
    """/static/{name} for the files shipped in static/ only: the name is looked up, never joined to a path."""
    files = {p.name: p for p in (HERE / "static").iterdir() if p.is_file() and p.suffix in STATIC_TYPES}

    def static(request: Request) -> Response:
        path = files.get(request.path_params["name"])
        if path is None:
            raise HTTPException(404)
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"cache-control": "no-cache"})

    return Route("/static/{name}", static, name="static")


async def _error(request: Request, exc: HTTPException) -> Response:
    """An HTML page for 404s and other HTTP errors, with the same status (JSON under /v1/)."""
    if request.url.path.startswith("/v1/"):
        return error_response(ApiError(exc.status_code, str(exc.detail)))
    templates: Jinja2Templates = request.app.state.templates
    detail = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, exc.detail)
    return templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "detail": detail, "nav": ""},
                                      status_code=exc.status_code)


def create_app(catalog: Catalog, redis_url: str | None = None, queue_name: str = "scriptorium",
               host: str = "127.0.0.1", api: ApiConfig | None = None) -> Starlette:
    """The web app over `catalog`. Bound to a loopback address, it also refuses other Host names
    (DNS rebinding); retried files are enqueued on `redis_url` when given. With `api`, the /v1 routes
    (OpenAI's audio API and jobs) are served too, behind its token when it has one."""
    from runner.web import api as v1

    routes = [*routes_search.routes(), *routes_media.routes(), *routes_backlog.routes(), _static_route()]
    middleware = [Middleware(SecurityHeaders)]
    if api is not None and api.token:
        middleware.append(Middleware(TokenAuth, token=api.token))
    if host in LOOPBACK_NAMES:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK_NAMES)))
    handlers = {HTTPException: _error, ApiError: api_error_handler}
    app = Starlette(routes=routes + (v1.routes() if api is not None else []), middleware=middleware,
                    exception_handlers=handlers, lifespan=v1.lifespan if api is not None else None)
    app.state.api = api
    app.state.catalog = catalog
    app.state.templates = _templates()
    app.state.config = WebConfig(redis_url, queue_name)
    return app
