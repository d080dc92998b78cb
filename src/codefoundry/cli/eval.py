"""`codefoundry eval`: HumanEval, MBPP, MultiPL-E and FIM infilling on a model or endpoint."""

from __future__ import annotations

from codefoundry.cli.not_built import ANY_ARGS, not_built_command

COMMAND = {"context_settings": ANY_ARGS,
           "help": "(not built yet) Evaluate a model or endpoint (HumanEval, MBPP, MultiPL-E, infilling)."}
command = not_built_command("eval", 8, "Evaluation harness")
