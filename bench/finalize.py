"""Finalizing benchmark: `finalize` alone (shards, stats, card, indexes, manifest, `.work` removal), CPU time per part.

    .venv/bin/python bench/finalize.py [--repeats 3] [--max-files-per-repo 100] [--against REF]

One curation of the demo's input (as `bench/curate.py`, one worker) per revision runs up to its finalize; its
`.work` and finalize's arguments are kept (each revision's own: the `.work` layout may differ between them). Then
each timed run, a fresh subprocess, finalizes a copy of that `.work` with this tree's `src/` (and, with `--against`,
git revision REF's, alternating), timing `finalize` and its parts by the process's CPU time. Every file the runs
write but manifest.json is compared with the first run of this tree (or of REF): sha256, and for a Parquet file
whose bytes differ, its rows. Medians of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pii import export_src

PREPARE = r'''
import pickle, shutil, sys
from pathlib import Path
import codefoundry.data.curate
import codefoundry.data.finalize as fin
from codefoundry.data.config import CurateConfig
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES
out, save, per_repo = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
def stop(job, key, plan, seconds, part_plans=()):
    shutil.copytree(job.out, save / "out", symlinks=True)
    (save / "args.pkl").write_bytes(pickle.dumps((job, key, plan, seconds, part_plans)))
    raise SystemExit(0)
fin.finalize = stop
limits = DEMO_LIMITS.model_copy(update={"max_files_per_repo": per_repo})
sys.modules["codefoundry.data.curate"].curate(list(DEMO_SOURCES), out, CurateConfig(workers=1, limits=limits))
'''

RUN = r'''
import contextlib, dataclasses, io, json, pickle, shutil, sys, time
from pathlib import Path
import codefoundry.data.finalize as fin
save, out = Path(sys.argv[1]), Path(sys.argv[2])
job, key, plan, seconds, part_plans = pickle.loads((save / "args.pkl").read_bytes())
shutil.copytree(save / "out", out, symlinks=True)
cpu = {}
def timed(owner, name, label):
    fn = getattr(owner, name)
    def wrapper(*args, **kwargs):
        c = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            cpu[label] = cpu.get(label, 0.0) + time.process_time() - c
    setattr(owner, name, wrapper)
for name in ("write_shards", "build_indexes", "_stats", "remove_tree", "render_card", "write_manifest"):
    if hasattr(fin, name):
        timed(fin, name, name)
for cls, label in ((fin.SearchIndexWriter, "search index"), (fin.ContainsIndexWriter, "membership index")):
    for method in ("add", "close"):
        timed(cls, method, f"{label} {method}")
c = time.process_time()
with contextlib.redirect_stdout(io.StringIO()):
    fin.finalize(dataclasses.replace(job, out=out), key, plan, seconds, part_plans)
print(json.dumps({"cpu": time.process_time() - c, "parts": cpu}))
'''


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(src)}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _compare(first: Path, other: Path) -> list[str]:
    """What differs between two finalized datasets: bytes, and for Parquet files whether their rows do."""
    import pyarrow.parquet as pq

    a, b = _digests(first), _digests(other)
    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            rows = name in a and name in b and name.endswith(".parquet") and \
                pq.read_table(first / name).equals(pq.read_table(other / name))
            out.append(f"{name} ({'same rows, other bytes' if rows else 'DIFFERENT'})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-files-per-repo", type=int, default=100)
    ap.add_argument("--against", metavar="REF", help="also time this git revision's finalize, alternating runs")
    args = ap.parse_args()
    ours_src = Path(__file__).resolve().parents[1] / "src"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old_src = export_src(args.against, work / "old") if args.against else None
        saves: dict[Path, Path] = {}
        for k, src in enumerate(s for s in (ours_src, old_src) if s is not None):
            save = saves[src] = work / f"save-{k}"
            save.mkdir()
            proc = subprocess.run([sys.executable, "-c", PREPARE, str(work / f"dataset-{k}"), str(save),
                                   str(args.max_files_per_repo)], capture_output=True, text=True, env=_env(src))
            if proc.returncode or not (save / "args.pkl").exists():
                sys.exit(f"error: the curation before finalize failed ({src}):\n{proc.stderr[-3000:]}")
        runs: dict[str, list[dict]] = {"this tree": [], **({f"revision {args.against}": []} if old_src else {})}
        firsts: dict[str, Path] = {}
        for i in range(args.repeats):
            for k, (name, src) in enumerate((("this tree", ours_src), (f"revision {args.against}", old_src))):
                if src is None:
                    continue
                out = work / f"out-{k}-{i}"
                proc = subprocess.run([sys.executable, "-c", RUN, str(saves[src]), str(out)], capture_output=True,
                                      text=True, env=_env(src))
                if proc.returncode:
                    sys.exit(f"error: finalize failed ({name}):\n{proc.stderr[-3000:]}")
                runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                if name not in firsts:
                    firsts[name] = out
                elif diff := _compare(firsts[name], out):
                    sys.exit(f"error: two runs of {name} differ: {diff}")
        for name, results in runs.items():
            print(f"\n{name}: median finalize CPU {statistics.median(r['cpu'] for r in results):.3f} s of "
                  f"{[round(r['cpu'], 3) for r in results]}")
            parts = sorted({p for r in results for p in r["parts"]},
                           key=lambda p: -statistics.median(r["parts"].get(p, 0.0) for r in results))
            for part in parts:
                print(f"  {part:<24} {statistics.median(r['parts'].get(part, 0.0) for r in results):6.3f} s")
        if old_src is not None:
            diff = _compare(firsts[f"revision {args.against}"], firsts["this tree"])
            print(f"\nfiles that differ from {args.against}'s (manifest.json aside): {diff or 'none'}")


if __name__ == "__main__":
    main()
