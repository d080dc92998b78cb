"""API compatibility: every TGI and OpenAI parameter through the real clients, values checked independently.

The servers are real (HTTP on 127.0.0.1; the engine core in its own process, and on a thread with
`--no-engine-process`); expected values come from `transformers` loading the same checkpoint and
from the parameters' published definitions, computed here, never from the server's own code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import openai
import pytest
import torch
from huggingface_hub import InferenceClient

from fixtures_serve import SERVE_API_KEY, TINY_CHAT_TEMPLATE

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}
PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
TOOLS_TEMPLATE = (
    "{% if tools %}tools:{% for t in tools %} {{ t['function']['name'] }}{% endfor %}{{ '\\n' }}{% endif %}"
    + TINY_CHAT_TEMPLATE
)
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                                  "parameters": {"type": "object",
                                                                 "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def thread_server(tiny_model_dir: Path):
    """The tiny model with the engine on a thread of the server (`--no-engine-process`)."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, api_key=SERVE_API_KEY, engine_process=False,
                                          max_batch_total_tokens=8192, max_batch_prefill_tokens=1024))
    yield running
    running.stop()


@pytest.fixture(params=["process", "thread"])
def server(request):
    """Engine core in its own process (the default) and on a thread: the same answers. (The sampler's parameters
    run on the process server only: both back ends call the same sampler, the process adds only the params' wire.)"""
    return request.getfixturevalue("tiny_server" if request.param == "process" else "thread_server")


@pytest.fixture(scope="module")
def tools_server(build_once, tiny_model_dir: Path):
    """The tiny model with a chat template that renders `tools`."""
    from codefoundry.serve import ServeConfig, start_in_thread

    def build(out: Path) -> None:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        config = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TOOLS_TEMPLATE}))

    running = start_in_thread(ServeConfig(model=build_once("tiny_tools_model", build), port=0, api_key=SERVE_API_KEY,
                                          engine_process=False, max_batch_total_tokens=2048,
                                          max_batch_prefill_tokens=256))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path):
    """The same checkpoint through transformers (the independent reference) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=SERVE_API_KEY, max_retries=0)


def tgi(server, monkeypatch) -> InferenceClient:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)   # the suite is offline; 127.0.0.1 is ours
    return InferenceClient(base_url=server.url, api_key=SERVE_API_KEY)


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=AUTH, timeout=120)


def ids_of(hf, text: str) -> list[int]:
    return hf[1](text, add_special_tokens=False)["input_ids"]


def raw_logprobs(hf, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits at every position of `ids` (float64), sliced to the tokenizer's vocab."""
    with torch.no_grad():
        logits = hf[0](torch.tensor([ids])).logits[0, :, :len(hf[1])]
    return torch.log_softmax(logits.double(), dim=-1)


def greedy_with(hf, prompt_ids: list[int], steps: int, adjust) -> list[int]:
    """Greedy decoding where `adjust(scores, prompt_ids, generated)` edits the logits first (the rule under test)."""
    generated: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            scores = hf[0](torch.tensor([prompt_ids + generated])).logits[0, -1, :len(hf[1])].double()
        generated.append(int(adjust(scores, prompt_ids, generated).argmax()))
    return generated


# ---- logprobs, top_logprobs, echo: the values TGI's details report, and the model's own ----

def test_completion_logprobs_equal_tgi_details(server, monkeypatch):
    details = tgi(server, monkeypatch).text_generation(PROMPT, max_new_tokens=6, details=True, top_n_tokens=3,
                                                       do_sample=False).details
    done = oai(server).completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    lp = done.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx([t.logprob for t in details.tokens], abs=1e-5)
    assert lp.tokens == [t.text for t in details.tokens]
    for top, alternatives, chosen in zip(lp.top_logprobs, details.top_tokens, details.tokens, strict=True):
        assert max(top.values()) == pytest.approx(alternatives[0]["logprob"], abs=1e-5)
        assert top[chosen.text] == pytest.approx(chosen.logprob, abs=1e-5)
    offsets = lp.text_offset
    assert offsets[0] == len(PROMPT) and offsets[1:] == [offsets[i] + len(lp.tokens[i]) for i in range(5)]


def test_completion_echo_returns_prompt_and_prompt_logprobs(server, hf):
    """lm-eval's loglikelihood request: echo, logprobs=1, max_tokens=1, temperature 0, token-id prompts."""
    prompt_ids = ids_of(hf, PROMPT)
    done = oai(server).completions.create(model="tiny", prompt=PROMPT, max_tokens=1, temperature=0, logprobs=1,
                                          echo=True)
    choice = done.choices[0]
    assert choice.text.startswith(PROMPT)
    lp = choice.logprobs
    assert len(lp.tokens) == len(prompt_ids) + 1 and "".join(lp.tokens[:-1]) == PROMPT
    expected = raw_logprobs(hf, prompt_ids)
    want = [None] + [expected[p, prompt_ids[p + 1]].item() for p in range(len(prompt_ids) - 1)]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:len(prompt_ids)] == pytest.approx(want[1:], abs=1e-4)
    greedy_best = [expected[p].max().item() for p in range(len(prompt_ids) - 1)]
    assert [max(t.values()) for t in lp.top_logprobs[1:len(prompt_ids)]] == pytest.approx(greedy_best, abs=1e-4)
    # the same request with the prompt as token ids, as lm-eval's local-completions sends it
    as_ids = post(server, "/v1/completions", {"prompt": [prompt_ids], "max_tokens": 1, "temperature": 0,
                                              "logprobs": 1, "echo": True}).json()["choices"][0]["logprobs"]
    assert as_ids["token_logprobs"][0] is None
    assert as_ids["token_logprobs"][1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-6)


def test_chat_logprobs_equal_tgi_details(tiny_chat_server, monkeypatch):
    client = oai(tiny_chat_server)
    messages = [{"role": "user", "content": "write a loop"}]
    done = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=2)
    content = done.choices[0].logprobs.content
    prompt = "user: write a loop\nassistant: "
    details = tgi(tiny_chat_server, monkeypatch).text_generation(prompt, max_new_tokens=5, details=True,
                                                                 top_n_tokens=2).details
    assert [c.logprob for c in content] == pytest.approx([t.logprob for t in details.tokens], abs=1e-5)
    assert [len(c.top_logprobs) for c in content] == [2] * 5
    assert all(c.bytes == list(c.token.encode()) for c in content)


# ---- n and best_of: distinct seeded choices sharing the prompt's KV blocks ----

def prefix_hits(server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "codefoundry_prefix_cache_hits":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("no prefix cache metric")


def test_completion_n_distinct_seeded_choices_share_prompt_blocks(server, hf):
    client = oai(server)
    prompt = f"# {server.url}\n" + PROMPT * 2                            # unseen; several full 16-token blocks
    full_blocks = (len(ids_of(hf, prompt)) - 1) // 16
    before = prefix_hits(server)
    done = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=1.0, n=3, seed=11)
    assert sorted(c.index for c in done.choices) == [0, 1, 2]
    texts = [c.text for c in sorted(done.choices, key=lambda c: c.index)]
    assert len(set(texts)) == 3
    assert prefix_hits(server) - before >= 2 * full_blocks * 16          # choices 1 and 2 reused choice 0's blocks
    assert done.usage.completion_tokens == 24 and done.usage.prompt_tokens == len(ids_of(hf, prompt))
    single = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=1.0, seed=11)
    assert single.choices[0].text == texts[0]                           # choice 0 is the n=1 request
    again = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=1.0, n=3, seed=11)
    assert [c.text for c in sorted(again.choices, key=lambda c: c.index)] == texts


def test_completion_best_of_returns_highest_mean_logprob(tiny_server):
    client = oai(tiny_server)
    every = client.completions.create(model="tiny", prompt="import os\n", max_tokens=6, temperature=1.0, n=4,
                                      seed=5, logprobs=0)
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs)
             for c in sorted(every.choices, key=lambda c: c.index)]
    texts = [c.text for c in sorted(every.choices, key=lambda c: c.index)]
    best = client.completions.create(model="tiny", prompt="import os\n", max_tokens=6, temperature=1.0, n=2,
                                     best_of=4, seed=5)
    ranked = sorted(range(4), key=lambda i: -means[i])
    assert [c.text for c in sorted(best.choices, key=lambda c: c.index)] == [texts[ranked[0]], texts[ranked[1]]]
    assert best.usage.completion_tokens == 24                           # all four were generated
    r = post(tiny_server, "/v1/completions", {"prompt": "x", "n": 2, "best_of": 3, "stream": True})
    assert r.status_code == 422 and "streaming" in r.json()["error"]
    r = post(tiny_server, "/v1/completions", {"prompt": "x", "n": 3, "best_of": 2})
    assert r.status_code == 422 and "`best_of` must be >= `n`" in r.json()["error"]


def test_stream_n_with_usage(server):
    chunks = list(oai(server).completions.create(model="tiny", prompt="int main(", max_tokens=4, temperature=0.8,
                                                 n=2, seed=3, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].choices == []
    texts = {0: "", 1: ""}
    for c in chunks[:-1]:
        texts[c.choices[0].index] += c.choices[0].text
    whole = oai(server).completions.create(model="tiny", prompt="int main(", max_tokens=4, temperature=0.8, n=2, seed=3)
    assert [texts[0], texts[1]] == [c.text for c in sorted(whole.choices, key=lambda c: c.index)]


def test_chat_n(tiny_chat_server):
    done = oai(tiny_chat_server).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                          max_tokens=6, temperature=1.0, n=2, seed=9)
    assert [c.index for c in done.choices] == [0, 1]
    assert done.choices[0].message.content != done.choices[1].message.content


def test_tgi_best_of_details(server, monkeypatch):
    out = tgi(server, monkeypatch).text_generation(PROMPT, max_new_tokens=6, best_of=2, do_sample=True, details=True)
    others = out.details.best_of_sequences
    assert len(others) == 1
    mean = lambda tokens: sum(t.logprob for t in tokens) / len(tokens)  # noqa: E731
    assert mean(out.details.tokens) >= mean(others[0].tokens)
    assert out.details.seed != others[0].seed and len(others[0].tokens) == others[0].generated_tokens


@pytest.mark.parametrize(("params", "message"), [
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
])
def test_tgi_best_of_refusals_use_tgi_messages(tiny_server, params, message):
    r = post(tiny_server, "/generate", {"inputs": "x", "parameters": params})
    assert r.status_code == 422 and r.json()["error"] == "Input validation error: " + message
    with httpx.stream("POST", tiny_server.url + "/generate_stream", headers=AUTH, timeout=60,
                      json={"inputs": "x", "parameters": {"best_of": 2, "do_sample": True}}) as s:
        events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
    assert events[0]["error"].endswith("`best_of` != 1 is not supported when streaming tokens")


# ---- TGI: top_n_tokens, decoder_input_details ----

def test_tgi_top_n_tokens_and_prefill(server, monkeypatch, hf):
    out = tgi(server, monkeypatch).text_generation(PROMPT, max_new_tokens=4, details=True, top_n_tokens=3,
                                                   decoder_input_details=True, do_sample=False)
    prompt_ids = ids_of(hf, PROMPT)
    expected = raw_logprobs(hf, prompt_ids)
    prefill = out.details.prefill
    assert [p.id for p in prefill] == prompt_ids and prefill[0].logprob is None
    assert [p.logprob for p in prefill[1:]] == pytest.approx(
        [expected[i, prompt_ids[i + 1]].item() for i in range(len(prompt_ids) - 1)], abs=1e-4)
    assert [len(top) for top in out.details.top_tokens] == [3] * 4
    assert [top[0]["id"] for top in out.details.top_tokens] == [t.id for t in out.details.tokens]   # greedy: the best


# ---- penalties, typical_p, watermark: outputs as the definitions say ----

def test_openai_frequency_and_presence_penalties(tiny_server, hf):
    prompt_ids = ids_of(hf, "x = x + x + x + x")

    def openai_rule(scores, prompt, generated):               # OpenAI's API reference: counts of sampled tokens
        counts = torch.bincount(torch.tensor(generated or [0], dtype=torch.long), minlength=len(scores)).double()
        if not generated:
            counts.zero_()
        return scores - 1.5 * counts - 0.7 * (counts > 0).double()

    want = greedy_with(hf, prompt_ids, 10, openai_rule)
    plain = greedy_with(hf, prompt_ids, 10, lambda s, p, g: s)
    assert want != plain                                      # the penalties change this output
    r = post(tiny_server, "/v1/completions", {"prompt": [prompt_ids], "max_tokens": 10, "temperature": 0,
                                         "frequency_penalty": 1.5, "presence_penalty": 0.7, "logprobs": 0})
    tokens = r.json()["choices"][0]["logprobs"]["tokens"]
    assert "".join(tokens) == hf[1].decode(want)


def test_tgi_repetition_and_frequency_penalties(tiny_server, monkeypatch, hf):
    prompt_ids = ids_of(hf, "x = x + x + x + x")
    client = tgi(tiny_server, monkeypatch)
    with torch.no_grad():                                     # repetition penalty: transformers' own processor
        ref = hf[0].generate(torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False, repetition_penalty=1.8,
                             pad_token_id=0)[0, len(prompt_ids):].tolist()
    out = client.text_generation("x = x + x + x + x", max_new_tokens=8, repetition_penalty=1.8, details=True)
    assert [t.id for t in out.details.tokens] == ref

    def tgi_rule(scores, prompt, generated):                  # TGI: penalty * count / tokens so far, prompt included
        seen = prompt + generated
        counts = torch.bincount(torch.tensor(seen), minlength=len(scores)).double()
        return scores - 2.0 * counts / len(seen)

    want = greedy_with(hf, prompt_ids, 8, tgi_rule)
    out = client.text_generation("x = x + x + x + x", max_new_tokens=8, frequency_penalty=2.0, details=True)
    assert [t.id for t in out.details.tokens] == want


def test_tgi_typical_p(tiny_server, monkeypatch, hf):
    """typical_p so small that the typical set is one token: the token whose surprise is nearest the entropy."""
    prompt_ids = ids_of(hf, PROMPT)

    def most_typical(scores, prompt, generated):
        logp = torch.log_softmax(scores, dim=-1)
        entropy = -(logp.exp() * logp).sum()
        return -(-logp - entropy).abs()

    want = greedy_with(hf, prompt_ids, 6, most_typical)
    out = tgi(tiny_server, monkeypatch).text_generation(PROMPT, max_new_tokens=6, typical_p=1e-6, do_sample=True,
                                                        seed=4, details=True)
    assert [t.id for t in out.details.tokens] == want
    assert all(t.logprob == pytest.approx(0.0, abs=1e-6) for t in out.details.tokens)   # the only token left


def test_tgi_watermark_biases_the_green_list(tiny_server, monkeypatch, hf):
    vocab = len(hf[1])

    def green(prev: int) -> torch.Tensor:                     # Kirchenbauer et al. as TGI seeds it
        generator = torch.Generator().manual_seed(15485863 * prev)
        return torch.randperm(vocab, generator=generator)[:int(vocab * 0.5)]

    def watermarked(scores, prompt, generated):
        scores = scores.clone()
        scores[green((prompt + generated)[-1])] += 2.0
        return scores

    prompt_ids = ids_of(hf, PROMPT)
    want = greedy_with(hf, prompt_ids, 12, watermarked)
    out = tgi(tiny_server, monkeypatch).text_generation(PROMPT, max_new_tokens=12, watermark=True, details=True)
    ids = [t.id for t in out.details.tokens]
    assert ids == want
    seq = prompt_ids + ids
    in_green = sum(int(seq[len(prompt_ids) + i] in set(green(seq[len(prompt_ids) + i - 1]).tolist()))
                   for i in range(len(ids)))
    assert in_green / len(ids) > 0.75                         # a detector's z-score would flag it


# ---- suffix (FIM), tools ----

def test_completion_suffix_is_the_fim_prompt(tiny_server, monkeypatch):
    done = oai(tiny_server).completions.create(model="tiny", prompt="def f(x):\n    ", suffix="\n    return y",
                                          max_tokens=6, temperature=0)
    fim = "<fim_prefix>def f(x):\n    <fim_suffix>\n    return y<fim_middle>"
    expected = tgi(tiny_server, monkeypatch).text_generation(fim, max_new_tokens=6)
    assert done.choices[0].text == expected
    assert done.usage.prompt_tokens == len(httpx.post(tiny_server.url + "/tokenize", json={"inputs": fim},
                                                      headers=AUTH).json())


def test_suffix_without_fim_tokens_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from codefoundry.serve.errors import ServeError
    from codefoundry.serve.routes.openai import fim_prompt

    backend = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ServeError, match="no FIM tokens") as e:
        fim_prompt(PreTrainedTokenizerFast(tokenizer_object=backend), "a", "a")
    assert e.value.status == 422


def test_chat_tools_rendered_by_template_or_refused(tools_server, tiny_chat_server, hf):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    done = oai(tools_server).chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL],
                                                     max_tokens=2, temperature=0)
    rendered = "tools: get_weather\nuser: weather in Paris?\nassistant: "
    assert done.usage.prompt_tokens == len(ids_of(hf, rendered))
    none = oai(tools_server).chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL],
                                                     tool_choice="none", max_tokens=2, temperature=0)
    assert none.usage.prompt_tokens == len(ids_of(hf, "user: weather in Paris?\nassistant: "))
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oai(tiny_chat_server).chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL],
                                                      max_tokens=2)
    assert "does not render tools" in refused.value.response.json()["error"]
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        oai(tools_server).chat.completions.create(model="tiny", messages=messages, tools=[WEATHER_TOOL],
                                                  tool_choice="required", max_tokens=2)
    assert "`tool_choice` 'required' is not supported" in refused.value.response.json()["error"]


def test_openai_parameter_refusals(tiny_server):
    for body, message in [
        ({"prompt": "x", "logprobs": 6}, "`logprobs` must be >= 0 and <= 5"),
        ({"prompt": "x", "n": 0}, "`n` must be >= 1"),
        ({"prompt": "x", "echo": True, "suffix": "y"}, "`echo` cannot be used with `suffix`"),
        ({"prompt": "x", "echo": True, "logprobs": 1, "stream": True}, "not supported when streaming"),
        ({"prompt": [[5, 10**9]]}, "token ids must be >= 0"),
    ]:
        r = post(tiny_server, "/v1/completions", {"max_tokens": 2, **body})
        assert r.status_code == 422 and message in r.json()["error"], (body, r.text)
