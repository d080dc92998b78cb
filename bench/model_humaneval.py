"""HumanEval pass@1 (greedy) of a pretrained model: `codefoundry eval` beside transformers' own generate.

    .venv/bin/codefoundry model import SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2/
    .venv/bin/codefoundry eval --task humaneval --model smollm2/ --temperature 0 --n-samples 1 --out eval-smollm2/
    .venv/bin/python bench/model_humaneval.py smollm2/ eval-smollm2/ [--limit N]

The second step is codefoundry (engine, paged cache, batches of 32). This script produces the
anchor, and may run beside it (it compares the problems both have done): transformers'
`AutoModelForCausalLM.generate` on each of the same prompts, greedy, up to the same 512 new
tokens, cut at the same stop sequences, run in the same sandbox and scored by the same
`score()`. It prints both pass@1 values and every problem whose verdict differs, with the
first position where the two completions part (a near-tie in float32 round-off lets a batched
and an unbatched greedy decode diverge; the verdicts can then differ).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("ours", type=Path, help="the output directory of `codefoundry eval --task humaneval`")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codefoundry.eval import Executor, Sandbox, cut_at_stop, load_task, score

    task = load_task("humaneval")
    problems = task.problems[: args.limit]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    executor = Executor(Sandbox())
    theirs = []
    for i, p in enumerate(problems):
        ids = tokenizer(p.prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=512, do_sample=False,
                                 stop_strings=list(p.stop), tokenizer=tokenizer, pad_token_id=tokenizer.eos_token_id)
        completion = cut_at_stop(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False), p.stop)
        verdict = executor.run(task.language, p.program(completion))
        theirs.append({"task_id": p.task_id, "completion": completion, "verdict": verdict.verdict})
        print(f"{i + 1}/{len(problems)} {p.task_id}: {verdict.verdict}", file=sys.stderr, flush=True)
    executor.close()
    ours = {}                                       # read last: the two runs may go side by side
    for line in (args.ours / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        ours[row["task_id"]] = row
    theirs = [t for t in theirs if t["task_id"] in ours]
    problems = [p for p in problems if p.task_id in ours]
    ours_rows = [ours[p.task_id] for p in problems]
    a, b = score(task, ours_rows, [1]), score(task, theirs, [1])
    print(f"problems: {len(problems)}")
    print(f"codefoundry eval pass@1:     {a['pass@1']:.4f} ({sum(r['verdict'] == 'passed' for r in ours_rows)})")
    print(f"transformers generate pass@1: {b['pass@1']:.4f} ({sum(r['verdict'] == 'passed' for r in theirs)})")
    same = sum(o["completion"] == t["completion"] for o, t in zip(ours_rows, theirs, strict=True))
    print(f"identical completions: {same}/{len(problems)}")
    for o, t in zip(ours_rows, theirs, strict=True):
        if o["verdict"] != t["verdict"]:
            at = next((i for i, (x, y) in enumerate(zip(o["completion"], t["completion"], strict=False)) if x != y),
                      min(len(o["completion"]), len(t["completion"])))
            print(f"  {o['task_id']}: ours {o['verdict']}, transformers {t['verdict']}; completions part at "
                  f"character {at} of {len(o['completion'])}/{len(t['completion'])}")


if __name__ == "__main__":
    main()
