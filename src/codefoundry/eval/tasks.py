"""Benchmark tasks: what the model is asked, where its answer is cut, and what program tests it.

A task is a list of `Problem`s plus a language; the harness generates a completion for each
problem's `prompt`, cuts it at the first of `stop`, and runs `program(completion)` in the
sandbox. Prompts, stops and programs follow bigcode-evaluation-harness (BEH):

- humaneval: prompt `prompt.strip()` (BEH default; `strip_prompt=False` is BEH's
  humaneval-unstripped); program prompt + completion + test + `check(entry_point)`.
- humaneval-infilling-*: prompt `<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>` (BEH
  starcoder_fim); program prefix + middle + suffix + test + check; also FIM exact match.
- mbpp: prompt = the text and the first assert inside a triple-quoted string; program prompt + completion +
  the asserts (as BEH: without test_setup_code, unless asked).
- multiple-LANG: MultiPL-E's reworded prompt (stripped, as BEH); program prompt + completion + tests.
- a .jsonl file: its `prompt`; program prompt + completion + `tests`.

Python programs are `SplitProgram`s: the tests run in a checker process of their own and call the
candidate's entry points (HumanEval's `entry_point`; what MBPP's or a user task's `reference` defines;
else every free name of the tests) with plain data. A user task whose `tests` are not Python on their
own (they continue the completion's code, e.g. close its string literal) runs in one interpreter.

A user task is a JSONL file, one problem per line:
`{"task_id": "add/0", "prompt": "def add(a, b):\\n", "tests": "assert add(1, 2) == 3",
  "language": "python", "stop": ["\\ndef"], "reference": "    return a + b\\n"}`
(`language`, `stop` and `reference` optional; `reference` is the canonical completion).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codefoundry import benchmarks
from codefoundry.errors import UserError
from codefoundry.eval.languages import LANGUAGES, SplitProgram, python_compiles, python_definitions

# bigcode-evaluation-harness tasks/humaneval.py (8 stop words, <file_sep> since 5f42b34d)
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
# BEH tasks/mbpp.py
MBPP_STOPS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
# BEH tasks/santacoder_fim.py StarCoderFIM: EOS, <|filename|>, <file_sep>
FIM_STOPS = ("<|endoftext|>", "<|filename|>", "<file_sep>")
FIM_TEMPLATE = "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"


@dataclass(frozen=True)
class Problem:
    """One benchmark problem as the harness sees it."""

    task_id: str
    prompt: str                      # exactly what the model is sent
    stop: tuple[str, ...]
    program: Callable[[str], str | SplitProgram]  # completion (already cut) -> the program to execute
    reference: str | None = None     # the canonical completion, when the benchmark has one
    exact_match: bool = False        # also score `completion.strip() == reference.strip()`


@dataclass(frozen=True)
class Task:
    """A named list of problems in one language."""

    name: str
    language: str
    problems: list[Problem] = field(repr=False)
    benchmark: str | None = None     # its BENCHMARK_SETS name (for the contamination check)


def cut_at_stop(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """`text` up to the first occurrence of any stop sequence (BEH `_stop_at_stop_token`)."""
    end = len(text)
    for stop in stops:
        i = text.find(stop)
        if i != -1 and i < end:
            end = i
    return text[:end]


def _split_prompt(prompt: str, strip: bool) -> tuple[str, str]:
    """(what the model sees, the whitespace taken off it that a canonical completion needs back)."""
    if not strip:
        return prompt, ""
    return prompt.strip(), prompt[len(prompt.rstrip()):]


def humaneval_task(strip_prompt: bool = True) -> Task:
    problems = []
    for p in benchmarks.humaneval():
        prompt, cut = _split_prompt(p["prompt"], strip_prompt)
        tail = f"\n{p['test']}\ncheck({p['entry_point']})\n"
        problems.append(Problem(p["task_id"], prompt, HUMANEVAL_STOPS,
                                lambda c, prompt=prompt, tail=tail, ep=(p["entry_point"],):
                                SplitProgram(prompt + c, tail, prompt, ep),
                                reference=cut + p["canonical_solution"]))
    return Task("humaneval", "python", problems, "humaneval")


def infilling_task(kind: str) -> Task:
    problems = []
    for p in benchmarks.humaneval_infilling(kind):
        tests = f"\n{p['test']}\ncheck({p['entry_point']})\n"
        canonical = p["prompt"] + p["canonical_solution"] + p["suffix"]  # the tests' helpers, as the benchmark has them
        problems.append(Problem(p["task_id"], FIM_TEMPLATE.format(prefix=p["prompt"], suffix=p["suffix"]), FIM_STOPS,
                                lambda c, prefix=p["prompt"], suffix=p["suffix"], tests=tests, canonical=canonical,
                                ep=(p["entry_point"],): SplitProgram(prefix + c + suffix, tests, canonical, ep),
                                reference=p["canonical_solution"], exact_match=True))
    return Task(f"humaneval-infilling-{kind}", "python", problems, "humaneval-infilling")


def mbpp_task(test_setup_code: bool = False) -> Task:
    """MBPP's 500 test problems. BEH runs `completion + "\\n" + asserts`, without `test_setup_code`; the
    only test problem that has one, mbpp/367, then fails for every answer (its asserts use trees the
    setup builds). `test_setup_code=True` runs it (after the solution, whose class it uses)."""
    problems = []
    for r in benchmarks.mbpp():
        prompt = f'"""\n{r["text"]}\n{r["test_list"][0]}\n"""\n'
        setup = r.get("test_setup_code", "") if test_setup_code else ""
        tail = "\n" + setup + "\n" + "\n".join(r["test_list"]) + "\n"
        names, imports = python_definitions(r["code"])  # the tests call what the reference defines
        problems.append(Problem(f"mbpp/{r['task_id']}", prompt, MBPP_STOPS,
                                lambda c, prompt=prompt, tail=tail, helpers=prompt + imports, names=names:
                                SplitProgram(prompt + c, tail, helpers, names or None),
                                reference=r["code"]))
    return Task("mbpp", "python", problems, "mbpp")


def multiple_task(lang: str, strip_prompt: bool = True) -> Task:
    problems = []
    for p in benchmarks.multipl_e(lang):
        prompt, _ = _split_prompt(p["prompt"], strip_prompt)
        stops = (*p["stop_tokens"], "<file_sep>")
        problems.append(Problem(p["name"], prompt, stops,
                                lambda c, prompt=prompt, tests=p["tests"]: prompt + c + "\n" + tests))
    return Task(f"multiple-{lang}", lang, problems, "multiple")


def jsonl_task(path: Path) -> Task:
    """A user task: one problem per JSONL line (see the module docstring)."""
    problems, language = [], None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(f"task file {path} cannot be read: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt, tests = row["prompt"], row["tests"]
            if not isinstance(prompt, str) or not isinstance(tests, str):
                raise TypeError("`prompt` and `tests` must be strings")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"task file {path} line {n}: needs a JSON object with string `prompt` and `tests` "
                            f"({type(e).__name__}: {e})") from None
        lang = row.get("language", "python")
        if lang not in LANGUAGES:
            raise UserError(f"task file {path} line {n}: unknown language {lang!r}",
                            f"choose from {', '.join(LANGUAGES)}")
        if language not in (None, lang):
            raise UserError(f"task file {path} line {n}: language {lang!r} differs from earlier lines ({language!r})")
        language = lang
        names, imports = python_definitions(prompt + row["reference"]) if isinstance(row.get("reference"), str) \
            else ((), "")
        problems.append(Problem(str(row.get("task_id", f"{path.stem}/{n}")), prompt,
                                tuple(row.get("stop", HUMANEVAL_STOPS if lang == "python" else ())),
                                (lambda c, prompt=prompt, tests=tests, imports=imports, names=names:
                                 SplitProgram(prompt + c, "\n" + tests + "\n", imports, names or None))
                                if lang == "python" and python_compiles(tests) else
                                (lambda c, prompt=prompt, tests=tests: prompt + c + "\n" + tests + "\n"),
                                reference=row.get("reference")))
    if not problems:
        raise UserError(f"task file {path} has no problems")
    return Task(path.stem, language or "python", problems)


TASK_NAMES = ("humaneval", *(f"humaneval-infilling-{k}" for k in benchmarks.INFILLING_KINDS), "mbpp",
              *(f"multiple-{lang}" for lang in benchmarks.MULTIPLE_LANGUAGES))


def load_task(name: str, strip_prompt: bool = True, mbpp_test_setup_code: bool = False) -> Task:
    """A task by name (see TASK_NAMES) or by the path of a user .jsonl file."""
    if name == "humaneval":
        return humaneval_task(strip_prompt)
    if name.startswith("humaneval-infilling-") and name.removeprefix("humaneval-infilling-") in \
            benchmarks.INFILLING_KINDS:
        return infilling_task(name.removeprefix("humaneval-infilling-"))
    if name == "mbpp":
        return mbpp_task(mbpp_test_setup_code)
    if name.startswith("multiple-") and name.removeprefix("multiple-") in benchmarks.MULTIPLE_LANGUAGES:
        return multiple_task(name.removeprefix("multiple-"), strip_prompt)
    if name.endswith(".jsonl"):
        return jsonl_task(Path(name))
    raise UserError(f"unknown task {name!r}", f"choose from {', '.join(TASK_NAMES)}, or give a .jsonl file")
