"""The server's error kinds and the one mapping to HTTP status and TGI's `{"error", "error_type"}` body."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

# error_type -> (HTTP status, message prefix), as TGI's `From<InferError>` (router/src/server.rs)
ERROR_KINDS: dict[str, tuple[int, str]] = {
    "validation": (422, "Input validation error: "),
    "generation": (424, "Request failed during generation: "),
    "overloaded": (429, ""),
    "template_error": (422, "Template error: "),
    "payload_too_large": (413, ""),
    "host_not_allowed": (403, ""),   # a Host header a loopback-bound server does not answer to (DNS rebinding)
    "healthcheck": (503, ""),
    "not_found": (404, ""),          # an OpenAI `model` (an adapter) or an adapter route's name nobody loaded
    "forbidden": (403, ""),          # loading an adapter from outside --adapter-root (or with none set)
    "conflict": (409, ""),           # an adapter name taken, or unloading one that requests still use
    "shutting_down": (503, ""),
    "engine_unavailable": (503, "Engine unavailable: "),   # the engine process died (the server exits soon)
}


class ServeError(Exception):
    """A request failed; `error_type` picks the status and message prefix."""

    def __init__(self, error_type: str, message: str) -> None:
        if error_type not in ERROR_KINDS:
            raise ValueError(f"unknown error type {error_type!r}")
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    @property
    def status(self) -> int:
        return ERROR_KINDS[self.error_type][0]

    def body(self) -> dict[str, str]:
        return {"error": ERROR_KINDS[self.error_type][1] + self.message, "error_type": self.error_type}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)

    def sse(self) -> str:
        """The error as the SSE event `/generate_stream` ends with (TGI answers 200 and sends it as data)."""
        return f"data:{json.dumps(self.body())}\n\n"


def validation(message: str) -> ServeError:
    return ServeError("validation", message)


OVERLOADED = "Model is overloaded"
