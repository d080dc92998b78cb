"""The demo's evaluation of SmolLM2 and SmolLM2 + LoRA: four separate `run_eval`s (as the demo ran them:
two models × two tasks, each loading the model, the adapter folded in, 32 problems per batch) beside one
`run_evals` (one loaded model, one continuous batch, the adapter served per request). Prints wall and CPU
seconds of each (CPU: this process and its sandboxed children, the figure a loaded machine keeps), their
ratio, and whether every completion and verdict is the same.

    OMP_NUM_THREADS=1 .venv/bin/python bench/eval_demo.py --demo-out /tmp/demo-q6 --humaneval 16 --infilling 32
    ... --bfloat16           # also the new way in bf16 weights and arithmetic, compared with the old way
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from codefoundry.eval import EvalConfig, run_eval, run_evals

TASKS = {"humaneval": 160, "humaneval-infilling-single-line": 24}   # max new tokens, as the demo plan


def configs(base: Path, adapter: Path, limits: dict[str, int], dtype: str) -> dict[str, EvalConfig]:
    return {f"{who}/{task}": EvalConfig(model=base, adapter=adapter if who == "finetuned" else None, tasks=[task],
                                        limit=limits[task], max_new_tokens=new, temperature=0, n_samples=1, ks=[1],
                                        workers=2, dtype=dtype)
            for who in ("base", "finetuned") for task, new in TASKS.items()}


def timed(fn) -> tuple[float, float]:
    t, before = time.perf_counter(), os.times()
    fn()
    after = os.times()
    cpu = sum(getattr(after, k) - getattr(before, k) for k in ("user", "system", "children_user", "children_system"))
    return time.perf_counter() - t, cpu


def rows(out: Path) -> list[tuple]:
    return [(r["task_id"], r["completion"], r["verdict"]) for r in
            map(json.loads, (out / "samples.jsonl").read_text().splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-out", type=Path, required=True, help="a finished demo's output (base/, adapters/code)")
    parser.add_argument("--humaneval", type=int, default=16)
    parser.add_argument("--infilling", type=int, default=32)
    parser.add_argument("--bfloat16", action="store_true", help="also the new way in bf16")
    args = parser.parse_args()
    for needed in (args.demo_out / "base", args.demo_out / "adapters" / "code"):
        if not (needed / "manifest.json").exists():
            parser.error(f"{needed} not found: pass a finished demo's output (codefoundry demo --no-serve --out DIR)")
    work = Path(tempfile.mkdtemp(prefix="eval_demo_"))
    base, adapter = work / "base", work / "adapter"      # copies: eval writes scores into their model cards
    shutil.copytree(args.demo_out / "base", base)
    shutil.copytree(args.demo_out / "adapters" / "code", adapter, ignore=shutil.ignore_patterns("checkpoints"))
    limits = {"humaneval": args.humaneval, "humaneval-infilling-single-line": args.infilling}
    try:
        old = configs(base, adapter, limits, "float32")
        report = {"old": timed(lambda: [run_eval(work / "old" / name, c) for name, c in old.items()])}
        for dtype in ("float32", "bfloat16") if args.bfloat16 else ("float32",):
            new = configs(base, adapter, limits, dtype)
            report[dtype] = timed(lambda new=new, dtype=dtype: run_evals([(work / dtype / name, c)
                                                                          for name, c in new.items()]))
        for way, (wall, cpu) in report.items():
            print(f"{way}: wall {wall:.1f} s, cpu {cpu:.1f} s"
                  + (f", old/new wall {report['old'][0] / wall:.2f} cpu {report['old'][1] / cpu:.2f}"
                     if way != "old" else ""))
        for way in (w for w in report if w != "old"):
            for name in old:
                got, want = rows(work / way / name), rows(work / "old" / name)
                same = sum(a == b for a, b in zip(got, want, strict=True))
                verdicts = sum(a[2] == b[2] for a, b in zip(got, want, strict=True))
                print(f"{way} {name}: completions same as old {same}/{len(got)}, verdicts same {verdicts}/{len(got)}, "
                      f"passed {sum(v == 'passed' for _, _, v in got)} (old {sum(v == 'passed' for _, _, v in want)})")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
