"""Operations: `GET /health` (+ `/ping`, `GET /`), `/info`, `/metrics`; open without the API key, as in TGI.

`/info` shows the model's name, dtype, device and the server's limits; `/metrics` shows request
counts, latencies and token counts — never prompt or generated text.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from codefoundry.serve.schemas import Info
from codefoundry.serve.state import State

router = APIRouter(tags=["Operations"])


@router.get("/info", response_model=Info, summary="Model and router limits")
async def info(state: State) -> Info:
    return state.info


@router.get("/health", summary="200 when ready, 503 otherwise")
@router.get("/ping", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def health(state: State) -> Response:
    if not state.healthy:
        return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, status_code=503)
    return Response(status_code=200)


@router.get("/metrics", summary="Prometheus metrics (tgi_* names)")
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
