"""The demo's fine-tune recipe: which examples, learning rate and LoRA modules make SmolLM2 + adapter beat the base.

Every variant fine-tunes the same base on the same curated dataset/ for the same fixed number of steps (same
seed, same batch size), then is scored greedily as base + adapter on the same HumanEval and single-line
infilling subsets as the base itself, through the same engine (`codefoundry eval --adapter`):

    OMP_NUM_THREADS=2 .venv/bin/python bench/finetune_recipe.py --base demo-out/base --dataset demo-out/dataset \\
        --out /tmp/recipe --steps 48 --humaneval 164 --infilling 200 --variants demo,psm,mix,mix-all

Variants (each over the demo's own `demo_config`; LoRA dropout 0 unless said):
    demo       the demo's recipe before this bench: line-level FIM requests, PSM/SPM half each, lr 2e-3, q/v,
               dropout 0.05
    psm        line requests in PSM only (the format the evaluation and llm-ls send)
    functions  signature + docstring → body only (HumanEval's shape)
    mix        as many function examples as PSM line requests
    mix-all    mix, LoRA on every linear layer of the blocks (q, k, v, o, gate, up, down)
    mix-all-lo mix-all at lr 1e-3
    current    what `demo_config` gives now
    frozen-tokens  current, the FIM tokens' embedding rows left as `add_fim_tokens` made them (not trained)
    tokens     current, the FIM tokens' embedding rows trained with the adapter

Prints one row per model: steps, tokens, training seconds, HumanEval passes, infilling exact matches and passes
(by execution). With N problems, one problem is 1/N; a difference of 1-2 problems on 40 is noise, and the
infilling problems come several per HumanEval function (the first 200 cover 40 functions, the first 40 only 7).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FIM_TOKENS = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]

VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {"data.examples": "lines", "data.fim_spm_rate": 0.5, "lr": 2e-3, "lora.target_modules": None,
             "lora.dropout": 0.05},
    "psm": {"data.examples": "lines", "data.fim_spm_rate": 0.0, "lr": 2e-3, "lora.target_modules": None},
    "functions": {"data.examples": "functions", "lr": 2e-3, "lora.target_modules": None},
    "mix": {"data.examples": "mix", "data.fim_spm_rate": 0.0, "lr": 2e-3, "lora.target_modules": None},
    "mix-all": {"data.examples": "mix", "data.fim_spm_rate": 0.0, "lr": 2e-3, "lora.target_modules": ALL_LINEAR},
    "mix-all-lo": {"data.examples": "mix", "data.fim_spm_rate": 0.0, "lr": 1e-3, "lora.target_modules": ALL_LINEAR},
    "current": {},
    "frozen-tokens": {"lora.trainable_tokens": []},
    "tokens": {"lora.trainable_tokens": FIM_TOKENS},
}


def variant_config(name: str, steps: int, seed: int, device: str):
    from codefoundry.finetune.demo import demo_config

    base = demo_config(600.0, seed).model_dump()
    base["device"] = device
    for key, value in VARIANTS[name].items():
        section, _, field = key.rpartition(".")
        (base[section] if section else base)[field] = value
    base.update(max_time=None, max_steps=steps, eval_interval=steps, checkpoint_interval=steps)
    return type(demo_config(1.0, seed)).model_validate(base)   # FinetuneConfig


def evaluate(model: Path, adapter: Path | None, out: Path, humaneval: int, infilling: int, seed: int,
             device: str) -> tuple[dict[str, Any], float]:
    from codefoundry.eval.demo import HUMANEVAL, INFILLING
    from codefoundry.eval.harness import EvalConfig, run_eval

    scores: dict[str, Any] = {}
    start = time.perf_counter()
    for task, limit, new_tokens in ((HUMANEVAL, humaneval, 160), (INFILLING, infilling, 24)):
        if not limit:
            continue
        dest = out / task
        if not (dest / "results.json").exists():
            dest.mkdir(parents=True, exist_ok=True)
            run_eval(dest, EvalConfig(tasks=[task], model=model, adapter=adapter, limit=limit, temperature=0,
                                      n_samples=1, ks=[1], seed=seed, max_new_tokens=new_tokens,
                                      device=device))
        scores[task] = json.loads((dest / "results.json").read_text())["results"][task]
    return scores, time.perf_counter() - start


def row(name: str, scores: dict[str, Any], train: dict[str, Any] | None, eval_s: float) -> str:
    he, fill = scores.get("humaneval"), scores["humaneval-infilling-single-line"]
    n_he, n_fill = he["problems"] if he else 0, fill["problems"]
    cells = [name, str(train["steps"]) if train else "–", f"{train['tokens']:,}" if train else "–",
             f"{train['seconds']:.0f}" if train else "–",
             f"{train['val_loss_before']} → {train['val_loss']}" if train else "–",
             f"{round(he['pass@1'] * n_he)}/{n_he}" if he else "–", f"{round(fill['exact_match'] * n_fill)}/{n_fill}",
             f"{round(fill['pass@1'] * n_fill)}/{n_fill}", f"{eval_s:.0f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, help="the demo's base/ (SmolLM2 + FIM tokens)")
    parser.add_argument("--dataset", type=Path, help="the demo's curated dataset/")
    parser.add_argument("--prepare", action="store_true",
                        help="make base/ and dataset/ with the demo's own stages in OUT/demo (default budget)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: training and evaluation")
    parser.add_argument("--out", type=Path, default=Path("bench/.work/finetune_recipe"),
                        help="where the adapters and evaluations go (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--humaneval", type=int, default=164)
    parser.add_argument("--infilling", type=int, default=200)
    parser.add_argument("--variants", default="demo,mix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.prepare:
        from codefoundry.demo import STAGES, DemoConfig, run_demo

        run_demo(DemoConfig(out=args.out / "demo", serve=False), [s for s in STAGES if s.name in ("curate",
                                                                                                  "base model")])
        args.base, args.dataset = args.out / "demo" / "base", args.out / "demo" / "dataset"
    if args.base is None and args.dataset is None:  # the demo's, when `make demo` has run
        args.base, args.dataset = Path("demo-out/base"), Path("demo-out/dataset")
    if args.base is None or args.dataset is None or not args.base.is_dir() or not args.dataset.is_dir():
        parser.error(f"no base/ and dataset/ at {args.base} and {args.dataset}: run `make demo` first, "
                     "or give --base and --dataset, or --prepare")

    from codefoundry.finetune import finetune
    from codefoundry.manifest import read_manifest

    print("| model | steps | tokens | train s | held-out loss | HumanEval pass | infilling exact | "
          "infilling pass | eval s |\n|---|---:|---:|---:|---|---:|---:|---:|---:|", flush=True)
    scores, eval_s = evaluate(args.base, None, args.out / "base-eval", args.humaneval, args.infilling, args.seed,
                              args.device)
    print(row("base", scores, None, eval_s), flush=True)
    for name in args.variants.split(","):
        adapter = args.out / name / "adapter"
        if not (adapter / "manifest.json").exists():
            shutil.rmtree(adapter, ignore_errors=True)
            start = time.perf_counter()
            finetune(args.base, args.dataset, adapter, variant_config(name, args.steps, args.seed, args.device))
            (adapter / "wall_s").write_text(f"{time.perf_counter() - start:.1f}")
        training = read_manifest(adapter).extra["training"]
        train = {**training, "seconds": float((adapter / "wall_s").read_text())}
        scores, eval_s = evaluate(args.base, adapter, args.out / name / "eval", args.humaneval, args.infilling,
                                  args.seed, args.device)
        print(row(name, scores, train, eval_s), flush=True)


if __name__ == "__main__":
    main()
