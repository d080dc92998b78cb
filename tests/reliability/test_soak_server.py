"""Server soak (bench/soak.py's generator): mixed good, hostile, hung-up and burst traffic on the real CLI server.

Black box: the server is `codefoundry serve` in a subprocess, reached over HTTP on 127.0.0.1,
so the same test holds an engine that runs in its own process. The default suite runs a
bounded slice (a few hundred requests); the slow test runs thousands over several rounds and
checks that resident memory does not grow from round to round. The server has a LoRA adapter
loaded (`--adapter sql=…`) and an `--adapter-root` that requests load adapters from and unload
them again while the rest of the traffic runs (including unloads racing a request that names
the adapter).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures_lora_serve import LORA_TARGETS, make_lora_adapter
from fixtures_serve import TINY_CHAT_TEMPLATE
from soak import API_KEY, KINDS, ServerProcess, SoakConfig, SoakReport, run_soak, serve, wait_idle

MAX_CONCURRENT = 6
MIB = 2**20


@pytest.fixture(scope="session")
def soak_model_dir(build_once, tiny_model_dir: Path) -> Path:
    """The tiny model with a chat template (it has none), so that every route, chat included, can answer."""

    def build(out: Path) -> None:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        config = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TINY_CHAT_TEMPLATE}))

    return build_once("reliability_chat_model", build)


@pytest.fixture(scope="session")
def soak_adapter_root(build_once, soak_model_dir: Path) -> Path:
    """An --adapter-root: `sql` (loaded at start) and `churn` (loaded and unloaded by requests), PEFT's format."""

    def build(out: Path) -> None:
        make_lora_adapter(soak_model_dir, out / "sql", LORA_TARGETS["gpt_bigcode-mqa"], seed=3)
        shutil.copytree(out / "sql", out / "churn")

    return build_once("reliability_soak_adapters", build)


@pytest.fixture(scope="module")
def soak_server(soak_model_dir: Path, soak_adapter_root: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("soak") / "server.log"
    with serve(soak_model_dir, log, "--max-concurrent-requests", str(MAX_CONCURRENT),
               "--max-batch-total-tokens", "8192", "--max-batch-prefill-tokens", "1024",
               "--adapter", f"sql={soak_adapter_root / 'sql'}", "--adapter-root", str(soak_adapter_root)) as server:
        # a first small round: the baseline then holds what a server allocates once it has answered anything
        run_soak(server.url, SoakConfig(requests=40, concurrency=4, burst_every=0, seed=99))
        wait_idle(server.url)
        yield server


def check_round(server: ServerProcess, report: SoakReport, requests: int) -> dict[str, float]:
    """Everything a soak round must show; returns /metrics once the server is idle again."""
    summary = report.summary()
    problems = [f"{o.kind} → {o.status}: {o.problem}" for o in report.problems]
    assert not problems, f"{len(problems)} requests misanswered:\n" + "\n".join(problems[:30])
    assert report.server_errors == 0
    assert summary["requests"] >= requests
    assert summary["hostile_share"] >= 0.2, summary
    assert summary["stream_hang_up_share"] >= 0.1, summary
    assert summary["overloaded_in_bursts"] >= 1, f"no burst went past max-concurrent-requests: {summary}"
    assert summary["ok"] >= 0.4 * summary["good"], summary
    assert server.alive(), server.log_text()[-3000:]
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert "Traceback" not in server.log_text(), server.log_text()[-5000:]
    idle = wait_idle(server.url)
    adapters = httpx.get(server.url + "/v1/adapters", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    assert [a["name"] for a in adapters.json()["data"]] == ["sql"], adapters.text   # every loaded one unloaded
    assert idle["codefoundry_kv_blocks_used"] == 0, f"KV blocks still held after the run: {idle}"
    assert idle["tgi_queue_size"] == 0 and idle["tgi_batch_current_size"] == 0, idle
    return idle


def test_soak_fast_slice(soak_server: ServerProcess) -> None:
    baseline = soak_server.rss()
    report = run_soak(soak_server.url, SoakConfig(requests=250, concurrency=4, burst_every=80, burst_size=16,
                                                  max_new_tokens=4, seed=1, churn_path="churn"))
    check_round(soak_server, report, 250)
    kinds_seen = {o.kind for o in report.outcomes}
    assert set(KINDS) <= kinds_seen, f"kinds never drawn: {set(KINDS) - kinds_seen}"
    assert report.count(kind="adapter_generate", verdict="ok") >= 1 and report.count(kind="adapter_churn",
                                                                                      verdict="ok") >= 1
    grown = soak_server.rss() - baseline
    assert grown < max(64 * MIB, 0.15 * baseline), f"RSS grew {grown / MIB:.0f} MiB over {baseline / MIB:.0f} MiB"
    print("soak fast slice:", report.summary())


@pytest.mark.slow
def test_soak_rounds_hold_memory(soak_server: ServerProcess) -> None:
    """3 rounds of 1,000: every round clean, and resident memory flat from the first round's end on."""
    after = []
    for round_ in range(3):
        report = run_soak(soak_server.url, SoakConfig(requests=1000, concurrency=6, burst_every=100, burst_size=18,
                                                      max_new_tokens=8, seed=100 + round_, churn_path="churn"))
        check_round(soak_server, report, 1000)
        after.append(soak_server.rss())
        print(f"round {round_ + 1}:", report.summary(), f"RSS {after[-1] / MIB:.0f} MiB")
    assert after[-1] - after[0] < 48 * MIB, f"RSS grew across rounds: {[round(a / MIB) for a in after]} MiB"
