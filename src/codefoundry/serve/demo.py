"""The demo's serving: a measured probe of base + adapter, then the server kept up for the user until Ctrl-C.

The probe (`out/serve/`): one server on a free port with SmolLM2 as the base and the demo's LoRA
adapter loaded; a streamed FIM completion through the adapter, a plain one from the base, the
adapter listed by `/v1/adapters`, then `probe_requests` concurrent streamed requests (half of
them through the adapter) timed for throughput, time to first token and latency.

    serve/probe.json        the measured figures (and each request's own)
    serve/transcript.json   each request of the probe, its status and reply
    serve/manifest.json
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from codefoundry.atomic import atomic_write_json
from codefoundry.console import console
from codefoundry.errors import UserError
from codefoundry.manifest import write_manifest
from codefoundry.serve.config import ServeConfig
from codefoundry.serve.server import start_in_thread

if TYPE_CHECKING:
    from codefoundry.demo_plan import DemoPlan

ADAPTER = "code"
FIM_PREFIX = "def mean(xs):\n    total = "
FIM_SUFFIX = "\n    return total / len(xs)\n"
PROBE_PROMPTS = ("def fibonacci(n):\n", "import os\n\ndef list_python_files(root):\n",
                 "class Stack:\n    def __init__(self):\n", "def is_prime(n: int) -> bool:\n")


def demo_serve_config(out: Path, host: str = "127.0.0.1", port: int = 0) -> ServeConfig:
    """The base model with the fine-tune as adapter `code`, and the demo's report at /ui/report."""
    base, adapter = out / "base", out / "adapters" / ADAPTER
    for needed, stage in ((base, "base model"), (adapter, "finetune")):
        if not (needed / "manifest.json").exists():
            raise UserError(f"{needed} is missing: the demo's '{stage}' stage makes it")
    return ServeConfig(model=base, host=host, port=port, model_id="smollm2", adapters={ADAPTER: adapter},
                       report=out / "report.html", max_batch_total_tokens=8192, max_batch_prefill_tokens=2048)


def fim_prompt(prefix: str, suffix: str) -> str:
    return f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"


def stream(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST /generate_stream; the tokens, the final text, time to first token and total seconds."""
    start = time.perf_counter()
    first: float | None = None
    tokens: list[str] = []
    final: dict[str, Any] = {}
    with client.stream("POST", "/generate_stream", json=body) as r:
        if r.status_code != 200:
            r.read()
            raise UserError(f"the probe's streamed request failed with {r.status_code}: {r.text[:200]}")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise UserError(f"the probe's stream ended in an error: {event['error']}")
            if first is None:
                first = time.perf_counter() - start
            tokens.append(event["token"]["text"])
            if event.get("generated_text") is not None:
                final = event
    seconds = time.perf_counter() - start
    return {"tokens": len(tokens), "text": final.get("generated_text", "".join(tokens)),
            "ttft_s": first, "seconds": seconds}


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            "max": ordered[-1]}


def concurrent_load(url: str, plan: DemoPlan, seed: int) -> dict[str, Any]:
    """`plan.probe_requests` streamed requests at once, alternately base and adapter; throughput and latency."""
    results: list[dict[str, Any] | None] = [None] * plan.probe_requests
    errors: list[str] = []

    def one(i: int) -> None:
        params: dict[str, Any] = {"max_new_tokens": plan.probe_new_tokens, "temperature": 0.2, "seed": seed + i}
        if i % 2:
            params["adapter_id"] = ADAPTER
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                results[i] = {**stream(client, {"inputs": PROBE_PROMPTS[i % len(PROBE_PROMPTS)], "parameters": params}),
                              "adapter": params.get("adapter_id")}
        except (UserError, httpx.HTTPError) as e:
            errors.append(str(e))

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(plan.probe_requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise UserError(f"the serving probe failed: {errors[0]}")
    done = [r for r in results if r is not None]
    tokens = sum(r["tokens"] for r in done)
    return {"requests": len(done), "new_tokens_per_request": plan.probe_new_tokens, "wall_s": wall,
            "tokens": tokens, "tokens_per_s": tokens / wall if wall else 0.0,
            "ttft_s": _percentiles([r["ttft_s"] for r in done if r["ttft_s"] is not None]),
            "latency_s": _percentiles([r["seconds"] for r in done]), "per_request": done}


def run_probe(out: Path, plan: DemoPlan, seed: int) -> Path:
    """Serve base + adapter on a free port, exercise and time it, write `out/serve`."""
    cfg = demo_serve_config(out)
    started = time.perf_counter()
    running = start_in_thread(cfg)
    startup_s = time.perf_counter() - started
    transcript: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=running.url, timeout=600) as client:
            fim = {"inputs": fim_prompt(FIM_PREFIX, FIM_SUFFIX),
                   "parameters": {"max_new_tokens": 16, "adapter_id": ADAPTER}}     # greedy: TGI has no temperature 0
            transcript.append({"route": "/generate_stream", "request": fim, "reply": stream(client, fim)})
            single = {"inputs": PROBE_PROMPTS[0], "parameters": {"max_new_tokens": plan.probe_new_tokens}}
            transcript.append({"route": "/generate_stream", "request": single, "reply": stream(client, single)})
            adapters = client.get("/v1/adapters")
            transcript.append({"route": "/v1/adapters", "status": adapters.status_code, "reply": adapters.json()})
            info = client.get("/info").json()
        load = concurrent_load(running.url, plan, seed)
    finally:
        running.stop()
    single_reply = transcript[1]["reply"]
    probe = {"model": info.get("model_id"), "adapters": [ADAPTER], "startup_s": startup_s,
             "single": {"tokens": single_reply["tokens"], "ttft_s": single_reply["ttft_s"],
                        "seconds": single_reply["seconds"],
                        "tokens_per_s": single_reply["tokens"] / single_reply["seconds"]},
             "concurrent": load, "device": info.get("model_device_type")}
    dest = out / "serve"
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / "transcript.json", {"requests": transcript, "info": info})
    atomic_write_json(dest / "probe.json", probe)
    write_manifest(dest, "serve-probe", cfg.model_dump(mode="json"), seed=seed,
                   inputs={"model": cfg.model, "adapter": cfg.adapters[ADAPTER]})
    console.print(f"serving probe: {load['requests']} concurrent requests, {load['tokens_per_s']:.1f} tokens/s, "
                  f"time to first token p50 {load['ttft_s']['p50'] * 1000:.0f} ms, latency p50 "
                  f"{load['latency_s']['p50']:.2f} s", highlight=False)
    return dest


def client_settings(url: str) -> dict[str, Any]:
    """llm-vscode settings (settings.json) for FIM completion from this server through the adapter."""
    return {"llm.backend": "tgi", "llm.url": f"{url}/generate", "llm.modelId": "smollm2",
            "llm.fillInTheMiddle.enabled": True, "llm.fillInTheMiddle.prefix": "<fim_prefix>",
            "llm.fillInTheMiddle.middle": "<fim_middle>", "llm.fillInTheMiddle.suffix": "<fim_suffix>",
            "llm.requestBody": {"parameters": {"max_new_tokens": 60, "temperature": 0.2, "top_p": 0.95,
                                               "adapter_id": ADAPTER}},
            "llm.contextWindow": 2048, "llm.tokensToClear": ["<|endoftext|>"]}


def llm_nvim_setup(url: str) -> str:
    """The same for llm.nvim, which drives llm-ls with these fields (Lua)."""
    return (f'require("llm").setup({{\n  backend = "tgi", url = "{url}/generate", model = "smollm2",\n'
            f'  request_body = {{ parameters = {{ max_new_tokens = 60, temperature = 0.2, top_p = 0.95, '
            f'adapter_id = "{ADAPTER}" }} }},\n'
            '  fim = { enabled = true, prefix = "<fim_prefix>", middle = "<fim_middle>", suffix = "<fim_suffix>" },\n'
            '  tokens_to_clear = { "<|endoftext|>" }, context_window = 2048,\n})')


def usage(url: str) -> str:
    """What the demo prints once the server is up: where to click, what to run, what to paste."""
    body = json.dumps({"inputs": fim_prompt(FIM_PREFIX, FIM_SUFFIX),
                       "parameters": {"max_new_tokens": 24, "adapter_id": ADAPTER}})
    settings = json.dumps(client_settings(url), indent=2)
    return (f"playground:  {url}/ui\n"
            f"report:      {url}/ui/report\n"
            f"  base beside fine-tune in the playground: tick 'Send the same prompt to a second server', its URL "
            f"{url}, its API 'OpenAI /v1/completions', its model name '{ADAPTER}' (the adapter)\n\n"
            f"a FIM completion from the fine-tune, streamed:\n"
            f"  curl -N {url}/generate_stream -H 'Content-Type: application/json' \\\n    -d '{body}'\n\n"
            f"llm-vscode (settings.json):\n{settings}\n\n"
            f"llm.nvim (llm-ls):\n{llm_nvim_setup(url)}\n\n"
            f"serving until Ctrl-C")


def serve_until_interrupted(out: Path, host: str, port: int) -> None:
    """Serve base + adapter with the playground on host:port; Ctrl-C stops it cleanly (and returns)."""
    cfg = demo_serve_config(out, host, port)
    with console.status("loading the base model and the adapter"):
        running = start_in_thread(cfg)
    console.print(usage(running.url), highlight=False, markup=False, soft_wrap=True)
    try:
        while running.thread.is_alive():
            running.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        console.print("stopping the server", highlight=False)
    finally:
        running.stop()
