"""Reading sources and decontamination alone: this tree against a git revision, CPU time per part.

    cd bench && ../.venv/bin/python read_decontam.py [--repeats 5] [--against REF] [--cache warm|cold]

Each run is a fresh process (`import` excluded) on `bench/curate.py`'s pinned input (the standard library and
the distributions in `curate_input.txt`, at most 100 files each): it reads every work unit's batches (listing,
reading, license evidence, tables), then builds the decontamination step (`setup`: the benchmark strings'
automaton) and runs it over the usable rows, batch by batch, as the pipeline does. Runs alternate between the
revision and this tree; medians of `--repeats`. The rows read and the decontamination reasons are hashed and
must be equal. `--cache warm` (default): this tree's on-disk caches (license verdicts, benchmark needles) are
filled by a first, untimed run, as on a machine that curated before; `cold`: an empty cache for every run.
CPU time is the process's (all threads); the machine may be shared, so compare ratios from one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from curate import pinned_distributions
from pii import export_src

RUN = r'''
import hashlib, json, sys, time
import pyarrow as pa
import pyarrow.compute as pc
import codefoundry.data.sources as sources_mod
from codefoundry.data.decontam import Decontaminate
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES
from codefoundry.data.sources import ReadOptions, resolve

pinned = json.loads(sys.argv[1])
every = sources_mod.distributions
sources_mod.distributions = lambda site_dirs=None: [d for d in every(site_dirs) if d.name[:-10] in pinned]
cpu = {}
c = time.process_time()
batches = []
for unit in resolve(list(DEMO_SOURCES), ReadOptions(limits=DEMO_LIMITS)):
    batches += list(unit.read())
cpu["read"] = time.process_time() - c
digest = hashlib.sha256()
for b in batches:
    digest.update(json.dumps(b.select(["repo_name", "path", "size", "hexsha", "licenses", "license_type",
                                       "reason"]).to_pylist()).encode())
    digest.update(b"".join(x.encode() for x in b.column("content").to_pylist() if x))
usable = [b.filter(pc.is_null(b.column("reason"))).select(["content"]) for b in batches]
usable = [pa.table({"content": b.column("content").combine_chunks()}) for b in usable if b.num_rows]
c = time.process_time()
step = Decontaminate()
step.setup()
cpu["decontam setup"] = time.process_time() - c
c = time.process_time()
reasons = [r for b in usable for r in step.reasons(b)]
cpu["decontam scan"] = time.process_time() - c
print(json.dumps({"cpu": cpu, "rows": sum(b.num_rows for b in batches), "usable": len(reasons),
                  "removed": sum(r is not None for r in reasons), "read_sha256": digest.hexdigest()[:16],
                  "reasons_sha256": hashlib.sha256(json.dumps(reasons).encode()).hexdigest()[:16]}))
'''


def run_once(src: Path, pinned: list[str], cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(src),
           "CODEFOUNDRY_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(pinned)], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"error: run of {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--against", metavar="REF", default="HEAD")
    ap.add_argument("--cache", choices=("warm", "cold"), default="warm")
    args = ap.parse_args()
    pinned = pinned_distributions()
    ours_src = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_src = export_src(args.against, work / "old")
        warm = work / "cache"
        if args.cache == "warm":
            run_once(ours_src, pinned, warm)
        runs: dict[str, list[dict]] = {"revision": [], "this tree": []}
        for k in range(args.repeats):
            for name, src in (("revision", old_src), ("this tree", ours_src)):
                cache = warm if args.cache == "warm" else work / f"cold-{name}-{k}"
                runs[name].append(run_once(src, pinned, cache))
    a, b = runs["revision"], runs["this tree"]
    print(f"input: {a[0]['rows']:,} rows read, {a[0]['usable']:,} usable; caches {args.cache}; "
          f"medians of {args.repeats} alternating runs (CPU s)")
    print(f"| part | {args.against} | this tree | ratio |\n|---|---|---|---|")
    total_a = total_b = 0.0
    for part in a[0]["cpu"]:
        x = statistics.median(r["cpu"][part] for r in a)
        y = statistics.median(r["cpu"][part] for r in b)
        total_a, total_b = total_a + x, total_b + y
        print(f"| {part} | {x:.3f} | {y:.3f} | {x / y:.2f}x |")
    print(f"| **all** | **{total_a:.3f}** | **{total_b:.3f}** | **{total_a / total_b:.2f}x** |")
    same_read = all(r["read_sha256"] == a[0]["read_sha256"] for r in a + b)
    same_reasons = all(r["reasons_sha256"] == a[0]["reasons_sha256"] for r in a + b)
    print(f"rows read identical: {same_read}; decontamination reasons identical: {same_reasons} "
          f"({a[0]['removed']} removed)")
    if not (same_read and same_reasons):
        sys.exit("error: this tree's rows or reasons differ from the revision's")


if __name__ == "__main__":
    main()
