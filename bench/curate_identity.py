"""Whole-run byte identity: every dataset file but manifest.json, this tree against a git revision.

    cd bench && ../.venv/bin/python curate_identity.py [--against 2eeed19] [--per-repo 15 100]

`curate(DEMO_SOURCES, …, CurateConfig(workers=1))` on `bench/curate.py`'s pinned input with at most N files per
distribution, each tree's `src/` on PYTHONPATH in its own process: the revision once with an empty cache, this
tree with an empty cache (cold) and again with the cache that run filled (warm). Prints the files that differ
(sha256) and fails if any does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from curate import pinned_distributions
from pii import export_src

RUN = r'''
import json, sys
from pathlib import Path
import codefoundry.data.curate
curate_mod = sys.modules["codefoundry.data.curate"]  # the package exports a function of the same name
import codefoundry.data.sources as sources_mod
from codefoundry.data.config import CurateConfig
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES
out, per_repo, pinned = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
every = sources_mod.distributions
sources_mod.distributions = lambda site_dirs=None: [d for d in every(site_dirs) if d.name[:-10] in pinned]
limits = DEMO_LIMITS.model_copy(update={"max_files_per_repo": per_repo})
curate_mod.curate(list(DEMO_SOURCES), out, CurateConfig(workers=1, limits=limits))
'''


def curate_hashes(src: Path, out: Path, per_repo: int, cache: Path, pinned: list[str]) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(src),
           "CODEFOUNDRY_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", RUN, str(out), str(per_repo), json.dumps(pinned)], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"error: curation with {src} failed:\n{done.stderr[-3000:]}")
    return {f.relative_to(out).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(out.rglob("*")) if f.is_file() and f.name != "manifest.json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", metavar="REF", default="HEAD")
    ap.add_argument("--per-repo", type=int, nargs="+", default=[15, 100])
    args = ap.parse_args()
    pinned = pinned_distributions()
    ours = Path(__file__).resolve().parents[1] / "src"
    differ = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        old = export_src(args.against, work / "old")
        for n in args.per_repo:
            theirs = curate_hashes(old, work / f"old-{n}", n, work / f"cache-old-{n}", pinned)
            for run in ("cold", "warm"):  # the second run finds what the first wrote in its cache
                got = curate_hashes(ours, work / f"{run}-{n}", n, work / f"cache-{n}", pinned)
                diff = sorted(k for k in set(theirs) | set(got) if theirs.get(k) != got.get(k))
                differ |= bool(diff)
                print(f"{n} files per distribution, {run} cache: {len(theirs)} files compared, "
                      f"differing: {', '.join(diff) or 'none'}")
    if differ:
        sys.exit(f"error: this tree's dataset differs from {args.against}'s")


if __name__ == "__main__":
    main()
