"""Curation benchmark: the whole default pipeline (`data curate`, 1 worker) on the demo's input, per core.

    .venv/bin/python bench/curate.py [--repeats 3] [--max-files-per-repo 100] [--against REF] [--profile FILE]
                                     [--input pinned|env]

Input: the demo's slice (codefoundry.data.demo: the standard library plus at most
`--max-files-per-repo` files of each installed distribution, each ≤ 200 KB), of the distributions
pinned in `bench/curate_input.txt` only (`--input env`: every one installed, as the demo reads them;
that input grows with the project's dependencies, so figures from different sessions are not
comparable). The input's identity is printed: the pinned distributions found (and any missing),
the standard library's version and listing, and per revision the rows it read (files, bytes and a
hash of their repository/path/size list). One worker, so files/s and MB/s are per core.
Each run is a fresh subprocess; it times every step's calls (setup, process, a global step's map,
reduce and filter) by wrapping the step objects, so the same measurement works on any revision;
"read + finalize" is the rest (reading sources, writing shards, stats, card, indexes; the shards and
the two indexes are also timed on their own where the revision has `data/finalize.py`). Each part
is timed by wall clock and by the process's CPU time. The modules a run imports are counted too (their
import time is part of the run's).
`--against REF` also runs git revision REF's `src/` (exported to a temporary folder, on PYTHONPATH)
on the same input, alternating runs, prints the ratio of median files/s, and checks that both wrote
the same kept rows (content hash of data/). The machine may be shared: medians of `--repeats`
alternating runs; CPU time (all threads of the run's process, split into user and system time) is the
per-core figure less disturbed by other loads than wall time — but not undisturbed: on this 2-vCPU
machine the same run's CPU time grew ~1.7x under a load average of 7, so only ratios from one
invocation are comparable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pii import export_src

RUN = r'''
import hashlib, json, os, sys, time
from pathlib import Path
import pyarrow.parquet as pq
import codefoundry.data.curate
curate_mod = sys.modules["codefoundry.data.curate"]  # the package exports a function of the same name
import codefoundry.data.sources as sources_mod
from codefoundry.data.config import CurateConfig
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES

out, per_repo, pinned = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
if pinned is not None:  # only the pinned distributions: the input does not follow what else is installed
    every = sources_mod.distributions
    sources_mod.distributions = lambda site_dirs=None: [d for d in every(site_dirs) if d.name[:-10] in pinned]
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
profile = sys.argv[4] if len(sys.argv) > 4 else ""
if profile:
    import cProfile
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
modules = set(sys.modules)
t, cpu, times = time.perf_counter(), time.process_time(), os.times()
curate_mod.curate(list(DEMO_SOURCES), out, config)
wall, cpu, after = time.perf_counter() - t, time.process_time() - cpu, os.times()
imported = sorted(set(sys.modules) - modules)
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
# the rows read, kept or removed, whatever a revision's output columns: repository, path, size (null where unread)
read = []
for shard in sorted(p for sub in ("data", "removed") for p in (out / sub).rglob("*.parquet")):
    table = pq.read_table(shard)
    names = [c for c in ("repo_name", "path", "size") if c in table.column_names]
    read += zip(*(table.column(c).to_pylist() for c in names))
read.sort(key=repr)
print(json.dumps({"wall": wall, "cpu": cpu, "user": after.user - times.user, "sys": after.system - times.system,
                  "files": stats["totals"]["files"], "bytes": stats["totals"]["bytes"],
                  "kept": stats["totals"]["kept_files"], "steps": seconds, "cpu_steps": cpu_seconds,
                  "rows_read": len(read), "bytes_read": sum(r[-1] or 0 for r in read if isinstance(r[-1], int)),
                  "read_sha256": hashlib.sha256(repr(read).encode()).hexdigest()[:16],
                  "data_sha256": digest.hexdigest(), "imported": len(imported),
                  "imported_top": sorted({m.split(".")[0] for m in imported})}))
'''

PINNED = Path(__file__).with_name("curate_input.txt")


def pinned_distributions() -> list[str]:
    """The .dist-info names (name-version) the bench reads, from `curate_input.txt`."""
    return [line.strip() for line in PINNED.read_text().splitlines() if line.strip() and not line.startswith("#")]


def input_identity(pinned: list[str] | None) -> str:
    """What the input is, whichever revision reads it: the distributions and the standard library's listing."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    installed = sorted(p.name[:-10] for p in site.glob("*.dist-info") if (p / "METADATA").is_file())
    used = [d for d in installed if pinned is None or d in pinned]
    lines = [f"distributions: {len(used)} of {len(installed)} installed "
             f"({'pinned in ' + PINNED.name if pinned is not None else 'every one: --input env'}), "
             f"list sha256 {hashlib.sha256(chr(10).join(used).encode()).hexdigest()[:16]}"]
    if pinned is not None:
        missing = sorted(set(pinned) - set(installed))
        if missing:
            lines.append(f"WARNING: {len(missing)} pinned distributions are not installed (another version?): "
                         f"{', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}; figures are not comparable "
                         "with those recorded for the full list")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    listing = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        rel = os.path.relpath(dirpath, stdlib)
        dirnames[:] = sorted(d for d in dirnames if not (rel == "." and d == "site-packages") and d != "__pycache__")
        for name in sorted(filenames):
            try:
                listing.append(f"{rel}/{name}:{os.lstat(os.path.join(dirpath, name)).st_size}")
            except OSError:
                continue
    lines.append(f"stdlib: Python {platform.python_version()}, {len(listing):,} files, listing sha256 "
                 f"{hashlib.sha256(chr(10).join(listing).encode()).hexdigest()[:16]}")
    return "\n".join("input " + line for line in lines)


WARM_UP = r'''
import json, sys
import codefoundry.data.sources as sources_mod
from codefoundry.data.decontam import Decontaminate
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES
from codefoundry.data.sources import ReadOptions, resolve

per_repo, pinned = int(sys.argv[1]), json.loads(sys.argv[2])
if pinned is not None:
    every = sources_mod.distributions
    sources_mod.distributions = lambda site_dirs=None: [d for d in every(site_dirs) if d.name[:-10] in pinned]
limits = DEMO_LIMITS.model_copy(update={"max_files_per_repo": per_repo})
for unit in resolve(list(DEMO_SOURCES), ReadOptions(limits=limits)):
    for _ in unit.read():
        pass
Decontaminate().setup()
'''


def warm_up(per_repo: int, pinned: list[str] | None, cache: Path) -> None:
    """Fill `cache` (this tree's on-disk caches: license verdicts, decontamination's needles) as a first run would."""
    env = {**os.environ, "CODEFOUNDRY_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", WARM_UP, str(per_repo), json.dumps(pinned)], check=True, env=env)


def run_once(src: Path | None, per_repo: int, work: Path, pinned: list[str] | None,
             profile: Path | None = None, cache: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    if cache is not None:  # else a fresh, empty cache for this run
        env["CODEFOUNDRY_CACHE"] = str(cache)
    # this tree's src/ by path, not the installed package: a copy of the repository measures its own code
    env["PYTHONPATH"] = str(src if src is not None else Path(__file__).resolve().parents[1] / "src")
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        env.setdefault("CODEFOUNDRY_CACHE", str(Path(tmp) / "cache"))
        proc = subprocess.run([sys.executable, "-c", RUN, str(Path(tmp) / "dataset"), str(per_repo), json.dumps(pinned),
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
    if "user" in first:
        user = statistics.median(r["user"] for r in runs)
        system = statistics.median(r["sys"] for r in runs)
        print(f"  of which user {user:.2f} s, system {system:.2f} s (medians)")
        if "imported" in first:  # their import time is in the run's CPU time
            print(f"  modules imported during the run: {first['imported']:,} "
                  f"({', '.join(first['imported_top'][:12])}{' …' if len(first['imported_top']) > 12 else ''})")
        print(f"  rows read (kept + removed): {first['rows_read']:,}, {first['bytes_read'] / 1e6:.1f} MB, "
              f"list sha256 {first['read_sha256']}")
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
    ap.add_argument("--input", choices=("pinned", "env"), default="pinned",
                    help="pinned: only the distributions in curate_input.txt (default); env: every one installed")
    ap.add_argument("--cache", choices=("warm", "cold"), default="warm",
                    help="warm: the on-disk caches (license verdicts, decontamination needles) filled before the timed "
                         "runs, as on a second curation (default); cold: empty for every run, as on a first one")
    ap.add_argument("--profile", type=Path, metavar="FILE",
                    help="one more run of this tree under cProfile (CPU time), its stats written to FILE "
                         "(read with `python -m pstats FILE`); not counted in the timings")
    args = ap.parse_args()
    pinned = pinned_distributions() if args.input == "pinned" else None
    print(input_identity(pinned), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_src = export_src(args.against, work / "old") if args.against else None
        cache = None
        if args.cache == "warm":
            cache = work / "cache"
            warm_up(args.max_files_per_repo, pinned, cache)
        print(f"on-disk caches: {args.cache}", flush=True)
        ours: list[dict] = []
        theirs: list[dict] = []
        for _ in range(args.repeats):
            if old_src is not None:
                theirs.append(run_once(old_src, args.max_files_per_repo, work, pinned, cache=cache))
            ours.append(run_once(None, args.max_files_per_repo, work, pinned, cache=cache))
        if args.profile:
            run_once(None, args.max_files_per_repo, work, pinned, args.profile, cache=cache)
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
