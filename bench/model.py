"""Model benchmarks: training throughput vs transformers, and the 8K-context memory of the `long` preset.

    .venv/bin/python bench/model.py speed               # small preset, 49K vocab, ours vs GPTBigCodeForCausalLM
    .venv/bin/python bench/model.py speed --vocab 8192 --threads 2
    .venv/bin/python bench/model.py speed --breakdown   # + time in the kernels both call (torch.profiler)
    .venv/bin/python bench/model.py memory              # peak RSS of one training step, ours vs transformers
    .venv/bin/python bench/model.py long                # peak RSS of forward+backward on 8,192 tokens

`speed`: forward + backward (loss from labels) tokens/s on CPU for codefoundry's
GPTBigCodeForCausalLM and transformers' at the same config and weights (ours saved, theirs
loaded from that checkpoint), float32, dropout off in both, both through torch SDPA
(attn_implementation="sdpa"; ours always uses it). Steps alternate between the two models and
the median CPU time (process_time: with one thread, the time other processes take the core
is not counted) of each is reported; steps alternate so what noise is left hits both alike.

`--breakdown` adds, from torch.profiler, each side's self CPU time per step in the kernels both
models call for the same work (matmuls, SDPA, GELU, LayerNorm, forward and backward) and the
ratio that would remain if everything else in our step cost nothing: the ceiling of any gain
that keeps those kernels.

`memory`: peak RSS of one forward+backward above the built models, each side in a fresh
process (default: StarCoder's 49,152 vocabulary at the small preset's 1,024 positions).

`long`: each measurement runs in a fresh subprocess and reports its peak RSS above the RSS
after building the model, for SDPA (flash kernel) and for comparison the math backend, which
materializes the [heads, 8192, 8192] score matrix of every layer.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def _step_time(fn) -> float:
    """CPU seconds of one step: on a shared machine, steal time inflates wall time, not CPU time."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def _pair(preset_name: str, vocab: int, batch: int, seq: int, check: bool = True):
    """(step_ours, step_theirs, loss_abs_diff or None): ours and transformers' from our checkpoint, same weights."""
    import transformers

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained

    torch.manual_seed(0)
    config = preset(preset_name, vocab_size=vocab)
    ours = GPTBigCodeForCausalLM(config).train()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(ours, tmp)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="sdpa").train()
    assert theirs.config.attn_pdrop == theirs.config.resid_pdrop == theirs.config.embd_pdrop == 0.0
    ids = torch.randint(0, config.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
    labels = ids[:, 1:].clone()
    labels[:, -1] = -100                       # transformers pads its shifted labels with -100: same targets

    def step_ours() -> None:
        ours.zero_grad(set_to_none=True)
        ours(ids[:, :-1], labels=labels).backward()

    def step_theirs() -> None:
        theirs.zero_grad(set_to_none=True)
        theirs(ids[:, :-1], labels=ids[:, :-1]).loss.backward()   # transformers shifts the labels itself

    if not check:
        return step_ours, step_theirs, None
    with torch.no_grad():                                         # same model, same loss
        same = abs(ours(ids[:, :-1], labels=labels).item() - theirs(ids[:, :-1], labels=ids[:, :-1]).loss.item())
    return step_ours, step_theirs, same


# kernels both models call for the same work: the ceiling of any gain is the time outside them
SHARED_KERNELS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::gelu", "aten::gelu_backward",
                  "aten::native_layer_norm", "aten::native_layer_norm_backward")


def _breakdown(step, reps: int) -> dict:
    """Self CPU seconds per step in the shared kernels and in total, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / reps
    shared = sum(e.self_cpu_time_total for e in events if e.key in SHARED_KERNELS) / 1e6 / reps
    return {"total_s": round(total, 3), "shared_kernels_s": round(shared, 3)}


def speed(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    step_ours, step_theirs, same = _pair(args.preset, args.vocab, args.batch, args.seq)
    for fn in (step_ours, step_theirs):                           # warm-up
        fn()
    times: dict[str, list[float]] = {"codefoundry": [], "transformers": []}
    for _ in range(args.reps):
        times["codefoundry"].append(_step_time(step_ours))
        times["transformers"].append(_step_time(step_theirs))
    tokens = args.batch * args.seq
    tps = {name: tokens / statistics.median(t) for name, t in times.items()}
    result = {"preset": args.preset, "vocab": args.vocab, "batch": args.batch, "seq": args.seq,
              "threads": args.threads, "reps": args.reps, "tokens_per_s": {k: round(v) for k, v in tps.items()},
              "ratio": round(tps["codefoundry"] / tps["transformers"], 3), "loss_abs_diff": same}
    if args.breakdown:
        ours, theirs = _breakdown(step_ours, 3), _breakdown(step_theirs, 3)
        # if everything outside the shared kernels cost us nothing, this is the best ratio possible
        result["breakdown"] = {"codefoundry": ours, "transformers": theirs,
                               "ratio_ceiling": round(theirs["total_s"] / ours["shared_kernels_s"], 3)}
    return result


def _memory_child(which: str, args: list[str]) -> None:
    preset_name, vocab, batch, seq = args[0], *map(int, args[1:])
    step_ours, step_theirs, _ = _pair(preset_name, vocab, batch, seq, check=False)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (step_ours if which == "codefoundry" else step_theirs)()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"model": which, "peak_mb_above_models": round((peak - base) / 1024)}))


def memory(args: argparse.Namespace) -> dict:
    """Peak RSS of one forward+backward above the two built models, each side in a fresh process."""
    result = {"preset": args.preset, "vocab": args.vocab, "batch": args.batch, "seq": args.seq}
    for which in ("codefoundry", "transformers"):
        out = subprocess.run([sys.executable, __file__, "_memory_child", which, args.preset, str(args.vocab),
                              str(args.batch), str(args.seq)], capture_output=True, text=True, check=True)
        result[which] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb_above_models"]
    return result


def _long_child(backend: str, vocab: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from codefoundry.model import GPTBigCodeForCausalLM, preset

    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(preset("long", vocab)).train()
    ids = torch.randint(0, model.config.vocab_size, (1, 8193))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    kernels = [SDPBackend.MATH] if backend == "math" else [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(kernels):
        loss = model(ids[:, :-1], labels=ids[:, 1:])
        loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"backend": backend, "peak_mb_above_model": round((peak - base) / 1024),
                      "seconds": round(time.perf_counter() - start, 1), "loss": round(loss.item(), 4),
                      "n_positions": model.config.n_positions, "n_embd": model.config.n_embd,
                      "n_layer": model.config.n_layer, "n_head": model.config.n_head}))


def long(args: argparse.Namespace) -> list[dict]:
    results = []
    for backend in ["sdpa"] + (["math"] if args.with_math else []):
        out = subprocess.run([sys.executable, __file__, "_long_child", backend, str(args.vocab)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_long_child":
        _long_child(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_memory_child":
        _memory_child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=49152,
                   help="tokenizer vocabulary (default: `tokenizer train`'s and StarCoder's; the demo's: 8192)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--breakdown", action="store_true",
                   help="also profile both: time in the kernels both call, and the ratio that leaves possible")
    p = sub.add_parser("memory")
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab", type=int, default=49152)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p = sub.add_parser("long")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--with-math", action="store_true", help="also measure the math backend (several GB)")
    args = parser.parse_args(sys.argv[1:] or ["speed"])   # `make bench` runs it bare
    result = {"speed": speed, "memory": memory, "long": long}[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
