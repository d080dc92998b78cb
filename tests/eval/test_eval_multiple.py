"""MultiPL-E: team-written programs for HumanEval/0 (has_close_elements) per language, through the
task's own prompt and tests: correct passes, wrong fails, broken fails to compile, a loop times out.

MultiPL-E ships no reference solutions; these completions were written for this test.
"""

from __future__ import annotations

import pytest

from codefoundry.eval import LANGUAGES, Executor, Sandbox, load_task

CORRECT = {
    "js": "\n  for (let i = 0; i < numbers.length; i++)\n    for (let j = 0; j < numbers.length; j++)\n"
          "      if (i != j && Math.abs(numbers[i] - numbers[j]) < threshold) return true;\n  return false;\n}\n",
    "java": "\n        for (int i = 0; i < numbers.size(); i++)\n            for (int j = 0; j < numbers.size(); j++)\n"
            "                if (i != j && Math.abs(numbers.get(i) - numbers.get(j)) < threshold) return true;\n"
            "        return false;\n",
    "cpp": "\n  for (size_t i = 0; i < numbers.size(); i++)\n    for (size_t j = 0; j < numbers.size(); j++)\n"
           "      if (i != j && std::abs(numbers[i] - numbers[j]) < threshold) return true;\n  return false;\n",
    "rs": "\n    for i in 0..numbers.len() {\n        for j in 0..numbers.len() {\n"
          "            if i != j && (numbers[i] - numbers[j]).abs() < threshold { return true; }\n        }\n    }\n"
          "    false\n",
    "go": "\n    for i := range numbers {\n        for j := range numbers {\n            d := numbers[i] - numbers[j]\n"
          "            if d < 0 { d = -d }\n            if i != j && d < threshold { return true }\n        }\n    }\n"
          "    return false\n}\n",
    "sh": "\n  local arr=($1)\n  for i in \"${!arr[@]}\"; do for j in \"${!arr[@]}\"; do\n    if [ $i != $j ]; then\n"
          "      d=$(echo \"${arr[$i]} - ${arr[$j]}\" | bc -l); d=${d#-}\n"
          "      if (( $(echo \"$d < $2\" | bc -l) )); then echo true; return; fi\n    fi\n  done; done\n"
          "  echo false\n",
}
WRONG = {"js": "\n  return false;\n}\n", "java": "\n        return false;\n", "cpp": "\n  return false;\n",
         "rs": "\n    false\n", "go": "\n    return false\n}\n", "sh": "\n  echo false\n"}
BROKEN = {"js": "\n  return (;\n}\n", "java": "\n        return 1 +;\n", "cpp": "\n  return 1 +;\n",
          "rs": "\n    1 +\n", "go": "\n    return 1 +\n}\n", "sh": "\n  if then fi fi\n"}
LOOP = {"js": "\n  while (true) {}\n}\n", "java": "\n        while (true) {}\n", "cpp": "\n  while (true) {}\n",
        "rs": "\n    loop {}\n", "go": "\n    for {}\n}\n", "sh": "\n  while true; do :; done\n"}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    with Sandbox(slots=2) as sb:
        yield sb


def verdicts(sandbox: Sandbox, lang: str, completions: dict[str, dict[str, str]], timeout: float | None = None
             ) -> list[str]:
    if LANGUAGES[lang].missing_tools():
        pytest.skip(f"no {lang} toolchain: run scripts/install-system-deps.sh")
    problem = load_task(f"multiple-{lang}").problems[0]
    assert problem.task_id == "HumanEval_0_has_close_elements"
    ex = Executor(sandbox, timeout)
    try:
        futures = [ex.submit(lang, problem.program(c[lang])) for c in completions.values()]
        return [f.result().verdict for f in futures]
    finally:
        ex.close()


@pytest.mark.parametrize("lang", ["js", "sh", "rs"])
def test_correct_passes_wrong_fails(sandbox: Sandbox, lang: str) -> None:
    assert verdicts(sandbox, lang, {"correct": CORRECT, "wrong": WRONG}) == ["passed", "failed"]


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["js", "java", "cpp", "rs", "go", "sh"])
def test_every_verdict(sandbox: Sandbox, lang: str) -> None:
    got = verdicts(sandbox, lang, {"correct": CORRECT, "wrong": WRONG, "broken": BROKEN, "loop": LOOP}, timeout=20)
    broken = "failed" if lang in ("js", "sh") else "compile_error"  # interpreted: a syntax error is a failed run
    assert got == ["passed", "failed", broken, "timeout"]


def test_stop_tokens_and_prompts_come_from_the_dataset() -> None:
    task = load_task("multiple-cpp")
    assert task.language == "cpp" and len(task.problems) == 161
    assert task.problems[0].stop == ("\n}", "<file_sep>")
