"""codefoundry.serve: a TGI- and OpenAI-compatible server with continuous batching.

    from codefoundry.serve import ServeConfig, serve, start_in_thread
    serve(ServeConfig(model=Path("model/"), port=8080))      # blocks; SIGTERM drains, then returns
    running = start_in_thread(ServeConfig(model=Path("model/"), port=0)); running.url; running.stop()

Layers (TGI router / vLLM v1): `validation` (bodies → `ValidRequest`) → `app` (one router per
API in `routes/`: TGI, OpenAI, operations; `guard`: Host check and payload limit; auth, CORS,
errors) → `inference` (requests through the engine loop) → `engine_loop` (a thread stepping
`codefoundry.generate.Engine`, whose scheduler does continuous batching, chunked prefill and
preemption over the paged KV cache).
"""

from codefoundry.serve.app import create_app
from codefoundry.serve.config import ServeConfig
from codefoundry.serve.errors import ServeError
from codefoundry.serve.routes.openai import DEFAULT_CHAT_TEMPLATE
from codefoundry.serve.server import RunningServer, build_state, serve, start_in_thread
from codefoundry.serve.state import ServerState
from codefoundry.serve.validation import Limits, Validator, ValidRequest

__all__ = ["DEFAULT_CHAT_TEMPLATE", "Limits", "RunningServer", "ServeConfig", "ServeError", "ServerState",
           "ValidRequest", "Validator", "build_state", "create_app", "serve", "start_in_thread"]
