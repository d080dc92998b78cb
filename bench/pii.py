"""PII benchmark: codefoundry's redaction vs datatrove's PIIFormatter on the same labelled files, same run.

    .venv/bin/python bench/pii.py [--files 360] [--repeats 2] [--speed-files 1500] [--speed-against REF]

The labelled set (`bench/labelled/pii.py`): 360 real-looking code files (Python,
JavaScript, Go, YAML, Shell, Java), one planted email, IP address, key and password each, plus
one hard negative (hashes beside "sha256", UUIDs, base64 blobs, example.com, private IPs, DNS
servers, version strings, env lookups, placeholders); then the credential files: every vendor
pattern in Python settings, `.env`, CI YAML, shell `export` and JSON config, and the credential
forms without a vendor prefix (private-key blocks, URL passwords, connection strings, `curl -u`,
`mysql -p`, Django `SECRET_KEY`, unquoted values, a value repeated on another line), each with
realistic negatives (`--repeats` times). Both tools run on the same texts; a planted item counts
as found when its value is gone from the output, a hard negative as harmed when its value is
gone. codefoundry's span-level precision (spans that cover no planted item) is printed per kind
and per detector rule, recall per planted pattern. Speed: the labelled files, and the first
`--speed-files` `.py` files of the standard library (real code, where secrets are rare: the
common case for curation); `--speed-against REF` also times the redaction of git revision REF
(its `src/` exported to a temporary folder) on the same files, alternating runs, and prints the
ratio of medians. datatrove's formatter only handles emails and public IPs; it runs in
bench/.venv-datatrove (installed on first use from bench/requirements-datatrove.txt).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
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


def value_scores(files, outputs: list[str]) -> tuple[dict[str, float], float, dict[str, int]]:
    """(recall per kind: planted values gone from the output, share of hard negatives left intact,
    planted values gone per pattern)."""
    found = dict.fromkeys(KINDS, 0)
    total = dict.fromkeys(KINDS, 0)
    gone: dict[str, int] = {}
    intact = negatives = 0
    for f, out in zip(files, outputs, strict=True):
        for kind, value in f.planted:
            total[kind] += 1
            found[kind] += value not in out
            pattern = f.patterns.get(value, kind)
            gone[pattern] = gone.get(pattern, 0) + (value not in out)
        for value in f.negatives:
            negatives += 1
            intact += value in out
    return {k: found[k] / max(1, total[k]) for k in KINDS}, intact / max(1, negatives), gone


SPEED = r'''
import json, sys, sysconfig, time
from pathlib import Path
from codefoundry.data.pii import redact
root = Path(sysconfig.get_paths()["stdlib"])
texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.rglob("*.py"))[:int(sys.argv[1])]]
redact("warm up the detectors")
t = time.perf_counter()
spans = sum(sum(redact(text)[1].values()) for text in texts)
seconds = time.perf_counter() - t
print(json.dumps({"mb_s": sum(len(x) for x in texts) / 1e6 / seconds, "files_s": len(texts) / seconds,
                  "spans": spans}))
'''


def speed_on_real_code(n: int, src: Path | None = None) -> dict[str, float]:
    """MB/s, files/s and spans of `redact` on the first `n` standard-library `.py` files, one core, in a fresh
    process (importing codefoundry from `src` when given)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, "-c", SPEED, str(n)], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_src(ref: str, into: Path) -> Path:
    """`src/` of git revision `ref`, written under `into`."""
    done = subprocess.run(["git", "-C", str(BENCH.parent), "archive", ref, "src"], capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"error: cannot export src/ of {ref!r}: {done.stderr.decode(errors='replace').strip()}")
    archive = done.stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=360)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--speed-files", type=int, default=1500)
    ap.add_argument("--speed-against", metavar="REF", help="also time this git revision's redaction, alternating")
    args = ap.parse_args()
    files = build_labelled_set(args.files, credential_repeats=args.repeats)
    texts = [f.text for f in files]
    t = time.perf_counter()
    ours = [redact(text)[0] for text in texts]
    seconds = time.perf_counter() - t
    ev = evaluate(files)
    work = BENCH / ".work"
    work.mkdir(exist_ok=True)
    (work / "pii-texts.json").write_text(json.dumps(texts))
    out = subprocess.run([str(anchor_python("datatrove")), "-c", DATATROVE, str(work / "pii-texts.json")], check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    planted = {k: sum(1 for f in files for kind, _ in f.planted if kind == k) for k in KINDS}
    print(f"{len(files)} files; planted: {planted}; hard negatives: {sum(len(f.negatives) for f in files)}\n")
    print("| kind | codefoundry precision (spans) | codefoundry recall | datatrove PIIFormatter recall |")
    print("|---|---|---|---|")
    ours_recall, ours_intact, ours_gone = value_scores(files, ours)
    their_recall, their_intact, _ = value_scores(files, theirs["texts"])
    for k in KINDS:
        s = ev.kinds[k]
        print(f"| {k} | {s.precision:.3f} ({s.tp} TP, {s.fp} FP) | {ours_recall[k]:.3f} ({s.fn} missed) | "
              f"{their_recall[k]:.3f} |")
    print("\n| planted pattern | planted | recall (span covers it) | recall (value gone from output) |")
    print("|---|---|---|---|")
    for name, s in sorted(ev.patterns.items()):
        n = s.tp + s.fn
        print(f"| {name} | {n} | {s.recall:.3f} | {ours_gone.get(name, 0) / n:.3f} |")
    print("\n| detector rule | spans | precision |")
    print("|---|---|---|")
    for name, s in sorted(ev.rules.items()):
        print(f"| {name} | {s.tp + s.fp} | {s.precision:.3f} ({s.fp} FP) |")
    print(f"\nhard negatives left intact: codefoundry {ours_intact:.1%} ({ev.negatives_hit} reported), "
          f"datatrove {their_intact:.1%}")
    print(f"time, labelled files: codefoundry {seconds:.2f}s ({len(files) / seconds:.0f} files/s, all four kinds), "
          f"datatrove {theirs['seconds']:.2f}s (emails + IPs only)")
    if args.speed_against:
        with tempfile.TemporaryDirectory() as tmp:
            ref_src = export_src(args.speed_against, Path(tmp))
            rounds = [(speed_on_real_code(args.speed_files, ref_src), speed_on_real_code(args.speed_files))
                      for _ in range(3)]
        ref_mb = statistics.median(r["mb_s"] for r, _ in rounds)
        new_mb = statistics.median(n["mb_s"] for _, n in rounds)
        print(f"time, {args.speed_files} stdlib .py files, median of 3 alternating runs: {args.speed_against} "
              f"{ref_mb:.2f} MB/s ({rounds[0][0]['spans']:.0f} spans), this tree {new_mb:.2f} MB/s "
              f"({rounds[0][1]['spans']:.0f} spans): ratio {new_mb / ref_mb:.2f}×")
    else:
        speed = speed_on_real_code(args.speed_files)
        print(f"time, {args.speed_files} stdlib .py files: codefoundry {speed['mb_s']:.2f} MB/s "
              f"({speed['files_s']:.0f} files/s), {speed['spans']:.0f} spans redacted")
    if ev.false_positives:
        print("codefoundry false positives:", dict(ev.false_positives.most_common(12)))


if __name__ == "__main__":
    main()
