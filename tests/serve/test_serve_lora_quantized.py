"""`serve --quantize int4 --adapter …` through a real server on 127.0.0.1: each request gets its adapter's
tokens on the quantized base, in one continuous batch, as the in-process engine gives them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

KEY = "quant-lora-key"
PROMPT = "def fibonacci(n):\n"
ARCH = "llama"                 # q/k/v and gate/up are fused when quantized: the adapters' targets are split


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, lora_adapters: dict[str, dict[str, Path]]) -> Path:
    root = tmp_path_factory.mktemp("quant_adapters")
    for name in ("a", "b"):
        shutil.copytree(lora_adapters[ARCH][name], root / name)
    return root


@pytest.fixture(scope="module")
def server(lora_bases: dict[str, Path], root: Path) -> Iterator:
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=lora_bases[ARCH], port=0, api_key=KEY, model_id="base",
                                          quantize="int4", adapters={"a": root / "a"}, adapter_root=root,
                                          max_batch_total_tokens=2048, max_batch_prefill_tokens=256))
    yield running
    running.stop()


def test_quantized_server_serves_each_adapter_as_the_engine_does(server, lora_bases, lora_adapters) -> None:
    base = lora_bases[ARCH]
    names = [None, "a", "b"]
    done = generate(load_model(base, quantize="int4"), load_tokenizer(base), [PROMPT] * 3,
                    [SamplingParams(max_new_tokens=12, adapter_id=n) for n in names], adapters=lora_adapters[ARCH])
    expected = {n: c.text for n, c in zip(names, done, strict=True)}
    assert len(set(expected.values())) == 3                     # the adapters change the quantized model's output

    auth = {"Authorization": f"Bearer {KEY}"}
    loaded = httpx.post(server.url + "/v1/adapters", headers=auth, json={"name": "b", "path": "b"}, timeout=60)
    assert loaded.status_code == 201, loaded.text
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)

    def complete(model: str) -> str:
        return client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text

    order = ["a", "base", "b", "a", "b", "base"]              # concurrent: base and both adapters share steps
    with ThreadPoolExecutor(len(order)) as pool:
        texts = list(pool.map(complete, order))
    assert texts == [expected[None if m == "base" else m] for m in order]
