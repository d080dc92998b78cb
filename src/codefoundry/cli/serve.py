"""`codefoundry serve`: a TGI- and OpenAI-compatible server with continuous batching."""

from __future__ import annotations

from codefoundry.cli.not_built import ANY_ARGS, not_built_command

COMMAND = {"context_settings": ANY_ARGS,
           "help": "(not built yet) Serve a model behind TGI- and OpenAI-compatible HTTP APIs."}
command = not_built_command("serve", 7, "Inference server I")
