"""Curation memory per worker: a 100 MB file and a repository of many small files cost a worker no more than a
small one does, plus a bound set by the read limits.

`data curate --workers 2` runs in a subprocess; every process of its tree is sampled from
/proc (VmHWM: each process's own peak resident memory) until it exits. The bound a worker must
stay within is what the same command costs on a two-file repository (the interpreter, the
imports, the models of the steps), plus `SLACK_MB`: the 100 MB file is over `max_file_bytes`
(1 MB) and must never be read, and many small files are read and written in batches of
`batch_rows`, never held all at once. 100,000 files are in the slow suite; 5,000 run by default,
beside a reader-level check (tracemalloc) that a repository's listing costs its paths and no more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from codefoundry.data.license import identify
from codefoundry.data.sources.local import DirectoryRepo
from codefoundry.data.sources.unit import ReadOptions
from conftest import MIT_LICENSE

SLACK_MB = 64


def _tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            parents[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def _peak_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def curate_peaks(sources: Path, out: Path) -> tuple[float, list[float]]:
    """(the CLI process's peak MB, each worker's peak MB) of a `data curate --workers 2` run; run again (into a
    fresh folder) when a short-lived worker came and went between two samples of /proc."""
    for attempt in range(3):
        main, workers = _sampled_run(sources, out.with_name(f"{out.name}-{attempt}") if attempt else out)
        if workers:
            return main, workers
    pytest.fail("no worker process of `data curate --workers 2` was ever seen in /proc")


def _sampled_run(sources: Path, out: Path) -> tuple[float, list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "codefoundry", "data", "curate", str(sources), "--out", str(out),
                             "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    peaks: dict[int, float] = {}
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            mb = _peak_mb(pid)
            if mb is not None:
                peaks[pid] = max(peaks.get(pid, 0.0), mb)
        time.sleep(0.05)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert proc.returncode == 0, output[-2000:]
    main = peaks.pop(proc.pid, 0.0)
    return main, sorted(peaks.values(), reverse=True)


def _repo(root: Path, files: dict[str, str]) -> Path:
    repo = root / "sources" / "acme-tools"
    repo.mkdir(parents=True)
    (repo / "LICENSE").write_text(MIT_LICENSE)
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "sources"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[float, float]:
    """(the CLI's, a worker's) peak on a repository of two small files: the fixed costs the bounds start from."""
    root = tmp_path_factory.mktemp("base")
    main, workers = curate_peaks(_repo(root, {"a.py": "def f():\n    return 1\n", "b.py": "x = 2\n"}), root / "out")
    return main, max(workers)


def test_a_100_mb_file_costs_a_worker_nothing(tmp_path: Path, baseline: tuple[float, float]) -> None:
    sources = _repo(tmp_path, {"a.py": "def f():\n    return 1\n"})
    line = "value = compute(alpha, beta)  # a long generated file\n"
    with open(sources / "acme-tools" / "big.py", "w") as f:
        for _ in range(100_000_000 // (len(line) * 10_000) + 1):
            f.write(line * 10_000)
    assert (sources / "acme-tools" / "big.py").stat().st_size >= 100_000_000
    main, workers = curate_peaks(sources, tmp_path / "out")
    assert max(workers) <= baseline[1] + SLACK_MB, (baseline, workers)
    assert main <= baseline[0] + SLACK_MB, (baseline, main)


def _many_files(tmp_path: Path, n: int) -> Path:
    body = "def f{i}(x):\n    return x * {i} + {i}\n\n\nclass C{i}:\n    value = {i}\n"
    return _repo(tmp_path, {f"pkg{i // 1000}/m{i}.py": body.format(i=i) for i in range(n)})


def test_5000_small_files_stay_within_the_bound(tmp_path: Path, baseline: tuple[float, float]) -> None:
    _, workers = curate_peaks(_many_files(tmp_path, 5_000), tmp_path / "out")
    assert max(workers) <= baseline[1] + SLACK_MB, (baseline, workers)


def test_reading_a_repository_holds_its_paths_not_an_entry_per_file(tmp_path: Path) -> None:
    """The listing of a repository lives until its last batch: per file it may cost a path string, not an
    `Entry` with its reader closure and absolute path (which made 100,000 files +66 MB)."""
    n = 10_000
    repo = _many_files(tmp_path, n) / "acme-tools"
    identify("MIT License")  # the reference texts, loaded once per process, are not the listing's
    unit = DirectoryRepo(repo, ReadOptions())
    tracemalloc.start()
    try:
        rows = sum(batch.num_rows for batch in unit.read())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == n + 1
    # a batch of 2,048 rows (Python lists), the license evidence, 150 bytes a file: 4.5 MB (3.4 measured); an
    # entry per file: 8.5 MB
    assert peak <= 3_000_000 + 150 * n, peak


@pytest.mark.slow
def test_100000_small_files_stay_within_the_bound(tmp_path: Path, baseline: tuple[float, float]) -> None:
    _, workers = curate_peaks(_many_files(tmp_path, 100_000), tmp_path / "out")
    assert max(workers) <= baseline[1] + SLACK_MB, (baseline, workers)
