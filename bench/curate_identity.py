"""Does this tree curate exactly what a git revision curates? Every dataset file compared, and the indexes' answers.

    cd bench && ../.venv/bin/python curate_identity.py [--against REF] [--max-files-per-repo 15 100]

For each `--max-files-per-repo` size: both `src/` trees (this one, and REF's exported with `git archive`) curate
`bench/curate.py`'s pinned input (the demo's sources, one worker) in fresh subprocesses with empty caches, and this
tree once more with the on-disk caches (license verdicts, decontamination needles) its first run filled. Then
every file of the two datasets but manifest.json (which names its own output path) is compared by sha256. A file
that differs is examined as its format allows: a Parquet file row by row; the search index (SQLite FTS5) by
this tree's `search()` answers (hits, bm25 order, snippets) to queries drawn from the kept rows (words, phrases,
prefixes, column filters, OR, non-ASCII); the membership index by this tree's `contains()` answers to snippets
of kept and removed rows. Exit status 1 when rows or answers differ; differing bytes with the same answers are
reported (a format change must be versioned on purpose) but do not fail.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from curate import pinned_distributions
from pii import export_src

BENCH = Path(__file__).resolve().parent
RUN = r'''
import json, sys
from pathlib import Path
import codefoundry.data.sources as sources_mod
from codefoundry.data.config import CurateConfig
from codefoundry.data.curate import curate
from codefoundry.data.demo import DEMO_LIMITS, DEMO_SOURCES

out, per_repo, pinned = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
every = sources_mod.distributions
sources_mod.distributions = lambda site_dirs=None: [d for d in every(site_dirs) if d.name[:-10] in pinned]
curate(list(DEMO_SOURCES), out, CurateConfig(workers=1, limits=DEMO_LIMITS.model_copy(
    update={"max_files_per_repo": per_repo})))
'''


def curate_with(src: Path, out: Path, per_repo: int, pinned: list[str], cache: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "CODEFOUNDRY_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", RUN, str(out), str(per_repo), json.dumps(pinned)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"error: curating with {src} failed:\n{done.stderr[-3000:]}")


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def kept_texts(dataset: Path, folder: str = "data") -> list[str]:
    return [t for shard in sorted((dataset / folder).rglob("*.parquet"))
            for t in pq.read_table(shard, columns=["content"]).column("content").to_pylist() if t]


def queries(dataset: Path, n: int = 120) -> list[str]:
    """Words of the kept rows, and the other FTS5 forms built from them."""
    rng = random.Random(0)
    words = sorted({w for t in kept_texts(dataset) for w in re.findall(r"\w{4,}", t[:2000])})
    picked = rng.sample(words, min(n, len(words)))
    non_ascii = [w for w in words if not w.isascii()][:10]
    return (picked + non_ascii + [f'"{a} {b}"' for a, b in zip(picked[::2], picked[1::2], strict=False)][:30]
            + [w[:4] + "*" for w in picked[:20]] + [f"{a} OR {b}" for a, b in zip(picked[:10], picked[10:20],
                                                                                 strict=False)]
            + ["lang : Python", "lang : Python AND import", "license : MIT", "def", "return self"])


def search_answers(dataset: Path, qs: list[str]) -> list | str:
    from codefoundry.data.search import search
    try:
        return [[tuple(vars(h).values()) for h in search(dataset, q, limit=20)] for q in qs]
    except Exception as e:  # an index this tree cannot read answers nothing
        return f"unreadable: {e}"


def membership_answers(dataset: Path, snippets: list[str]) -> list | str:
    from codefoundry.data.contains import contains, load_bloom
    try:
        bloom = load_bloom(dataset)
        return [(m.found, m.coverage, m.longest_chain) for m in (contains(dataset, s, bloom) for s in snippets)]
    except Exception as e:
        return f"unreadable: {e}"


def snippets(dataset: Path) -> list[str]:
    rng = random.Random(1)
    out = []
    for folder in ("data", "removed"):
        texts = [t for t in kept_texts(dataset, folder) if len(t) >= 400]
        for t in rng.sample(texts, min(60, len(texts))):
            start = rng.randrange(0, len(t) - 300)
            out.append(t[start:start + 300])
    return out


def compare(old: Path, new: Path) -> tuple[list[str], list[str]]:
    """(files whose bytes differ, of those the ones whose rows or answers differ)."""
    a, b = file_digests(old), file_digests(new)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    wrong = []
    for rel in differ:
        if rel not in a or rel not in b:
            wrong.append(rel)
        elif rel.endswith(".parquet"):
            if pq.read_table(old / rel).to_pylist() != pq.read_table(new / rel).to_pylist():
                wrong.append(rel)
        elif rel.endswith("search.sqlite"):
            qs = queries(new)
            if search_answers(old, qs) != search_answers(new, qs):
                wrong.append(rel)
        elif rel.startswith("index/contains"):
            s = snippets(new)
            if membership_answers(old, s) != membership_answers(new, s):
                wrong.append(rel)
        else:
            wrong.append(rel)
    return differ, wrong


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="REF", default="HEAD",
                    help="the git revision to compare with (default HEAD: what uncommitted changes do)")
    ap.add_argument("--max-files-per-repo", type=int, nargs="+", default=[15, 100])
    args = ap.parse_args()
    pinned = pinned_distributions()
    failed = False
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        work = Path(tmp)
        old_src = export_src(args.against, work / "old")
        for per_repo in args.max_files_per_repo:
            old = work / f"old-{per_repo}"
            curate_with(old_src, old, per_repo, pinned, work / f"cache-old-{per_repo}")
            for caches in ("cold", "warm"):      # this tree twice: empty caches, then the ones the first run filled
                new = work / f"new-{per_repo}-{caches}"
                curate_with(BENCH.parent / "src", new, per_repo, pinned, work / f"cache-new-{per_repo}")
                differ, wrong = compare(old, new)
                print(f"{per_repo} files per distribution, this tree with {caches} caches: {len(file_digests(new))} "
                      f"files compared (manifest.json aside); bytes differ: {', '.join(differ) or 'none'}; "
                      f"rows/answers differ: {', '.join(wrong) or 'none'}")
                failed |= bool(wrong)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
