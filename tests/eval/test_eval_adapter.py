"""`eval --adapter`: a base model + LoRA adapter scored without a merged copy gives what the merged model
gives, and the adapter's training data counts in the contamination check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codefoundry.cli import run
from codefoundry.errors import UserError
from codefoundry.eval import EvalConfig, run_eval, run_evals
from codefoundry.finetune import FinetuneConfig, FinetuneDataSettings, LoraSettings, finetune, merge
from codefoundry.manifest import read_manifest

TASKS = ["humaneval", "humaneval-infilling-single-line"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def adapted(tiny_model_dir: Path, train_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, Path, Path]:
    """(base, adapter, merged): a LoRA trained on line-level FIM from a dataset/, with a learning rate that
    moves the tiny model's greedy answers, and the same adapter merged into a copy of the base."""
    root = tmp_path_factory.mktemp("eval_adapter")
    base = root / "base"
    shutil.copytree(tiny_model_dir, base)
    (base / "README.md").write_text("---\nmodel-index:\n- name: base\n  results: []\n---\n\n# base\n")
    config = FinetuneConfig(lora=LoraSettings(r=4, alpha=16), data=FinetuneDataSettings(fim_holes="lines"),
                            seq_len=128, micro_batch_size=2, grad_accum=1, max_steps=3, lr=0.05, warmup_steps=0,
                            device="cpu")
    adapter = finetune(base, train_dataset_dir, root / "adapter", config)
    return base, adapter, merge(base, adapter, root / "merged")


def test_adapter_scores_equal_the_merged_models(adapted: tuple[Path, Path, Path], tmp_path: Path,
                                                train_dataset_dir: Path) -> None:
    base, adapter, merged = adapted
    common = {"tasks": TASKS, "limit": 2, "max_new_tokens": 8, "temperature": 0, "workers": 2, "ks": [1]}
    card = (base / "README.md").read_text()
    run_eval(tmp_path / "adapter", EvalConfig(model=base, adapter=adapter, **common))
    assert (base / "README.md").read_text() == card                   # the scores are the adapter's: its card has them
    assert "humaneval-infilling-single-line" in (adapter / "README.md").read_text()
    run_eval(tmp_path / "merged", EvalConfig(model=merged, **common))
    run_eval(tmp_path / "base", EvalConfig(model=base, **common))
    with_adapter, folded, plain = (_rows(tmp_path / name / "samples.jsonl") for name in ("adapter", "merged", "base"))
    fields = ("task_id", "completion", "verdict", "exact_match")
    assert [[r[f] for f in fields] for r in with_adapter] == [[r[f] for f in fields] for r in folded]
    assert [r["completion"] for r in with_adapter] != [r["completion"] for r in plain]   # the adapter was applied
    results = json.loads((tmp_path / "adapter" / "results.json").read_text())
    merged_results = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert results["results"] == merged_results["results"]
    assert results["source"]["adapter"] == str(adapter.resolve()) and results["config"]["adapter"] == str(adapter)
    # the adapter's lineage: its dataset is checked for contamination, as the merged model's is
    for document in (results, merged_results):
        entries = document["contamination"]["tasks"]["humaneval"]["datasets"]
        assert str(train_dataset_dir) in {e["dataset"] for e in entries}, entries
    assert any(row["role"].startswith("adapter:") for row in results["model_lineage"])
    manifest = read_manifest(tmp_path / "adapter", kind="eval")
    assert set(manifest.inputs) == {"model", "adapter"}


def test_adapter_flag_mistakes_are_one_error_line(adapted: tuple[Path, Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base, adapter, _ = adapted
    cases = [(["--model", str(base), "--adapter", str(tmp_path)], "is not a PEFT adapter directory"),
             (["--endpoint", "http://127.0.0.1:9", "--adapter", str(adapter)], "--adapter needs --model")]
    for args, message in cases:
        capsys.readouterr()
        assert run(["eval", "--task", "humaneval", "--limit", "1", "--out", str(tmp_path / "out"), *args]) != 0
        err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_one_engine_for_base_and_adapter_gives_the_separate_evaluations(adapted: tuple[Path, Path, Path],
                                                                       tmp_path: Path) -> None:
    """The demo's evaluation: base and base + adapter, both tasks, through one loaded model and one batch
    (each request through its own adapter) write what four separate `run_eval`s write."""
    base, adapter, _ = adapted
    common = {"limit": 3, "temperature": 0, "workers": 2, "ks": [1]}
    configs = {f"{who}-{task}": EvalConfig(model=base, adapter=adapter if who == "tuned" else None, tasks=[task],
                                           max_new_tokens=12 if task == "humaneval" else 6, **common)
               for who in ("base", "tuned") for task in TASKS}
    run_evals([(tmp_path / "group" / name, config) for name, config in configs.items()])
    fields = ("task", "task_id", "sample", "prompt", "completion", "verdict", "execution", "exact_match")
    for name, config in configs.items():
        run_eval(tmp_path / "alone" / name, config)
        group, alone = (tmp_path / where / name for where in ("group", "alone"))
        assert [[r[f] for f in fields] for r in _rows(group / "samples.jsonl")] == \
            [[r[f] for f in fields] for r in _rows(alone / "samples.jsonl")], name
        together, apart = (json.loads((d / "results.json").read_text()) for d in (group, alone))
        for key in ("results", "source", "model_lineage", "contamination", "settings", "programs_executed"):
            assert together[key] == apart[key], (name, key)
        assert together["config"] == apart["config"]
        assert set(read_manifest(group, kind="eval").inputs) == set(read_manifest(alone, kind="eval").inputs)
    # one evaluation left (a resumed demo): its adapter is served the same way, with the same completions
    run_evals([(tmp_path / "one", configs["tuned-humaneval"])], served_adapters=True)
    assert [[r[f] for f in fields] for r in _rows(tmp_path / "one" / "samples.jsonl")] == \
        [[r[f] for f in fields] for r in _rows(tmp_path / "group" / "tuned-humaneval" / "samples.jsonl")]
    tuned = _rows(tmp_path / "group" / "tuned-humaneval" / "samples.jsonl")
    plain = _rows(tmp_path / "group" / "base-humaneval" / "samples.jsonl")
    assert [r["completion"] for r in tuned] != [r["completion"] for r in plain]     # the adapter was applied


def test_a_group_must_share_its_model(adapted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, _, merged = adapted
    runs = [(tmp_path / "a", EvalConfig(model=base, limit=1)), (tmp_path / "b", EvalConfig(model=merged, limit=1))]
    with pytest.raises(UserError, match="must agree on model"):
        run_evals(runs)
    with pytest.raises(UserError, match="is not a PEFT adapter directory"):
        run_evals([(tmp_path / "a", EvalConfig(model=base, limit=1)),
                   (tmp_path / "b", EvalConfig(model=base, adapter=tmp_path, limit=1))])
    assert not (tmp_path / "a").exists()                  # refused before anything was written


def test_bfloat16_is_on_record_and_a_resume_keeps_it(adapted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    base, _, _ = adapted
    config = EvalConfig(model=base, tasks=["humaneval"], limit=1, max_new_tokens=4, temperature=0, workers=2, ks=[1],
                        dtype="bfloat16")
    run_eval(tmp_path / "bf16", config)
    assert json.loads((tmp_path / "bf16" / "results.json").read_text())["config"]["dtype"] == "bfloat16"
    with pytest.raises(UserError, match="dtype differ"):      # its completions are not float32's
        run_eval(tmp_path / "bf16", config.model_copy(update={"dtype": "float32"}))
