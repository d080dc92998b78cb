"""Curation on Ray vs the local executor: docs/s with 1 and 2 workers, same input, same bytes.

Input: the standard library's `.py` files (first `--files`, sorted by path), written once as
JSONL with an MIT license on every row so that every step sees them; cut into work units of
`--unit-rows` rows. Each configuration runs the whole default `data curate` pipeline (no
search/contains indexes) into a fresh directory:

    local -j1, local -j2                 the local multi-process executor
    ray -j1, ray -j2                     `--executor ray`, a Ray instance started for the run
                                         with 1 or 2 CPUs (its start-up time is included)

Each run's output (data/, removed/, stats.json, card) must equal local -j1's byte for byte.
Prints docs/s and each one's ratio to local -j1.

    .venv/bin/python bench/scale.py [--files 2000] [--unit-rows 200] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sysconfig
import time
from pathlib import Path

from codefoundry.data import CurateConfig, curate

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "scale"
OUTPUTS = ("data", "removed", "stats.json", "card.md")


def write_input(n_files: int) -> Path:
    path = WORK / f"stdlib-{n_files}.jsonl"
    if path.exists():
        return path
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)[:n_files]
    WORK.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in files:
            try:
                text = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            f.write(json.dumps({"content": text, "path": str(p.relative_to(stdlib)), "repo_name": "python/cpython",
                                "licenses": ["MIT"]}) + "\n")
    return path


def snapshot(out: Path) -> dict[str, bytes]:
    files = {}
    for name in OUTPUTS:
        p = out / name
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                files[str(f.relative_to(out))] = f.read_bytes()
    return files


def run(source: Path, executor: str, workers: int, unit_rows: int) -> tuple[float, int, dict[str, bytes]]:
    out = WORK / f"out-{executor}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    config = CurateConfig.model_validate({"workers": workers, "executor": executor, "inspection_indexes": False,
                                          "limits": {"table_rows_per_unit": unit_rows}})
    start = time.perf_counter()
    curate([str(source)], out, config)
    seconds = time.perf_counter() - start
    stats = json.loads((out / "stats.json").read_text())
    docs = stats["subsets"]["files"]["totals"]["files"]
    return seconds, docs, snapshot(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--unit-rows", type=int, default=200)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    source = write_input(args.files)
    rows = []
    reference: dict[str, bytes] | None = None
    for executor, workers in (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)):
        seconds, docs, files = run(source, executor, workers, args.unit_rows)
        reference = reference if reference is not None else files
        if files != reference:
            raise SystemExit(f"{executor} -j{workers}: output differs from local -j1")
        rows.append((f"{executor} -j{workers}", docs, seconds))
    base = rows[0][1] / rows[0][2]
    if args.markdown:
        print("| executor | docs | seconds | docs/s | vs local -j1 |\n|---|---:|---:|---:|---:|")
    for name, docs, seconds in rows:
        rate = docs / seconds
        if args.markdown:
            print(f"| {name} | {docs:,} | {seconds:.1f} | {rate:.0f} | {rate / base:.2f}× |")
        else:
            print(f"{name:10s} {docs:6d} docs {seconds:7.1f} s {rate:8.0f} docs/s  {rate / base:.2f}× local -j1")
    print("outputs identical across all runs")


if __name__ == "__main__":
    main()
