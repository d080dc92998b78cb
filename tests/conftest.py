"""Shared fixtures: artifacts are built once per test session and shared across xdist workers.

`build_once(name, builder)` builds a directory under a folder common to all workers, behind a
file lock, so two workers never build the same artifact twice. Stage fixtures (dataset,
tokenizer, model) are layered on it as their stages land; each must stay small enough that
the whole of `make test` runs in minutes on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock

# Each stage's shared fixtures live in tests/fixtures_<stage>.py (one owner per file).
pytest_plugins = sorted(p.stem for p in Path(__file__).parent.glob("fixtures_*.py"))

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MIT_LICENSE = """MIT License

Copyright (c) 2024 Acme Tools

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

STDLIB = Path(os.__file__).parent


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A directory common to every xdist worker of this run (per-worker base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    under_xdist = hasattr(request.config, "workerinput")  # works with `-p no:xdist` too
    root = base.parent if under_xdist else base
    path = root / "shared"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def build_once(shared_dir: Path) -> Callable[[str, Callable[[Path], None]], Path]:
    """`build_once(name, builder)`: run `builder(dir)` once per session for all workers."""

    def build(name: str, builder: Callable[[Path], None]) -> Path:
        target = shared_dir / name
        done = shared_dir / f"{name}.done"
        with FileLock(str(shared_dir / f"{name}.lock")):
            if not done.exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                builder(target)
                done.touch()
        return target

    return build


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main",
         *args], cwd=repo, check=True, capture_output=True, text=True, env=env).stdout


def make_git_repo(path: Path, files: dict[str, str | bytes], remote: str | None = None) -> Path:
    """A real git repository at `path` with `files` committed (and `origin` set to `remote`)."""
    path.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        f = path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
    git(path, "init", "-q")
    if remote:
        git(path, "remote", "add", "origin", remote)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def stdlib_files(*names: str) -> dict[str, str]:
    """Real code: stdlib modules by file name, e.g. stdlib_files("textwrap.py")."""
    return {name: (STDLIB / name).read_text(encoding="utf-8") for name in names}


def _build_tiny_corpus(root: Path) -> None:
    make_git_repo(root / "mit-tools", {"LICENSE": MIT_LICENSE, **stdlib_files("textwrap.py", "shlex.py")},
                  remote="https://github.com/acme/mit-tools.git")
    make_git_repo(root / "no-license", stdlib_files("colorsys.py", "bisect.py"),
                  remote="git@github.com:someone/no-license.git")


@pytest.fixture(scope="session")
def tiny_corpus(build_once: Callable[[str, Callable[[Path], None]], Path]) -> Path:
    """A folder of real git repositories of real code: one MIT-licensed, one with no license."""
    return build_once("tiny_corpus", _build_tiny_corpus)


@pytest.fixture(scope="module")
def executor() -> Iterator:
    """A sandboxed eval executor with two slots, shared by one test module."""
    from codefoundry.eval import Executor, Sandbox

    with Sandbox(slots=2) as sb:
        ex = Executor(sb)
        yield ex
        ex.close()


def interrupt_after_steps(steps: int, run: Callable[[], object]) -> None:
    """Run `run()`, raising KeyboardInterrupt (Ctrl-C) in its loop once `steps` AdamW steps are done."""
    import torch

    original = torch.optim.AdamW.step
    count = {"n": 0}

    def step(self, *args, **kwargs):
        if count["n"] == steps:
            raise KeyboardInterrupt
        count["n"] += 1
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = step
    try:
        run()
    finally:
        torch.optim.AdamW.step = original
