"""The Ray executor: the local executor's work units, partitions and markers, run as Ray tasks.

Only *where* a unit or a reduce partition runs changes: `RayExecutor` reuses the local
executor's plan (`phases`), unit tasks (`UnitTask.run`), reduces (`_run_reduce`) and
`.done` markers, so the bytes of the dataset are the same and a rerun after a driver crash
skips every marked unit or partition. Each task writes its own outputs under `.work` and
returns only its id: the driver never holds rows or signatures, and a global step's reduce
reads just its partition's files, so a worker's memory is bounded by one unit (or one
partition) as with local workers.

A worker that dies mid-task (killed, out of memory, node lost) has its task rerun by Ray
(`max_retries`); a rerun overwrites the unit's outputs atomically, so nothing is doubled.

Every node must see `.work` at the same path: one machine, or a shared filesystem (NFS,
a mounted bucket) on a cluster. Nodes need codefoundry installed (or a `runtime_env`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codefoundry.console import progress_bar
from codefoundry.data.pipeline.executor import LocalExecutor, Phase, WorkUnit
from codefoundry.data.pipeline.step import Step
from codefoundry.errors import UserError

INSTALL_HINT = "install it with: pip install 'codefoundry[ray]' (or: pip install ray)"
TASK_RETRIES = 4
"""Reruns of a task whose worker died: enough for a lost node or two, few enough to stop on a real crash."""


def import_ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise UserError("--executor ray needs the `ray` package, which is not installed", INSTALL_HINT) from e
    return ray


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A `HOST:PORT` or `ray://HOST:PORT` address must accept a TCP connection: Ray's own connect
    retries run for minutes before they fail."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e}",
                        "start a cluster with `ray start --head`, or check --ray-address") from None


def _call(cwd: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs in a Ray worker: one unit's phase or one reduce partition (the local executor's functions).

    Relative paths (`--out dataset/`, a source `./repos`) mean what they meant to the driver: the
    worker moves to the driver's directory when it exists there (one machine, or a shared mount).
    """
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(*args)


class RayExecutor(LocalExecutor):
    """Runs units and reduce partitions as Ray tasks on a cluster (`address`) or a local Ray instance.

    address: None starts a Ray instance on this machine with `workers` CPUs (all when None);
    "auto" joins the cluster this machine is part of (`ray start`); "ray://HOST:10001" connects
    through Ray Client; "HOST:6379" is a cluster's GCS address. An already initialised Ray
    (e.g. by the caller) is used as it is.
    """

    def __init__(self, workers: int | None = None, batch_rows: int = 2048, removed_content: bool = True,
                 address: str | None = None) -> None:
        super().__init__(workers, batch_rows, removed_content)
        self.cpus = workers
        self.address = address
        self.ray = import_ray()
        self._remote: Any = None

    def connect(self) -> None:
        """Join the cluster at `address` once and leave it: a bad --ray-address fails before `.work` exists
        (a local instance is started by the run itself, as before)."""
        if self.address is None or self.ray.is_initialized():
            return
        self._ensure_ray()
        self.ray.shutdown()

    def _ensure_ray(self) -> Any:
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
            if self.address is None:  # starting an instance here (a cluster's own settings are not ours to pass)
                kwargs.update(num_cpus=self.cpus, include_dashboard=False)
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                where = self.address or "a local Ray instance"
                raise UserError(f"cannot connect to Ray at {where}: {e}".splitlines()[0],
                                "start a cluster with `ray start --head`, or check --ray-address") from e
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, retry_exceptions=False)(_call)
        return ray

    def _pool_map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]], description: str) -> None:
        if not calls:
            return
        ray = self._ensure_ray()
        cwd = os.getcwd()
        pending = [self._remote.remote(cwd, fn, *args) for args in calls]
        with progress_bar() as progress:
            task = progress.add_task(description, total=len(calls))
            try:
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    try:
                        ray.get(done)  # re-raise a task's exception here (after its retries)
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
                        raise UserError(f"{description}: Ray workers died running one task, on all "
                                        f"{TASK_RETRIES + 1} tries ({type(e).__name__})",
                                        "check the workers' memory and logs, then rerun the same command to "
                                        "resume") from e
                    progress.advance(task)
            finally:
                for ref in pending:  # a failed run leaves no task writing behind the driver's back
                    ray.cancel(ref, force=True)

    def run(self, work: Path, units: Sequence[WorkUnit], steps: Sequence[Step]) -> list[Phase]:
        """As `LocalExecutor.run`, on Ray; a Ray instance started here is shut down afterwards."""
        started = not self.ray.is_initialized()
        try:
            return super().run(work, units, steps)
        finally:
            if started and self.ray.is_initialized():
                self.ray.shutdown()
