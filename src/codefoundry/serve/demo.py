"""The demo's serve stage: serve the demo model, send real client requests, shut down; keep the transcript.

Writes `out/serve/transcript.json` (each request, its status and reply, and key metrics) and
a manifest. About 10 s on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from codefoundry.atomic import atomic_write_json
from codefoundry.errors import UserError
from codefoundry.manifest import write_manifest
from codefoundry.serve.config import ServeConfig
from codefoundry.serve.server import start_in_thread

FIM = {"inputs": "<fim_prefix>def mean(xs):\n    <fim_suffix>\n    return total / len(xs)<fim_middle>",
       "parameters": {"max_new_tokens": 24, "temperature": 0.2, "top_p": 0.95, "seed": 0, "return_full_text": False}}


def run_demo_stage(out: Path, workers: int | None, seed: int) -> Path:
    """Serve `out/model` on a free local port, exercise the TGI, FIM and OpenAI routes, write `out/serve`."""
    model = out / "model"
    if not (model / "manifest.json").exists():
        raise UserError(f"{model} is missing: the demo's 'train' stage makes it")
    cfg = ServeConfig(model=model, port=0, max_batch_total_tokens=8192, max_batch_prefill_tokens=1024, device="cpu")
    running = start_in_thread(cfg)
    transcript: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=running.url, timeout=120) as client:
            def call(path: str, body: dict[str, Any], expect: int = 200) -> None:
                r = client.post(path, json=body)
                reply = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:{")] \
                    if "event-stream" in r.headers.get("content-type", "") else r.json()
                transcript.append({"route": path, "request": body, "status": r.status_code, "reply": reply})
                if r.status_code != expect:
                    raise UserError(f"demo request to {path} failed with {r.status_code}: {r.text[:200]}")

            call("/generate", FIM)
            call("/generate_stream", {"inputs": "def fibonacci(n):\n", "parameters": {"max_new_tokens": 16,
                                                                                       "details": True}})
            call("/v1/completions", {"prompt": "import os\n", "max_tokens": 16, "temperature": 0, "seed": seed})
            # a model without its own chat template refuses chat (422): the transcript shows that answer
            call("/v1/chat/completions", {"messages": [{"role": "user", "content": "Write hello world in C."}],
                                          "max_tokens": 16, "temperature": 0},
                 expect=200 if getattr(running.state.tokenizer, "chat_template", None) else 422)
            metrics = client.get("/metrics").text
    finally:
        running.stop()
    keep = ("tgi_request_count ", "tgi_request_success ", "tgi_batch_max_total_tokens ",
            "tgi_request_time_to_first_token_count ", "tgi_request_time_to_first_token_sum ")
    dest = out / "serve"
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / "transcript.json", {"requests": transcript,
                                                 "metrics": [m for m in metrics.splitlines() if m.startswith(keep)]})
    write_manifest(dest, "serve-demo", cfg.model_dump(mode="json"), seed=seed, inputs={"model": model})
    return dest
