"""LoRA adapters at run time: `GET /v1/adapters`, `POST /v1/adapters {name, path}`, `DELETE /v1/adapters/{name}`.

Every route needs the API key when one is set. Loading reads files the server can see, so a
path must lie under `--adapter-root` (after resolving symlinks; a relative path is taken from
there); without `--adapter-root`, loading at run time is off (403) and only `--adapter` flags
load adapters. The engine does the work (`Engine.add_adapter` / `remove_adapter` /
`adapters`) on its own thread, between steps; this module checks, calls, and publishes the
names to the validator, `/info` and `/v1/models`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from codefoundry.errors import UserError
from codefoundry.generate.adapters import NAME_PATTERN
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.state import ServerState, State, require_api_key

router = APIRouter(tags=["Adapters"], dependencies=[Depends(require_api_key)])


class LoadAdapter(BaseModel):
    name: str = Field(..., description="The name requests use: TGI's adapter_id, OpenAI's model.", examples=["sql"])
    path: str = Field(..., description="A PEFT adapter directory under --adapter-root (relative: from there).",
                      examples=["sql"])


def publish(state: ServerState, adapters: list[dict]) -> None:
    """Make the engine's adapters the ones requests may name, and the ones /info and /v1/models list."""
    names = sorted(a["name"] for a in adapters)
    state.validator.adapters = set(names)
    state.info.adapters = names


def allowed_path(root: Path | None, path: str) -> Path:
    """`path` resolved under `root`, or 403."""
    if root is None:
        raise ServeError("forbidden", "loading adapters at run time is off: start the server with --adapter-root DIR "
                                      "(adapters load only from under it)")
    root = root.resolve()
    try:  # a NUL byte, a name longer than the file system allows: refused here, not deep in the loader
        target = (root / path).resolve()
        target.exists()
    except (ValueError, OSError) as e:
        raise validation(f"adapter path {path[:200]!r} is not a usable path: {type(e).__name__}") from None
    if not target.is_relative_to(root):
        raise ServeError("forbidden", f"adapter path {path!r} is outside --adapter-root")
    return target


@router.get("/v1/adapters", summary="The loaded LoRA adapters")
async def list_adapters(state: State) -> dict[str, Any]:
    adapters = await state.engine_loop.call("adapters")
    return {"base_model": state.model_id, "data": [_shown(state, a) for a in adapters]}


@router.post("/v1/adapters", status_code=201, summary="Load a LoRA adapter (PEFT format) from under --adapter-root")
async def load_adapter(state: State, body: LoadAdapter) -> JSONResponse:
    if not NAME_PATTERN.fullmatch(body.name):
        raise validation(f"adapter name {body.name!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    if body.name == state.model_id or body.name in state.validator.adapters:
        raise ServeError("conflict", f"the name {body.name!r} is taken; unload it first or pick another")
    path = allowed_path(state.config.adapter_root, body.path)
    try:
        loaded = await state.engine_loop.call("add_adapter", body.name, str(path))
    except UserError as e:             # named as the client gave it: errors do not show the server's layout
        raise validation(str(e).replace(str(path), repr(body.path))) from None
    publish(state, await state.engine_loop.call("adapters"))
    return JSONResponse(_shown(state, loaded), status_code=201)


@router.delete("/v1/adapters/{name}", summary="Unload a LoRA adapter no request is using")
async def unload_adapter(state: State, name: str) -> dict[str, Any]:
    if name not in state.validator.adapters:
        known = ", ".join(sorted(state.validator.adapters)) or "none"
        raise ServeError("not_found", f"adapter {name!r} is not loaded (adapters: {known})")
    try:
        removed = await state.engine_loop.call("remove_adapter", name)
    except UserError as e:
        raise ServeError("conflict", str(e)) from None
    publish(state, await state.engine_loop.call("adapters"))
    return _shown(state, removed)


def _shown(state: ServerState, adapter: dict) -> dict[str, Any]:
    """An adapter as the API shows it: its path relative to --adapter-root when under it (no server layout)."""
    shown = dict(adapter)
    root = state.config.adapter_root
    path = Path(shown.pop("path"))
    if root is not None and path.is_relative_to(root.resolve()):
        shown["path"] = str(path.relative_to(root.resolve()))
    return shown
