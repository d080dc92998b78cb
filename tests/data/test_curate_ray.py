"""`data curate --executor ray` on a real local Ray cluster: the same bytes as the local executor,
a worker killed mid-task costs nothing, a crashed driver's rerun resumes, and no Ray is one error line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codefoundry.data import CurateConfig, curate
from fixtures_data import snapshot

ray = pytest.importorskip("ray")

TASK_TITLE = b"ray::_call"  # a Ray worker's process title while it runs one of our unit or reduce tasks
CONFIG = {"workers": 2, "shard_max_bytes": 40_000, "removed_content": True}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A two-CPU Ray cluster owned by this test process (GCS address), shut down afterwards."""
    # A small object store: tasks return ids only, and CI containers have a small /dev/shm.
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                       object_store_memory=100 * 1024 * 1024)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_reference(tiny_repos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local") / "dataset"
    curate([str(tiny_repos)], out, CurateConfig(**CONFIG))
    return snapshot(out)


def curate_cmd(repos: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "codefoundry", "data", "curate", str(repos), "--out", str(out), "-j", "2",
            "--executor", "ray", "--ray-address", address, "--config", str(_config_file(out.parent))]


def _config_file(folder: Path) -> Path:
    path = folder / "curate.yaml"
    path.write_text("shard_max_bytes: 40000\nremoved_content: true\n")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def ray_task_pids() -> list[int]:
    """Processes whose title says they are running one of our tasks right now."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(TASK_TITLE):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_ray_executor_survives_a_killed_worker_with_the_local_executors_bytes(
        local_reference: dict[str, bytes], ray_cluster: str, tiny_repos: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_task_worker() -> None:  # also the proof that units run in Ray workers, not in the driver
        while not stop.is_set() and not killed:
            for pid in ray_task_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_task_worker, daemon=True)
    killer.start()
    try:
        proc = subprocess.run(curate_cmd(tiny_repos, out, ray_cluster), capture_output=True, text=True,
                              timeout=120, env=_env())
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was caught running a task"
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = snapshot(out)
    assert sorted(got) == sorted(local_reference)
    assert got == local_reference  # nothing lost or doubled by the retried task
    assert not (out / ".work").exists()


@pytest.mark.slow
def test_a_crashed_drivers_rerun_resumes_to_the_same_bytes(
        local_reference: dict[str, bytes], ray_cluster: str, tiny_repos: Path, tmp_path: Path) -> None:
    resumed = tmp_path / "resumed"
    driver = subprocess.Popen(curate_cmd(tiny_repos, resumed, ray_cluster), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((resumed / ".work" / "phase0").glob("*.done")) and time.monotonic() < deadline:
        assert driver.poll() is None, "the run ended before the driver could be killed"
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    done = sorted(p.name for p in (resumed / ".work" / "phase0").glob("*.done"))
    assert done and not (resumed / "stats.json").exists()
    rerun = subprocess.run(curate_cmd(tiny_repos, resumed, ray_cluster), capture_output=True, text=True,
                           timeout=120, env=_env())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert snapshot(resumed) == local_reference


def test_ray_executor_without_ray_is_one_error_line(tiny_repos: Path, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None\n"  # what an environment without ray looks like to import
            "from codefoundry.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "data", "curate", str(tiny_repos), "--out",
                           str(tmp_path / "d"), "--executor", "ray"], capture_output=True, text=True, timeout=60,
                          env=_env())
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and "ray" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install" in proc.stderr


def test_an_unreachable_ray_address_is_one_error_line_at_once(tiny_repos: Path, tmp_path: Path) -> None:
    """Ray's own connect retries take minutes: a closed HOST:PORT fails fast with a clear message."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # closed once the socket is: nothing listens there
    start = time.monotonic()
    proc = subprocess.run(curate_cmd(tiny_repos, tmp_path / "d", f"127.0.0.1:{port}"), capture_output=True,
                          text=True, timeout=120, env=_env())
    assert proc.returncode != 0 and time.monotonic() - start < 60
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith(f"error: cannot reach the Ray cluster at 127.0.0.1:{port}"), proc.stderr
    assert "Traceback" not in proc.stderr
    # connected before anything was made: no `.work` for a rerun to trip over, no dataset folder at all
    assert not (tmp_path / "d" / ".work").exists() and not (tmp_path / "d" / "data").exists()


@pytest.mark.slow
def test_ray_reads_and_writes_fsspec_urls_with_the_local_bytes(ray_cluster: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Units read their rows through fsspec in Ray workers (`local://`); the dataset is published to `memory://`."""
    import json

    import fsspec

    from codefoundry.data.pipeline import storage

    monkeypatch.setenv(storage.STAGING_ENV, str(tmp_path / "staging"))
    rows = [{"content": f"def f{i}(x):\n    return x * {i % 5}\n" * (3 + i % 4), "path": f"m{i}.py",
             "repo_name": f"acme/r{i % 3}", "licenses": ["MIT"]} for i in range(40)]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {**CONFIG, "inspection_indexes": False, "limits": {"table_rows_per_unit": 6}}
    local = tmp_path / "local"
    curate([f"local://{source}"], local, CurateConfig.model_validate(config))
    url = "memory://ray/dataset"
    try:
        curate([f"local://{source}"], url, CurateConfig.model_validate({**config, "executor": "ray",
                                                                         "ray_address": ray_cluster}))
        fs, root = storage.filesystem(url)
        for name, data in snapshot(local).items():
            assert fs.cat_file(f"{root}/{name}") == data, name
        assert fsspec.open(f"{url}/manifest.json", "rb").open().read()
        stats = json.loads((local / "stats.json").read_text())["subsets"]["files"]
        assert stats["totals"]["files"] == 40 and stats["steps"]["exact_dedup"]["rows_in"] > 0
    finally:
        storage.remove_remote(url)


@pytest.mark.slow
def test_a_worker_killed_in_the_dedup_reduce_costs_nothing(
        local_reference: dict[str, bytes], ray_cluster: str, tiny_repos: Path, tmp_path: Path) -> None:
    """The kill lands after every unit's first phase: on a dedup reduce partition or a later unit task."""
    out = tmp_path / "dataset"
    killed: list[int] = []
    stop = threading.Event()
    n_units = len([p for p in tiny_repos.iterdir() if p.is_dir()])

    def kill_after_first_phase() -> None:
        while not stop.is_set() and not killed:
            if len(list((out / ".work" / "phase0").glob("*.done"))) >= n_units:
                for pid in ray_task_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.002)

    killer = threading.Thread(target=kill_after_first_phase, daemon=True)
    killer.start()
    try:
        proc = subprocess.run(curate_cmd(tiny_repos, out, ray_cluster), capture_output=True, text=True,
                              timeout=180, env=_env())
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was caught running a task after the first phase"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert snapshot(out) == local_reference
