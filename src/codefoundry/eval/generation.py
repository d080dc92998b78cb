"""Where completions come from: a local model (the generation core) or an HTTP endpoint.

Endpoints speak TGI (`POST /generate`, `GET /info` for `max_stop_sequences`) or the OpenAI
completions API (`POST /v1/completions`), so our server, a real TGI and vLLM are scored the
same way. Requests run `concurrency` at a time and are retried on 429/503 (and dropped
connections) with exponential backoff, honouring `Retry-After`. The stop sequences sent are
capped at what the endpoint accepts; the harness always cuts at the first stop itself
(TGI keeps the stop text, OpenAI drops it).
"""

from __future__ import annotations

import logging
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from codefoundry.errors import UserError

RETRY_STATUS = (429, 503)
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar
OPENAI_MAX_STOP = 4  # OpenAI's completions API accepts at most 4 stop sequences


@dataclass(frozen=True)
class Request:
    """One completion to make."""

    prompt: str
    stop: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class Sampling:
    """Sampling settings shared by every request of a run."""

    temperature: float = 0.2      # bigcode-evaluation-harness default
    top_p: float = 0.95           # bigcode-evaluation-harness default
    max_new_tokens: int = 512


class Generator(Protocol):
    def describe(self) -> dict[str, Any]: ...
    def complete(self, requests: list[Request], sampling: Sampling) -> list[str]: ...


class EndpointGenerator:
    """Completions from a TGI or OpenAI-compatible server."""

    def __init__(self, url: str, api: str = "tgi", api_key: str | None = None, concurrency: int = 8,
                 max_retries: int = 6, timeout: float = 600.0, model_name: str | None = None,
                 backoff: float = 0.5) -> None:
        if api not in ("tgi", "openai"):
            raise UserError(f"--api must be 'tgi' or 'openai', given {api!r}")
        self.url = url.rstrip("/")
        if api == "openai" and self.url.endswith("/v1"):
            self.url = self.url[: -len("/v1")]
        self.api, self.concurrency, self.max_retries, self.backoff = api, max(1, concurrency), max_retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=self.concurrency))
        self.info = self._info()
        self.model_name = model_name or self.info.get("model_id") or "tgi"
        self.max_stop = int(self.info.get("max_stop_sequences") or OPENAI_MAX_STOP)
        self.max_input = self.info.get("max_input_tokens") or self.info.get("max_input_length")  # TGI < 2.1

    def describe(self) -> dict[str, Any]:
        return {"endpoint": self.url, "api": self.api, "info": self.info}

    def _info(self) -> dict[str, Any]:
        path = "/info" if self.api == "tgi" else "/v1/models"
        try:
            r = self.client.get(self.url + path)
        except httpx.HTTPError as e:
            raise UserError(f"endpoint {self.url} cannot be reached: {e}",
                            "is the server running? check --endpoint") from None
        if r.status_code != 200:
            if self.api == "openai":
                return {}
            raise UserError(f"endpoint {self.url}{path} answered HTTP {r.status_code}",
                            "is it a TGI server? for an OpenAI-compatible one use --api openai")
        data = r.json()
        if self.api == "openai":
            models = data.get("data") or []
            return {"model_id": models[0].get("id")} if models else {}
        return data

    def _body(self, req: Request, sampling: Sampling) -> tuple[str, dict[str, Any]]:
        stop = list(req.stop[: self.max_stop])
        greedy = sampling.temperature <= 0
        if self.api == "tgi":
            params: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "stop": stop,
                                      "do_sample": not greedy, "return_full_text": False, "details": False}
            if self.max_input:  # a prompt longer than the server takes keeps its end, as LocalGenerator's
                params["truncate"] = self.max_input
            if not greedy:  # TGI rejects temperature 0 and top_p 1.0
                params["temperature"] = sampling.temperature
                params["seed"] = req.seed
                if sampling.top_p < 1.0:
                    params["top_p"] = sampling.top_p
            return "/generate", {"inputs": req.prompt, "parameters": params}
        body = {"model": self.model_name, "prompt": req.prompt, "max_tokens": sampling.max_new_tokens,
                "temperature": max(sampling.temperature, 0.0), "top_p": sampling.top_p, "stop": stop,
                "seed": req.seed, "n": 1}
        return "/v1/completions", body

    def _one(self, req: Request, sampling: Sampling) -> str:
        path, body = self._body(req, sampling)
        for attempt in range(self.max_retries + 1):
            try:
                r = self.client.post(self.url + path, json=body)
            except httpx.TransportError as e:
                if attempt == self.max_retries:
                    raise UserError(f"endpoint {self.url}{path} failed after {attempt + 1} tries: {e}") from None
                self._sleep(attempt, None)
                continue
            if r.status_code in RETRY_STATUS and attempt < self.max_retries:
                self._sleep(attempt, r.headers.get("retry-after"))
                continue
            fit = _fit_max_new_tokens(r) if r.status_code == 422 else None
            if fit is not None and self.api == "tgi" and body["parameters"]["max_new_tokens"] > fit:
                body["parameters"]["max_new_tokens"] = fit  # a long prompt: use what the server has room for
                continue
            if r.status_code != 200:
                raise UserError(f"endpoint {self.url}{path} answered HTTP {r.status_code}: {r.text[:300]}")
            data = r.json()
            if self.api == "tgi":
                data = data[0] if isinstance(data, list) else data
                return str(data["generated_text"])
            return str(data["choices"][0]["text"])
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        try:
            delay = float(retry_after) if retry_after is not None else None
        except ValueError:
            delay = None
        if delay is None:
            delay = self.backoff * 2**attempt * (1 + random.random() / 2)
        time.sleep(min(delay, 60.0))

    def complete(self, requests: list[Request], sampling: Sampling) -> list[str]:
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="endpoint") as pool:
            return list(pool.map(lambda r: self._one(r, sampling), requests))


def _fit_max_new_tokens(r: httpx.Response) -> int | None:
    """From TGI's 422 "`inputs` tokens + `max_new_tokens` must be <= T. Given: n `inputs` tokens …": T - n."""
    m = re.search(r"must be <= (\d+)\. Given: (\d+) `inputs` tokens", r.text)
    return int(m.group(1)) - int(m.group(2)) if m and int(m.group(1)) > int(m.group(2)) else None


class LocalGenerator:
    """Completions from a model directory through `codefoundry.generate` (batched, paged KV cache)."""

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        from codefoundry.model import load_model
        from codefoundry.tokenizer import load_tokenizer

        self.model_dir = model_dir
        self.model = load_model(model_dir, device=device)
        self.model.eval()
        self.tokenizer = load_tokenizer(model_dir)

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.model_dir.resolve())}

    def complete(self, requests: list[Request], sampling: Sampling) -> list[str]:
        from codefoundry.generate import SamplingParams, generate

        limit = self.model.config.n_positions
        params, prompts = [], []
        for req in requests:
            ids = list(self.tokenizer.encode(req.prompt))
            if len(ids) >= limit:  # keep the prompt's end (what EndpointGenerator asks TGI with `truncate`)
                ids = ids[-(limit - 1):]
            # the whole prompt, and what room it leaves, as a TGI endpoint answers (max_total_tokens)
            room = min(sampling.max_new_tokens, limit - len(ids))
            prompts.append(ids)
            params.append(SamplingParams.from_openai(temperature=sampling.temperature, top_p=sampling.top_p,
                                                     max_new_tokens=room, stop=req.stop, seed=req.seed))
        return [c.text for c in generate(self.model, self.tokenizer, prompts, params)]
