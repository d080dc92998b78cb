"""A local model through codefoundry.generate, and the contamination check along its lineage."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from codefoundry.eval import EvalConfig, load_task, run_eval
from codefoundry.eval.contamination import contamination_report
from codefoundry.manifest import read_manifest, write_manifest


def test_local_model_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "README.md").write_text("---\nlicense: mit\nmodel-index:\n- name: tiny\n  results: []\n---\n\n# tiny\n")
    out = tmp_path / "eval"
    cfg = EvalConfig(tasks=["humaneval", "humaneval-infilling-single-line"], model=model, limit=2,
                     max_new_tokens=8, temperature=0, workers=2)
    run_eval(out, cfg)
    results = json.loads((out / "results.json").read_text())
    he = results["results"]["humaneval"]
    assert he["problems"] == 2 and 0.0 <= he["pass@1"] <= 1.0 and sum(he["verdicts"].values()) == 2
    assert "exact_match" in results["results"]["humaneval-infilling-single-line"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["verdict"] in ("passed", "failed", "timeout", "error") for r in rows)
    manifest = read_manifest(out, kind="eval")
    assert Path(manifest.inputs["model"].path) == model.resolve()
    assert results["model_lineage"][0]["kind"] == "model"
    card = yaml.safe_load((model / "README.md").read_text().split("---\n")[1])
    tasks = [r["dataset"]["codefoundry_task"] for r in card["model-index"][0]["results"]]
    assert tasks == ["humaneval", "humaneval-infilling-single-line"] and card["license"] == "mit"
    # greedy decoding is deterministic: a fresh run gives the same completions
    run_eval(tmp_path / "eval2", cfg)
    again = [json.loads(line) for line in (tmp_path / "eval2" / "samples.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in again] == [r["completion"] for r in rows]


def _artifact(path: Path, kind: str, inputs: dict[str, Path] | None = None, extra: dict | None = None) -> Path:
    path.mkdir(parents=True)
    write_manifest(path, kind, {}, inputs=inputs, extra=extra)
    return path


def test_contamination_follows_lineage_to_dataset_records(tmp_path: Path) -> None:
    clean = _artifact(tmp_path / "clean", "dataset")
    (clean / "stats.json").write_text(json.dumps({"decontaminated_against": ["humaneval", "mbpp"]}))
    other = _artifact(tmp_path / "other", "dataset", extra={"decontaminated_against": ["mbpp"]})
    tok = _artifact(tmp_path / "tok", "tokenizer", inputs={"dataset": clean})
    model = _artifact(tmp_path / "model", "model", inputs={"dataset": clean, "tokenizer": tok})
    tasks = [load_task("humaneval"), load_task("mbpp")]
    report = contamination_report(model, tasks)
    assert report["checked"] and report["tasks"]["humaneval"]["verdict"] == "decontaminated"
    model2 = _artifact(tmp_path / "model2", "model", inputs={"dataset": clean, "extra": other})
    report2 = contamination_report(model2, tasks)
    assert report2["tasks"]["humaneval"]["verdict"] == "NOT decontaminated"
    assert report2["tasks"]["mbpp"]["verdict"] == "decontaminated"
    bare = _artifact(tmp_path / "bare", "dataset")
    (bare / "stats.json").write_text("{not json")
    model3 = _artifact(tmp_path / "model3", "model", inputs={"dataset": bare})
    assert contamination_report(model3, tasks)["tasks"]["mbpp"]["verdict"] == "unknown (not recorded)"
    assert contamination_report(None, tasks)["checked"] is False
