"""`/ui/report`: the demo's report (a self-contained HTML file named by `--report`), as the server's own page.

The page is static: inline style and `data:` PNG plots, no script at all, so its
Content-Security-Policy allows no script and nothing from elsewhere. The file is read at each
request, so a report rewritten by a later demo run shows without a restart.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from codefoundry.serve.state import State

router = APIRouter(prefix="/ui", tags=["Playground"], include_in_schema=False)

REPORT_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _not_found(message: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": "not_found"}, status_code=404, headers=REPORT_HEADERS)


@router.get("/report", summary="The demo's report")
async def report(state: State) -> Response:
    path = state.config.report
    if path is None:
        return _not_found("no report: start the server with --report FILE (the demo does: demo-out/report.html)")
    try:
        body = path.read_bytes()
    except OSError:
        return _not_found(f"the report {path.name} is not written yet: the demo's 'report' stage writes it")
    return Response(body, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)
