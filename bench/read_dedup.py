"""Reading sources and dedup, per core: CPU time of each part on the demo's input, this tree beside a git revision.

    .venv/bin/python bench/read_dedup.py [--repeats 3] [--max-files-per-repo 100] --against REF

Each run is a fresh subprocess with one revision's `src/` on PYTHONPATH (one worker, so per core) that
1. reads the demo's sources (the standard library and each installed distribution, at most
   `--max-files-per-repo` files each): listing, reading, decoding, license evidence, the rows' tables;
2. runs exact dedup, then near dedup, over the usable rows (one work unit per repository, batches of
   2,048 rows, every row's `lang` Python): each phase timed (map, reduce, load, filter).
Parts are timed by `time.process_time()` (CPU time of the process: less disturbed than wall time by other
loads on a shared machine); medians of `--repeats` alternating runs, REF first. The rows read and the
rows each dedup removes are hashed: both revisions must give the same.
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
import hashlib, json, sys, tempfile, time
from pathlib import Path
import pyarrow as pa
import pyarrow.compute as pc
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES
from codefoundry.data.dedup import ExactDedup, NearDedup
from codefoundry.data.pipeline import UnitContext
from codefoundry.data.sources import ReadOptions, resolve

per_repo, scratch_root = int(sys.argv[1]), Path(sys.argv[2])
cpu, digests = {}, {}
options = ReadOptions(limits=DEMO_LIMITS.model_copy(update={"max_files_per_repo": per_repo}))
read_digest, units, spent = hashlib.sha256(), [], 0.0
start = time.process_time()
plan = resolve(list(DEMO_SOURCES), options)
spent += time.process_time() - start
for unit in plan:
    tables, it = [], unit.read()
    while True:
        start = time.process_time()
        table = next(it, None)
        spent += time.process_time() - start
        if table is None:
            break
        tables.append(table)
        for name in table.column_names:  # outside the timing
            read_digest.update(name.encode())
            read_digest.update(json.dumps(table.column(name).to_pylist(), default=str).encode())
    if tables:
        rows = pa.concat_tables(tables)
        rows = rows.filter(pc.is_null(rows.column("reason")))
        if rows.num_rows:
            units.append(rows.set_column(rows.schema.get_field_index("lang"), "lang",
                                         pa.array(["Python"] * rows.num_rows, pa.string())))
cpu["read"], digests["read"] = spent, read_digest.hexdigest()

def phase(name, fn):
    start = time.process_time()
    try:
        return fn()
    finally:
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - start

for step in (ExactDedup(), NearDedup()):
    scratch = Path(tempfile.mkdtemp(dir=scratch_root))
    batches = [(UnitContext(f"{u:06d}", u, scratch, lo), table.slice(lo, 2048))
               for u, table in enumerate(units) for lo in range(0, table.num_rows, 2048)]
    for ctx, batch in batches:
        ctx.map_dir.mkdir(parents=True, exist_ok=True)
    (scratch / "reduce").mkdir()
    for ctx, batch in batches:
        phase(f"{step.name} map", lambda: step.map(batch, ctx))
    for p in range(step.num_partitions):
        phase(f"{step.name} reduce", lambda: step.reduce(p, scratch))
    phase(f"{step.name} load", lambda: step.load(scratch))
    removed = hashlib.sha256()
    for ctx, batch in batches:
        removed.update(json.dumps(list(phase(f"{step.name} filter", lambda: step.filter(batch, ctx)))).encode())
    digests[step.name] = removed.hexdigest()
print(json.dumps({"cpu": cpu, "digests": digests, "units": len(units), "rows": sum(u.num_rows for u in units)}))
'''


def run_once(src: Path, per_repo: int, work: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        proc = subprocess.run([sys.executable, "-c", RUN, str(per_repo), tmp], capture_output=True, text=True,
                              env=env)
    if proc.returncode:
        sys.exit(f"error: run with {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-files-per-repo", type=int, default=100)
    ap.add_argument("--against", metavar="REF", required=True, help="the git revision to time beside this tree")
    args = ap.parse_args()
    ours_src = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        theirs_src = export_src(args.against, work / "old")
        theirs, ours = [], []
        for _ in range(args.repeats):
            theirs.append(run_once(theirs_src, args.max_files_per_repo, work))
            ours.append(run_once(ours_src, args.max_files_per_repo, work))
    print(f"{ours[0]['rows']:,} usable rows in {ours[0]['units']} units; medians of {args.repeats} runs, CPU seconds")
    print(f"  {'part':<22} {args.against:>10} {'this tree':>10} {'ratio':>7}")
    totals = [0.0, 0.0]
    for part in ours[0]["cpu"]:
        old = statistics.median(r["cpu"][part] for r in theirs)
        new = statistics.median(r["cpu"][part] for r in ours)
        totals = [totals[0] + old, totals[1] + new]
        print(f"  {part:<22} {old:10.3f} {new:10.3f} {old / new:6.2f}x")
    print(f"  {'all of the above':<22} {totals[0]:10.3f} {totals[1]:10.3f} {totals[0] / totals[1]:6.2f}x")
    same = all(r["digests"] == theirs[0]["digests"] for r in theirs + ours)
    print(f"rows read and rows removed identical in every run: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
