"""Canonical solutions pass and broken ones fail, through the real sandbox.

Default run: all of HumanEval (164), a few problems of every other task; `-m slow`: everything.
"""

from __future__ import annotations

import os

import pytest

from codefoundry.eval import Executor, Sandbox, load_task
from codefoundry.eval.tasks import Task


@pytest.fixture(scope="module")
def executor() -> Executor:
    with Sandbox(slots=os.cpu_count() or 2) as sb:
        ex = Executor(sb)
        yield ex
        ex.close()


def failures(executor: Executor, task: Task, limit: int | None = None, broken: bool = False) -> list[str]:
    problems = task.problems[:limit] if limit else task.problems
    futures = []
    for p in problems:
        completion = p.reference if not broken else p.reference.replace("return", "return None and", 1) + \
            "\n    raise AssertionError('broken')\n"
        futures.append((p.task_id, executor.submit(task.language, p.program(completion))))
    return [f"{tid}: {f.result().verdict} {f.result().output[-300:]}" for tid, f in futures
            if not f.result().passed]


def test_humaneval_all_canonical_pass(executor: Executor) -> None:
    task = load_task("humaneval")
    assert len(task.problems) == 164
    assert failures(executor, task) == []


def test_humaneval_unstripped_prompt_keeps_the_newline() -> None:
    stripped, unstripped = load_task("humaneval").problems[0], load_task("humaneval", strip_prompt=False).problems[0]
    assert not stripped.prompt.endswith("\n") and unstripped.prompt.endswith("\n")
    assert stripped.prompt + stripped.reference == unstripped.prompt + unstripped.reference


def test_humaneval_broken_solutions_fail(executor: Executor) -> None:
    task = load_task("humaneval")
    assert len(failures(executor, task, limit=8, broken=True)) == 8


def test_mbpp_canonical_and_test_setup_code(executor: Executor) -> None:
    task = load_task("mbpp")
    assert len(task.problems) == 500 and task.problems[0].task_id == "mbpp/11"
    picked = [p for p in task.problems if p.task_id in ("mbpp/11", "mbpp/12", "mbpp/500")]
    assert failures(executor, Task("mbpp", "python", picked)) == []
    # mbpp/367's asserts use trees its test_setup_code builds: BEH omits the setup, so every answer fails;
    # with the setup (after the reference code, whose class it uses) the canonical answer passes
    p367 = next(p for p in task.problems if p.task_id == "mbpp/367")
    assert not executor.run("python", p367.program(p367.reference)).passed
    with_setup = next(p for p in load_task("mbpp", mbpp_test_setup_code=True).problems if p.task_id == "mbpp/367")
    program = with_setup.program(with_setup.reference)
    assert program.text.index("class Node") < program.text.index("root = Node(1)")
    # the setup runs in the checker: its trees are handles on the candidate's Node objects
    assert "class Node" in program.candidate and "root = Node(1)" in program.tests
    assert executor.run("python", program).passed


@pytest.mark.parametrize("kind", ["single-line", "multi-line", "random-span", "random-span-light"])
def test_infilling_canonical_pass_and_match_exactly(executor: Executor, kind: str) -> None:
    task = load_task(f"humaneval-infilling-{kind}")
    assert task.problems[0].prompt.startswith("<fim_prefix>") and task.problems[0].prompt.endswith("<fim_middle>")
    assert failures(executor, task, limit=6) == []


def test_infilling_programs_shared_across_rows_run_once(executor: Executor) -> None:
    task = load_task("humaneval-infilling-multi-line")
    rows = [p for p in task.problems if p.task_id.startswith("MultiLineInfilling/HumanEval/0/")]
    assert len(rows) > 5
    before = executor.executed
    assert failures(executor, Task(task.name, "python", rows)) == []
    distinct = len({p.program(p.reference) for p in rows})  # canonical middles rebuild the same function (or two)
    assert distinct <= 2 and executor.executed - before <= distinct


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mbpp", "humaneval-infilling-single-line", "humaneval-infilling-multi-line",
                                  "humaneval-infilling-random-span", "humaneval-infilling-random-span-light"])
def test_every_canonical_passes(executor: Executor, name: str) -> None:
    task = load_task(name)
    # mbpp/367's asserts need its test_setup_code, which BEH (and so this task by default) leaves out
    task = Task(task.name, task.language, [p for p in task.problems if p.task_id != "mbpp/367"])
    assert failures(executor, task) == []
