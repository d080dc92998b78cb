"""Curation on Ray vs the local executor: docs/s with 1 and 2 workers, same input, same bytes.

Input: the standard library's `.py` files (first `--files`, sorted by path), written once as
JSONL with an MIT license on every row so that every step sees them; cut into work units of
`--unit-rows` rows. Each configuration runs the whole default `data curate` pipeline (no
search/contains indexes) into a fresh directory:

    local -j1, local -j2                 the local multi-process executor
    ray -j1, ray -j2                     `--executor ray`, a Ray instance started for the run
                                         with 1 or 2 CPUs (its start-up time is included)

Each run's output (data/, removed/, stats.json, card) must equal local -j1's byte for byte.
Prints docs/s and each one's ratio to local -j1, then a projection for 1 TB and The Stack v1's
6.4 TB from what local -j1 measured: core-seconds per input MB (the per-unit cost), and the
shuffle volume per input MB (bytes the dedup map phases wrote under `.work/global/*/map`,
measured before the run removes `.work`), over `--node-cores` cores per node and a target of
`--hours` wall hours.

    .venv/bin/python bench/scale.py [--files 2000] [--unit-rows 200] [--markdown]
                                    [--node-cores 32] [--hours 24]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sysconfig
import time
from pathlib import Path

import codefoundry.data.finalize as finalize_mod
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


SHUFFLE: dict[str, int] = {}
"""Bytes under .work/global/<step>/map of the last run, read just before finalizing removes .work."""
_finalize = finalize_mod.finalize


def _measuring_finalize(job, key, plan, seconds):  # type: ignore[no-untyped-def]
    SHUFFLE.clear()
    for step_dir in sorted((job.out / ".work" / "global").glob("*")):
        SHUFFLE[step_dir.name] = sum(f.stat().st_size for f in (step_dir / "map").rglob("*") if f.is_file())
    return _finalize(job, key, plan, seconds)


finalize_mod.finalize = _measuring_finalize


def projection(input_bytes: int, seconds: float, shuffle: dict[str, int], node_cores: int, hours: float) -> str:
    """Time and nodes for 1 TB and 6.4 TB at the measured per-core cost and shuffle volume."""
    per_mb = seconds / (input_bytes / 1e6)  # core-seconds per input MB (one worker = one core)
    shuffle_per_mb = sum(shuffle.values()) / (input_bytes / 1e6)
    lines = [f"measured (local -j1): {per_mb * 1000:.1f} core-ms per input MB "
             f"({input_bytes / 1e6 / seconds:.2f} MB/s per core); shuffle "
             f"{shuffle_per_mb / 1e3:.1f} kB per input MB ("
             + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in shuffle.items()) + ")"]
    for name, tb in (("1 TB", 1.0), ("The Stack v1, 6.4 TB", 6.4)):
        mb = tb * 1e6
        core_hours = per_mb * mb / 3600
        nodes = max(1, -(-core_hours // (node_cores * hours)))
        wall = core_hours / (nodes * node_cores)
        lines.append(f"{name}: {core_hours:,.0f} core-hours, shuffle {shuffle_per_mb * mb / 1e12:.2f} TB; "
                     f"{int(nodes)} node(s) × {node_cores} cores → ~{wall:.1f} h wall "
                     f"(target ≤ {hours:g} h)")
    return "\n".join(lines)


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
    parser.add_argument("--node-cores", type=int, default=32)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    source = write_input(args.files)
    rows = []
    reference: dict[str, bytes] | None = None
    shuffle: dict[str, int] = {}
    input_bytes = 0
    for executor, workers in (("local", 1), ("local", 2), ("ray", 1), ("ray", 2)):
        seconds, docs, files = run(source, executor, workers, args.unit_rows)
        if reference is None:
            shuffle = dict(SHUFFLE)
            stats = json.loads(files["stats.json"])
            input_bytes = stats["subsets"]["files"]["totals"]["bytes"]
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
    print(projection(input_bytes, rows[0][2], shuffle, args.node_cores, args.hours))


if __name__ == "__main__":
    main()
