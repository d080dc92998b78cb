"""The HTTP application: one router per API (TGI, OpenAI, operations, the /ui playground), the request guard,
CORS, error mapping.

Nothing here computes: a route turns its body into `ValidRequest`s (validation.py), admits
them under `max_concurrent_requests` (state.py), reads the engine loop's `StepOutput`s
(inference.py) and shapes them (responses.py). Every failure goes through `ServeError`
(errors.py), one mapping to status + `{"error", "error_type"}`; on a stream it becomes the
last SSE event. Cross-origin access is off unless `cors_allow_origin` lists origins.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from codefoundry import __version__
from codefoundry.serve.config import ServeConfig
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.guard import RequestGuard, allowed_hosts
from codefoundry.serve.routes import adapters, openai, operations, playground, provenance, report, tgi
from codefoundry.serve.state import ServerState, Unauthorized

log = logging.getLogger(__name__)


def security_warnings(cfg: ServeConfig) -> list[str]:
    """Settings that expose the server more than their owner may think."""
    if "*" in cfg.cors_allow_origin and cfg.api_key is None:
        return ["--cors-allow-origin '*' without --api-key: any web page you visit can use this server "
                "(send prompts, read completions); set --api-key or list the origins you trust"]
    return []


def create_app(state: ServerState) -> FastAPI:
    cfg = state.config
    app = FastAPI(title="codefoundry serve", version=__version__, docs_url="/docs",
                  openapi_url="/api-doc/openapi.json",
                  description="TGI- and OpenAI-compatible text generation with continuous batching.")
    app.state.serve = state
    # report before playground: the playground's /ui/{name} would otherwise answer /ui/report
    for router in (tgi.router, openai.router, adapters.router, operations.router, provenance.router,
                   report.router, playground.router):
        app.include_router(router)
    for warning in security_warnings(cfg):
        log.warning(warning)
    if cfg.cors_allow_origin:
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_allow_origin, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])
    # added last, so it runs first: a request for a foreign Host is refused before CORS answers its preflight
    app.add_middleware(RequestGuard, payload_limit=cfg.payload_limit,
                       hosts=allowed_hosts(cfg.allowed_host) if cfg.loopback else None)

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, e: ServeError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def on_bad_body(request: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid body"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        state.metrics.request_failure.labels(err="validation").inc()
        return validation(f"{where}: {first.get('msg')}").response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException) -> Response:
        if e.status_code == 400:  # a body FastAPI cannot even parse (not UTF-8): the same 422 as a malformed one
            state.metrics.request_failure.labels(err="validation").inc()
            return validation(f"body: {e.detail} (send UTF-8 JSON)").response()
        return await http_exception_handler(request, e)

    @app.exception_handler(Unauthorized)
    async def on_unauthorized(request: Request, e: Exception) -> Response:
        # TGI's status and header; the body says why, so `curl -s` without the key does not print nothing
        return JSONResponse({"error": "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                             "error_type": "authentication"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    return app
