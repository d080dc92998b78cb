"""One `APIRouter` per API: `tgi` (TGI's generation routes), `openai` (completions, chat, models),
`adapters` (LoRA adapters loaded and unloaded at run time), `operations` (health, info, metrics),
`provenance` (was this code, or this user, in the training data?), `playground` (the /ui page);
`codefoundry.serve.app.create_app` mounts them."""

from __future__ import annotations

from typing import Any

from fastapi.responses import StreamingResponse

from codefoundry.serve.schemas import ErrorBody

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Input validation error"},
    424: {"model": ErrorBody, "description": "Generation error"},
    429: {"model": ErrorBody, "description": "Model is overloaded"},
}


class EventStreamResponse(StreamingResponse):
    """Server-sent events (the media type also labels the route's 200 response in the OpenAPI schema)."""

    media_type = "text/event-stream"
