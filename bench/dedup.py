"""Near-dedup benchmark: codefoundry vs datatrove's MinHash dedup vs datasketch MinHashLSH, same input, same run.

    .venv/bin/python bench/dedup.py [--docs 5000]

Speed: the first N `.py` files of this venv's site-packages (as shared/anchors/anchor_dedup.py),
each tool on one core, end to end from in-memory text (datatrove: from its JSONL reader, as
its anchor). Quality: the labelled pair set of `bench/labelled/near_duplicates.py` (real files +
controlled edits, hard negatives), precision/recall/F1 per pair against exact Jaccard ≥ 0.7;
a pair counts as predicted duplicate when the tool puts both files in one cluster (datasketch:
when one's LSH query returns the other). The anchors run in bench-only venvs that this script
creates under bench/.venv-datasketch and bench/.venv-datatrove from bench/requirements-*.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from _venvs import anchor_python
from codefoundry.data.dedup import NearDedup, NearDedupConfig, run_global_step
from codefoundry.data.dedup.near import clusters
from codefoundry.data.pipeline import conform
from labelled.near_duplicates import build_quality_set, score

BENCH = Path(__file__).resolve().parent
UNIT = 500  # documents per work unit

DATASKETCH = r'''
import json, re, sys, time
from datasketch import MinHash, MinHashLSH
docs = [json.loads(l)["text"] for l in open(sys.argv[1])]
NON = re.compile(r"[^A-Za-z_0-9]")
t = time.perf_counter()
lsh = MinHashLSH(threshold=0.7, num_perm=256)
sigs = []
for i, d in enumerate(docs):
    toks = [x for x in NON.split(d) if x]
    sh = {" ".join(toks[j:j + 5]).encode() for j in range(max(0, len(toks) - 4))}
    m = MinHash(num_perm=256)
    m.update_batch(list(sh))
    lsh.insert(str(i), m)
    sigs.append(m)
near = {i: sorted(int(x) for x in lsh.query(m) if int(x) != i) for i, m in enumerate(sigs)}
print(json.dumps({"seconds": time.perf_counter() - t, "near": near}))
'''

DATATROVE = r'''
import json, re, struct, sys, time, shutil, logging
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.word_tokenizers import WordTokenizer
NON = re.compile(r"[^A-Za-z_0-9]")
class CodeTok(WordTokenizer):
    def word_tokenize(self, text): return [t for t in NON.split(text) if t]
    def sent_tokenize(self, text): return text.splitlines()
    def span_tokenize(self, text): return [(m.start(), m.end()) for m in re.finditer(r"[A-Za-z_0-9]+", text)]
inp, base = sys.argv[1], sys.argv[2]
shutil.rmtree(base, ignore_errors=True)
cfg = MinhashConfig(n_grams=5, num_buckets=25, hashes_per_bucket=10)
t = time.perf_counter()
LocalPipelineExecutor(pipeline=[JsonlReader(inp), MinhashDedupSignature(output_folder=f"{base}/sigs", config=cfg,
    language=CodeTok())], tasks=1, workers=1, logging_dir=f"{base}/l1").run()
LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{base}/sigs", output_folder=f"{base}/buckets",
    config=cfg)], tasks=cfg.num_buckets, workers=1, logging_dir=f"{base}/l2").run()
LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{base}/buckets", output_folder=f"{base}/remove_ids",
    config=cfg, save_cluster_id=True)], tasks=1, logging_dir=f"{base}/l3").run()
LocalPipelineExecutor(pipeline=[JsonlReader(inp), MinhashDedupFilter(input_folder=f"{base}/remove_ids"),
    JsonlWriter(f"{base}/out")], tasks=1, logging_dir=f"{base}/l4").run()
seconds = time.perf_counter() - t
raw = open(f"{base}/remove_ids/000000.clusters", "rb").read() if __import__("os").path.exists(
    f"{base}/remove_ids/000000.clusters") else b""
cluster = {d: c for d, c in struct.iter_unpack("<2I", raw)}
print(json.dumps({"seconds": seconds, "cluster": cluster}))
'''


def run_anchor(name: str, script: str, *args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([str(anchor_python(name)), "-c", script, *args], check=True, capture_output=True, text=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_jsonl(docs: list[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"text": d, "id": str(i)}) + "\n")
    return path


def units_of(docs: list[str]) -> list[pa.Table]:
    """Work units of UNIT rows with The Stack's columns (only content, lang and license_type set)."""
    units = []
    for i in range(0, len(docs), UNIT):
        chunk = docs[i:i + UNIT]
        units.append(conform(pa.table({"content": chunk, "lang": ["Python"] * len(chunk),
                                       "license_type": ["permissive"] * len(chunk)})))
    return units


def run_codefoundry(docs: list[str], config: NearDedupConfig, work: Path) -> tuple[float, dict[int, int], int]:
    """(seconds, cluster label per clustered doc index, removed count) for one end-to-end run on one core."""
    shutil.rmtree(work, ignore_errors=True)
    units = units_of(docs)  # the rows as a curation run holds them (Arrow); the anchors start from strings
    t = time.perf_counter()
    results = run_global_step(NearDedup(config), units, work, workers=1)
    seconds = time.perf_counter() - t
    nodes, labels = clusters(work)
    label = {(n >> 32) * UNIT + (n & 0xFFFFFFFF): lab for n, lab in zip(nodes.tolist(), labels.tolist(), strict=True)}
    return seconds, label, sum(r.removed.num_rows for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=5000)
    args = ap.parse_args()
    files = sorted(glob.glob(sysconfig.get_paths()["purelib"] + "/**/*.py", recursive=True))[: args.docs]
    docs = []
    for f in files:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            docs.append(Path(f).read_text(encoding="utf-8"))
    mb = sum(len(d.encode()) for d in docs) / 1e6
    work = Path(tempfile.mkdtemp(prefix="cf-bench-dedup-"))
    quality = build_quality_set()
    corpus_jsonl = write_jsonl(docs, work / "corpus" / "docs.jsonl")
    quality_jsonl = write_jsonl(quality.docs, work / "quality" / "docs.jsonl")
    print(f"corpus: {len(docs)} files, {mb:.1f} MB; labelled set: {len(quality.pairs)} pairs "
          f"({sum(p.duplicate for p in quality.pairs)} duplicates, "
          f"{quality.share_in(0.6, 0.8):.0%} of edited pairs in Jaccard [0.6, 0.8])", flush=True)

    rows = []
    configs = {"codefoundry (default: one-permutation, verified, 36×7)": NearDedupConfig(),
               "codefoundry (BigCode exact: 25×10, unverified)": NearDedupConfig(verify=False),
               "codefoundry (256 permutations, verified)": NearDedupConfig(method="permutations")}
    for name, cfg in configs.items():
        seconds, _, removed = run_codefoundry(docs, cfg, work / "cf")
        _, label, _ = run_codefoundry(quality.docs, cfg, work / "cfq")
        s = score(quality.pairs, lambda a, b, lab=label: a in lab and lab.get(a) == lab.get(b))
        rows.append((name, len(docs) / seconds, s, f"removed {removed}"))
        print(rows[-1], flush=True)

    ds = run_anchor("datasketch", DATASKETCH, str(corpus_jsonl))
    dsq = run_anchor("datasketch", DATASKETCH, str(quality_jsonl))
    near = {int(k): set(v) for k, v in dsq["near"].items()}
    s = score(quality.pairs, lambda a, b: b in near.get(a, set()))
    rows.append(("datasketch MinHashLSH (256 perms, 0.7)", len(docs) / ds["seconds"], s,
                 f"docs with near-dups {sum(1 for v in ds['near'].values() if v)}"))
    print(rows[-1], flush=True)

    dt = run_anchor("datatrove", DATATROVE, str(corpus_jsonl.parent), str(work / "dt"))
    dtq = run_anchor("datatrove", DATATROVE, str(quality_jsonl.parent), str(work / "dtq"))
    cl = {int(k): v for k, v in dtq["cluster"].items()}
    s = score(quality.pairs, lambda a, b: a in cl and cl.get(a) == cl.get(b))
    rows.append(("datatrove 0.10 MinHash (25×10, 4 stages)", len(docs) / dt["seconds"], s, ""))
    print(rows[-1], flush=True)

    base = {r[0]: r[1] for r in rows}
    print("\n| tool | docs/s (1 core) | precision | recall | F1 | vs datasketch | vs datatrove | note |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rate, s, note in rows:
        print(f"| {name} | {rate:,.0f} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | "
              f"{rate / base['datasketch MinHashLSH (256 perms, 0.7)']:.2f}× | "
              f"{rate / base['datatrove 0.10 MinHash (25×10, 4 stages)']:.2f}× | {note} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
