"""SIGKILL every resumable stage at seeded random points, resume it, and get the uninterrupted run's artifact.

Each stage is the real CLI in a subprocess (worker processes included in the kill). After the
resume the artifact must equal an uninterrupted run's, byte for byte except what two runs
legitimately differ in (wall times, the output's own path, `elapsed_s` and throughput in the
training log), training must repeat the same loss trajectory, and no temp file or scratch
directory may be left. At the moment of the kill, whatever claims to be complete (a manifest,
a checkpoint `latest.json` points to) must be complete. One seed per stage in the default
suite; more seeds, and a second kill during the resume, in the slow one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from crash_resume import Reference, Stage, files, leftovers, manifest, reference, resume, run_killed, without_paths

from conftest import make_git_repo, stdlib_files

# ---- the stages ----

CURATE_REPOS = {f"acme/r{i}": names for i, names in enumerate([
    ("textwrap.py", "shlex.py"), ("colorsys.py", "bisect.py"), ("fnmatch.py", "glob.py"), ("pprint.py", "reprlib.py"),
    ("heapq.py", "keyword.py"), ("contextlib.py", "copy.py")])}


def _dataset_consistent(out: Path) -> list[str]:
    """A dataset that has its manifest (written last) must be whole: every shard readable."""
    if not (out / "manifest.json").exists():
        return []
    bad = []
    for shard in sorted(out.glob("data/*/*.parquet")) + sorted(out.glob("removed/*/*.parquet")):
        try:
            pq.read_table(shard)
        except Exception as e:
            bad.append(f"{shard}: {e}")
    return bad


def _dataset(out: Path) -> dict[str, object]:
    return {**files(out, skip=lambda rel: rel == "manifest.json"),
            "manifest.json": manifest(out, volatile_extra=("seconds", "step_seconds"))}


CURATE = Stage(
    "curate",
    command=lambda i, out: ["data", "curate", str(i["sources"]), "--out", str(out), "--workers", "2"],
    begun=lambda out: (out / ".work" / "plan.json").exists(),
    artifact=_dataset, scratch=(".work",), consistent=_dataset_consistent)


def _tokens(out: Path) -> dict[str, object]:
    return {**files(out, skip=lambda rel: rel == "manifest.json"), "manifest.json": manifest(out)}


PACK = Stage(
    "pack",
    command=lambda i, out: ["train", "pack", "--dataset", str(i["dataset"]), "--tokenizer", str(i["tokenizer"]),
                            "--out", str(out), "--workers", "2"],
    begun=lambda out: (out / "work").exists(),
    artifact=_tokens, scratch=("work",))

TRAIN_CONFIG = {"preset": "tiny", "seq_len": 64, "micro_batch_size": 2, "max_steps": 12, "log_interval": 1,
                "eval_interval": 8, "eval_batches": 1, "checkpoint_interval": 3, "keep_checkpoints": 2}
TIMING_FIELDS = ("tokens_per_s", "elapsed_s", "mfu")


def _model(out: Path) -> dict[str, object]:
    """The trained model: weights and files byte for byte; the training log less its timings; the card's numbers."""
    found = files(out, skip=lambda rel: rel.startswith("checkpoints/") or rel in ("manifest.json", "metrics.jsonl",
                                                                                  "README.md", "loss.png"))
    log = [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
           for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {**found, "metrics.jsonl": log, "manifest.json": without_paths(manifest(out, ("seconds", "elapsed_s",
                                                                                         "tokens_per_s")), out)}


def _checkpoints_consistent(out: Path) -> list[str]:
    """What latest.json names must load whole; the training log's lines must each be JSON."""
    problems = []
    latest = out / "checkpoints" / "latest.json"
    if latest.exists():
        name = json.loads(latest.read_text())["file"]
        try:
            torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        except Exception as e:
            problems.append(f"latest.json names {name}, which does not load: {e}")
    return problems


TRAIN = Stage(
    "train",
    command=lambda i, out: ["train", "--tokens", str(i["tokens"]), "--tokenizer", str(i["tokenizer"]), "--out",
                            str(out), "--config", str(i["config"])],
    resume_command=lambda i, out: ["train", "--tokens", str(i["tokens"]), "--tokenizer", str(i["tokenizer"]),
                                   "--out", str(out), "--config", str(i["config"]), "--resume"],
    begun=lambda out: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0,
    artifact=_model, consistent=_checkpoints_consistent)


def _eval(out: Path) -> dict[str, object]:
    """results and samples less execution wall times, with the (per-run copy of the) model's path taken out."""
    model = Path(json.loads((out / "run.json").read_text())["model"])
    rows = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "samples.jsonl").read_text().splitlines()]
    results = json.loads((out / "results.json").read_text())
    for key in ("programs_executed", "samples_sha256", "sandbox"):
        results.pop(key)
    return {"samples.jsonl": rows, "results.md": without_paths((out / "results.md").read_bytes(), model),
            "results.json": without_paths(without_paths(results, model), out),
            "manifest.json": without_paths(manifest(out), model), "run.json": without_paths(
                json.loads((out / "run.json").read_text()), model)}


def _eval_command(i, out: Path) -> list[str]:
    model = out.parent / f"{out.name}-model"         # eval writes its scores into the model's card: one copy per run
    if not model.exists():
        shutil.copytree(i["model"], model)
    return ["eval", "--task", "humaneval", "--model", str(model), "--out", str(out), "--limit", "4",
            "--max-new-tokens", "12", "--temperature", "0", "--config", str(i["config"])]


EVAL = Stage("eval", command=_eval_command, begun=lambda out: (out / "run.json").exists(), artifact=_eval)

FINETUNE_ARGS = ["--max-steps", "8", "--checkpoint-interval", "2", "--eval-interval", "4", "--seq-len", "64",
                 "--micro-batch-size", "2", "--grad-accum", "1", "--device", "cpu", "--lora-r", "2", "--seed", "0"]
ADAPTER_VOLATILE = ("peak_memory_bytes", "tokens_per_s")


def _adapter(out: Path) -> dict[str, object]:
    """The adapter's weights and config byte for byte, its training log less timings, its manifest less memory."""
    found = files(out, skip=lambda rel: rel.startswith("checkpoints/") or rel in ("manifest.json", "metrics.jsonl",
                                                                                  "README.md", "loss.png"))
    log = [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
           for line in (out / "metrics.jsonl").read_text().splitlines()]
    m = manifest(out)
    m["extra"]["training"] = {k: v for k, v in m["extra"]["training"].items() if k not in ADAPTER_VOLATILE}
    return {**found, "metrics.jsonl": log, "manifest.json": without_paths(m, out)}


def _instruction_rows(path: Path, n: int) -> Path:
    rows = [{"instruction": f"Write a function named f_{i} that returns {i}.",
             "response": f"def f_{i}():\n    return {i}\n"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _finetune_command(i, out: Path, resume: bool = False) -> list[str]:
    return ["finetune", "--model", str(i["model"]), "--data", str(i["rows"]), "--out", str(out), *FINETUNE_ARGS,
            *(["--resume"] if resume else [])]


FINETUNE = Stage(
    "finetune", command=_finetune_command, resume_command=lambda i, out: _finetune_command(i, out, resume=True),
    begun=lambda out: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0,
    artifact=_adapter, consistent=_checkpoints_consistent)

STAGES = {s.name: s for s in (CURATE, PACK, TRAIN, FINETUNE, EVAL)}


# ---- their inputs ----

@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory: pytest.TempPathFactory, train_dataset_dir: Path, train_tokenizer_dir: Path,
                 tiny_model_dir: Path) -> dict[str, dict[str, Path]]:
    from codefoundry.train import PackConfig, pack

    root = tmp_path_factory.mktemp("stage_inputs")
    sources = root / "repos"
    for name, modules in CURATE_REPOS.items():
        make_git_repo(sources / name.split("/")[1], {"LICENSE": "MIT License\n", **stdlib_files(*modules)},
                      remote=f"https://github.com/{name}.git")
    tokens = pack(train_dataset_dir, train_tokenizer_dir, root / "tokens", PackConfig(workers=1))
    (root / "train.json").write_text(json.dumps(TRAIN_CONFIG))
    (root / "eval.json").write_text(json.dumps({"chunk": 1, "workers": 2}))
    return {"curate": {"sources": sources},
            "pack": {"dataset": train_dataset_dir, "tokenizer": train_tokenizer_dir},
            "train": {"tokens": tokens, "tokenizer": train_tokenizer_dir, "config": root / "train.json"},
            "finetune": {"model": tiny_model_dir, "rows": _instruction_rows(root / "rows.jsonl", 16)},
            "eval": {"model": tiny_model_dir, "config": root / "eval.json"}}


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, stage_inputs) -> dict[str, Reference]:
    """One uninterrupted run per stage, made when first asked for."""
    cache: dict[str, Reference] = {}

    class Lazy(dict):
        def __missing__(self, name: str) -> Reference:
            cache[name] = reference(STAGES[name], stage_inputs[name], tmp_path_factory.mktemp(f"ref-{name}") / "out")
            self[name] = cache[name]
            return cache[name]
    return Lazy()


def crash_and_resume(stage: Stage, inputs, ref: Reference, out: Path, seed: int, kills: int = 1) -> list:
    """Kill the stage (`kills` times in a row, each on its resume) and resume it to the end; check everything."""
    records = []
    for k in range(kills):
        args = (stage.resume_command or stage.command)(inputs, out) if k else None
        kill = run_killed(stage, inputs, out, seed * 100 + k, ref.work_seconds, args=args)
        records.append(kill)
        broken = stage.consistent(out)
        assert not broken, f"{stage.name} killed after {kill.delay:.2f}s left: {broken}"
    assert any(k.killed for k in records), f"{stage.name} ended before every kill: {records}"
    resume(stage, inputs, out)
    assert leftovers(stage, out) == []
    got, want = stage.artifact(out), stage.artifact(ref.out)
    assert got.keys() == want.keys(), f"files differ: {sorted(got.keys() ^ want.keys())}"
    differ = [name for name in want if got[name] != want[name]]
    shown = {n: (want[n], got[n]) for n in differ if not isinstance(want[n], bytes)}
    assert not differ, f"{stage.name} after a kill at {[round(k.delay, 2) for k in records]}s differs in {differ}: " \
                       f"{str(shown)[:3000]}"
    return records


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_resumes_to_the_same_artifact(name: str, stage_inputs, references, tmp_path: Path) -> None:
    ref = references[name]
    assert leftovers(STAGES[name], ref.out) == []
    crash_and_resume(STAGES[name], stage_inputs[name], ref, tmp_path / "out", seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4, 5])
@pytest.mark.parametrize("name", list(STAGES))
def test_stage_resumes_after_kills_at_more_points(name: str, seed: int, stage_inputs, references,
                                                  tmp_path: Path) -> None:
    crash_and_resume(STAGES[name], stage_inputs[name], references[name], tmp_path / "out", seed,
                     kills=1 + seed % 2)
