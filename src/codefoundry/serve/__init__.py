"""codefoundry.serve: a TGI- and OpenAI-compatible server with continuous batching.

    from codefoundry.serve import ServeConfig, serve, start_in_thread
    serve(ServeConfig(model=Path("model/"), port=8080))      # blocks; SIGTERM drains, then returns
    running = start_in_thread(ServeConfig(model=Path("model/"), port=0)); running.url; running.stop()

Layers (TGI router / vLLM v1): `validation` (bodies → `ValidRequest`) → `app` (one router per
API in `routes/`: TGI, OpenAI, operations; `guard`: Host check and payload limit; auth, CORS,
errors) → `inference` (requests through the engine back end) → `engine_client` (the engine core
in its own process, `codefoundry.generate.engine_core_process`, over ZeroMQ; the default) or
`engine_loop` (a thread of this process stepping the engine); both hand `StepOutput`s to the
requests through `request_streams` and feed `engine_metrics`. The engine
(`codefoundry.generate.Engine`, built by `engine_builder`) does continuous batching, chunked
prefill and preemption over the paged KV cache. Routes call other engine methods with
`await state.engine_loop.call("method", *args)`, whichever back end runs.

Names load on first use, so `ServeConfig` (what the CLI's help reads its defaults from) comes
without torch, FastAPI and the model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codefoundry.serve.app import create_app
    from codefoundry.serve.config import ServeConfig
    from codefoundry.serve.errors import ServeError
    from codefoundry.serve.server import RunningServer, build_state, serve, start_in_thread
    from codefoundry.serve.state import ServerState
    from codefoundry.serve.validation import Limits, Validator, ValidRequest

_HOME = {"create_app": "app", "ServeConfig": "config", "ServeError": "errors",
         "RunningServer": "server", "build_state": "server",
         "serve": "server", "start_in_thread": "server", "ServerState": "state", "Limits": "validation",
         "Validator": "validation", "ValidRequest": "validation"}
__all__ = ["Limits", "RunningServer", "ServeConfig", "ServeError", "ServerState",
           "ValidRequest", "Validator", "build_state", "create_app", "serve", "start_in_thread"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'codefoundry.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"codefoundry.serve.{_HOME[name]}"), name)
    globals()[name] = value
    return value
