"""The playground: a static page at `/ui` (HTML + JS + CSS from package data) and `/ui/model.json`.

The page itself needs no API key (it holds none: the user types it, the page keeps it in
sessionStorage); its calls to the generation routes do. `/ui/model.json` tells the page what
`/info` does not: the model's FIM tokens (or none) and whether it brings its own chat template.
Every `/ui` response carries a Content-Security-Policy without inline script or style, because
the page handles an API key: only this server's own files run on it. `connect-src` stays open
to any http(s) URL, so compare mode can reach the second server the user names.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, RedirectResponse, Response

from codefoundry.serve.state import State

router = APIRouter(prefix="/ui", tags=["Playground"], include_in_schema=False)

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; "
                           "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STATIC_FILES = {"playground.js": "text/javascript; charset=utf-8", "playground.css": "text/css; charset=utf-8"}
# (prefix, suffix, middle) spellings of the families we know: StarCoder/SantaCoder, Qwen2.5-Coder, DeepSeek-Coder
FIM_TOKEN_SETS = (("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
                  ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
                  ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"))


@cache
def _static(name: str) -> bytes:
    return resources.files("codefoundry.serve").joinpath("static", name).read_bytes()


def fim_tokens(tokenizer: Any) -> dict[str, str] | None:
    """The first FIM token set whose three tokens are all in the tokenizer's vocabulary, else None."""
    vocab = tokenizer.get_vocab()
    for prefix, suffix, middle in FIM_TOKEN_SETS:
        if prefix in vocab and suffix in vocab and middle in vocab:
            return {"prefix": prefix, "suffix": suffix, "middle": middle}
    return None


@router.get("", summary="The playground page")
async def page() -> Response:
    return Response(_static("playground.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("/", include_in_schema=False)
async def page_slash() -> Response:
    return RedirectResponse("/ui", status_code=308)


@router.get("/model.json", summary="What the page needs to know about the model")
async def model(state: State) -> JSONResponse:
    tok = state.tokenizer
    return JSONResponse({"model_id": state.model_id, "fim": fim_tokens(tok),
                         "chat_template": bool(getattr(tok, "chat_template", None)),
                         "max_input_tokens": state.info.max_input_tokens,
                         "max_total_tokens": state.info.max_total_tokens,
                         "max_stop_sequences": state.info.max_stop_sequences},
                        headers=SECURITY_HEADERS)


@router.get("/{name}", summary="The page's script and style sheet")
async def static_file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return JSONResponse({"error": f"no such file: /ui/{name}", "error_type": "not_found"}, status_code=404,
                            headers=SECURITY_HEADERS)
    return Response(_static(name), media_type=media_type, headers=SECURITY_HEADERS)
