"""LoRA adapters through a real server on 127.0.0.1: the OpenAI and TGI clients name them, errors list them,
and the API-key-guarded routes load and unload them at run time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import peft
import pytest
import torch
import transformers
from huggingface_hub import InferenceClient

from codefoundry.generate import SamplingParams, generate
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

KEY = "lora-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPT = "def fibonacci(n):\n"
ARCH = "gpt_bigcode-mqa"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, lora_adapters: dict[str, dict[str, Path]]) -> Path:
    """An --adapter-root with three adapters in it (`c` is the llama one: loading it must fail cleanly)."""
    root = tmp_path_factory.mktemp("adapters")
    for name, path in (("a", lora_adapters[ARCH]["a"]), ("b", lora_adapters[ARCH]["b"]),
                       ("c", lora_adapters[ARCH]["b"]), ("llama", lora_adapters["llama"]["a"])):
        shutil.copytree(path, root / name)
    return root


@pytest.fixture(scope="module")
def server(lora_bases: dict[str, Path], root: Path) -> Iterator:
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=lora_bases[ARCH], port=0, api_key=KEY, model_id="base",
                                          adapters={"a": root / "a", "b": root / "b"}, adapter_root=root,
                                          max_batch_total_tokens=2048, max_batch_prefill_tokens=256))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def expected(lora_bases: dict[str, Path], lora_adapters: dict[str, dict[str, Path]]) -> dict[str | None, str]:
    """Greedy text of PROMPT per adapter (None: base) from the in-process engine."""
    base = lora_bases[ARCH]
    tok = load_tokenizer(base)
    names = [None, "a", "b"]
    done = generate(load_model(base), tok, [PROMPT] * 3,
                    [SamplingParams(max_new_tokens=12, adapter_id=n) for n in names], adapters=lora_adapters[ARCH])
    texts = {n: c.text for n, c in zip(names, done, strict=True)}
    assert len(set(texts.values())) == 3          # the adapters change the output
    return texts


def test_models_and_info_list_the_adapters(server) -> None:
    models = httpx.get(server.url + "/v1/models").json()["data"]
    assert [(m["id"], m.get("parent")) for m in models] == [("base", None), ("a", "base"), ("b", "base")]
    assert httpx.get(server.url + "/info").json()["adapters"] == ["a", "b"]


def test_openai_model_and_tgi_adapter_id_select_the_adapter(server, expected) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)
    for model in ("base", "a", "b"):
        done = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
        assert done.choices[0].text == expected[None if model == "base" else model] and done.model == model
    pieces = client.completions.create(model="b", prompt=PROMPT, max_tokens=12, temperature=0, stream=True)
    assert "".join(p.choices[0].text for p in pieces) == expected["b"]

    import huggingface_hub.constants

    offline, huggingface_hub.constants.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE, False
    try:                               # the suite is offline; 127.0.0.1 is ours
        tgi = InferenceClient(base_url=server.url, api_key=KEY)
        assert tgi.text_generation(PROMPT, max_new_tokens=12, adapter_id="a") == expected["a"]
        assert tgi.text_generation(PROMPT, max_new_tokens=12) == expected[None]
        streamed = "".join(tgi.text_generation(PROMPT, max_new_tokens=12, adapter_id="b", stream=True))
        assert streamed == expected["b"]
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline


def test_server_prompt_logprobs_with_an_adapter_equal_peft(server, lora_bases, lora_adapters) -> None:
    r = httpx.post(server.url + "/generate", headers=AUTH, timeout=60, json={
        "inputs": PROMPT, "parameters": {"max_new_tokens": 1, "decoder_input_details": True, "adapter_id": "a"}})
    assert r.status_code == 200, r.text
    prefill = r.json()["details"]["prefill"]
    ids = [t["id"] for t in prefill]
    hf = transformers.AutoModelForCausalLM.from_pretrained(lora_bases[ARCH], dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(hf, lora_adapters[ARCH]["a"]).eval()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    want = [lp[i, ids[i + 1]].item() for i in range(len(ids) - 1)]
    got = [t["logprob"] for t in prefill[1:]]
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 1e-4


def test_unknown_adapter_is_422_on_tgi_404_on_openai_with_the_known_names(server) -> None:
    r = httpx.post(server.url + "/generate", headers=AUTH,
                   json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "adapter_id": "nope"}})
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
    assert "'nope' is not loaded" in r.json()["error"] and "adapters: a, b" in r.json()["error"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as e:
            client.completions.create(model="nope", prompt=PROMPT, max_tokens=2, stream=stream)
        assert "'nope' is not loaded" in e.value.response.read().decode()
        assert "adapters: a, b" in e.value.response.read().decode()


def test_load_and_unload_at_run_time_need_the_key_and_stay_under_the_root(server, root, expected) -> None:
    url = server.url
    body = {"name": "c", "path": "c"}
    assert httpx.post(url + "/v1/adapters", json=body).status_code == 401
    assert httpx.post(url + "/v1/adapters", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    outside = httpx.post(url + "/v1/adapters", headers=AUTH, json={"name": "c", "path": "../" + root.name + "x"})
    assert outside.status_code == 403 and "outside --adapter-root" in outside.json()["error"]
    absolute = httpx.post(url + "/v1/adapters", headers=AUTH, json={"name": "c", "path": "/etc"})
    assert absolute.status_code == 403
    wrong_arch = httpx.post(url + "/v1/adapters", headers=AUTH, json={"name": "c", "path": "llama"})
    assert wrong_arch.status_code == 422 and "which this model does not have" in wrong_arch.json()["error"]
    assert str(root) not in wrong_arch.json()["error"]
    assert httpx.post(url + "/v1/adapters", headers=AUTH, json={"name": "a", "path": "c"}).status_code == 409
    bad_name = httpx.post(url + "/v1/adapters", headers=AUTH, json={"name": "../c", "path": "c"})
    assert bad_name.status_code == 422

    loaded = httpx.post(url + "/v1/adapters", headers=AUTH, json=body)
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["name"] == "c" and loaded.json()["path"] == "c" and loaded.json()["rank"] == 8
    assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["base", "a", "b", "c"]
    assert [a["name"] for a in httpx.get(url + "/v1/adapters", headers=AUTH).json()["data"]] == ["a", "b", "c"]
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY)
    same_as_b = client.completions.create(model="c", prompt=PROMPT, max_tokens=12, temperature=0)
    assert same_as_b.choices[0].text == expected["b"]           # c holds b's files

    assert httpx.delete(url + "/v1/adapters/c").status_code == 401
    assert httpx.delete(url + "/v1/adapters/c", headers=AUTH).json()["name"] == "c"
    assert httpx.delete(url + "/v1/adapters/c", headers=AUTH).status_code == 404
    assert httpx.get(url + "/info").json()["adapters"] == ["a", "b"]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="c", prompt=PROMPT, max_tokens=2)


def test_cli_adapter_errors_are_one_line(tmp_path: Path, lora_bases: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from codefoundry.cli import run

    base = str(lora_bases[ARCH])
    assert run(["serve", "--model", base, "--adapter", "no-equals-sign"]) == 1
    assert "error: --adapter 'no-equals-sign' is not NAME=DIR" in capsys.readouterr().err
    assert run(["serve", "--model", base, "--adapter", f"x={tmp_path / 'missing'}", "--port", "0",
                "--max-batch-total-tokens", "256", "--max-batch-prefill-tokens", "64"]) == 1
    out = capsys.readouterr().err
    assert "error: adapter directory" in out and "does not exist" in out and "Traceback" not in out
