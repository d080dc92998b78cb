"""Function-level examples: which functions qualify, the prompt (signature + docstring, stripped as the evaluation
strips HumanEval's), the learned body + EOS, the equal mix with line requests, and a fine-tune with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_finetune_lora import make_base

from codefoundry.cli import run
from codefoundry.finetune.data import IGNORE, ExampleBatches
from codefoundry.finetune.functions import FunctionSettings, build_function_examples, function_example, functions_in
from codefoundry.finetune.lines import FimIds, LineFimSettings, request_examples
from codefoundry.tokenizer import load_tokenizer

SOURCE = '''import math


def hypot(a: float, b: float) -> float:
    """The hypotenuse.

    >>> hypot(3, 4)
    5.0
    """
    squares = a * a + b * b

    return math.sqrt(squares)


def undocumented(x):
    return x


def only_a_docstring():
    """Nothing else."""


def crammed():
    """Doc."""; return 1


class Box:
    @staticmethod
    def volume(w, h, d):
        """The volume."""
        return w * h * d
'''


@pytest.fixture(scope="module")
def tok(train_tokenizer_dir: Path):
    return load_tokenizer(train_tokenizer_dir)


def test_functions_with_a_docstring_and_a_body_are_split_after_the_docstring() -> None:
    found = functions_in(SOURCE, FunctionSettings())
    assert [f.prompt.splitlines()[0] for f in found] == ["def hypot(a: float, b: float) -> float:",
                                                         "@staticmethod"]
    hypot, volume = found
    assert hypot.prompt.endswith('    5.0\n    """') and not hypot.prompt.endswith("\n")   # stripped, as BEH
    assert hypot.body == "\n    squares = a * a + b * b\n\n    return math.sqrt(squares)\n"
    # the method is dedented to column 0, its decorator kept
    assert volume.prompt == '@staticmethod\ndef volume(w, h, d):\n    """The volume."""'
    assert volume.body == "\n    return w * h * d\n"
    assert functions_in("def broken(:\n    pass\n", FunctionSettings()) == []          # not Python: nothing
    assert functions_in("int main() { return 0; }\n", FunctionSettings()) == []
    assert [f.prompt for f in functions_in(SOURCE, FunctionSettings(max_body_lines=1))] == [volume.prompt]


def test_the_body_and_eos_are_learned_the_prompt_is_not(tok) -> None:
    fn = functions_in(SOURCE, FunctionSettings())[0]
    example = function_example(fn, tok, FunctionSettings())
    enc = lambda s: tok.encode(s, add_special_tokens=False)   # noqa: E731
    assert example.ids.tolist() == [*enc(fn.prompt), *enc(fn.body), tok.eos_token_id]
    assert example.n_prompt == len(enc(fn.prompt))
    # the prompt is tokenized on its own: what the evaluation feeds for HumanEval's stripped prompt
    assert tok.decode(example.ids[:example.n_prompt].tolist()) == fn.prompt
    labels = ExampleBatches([example], seed=0, pad_id=0, shuffle=False).batch([0]).y[0].tolist()
    assert labels[:example.n_prompt - 1] == [IGNORE] * (example.n_prompt - 1)
    assert labels[example.n_prompt - 1:] == example.ids[example.n_prompt:].tolist()
    assert function_example(fn, tok, FunctionSettings(max_body_tokens=3)) is None      # over budget


def test_mix_has_as_many_functions_as_line_requests_and_repeats_with_the_seed(tok) -> None:
    docs = [SOURCE, SOURCE.replace("hypot", "norm"), "x = 1\ny = 2\n", "def f(:\n"]
    settings = LineFimSettings(spm_rate=0.0)
    functions = build_function_examples(docs, tok, FunctionSettings(), seed=0)
    assert len(functions) == 4                                            # two per parsing file
    lines = request_examples(docs, tok, settings, seed=0)                  # "lines": one request per document
    assert len(lines) == 4 and all(FimIds.from_tokenizer(tok).middle in e.ids for e in lines)
    mix = request_examples(docs, tok, LineFimSettings(spm_rate=0.0, examples="mix"), seed=0)
    fim = [e for e in mix if FimIds.from_tokenizer(tok).middle in e.ids]
    assert len(mix) == 8 and len(fim) == 4
    again = request_examples(docs, tok, LineFimSettings(spm_rate=0.0, examples="mix"), seed=0)
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(mix, again, strict=True))
    assert len(request_examples(docs, tok, LineFimSettings(examples="functions"), seed=0)) == 4
    no_python = ["x <- 1\ny <- 2\n", "fn main() {}\n"]                # mix without functions: the line requests
    assert len(request_examples(no_python, tok, LineFimSettings(examples="mix"), seed=0)) == 2
    few = build_function_examples(docs, tok, FunctionSettings(max_functions=3, max_per_file=1), seed=0)
    assert len(few) == 2                                                   # one per file, two files parse


def test_finetune_on_a_mix_of_functions_and_line_requests(tmp_path: Path, train_dataset_dir: Path,
                                                          train_tokenizer_dir: Path) -> None:
    base = make_base("gpt_bigcode", train_tokenizer_dir, tmp_path / "base")
    out = tmp_path / "adapters" / "mix"
    assert run(["finetune", "--model", str(base), "--data", str(train_dataset_dir), "--out", str(out),
                "--fim-holes", "lines", "--examples", "mix", "--max-steps", "2", "--lora-r", "2",
                "--seq-len", "128", "--micro-batch-size", "2", "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    data = manifest["extra"]["data"]
    assert data["format"] == "dataset-fim-lines+functions" and data["train_sequences"] > 0
    assert data["train_sequences"] % 2 == 0                               # as many of each
    assert manifest["config"]["data"]["examples"] == "mix"
    bad = run(["finetune", "--model", str(base), "--data", str(train_dataset_dir), "--out", str(tmp_path / "x"),
               "--fim-holes", "lines", "--examples", "everything", "--max-steps", "1"])
    assert bad != 0 and not (tmp_path / "x" / "manifest.json").exists()


def test_training_layouts_are_what_the_evaluation_feeds(tok) -> None:
    """Line requests (PSM) and function prompts are tokenized as the evaluation tokenizes its prompts."""
    from codefoundry import benchmarks
    from codefoundry.eval.tasks import load_task

    ids = FimIds.from_tokenizer(tok)
    enc = lambda s: tok.encode(s, add_special_tokens=False) if s else []   # noqa: E731
    infilling = load_task("humaneval-infilling-single-line").problems[:60]
    raw = list(benchmarks.humaneval_infilling("single-line"))[:60]
    for problem, row in zip(infilling, raw, strict=True):
        # LocalGenerator encodes the whole prompt text; training encodes each piece between the sentinels
        assert tok.encode(problem.prompt) == [ids.prefix, *enc(row["prompt"]), ids.suffix, *enc(row["suffix"]),
                                              ids.middle]
    for problem, row in zip(load_task("humaneval").problems[:20], benchmarks.humaneval()[:20], strict=True):
        fns = functions_in(row["prompt"] + row["canonical_solution"], FunctionSettings(max_body_lines=100))
        top = [f for f in fns if problem.prompt.endswith(f.prompt)]
        # the function's prompt is the stripped evaluation prompt from its `def` on; the body its answer
        assert top and row["canonical_solution"].strip() in top[0].body
        assert tok.encode(problem.prompt) == enc(problem.prompt)          # no BOS: the same ids as training's


@pytest.mark.parametrize("examples", ["functions", "mix"])
def test_function_examples_without_line_holes_are_refused_not_ignored(examples: str) -> None:
    from pydantic import ValidationError

    from codefoundry.finetune.config import FinetuneDataSettings

    with pytest.raises(ValidationError, match="needs fim_holes=lines"):
        FinetuneDataSettings(examples=examples)
    assert FinetuneDataSettings(examples=examples, fim_holes="lines").examples == examples
