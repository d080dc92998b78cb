"""PII benchmark: codefoundry's redaction vs datatrove's PIIFormatter on the same labelled files, same run.

    .venv/bin/python bench/pii.py [--files 360]

The labelled set (`bench/labelled/pii.py`): real-looking code in Python, JavaScript, Go,
YAML, Shell and Java, one planted email, IP address, key and password per file (≥ 300 each),
plus one hard negative per file (hashes beside "sha256", UUIDs, base64 blobs, example.com,
private IPs, DNS servers, version strings, env lookups, placeholders). Both tools run on
the same texts; a planted item counts as found when its value is gone from the output, a hard
negative as harmed when its value is gone. codefoundry's span-level precision (spans reported
that were not planted) is printed too. datatrove's formatter only handles emails and public
IPs; it runs in bench/.venv-datatrove (installed on first use from bench/requirements-datatrove.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _venvs import anchor_python
from codefoundry.data.pii import redact
from labelled.pii import KINDS, build_labelled_set, evaluate

BENCH = Path(__file__).resolve().parent

DATATROVE = r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.formatters import PIIFormatter
texts = json.load(open(sys.argv[1]))
f = PIIFormatter()
t = time.perf_counter()
out = [f.format(t) for t in texts]
print(json.dumps({"seconds": time.perf_counter() - t, "texts": out}))
'''


def value_scores(files, outputs: list[str]) -> tuple[dict[str, float], float]:
    """(recall per kind: planted values gone from the output, share of hard negatives left intact)."""
    found = dict.fromkeys(KINDS, 0)
    total = dict.fromkeys(KINDS, 0)
    intact = negatives = 0
    for f, out in zip(files, outputs, strict=True):
        for kind, value in f.planted:
            total[kind] += 1
            found[kind] += value not in out
        for value in f.negatives:
            negatives += 1
            intact += value in out
    return {k: found[k] / total[k] for k in KINDS}, intact / max(1, negatives)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=360)
    args = ap.parse_args()
    files = build_labelled_set(args.files)
    texts = [f.text for f in files]
    t = time.perf_counter()
    ours = [redact(text)[0] for text in texts]
    seconds = time.perf_counter() - t
    scores, negatives_hit, fps = evaluate(files)
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    (work / "pii-texts.json").write_text(json.dumps(texts))
    out = subprocess.run([str(anchor_python("datatrove")), "-c", DATATROVE, str(work / "pii-texts.json")], check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{len(files)} files; planted per kind: {len(files)}; hard negatives: "
          f"{sum(len(f.negatives) for f in files)}\n")
    print("| kind | codefoundry precision (spans) | codefoundry recall | datatrove PIIFormatter recall |")
    print("|---|---|---|---|")
    ours_recall, ours_intact = value_scores(files, ours)
    their_recall, their_intact = value_scores(files, theirs["texts"])
    for k in KINDS:
        s = scores[k]
        print(f"| {k} | {s.precision:.3f} ({s.tp} TP, {s.fp} FP) | {ours_recall[k]:.3f} ({s.fn} missed) | "
              f"{their_recall[k]:.3f} |")
    print(f"\nhard negatives left intact: codefoundry {ours_intact:.1%} ({negatives_hit} harmed), "
          f"datatrove {their_intact:.1%}")
    print(f"time: codefoundry {seconds:.2f}s ({len(files) / seconds:.0f} files/s, all four kinds), "
          f"datatrove {theirs['seconds']:.2f}s (emails + IPs only)")
    if fps:
        print("codefoundry false positives:", dict(fps.most_common(5)))


if __name__ == "__main__":
    main()
