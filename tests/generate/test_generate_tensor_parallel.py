"""The sharded model of `serve --tp` under the engine: rank 0 here in a child interpreter, rank 1 its worker
(gloo); its greedy tokens and log-probabilities equal the whole model's, for multi-query and multi-head attention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# rank 0: the whole model's completions, then the same prompts through the model sharded over 2 processes
SCRIPT = """
import json, os, sys
import torch
from codefoundry.generate import SamplingParams, generate
from codefoundry.generate.tensor_parallel import TensorParallelModel, launch
from codefoundry.model import load_model
from codefoundry.tokenizer import load_tokenizer

model_dir = sys.argv[1]
tokenizer = load_tokenizer(model_dir)
prompts = ["def fibonacci(n):\\n", "import os\\nimport sys\\n", "SELECT name FROM", "class Stack:\\n" * 40]
params = SamplingParams(max_new_tokens=8, top_n_tokens=2)
run = lambda model: [[c.token_ids, c.logprobs, [[t.top_tokens[0][1] - t.top_tokens[1][1]] for t in c.tokens]]
                     for c in generate(model, tokenizer, prompts, params, max_batch_tokens=64)]
whole = run(load_model(model_dir))
sharded = launch(model_dir, 2, torch.float32, torch.device("cpu")).shard(load_model(model_dir))
assert isinstance(sharded, TensorParallelModel)
print(json.dumps({"whole": whole, "sharded": run(sharded)}))
sys.stdout.flush()
os._exit(0)
"""
TIE_GAP = 1e-3


@pytest.fixture(scope="module")
def mha_model_dir(build_once, tiny_tokenizer_dir: Path) -> Path:
    """The tiny model with multi-head attention (K/V split with their heads over the ranks)."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    def build(out: Path) -> None:
        torch.manual_seed(1)
        config = preset("tiny", vocab_size=len(load_tokenizer(tiny_tokenizer_dir))).replace(multi_query=False)
        save_pretrained(GPTBigCodeForCausalLM(config), out, tokenizer_dir=tiny_tokenizer_dir, seed=1)

    return build_once("tiny_mha_model", build)


# multi-query is served end to end in tests/serve/test_serve_tp.py; multi-head's split K/V cache only here
@pytest.mark.parametrize("attention", [pytest.param("mqa", marks=pytest.mark.slow), "mha"])
def test_sharded_model_generates_what_the_whole_model_does(attention: str, tiny_model_dir: Path,
                                                           mha_model_dir: Path) -> None:
    model_dir = tiny_model_dir if attention == "mqa" else mha_model_dir
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir)], capture_output=True, text=True,
                          timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    compared = 0
    for (ids, logprobs, gaps), (s_ids, s_logprobs, _) in zip(got["whole"], got["sharded"], strict=True):
        n = next((k for k, (g,) in enumerate(gaps) if g < TIE_GAP), len(gaps))
        assert s_ids[:n] == ids[:n]
        assert s_logprobs[:n] == pytest.approx(logprobs[:n], abs=1e-4)
        compared += n == len(gaps)
    assert compared >= 2, "too many near-ties: nothing was compared in full"
