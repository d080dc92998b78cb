"""The curation's PII step alone: CPU time of `RedactPII` on the batches a curation hands it, this tree vs a revision.

    .venv/bin/python bench/pii_step.py [--max-files-per-repo 100] [--against REF] [--repeats 3] [--part pii|line_stats]

First one curation of the demo's input (as `bench/curate.py`, one worker) records every batch that
reaches the PII step. Then each timed run is a fresh process that builds the step and runs its
`transform` on those batches, as the executor does: CPU time (`time.process_time`) of all
transforms, setup included (the first batch pays for the detectors' imports and models), and a digest of the
redacted texts. `--against REF` runs git revision REF's `src/` (exported to a temporary folder,
on PYTHONPATH) the same way, alternating, and prints the ratio of medians; the digests must match.
`--part line_stats`: the same, for annotate's `line_stats` (the line statistics of every text) on those batches,
the digest over its three columns.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pii import export_src

RECORD = r'''
import pickle, sys
from pathlib import Path
import codefoundry.data.curate
curate_mod = sys.modules["codefoundry.data.curate"]
from codefoundry.data.config import CurateConfig
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES
from codefoundry.data.pii import RedactPII
batches = []
transform = RedactPII.transform
def recording(self, batch):
    batches.append(batch.column("content").to_pylist())
    return transform(self, batch)
RedactPII.transform = recording
limits = DEMO_LIMITS.model_copy(update={"max_files_per_repo": int(sys.argv[2])})
curate_mod.curate(list(DEMO_SOURCES), Path(sys.argv[1]) / "out", CurateConfig(workers=1, limits=limits))
Path(sys.argv[1], "batches.pkl").write_bytes(pickle.dumps(batches))
'''

TIME = r'''
import hashlib, json, pickle, sys, time
import pyarrow as pa
batches = pickle.loads(open(sys.argv[1], "rb").read())
tables = [pa.table({"content": pa.array(b, pa.string())}) for b in batches]
from codefoundry.data.pii import RedactPII
cpu = time.process_time()
step = RedactPII()
outs = [step.transform(t) for t in tables]
cpu = time.process_time() - cpu
digest = hashlib.sha256()
for out in outs:
    for text in out.column("content").to_pylist():
        digest.update((text or "").encode() + b"\0")
print(json.dumps({"cpu": cpu, "digest": digest.hexdigest(), "counters": dict(sorted(step.stats.counters.items()))}))
'''


TIME_LINE_STATS = r'''
import hashlib, json, pickle, sys, time
import pyarrow as pa
batches = pickle.loads(open(sys.argv[1], "rb").read())
columns = [pa.array(b, pa.string()) for b in batches]
from codefoundry.data.annotate import line_stats
cpu = time.process_time()
outs = [line_stats(c) for c in columns]
cpu = time.process_time() - cpu
digest = hashlib.sha256()
for out in outs:
    for array in out:
        digest.update(repr(array.to_pylist()).encode())
print(json.dumps({"cpu": cpu, "digest": digest.hexdigest(), "counters": {"texts": sum(map(len, columns))}}))
'''
PARTS = {"pii": TIME, "line_stats": TIME_LINE_STATS}


def run(src: Path | None, batches: Path, part: str = "pii") -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", PARTS[part], str(batches)], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-files-per-repo", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--against", metavar="REF")
    ap.add_argument("--part", choices=sorted(PARTS), default="pii", help="what to time on the recorded batches")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-c", RECORD, str(work), str(args.max_files_per_repo)], check=True,
                       capture_output=True)
        batches = pickle.loads((work / "batches.pkl").read_bytes())
        size = sum(len((t or "").encode()) for b in batches for t in b)
        print(f"PII step input: {len(batches)} batches, {sum(map(len, batches))} texts, {size / 1e6:.1f} MB")
        ref = export_src(args.against, work / "ref") if args.against else None
        ours, theirs = [], []
        for _ in range(args.repeats):
            if ref is not None:
                theirs.append(run(ref, work / "batches.pkl", args.part))
            ours.append(run(None, work / "batches.pkl", args.part))
        mine = statistics.median(r["cpu"] for r in ours)
        print(f"this tree: median CPU {mine:.3f} s of {[round(r['cpu'], 3) for r in ours]}; {ours[0]['counters']}")
        if theirs:
            base = statistics.median(r["cpu"] for r in theirs)
            print(f"{args.against}: median CPU {base:.3f} s of {[round(r['cpu'], 3) for r in theirs]}; "
                  f"{theirs[0]['counters']}")
            same = {r["digest"] for r in ours + theirs}
            print(f"speed-up {base / mine:.2f}x; {'redacted texts' if args.part == 'pii' else 'statistics'} "
                  f"identical: {len(same) == 1}")


if __name__ == "__main__":
    main()
