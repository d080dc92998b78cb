"""Curation benchmark: the whole default pipeline (`data curate`, 1 worker) on the demo's input, per core.

    .venv/bin/python bench/curate.py [--repeats 3] [--max-files-per-repo 100] [--against REF] [--profile FILE]

Input: the demo's slice (codefoundry.data.demo: the standard library plus at most
`--max-files-per-repo` files of each installed distribution, each ≤ 200 KB). One worker, so
files/s and MB/s are per core. Each run is a fresh subprocess; it times every step's calls
(setup, process, a global step's map, reduce and filter) by wrapping the step objects, so the
same measurement works on any revision; "read + finalize" is the rest (reading sources, writing
shards, stats, card, indexes; the shards and the two indexes are also timed on their own where the
revision has `data/finalize.py`). Each part is timed by wall clock and by the process's CPU time.
`--against REF` also runs git revision REF's `src/` (exported to a temporary folder, on PYTHONPATH)
on the same input, alternating runs, prints the ratio of median files/s, and checks that both wrote
the same kept rows (content hash of data/). The machine may be shared: medians of `--repeats`
alternating runs; CPU time (all threads of the run's process) is the per-core figure less disturbed
by other loads than wall time.
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

from pii import export_src

RUN = r'''
import hashlib, json, sys, time
from pathlib import Path
import pyarrow.parquet as pq
import codefoundry.data.curate
curate_mod = sys.modules["codefoundry.data.curate"]  # the package exports a function of the same name
from codefoundry.data.config import CurateConfig
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES

out, per_repo = Path(sys.argv[1]), int(sys.argv[2])
seconds, cpu_seconds = {}, {}

def timed(step, attr, name=None):
    fn = getattr(step, attr)
    name = name or step.name
    def wrapper(*args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
            cpu_seconds[name] = cpu_seconds.get(name, 0.0) + time.process_time() - c
    setattr(step, attr, wrapper)

build = curate_mod.build_steps
def build_timed(config):
    steps = build(config)
    for step in steps:
        for attr in ("setup", "process", "map", "reduce", "load", "process_unit"):
            if hasattr(step, attr):
                timed(step, attr)
    return steps
curate_mod.build_steps = build_timed
try:  # finalizing's parts, where the revision has them (not steps: kept out of the step total below)
    import codefoundry.data.finalize as fin
    for fn_name, label in (("finalize", "(finalize)"), ("write_shards", "(shards)"),
                           ("build_search_index", "(search index)"), ("build_contains_index", "(contains index)"),
                           ("build_indexes", "(indexes)"), ("_stats", "(stats)"), ("remove_tree", "(.work removal)")):
        if hasattr(fin, fn_name):
            timed(fin, fn_name, label)
except ImportError:
    pass

limits = DEMO_LIMITS.model_copy(update={"max_files_per_repo": per_repo})
config = CurateConfig(workers=1, limits=limits)
profile = sys.argv[3] if len(sys.argv) > 3 else ""
if profile:
    import cProfile
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
t, cpu = time.perf_counter(), time.process_time()
curate_mod.curate(list(DEMO_SOURCES), out, config)
wall, cpu = time.perf_counter() - t, time.process_time() - cpu
if profile:
    profiler.disable()
    profiler.dump_stats(profile)
stats = json.loads((out / "stats.json").read_text())["subsets"]["files"]
digest = hashlib.sha256()
for shard in sorted((out / "data").rglob("*.parquet")):
    table = pq.read_table(shard)
    for column in table.column_names:
        digest.update(column.encode())
        digest.update(json.dumps(table.column(column).to_pylist(), sort_keys=True, default=str).encode())
print(json.dumps({"wall": wall, "cpu": cpu, "files": stats["totals"]["files"], "bytes": stats["totals"]["bytes"],
                  "kept": stats["totals"]["kept_files"], "steps": seconds, "cpu_steps": cpu_seconds,
                  "data_sha256": digest.hexdigest()}))
'''


def run_once(src: Path | None, per_repo: int, work: Path, profile: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    # this tree's src/ by path, not the installed package: a copy of the repository measures its own code
    env["PYTHONPATH"] = str(src if src is not None else Path(__file__).resolve().parents[1] / "src")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        proc = subprocess.run([sys.executable, "-c", RUN, str(Path(tmp) / "dataset"), str(per_repo),
                               *([str(profile.resolve())] if profile else [])], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"error: curation run failed ({'revision at ' + str(src) if src else 'this tree'}):\n"
                 f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(name: str, runs: list[dict]) -> tuple[float, float]:
    wall = statistics.median(r["wall"] for r in runs)
    cpu = statistics.median(r.get("cpu", r["wall"]) for r in runs)
    first = runs[0]
    fps = first["files"] / wall
    print(f"\n{name}: {first['files']:,} files, {first['bytes'] / 1e6:.1f} MB, kept {first['kept']:,}; "
          f"median wall {wall:.2f} s of {[round(r['wall'], 2) for r in runs]}")
    print(f"  {fps:,.1f} files/s per core, {first['bytes'] / 1e6 / wall:.2f} MB/s per core")
    print(f"  median CPU time {cpu:.2f} s (all threads of the run's process): {first['files'] / cpu:,.1f} files per "
          f"CPU-second")
    names = sorted({n for r in runs for n in r["steps"]}, key=lambda n: -statistics.median(
        r["steps"].get(n, 0.0) for r in runs))
    step_total = cpu_total = 0.0
    print(f"  {'':<18} {'wall':>9} {'':>7}  {'CPU':>7} {'':>7}")
    for n in names:
        s = statistics.median(r["steps"].get(n, 0.0) for r in runs)
        c = statistics.median(r.get("cpu_steps", {}).get(n, 0.0) for r in runs)
        if not n.startswith("("):
            step_total, cpu_total = step_total + s, cpu_total + c
        print(f"  {n:<18} {s:7.2f} s  {100 * s / wall:5.1f} %  {c:5.2f} s  {100 * c / cpu:5.1f} %")
    print(f"  {'read + finalize':<18} {wall - step_total:7.2f} s  {100 * (wall - step_total) / wall:5.1f} %  "
          f"{cpu - cpu_total:5.2f} s  {100 * (cpu - cpu_total) / cpu:5.1f} %  (the rows in parentheses are in it)")
    return fps, first["files"] / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-files-per-repo", type=int, default=100)
    ap.add_argument("--against", metavar="REF", help="also time this git revision, alternating runs")
    ap.add_argument("--profile", type=Path, metavar="FILE",
                    help="one more run of this tree under cProfile (CPU time), its stats written to FILE "
                         "(read with `python -m pstats FILE`); not counted in the timings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_src = export_src(args.against, work / "old") if args.against else None
        ours: list[dict] = []
        theirs: list[dict] = []
        for _ in range(args.repeats):
            if old_src is not None:
                theirs.append(run_once(old_src, args.max_files_per_repo, work))
            ours.append(run_once(None, args.max_files_per_repo, work))
        if args.profile:
            run_once(None, args.max_files_per_repo, work, args.profile)
            print(f"profile of one more run of this tree: {args.profile}")
    fps, fpc = summary("this tree", ours)
    if theirs:
        old_fps, old_fpc = summary(f"revision {args.against}", theirs)
        same = ours[0]["data_sha256"] == theirs[0]["data_sha256"]
        print(f"\nspeed-up: {fps / old_fps:.2f}x files/s per core (wall), {fpc / old_fpc:.2f}x files per CPU-second; "
              f"kept rows identical: {same}")
        print(f"data/ content sha256 ({args.against}): {theirs[0]['data_sha256']}")
    print(f"data/ content sha256 (this tree): {ours[0]['data_sha256']}")


if __name__ == "__main__":
    main()
