"""`codefoundry serve`: a TGI- and OpenAI-compatible server with continuous batching."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from codefoundry.cli.common import ConfigOpt, ModelOpt, examples
from codefoundry.config import load_config
from codefoundry.errors import UserError
from codefoundry.serve import ServeConfig

COMMAND = {
    "help": "Serve a model behind TGI- and OpenAI-compatible HTTP APIs (continuous batching, streaming, metrics).",
    "epilog": examples(
        "codefoundry serve --model model/",
        "codefoundry serve --model model/ --host 0.0.0.0 --port 3000 --api-key SECRET --max-concurrent-requests 64",
        "codefoundry serve --model model/ --cors-allow-origin https://playground.example --allowed-host devbox.lan",
        "codefoundry serve --model model/ --adapter sql=adapters/sql --adapter docs=adapters/docs "
        "--adapter-root adapters/",
        "codefoundry serve --model model/ --max-total-tokens 2048 --max-batch-prefill-tokens 4096 "
        "--otlp-endpoint http://127.0.0.1:4318",
        "codefoundry serve --model model/ --tp 2",
    ),
}


def _default(name: str) -> Any:
    return ServeConfig.model_fields[name].default


def _opt(flag: str, help_: str):  # a typer.Option with no default shown (the config's is in the help text)
    return typer.Option(flag, help=help_, show_default=False)


def command(
    model: ModelOpt = None,
    host: Annotated[str | None, _opt("--host", f"Interface to listen on (default {_default('host')}).")] = None,
    port: Annotated[int | None, _opt("--port", f"Port (default {_default('port')}; 0 = any free port).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="CODEFOUNDRY_API_KEY", show_default=False,
                                                help="Bearer key required on generation routes "
                                                     "(compared exactly).")] = None,
    max_concurrent_requests: Annotated[int | None, _opt(
        "--max-concurrent-requests",
        f"Requests in flight before 429 (default {_default('max_concurrent_requests')}).")] = None,
    max_input_tokens: Annotated[int | None, _opt("--max-input-tokens",
                                                 "Prompt tokens allowed (default max-total-tokens - 1).")] = None,
    max_total_tokens: Annotated[int | None, _opt("--max-total-tokens", "Prompt + new tokens allowed "
                                                 "(default min(n_positions, KV pool)).")] = None,
    max_batch_prefill_tokens: Annotated[int | None, _opt(
        "--max-batch-prefill-tokens",
        f"Tokens computed per engine step (default {_default('max_batch_prefill_tokens')}).")] = None,
    max_batch_total_tokens: Annotated[int | None, _opt("--max-batch-total-tokens",
                                                       "KV pool in tokens (default: sized from free memory).")
                                      ] = None,
    max_stop_sequences: Annotated[int | None, _opt(
        "--max-stop-sequences", f"Stop strings per request (default {_default('max_stop_sequences')}).")] = None,
    cors_allow_origin: Annotated[list[str] | None, _opt(
        "--cors-allow-origin", "Origin whose web pages may call this server (repeatable; '*' = any). Default: "
                               "none, no cross-origin access.")] = None,
    allowed_host: Annotated[list[str] | None, _opt(
        "--allowed-host", "Host name accepted beside localhost, 127.0.0.1 and [::1] while bound to a loopback "
                          "address (repeatable); other Host headers get 403.")] = None,
    dtype: Annotated[str | None, _opt("--dtype", "float32, bfloat16 or float16 (default: bfloat16 on CUDA, "
                                                 "float32 on CPU).")] = None,
    quantize: Annotated[str | None, _opt("--quantize", "Weight-only quantization of the linear layers: int8 "
                                                       "(per channel), int4 (groups of 32) or none. Default: the "
                                                       "model's own: int4 for a Q4_0/Q4_1 GGUF file (its 4-bit "
                                                       "weights as they are), else none.")] = None,
    otlp_endpoint: Annotated[str | None, _opt("--otlp-endpoint", "Export OpenTelemetry traces over OTLP/HTTP "
                                              "to this URL (off by default).")] = None,
    no_prefix_caching: Annotated[bool, _opt(
        "--no-prefix-caching", "Turn off prefix caching (on by default: the KV blocks of prompt prefixes seen "
                               "before are reused; outputs are the same either way).")] = False,
    speculate: Annotated[int | None, _opt(
        "--speculate", "Prompt-lookup speculative decoding: draft tokens per step copied from the prompt and "
                       f"output (0 = off; default {_default('speculate')}). A request's `speculate` overrides "
                       "it; outputs are the same either way.")] = None,
    adapter: Annotated[list[str] | None, _opt(
        "--adapter", "A LoRA adapter to serve, NAME=DIR (PEFT format; repeatable); requests name it by TGI's "
                     "adapter_id or OpenAI's model.")] = None,
    adapter_root: Annotated[Path | None, _opt(
        "--adapter-root", "Allow loading adapters at run time (POST /v1/adapters, with the API key if set) from "
                          "under this directory. Default: off.")] = None,
    tp: Annotated[int | None, typer.Option("--tp", show_default=False, help=(
        "Shard the model over this many processes (tensor parallelism: one per GPU, gloo on CPU); the engine "
        "runs on the first. Default 1."))] = None,
    dataset: Annotated[Path | None, _opt(
        "--dataset", "The dataset/ artifact /v1/provenance answers from, when the model's manifests do not lead to "
                     "one on this machine (default: the datasets in the model's and adapters' lineage).")] = None,
    no_engine_process: Annotated[bool, _opt(
        "--no-engine-process", "Run the engine core (scheduler, KV cache, model) on a thread of the server's "
                               "process (default: in its own process, apart from HTTP and streaming).")] = False,
    report: Annotated[Path | None, _opt("--report", "An HTML report to show at /ui/report (the demo's "
                                                    "demo-out/report.html).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Load --model, size the KV cache from memory, warm up, then serve until SIGTERM (which drains in-flight
    requests and exits 0). Routes: POST / /generate /generate_stream /tokenize /v1/completions
    /v1/chat/completions /v1/adapters; GET /health /info /metrics /v1/models /v1/adapters /docs
    /v1/provenance/contains /v1/provenance/lookup; DELETE /v1/adapters/NAME."""
    from codefoundry.serve import serve

    if dataset is not None and not (dataset / "index" / "contains.json").is_file():
        raise UserError(f"--dataset {dataset} is not a dataset/ artifact with a membership index "
                        "(index/contains.json)", "give a directory made by `codefoundry data curate`")
    if report is not None and not report.is_file():
        raise UserError(f"--report {report} is not a file", "give the demo's demo-out/report.html")
    flags = {"model": Path(model) if model else None, "host": host, "port": port, "api_key": api_key,
             "max_concurrent_requests": max_concurrent_requests, "max_input_tokens": max_input_tokens,
             "max_total_tokens": max_total_tokens, "max_batch_prefill_tokens": max_batch_prefill_tokens,
             "max_batch_total_tokens": max_batch_total_tokens, "max_stop_sequences": max_stop_sequences,
             "cors_allow_origin": cors_allow_origin or None, "allowed_host": allowed_host or None, "dtype": dtype,
             "quantize": quantize,
             "otlp_endpoint": otlp_endpoint, "enable_prefix_caching": False if no_prefix_caching else None,
             "adapters": _adapters(adapter), "adapter_root": adapter_root, "dataset": dataset,
             "speculate": speculate, "engine_process": False if no_engine_process else None, "tp": tp,
             "report": report}
    cfg = load_config(ServeConfig, config, flags)
    if cfg.tp > 1 and cfg.model is not None:          # before any process starts
        from codefoundry.generate import check_tp_serving

        check_tp_serving(cfg.model, cfg.tp, cfg.served_quantize, bool(cfg.adapters) or cfg.adapter_root is not None,
                         cfg.file_int4)
    serve(cfg)


def _adapters(flags: list[str] | None) -> dict[str, Path] | None:
    """`--adapter NAME=DIR` flags as a mapping (None when none given, so a --config file's list stays)."""
    if not flags:
        return None
    out: dict[str, Path] = {}
    for flag in flags:
        name, sep, path = flag.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--adapter {flag!r} is not NAME=DIR", "e.g. --adapter sql=adapters/sql")
        if name in out:
            raise UserError(f"--adapter {name} is given twice")
        out[name] = Path(path)
    return out
