"""Listing a repository's files the fast way gives the plain way's answer: folders resolved from their resolved
parent are what `Path.resolve(strict=True)` makes of them (symlinks in and out of the root, loops, broken links,
`..`, relative roots, non-ASCII names), and the paths `repo_batches` looks at are the sorted, selected, limited
ones whether or not each path is tested."""

from __future__ import annotations

import inspect
import itertools
import os
import random
import sys
from pathlib import Path

import pytest

from codefoundry.data.license.names import evidence_files
from codefoundry.data.sources.local import _real_dir
from codefoundry.data.sources.repo import _selected, paths_looked_at
from codefoundry.data.sources.unit import SourceLimits


def plain_real_dir(path: str) -> Path | None:
    try:
        return Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "rööt"
    for folder in ("a/b/c", "a/b/d", "x y/z", "ünï/çödé", "deep/1/2/3/4"):
        (root / folder).mkdir(parents=True)
    (tmp_path / "outside" / "in").mkdir(parents=True)
    (root / "link-in").symlink_to(root / "a" / "b")           # a folder link inside the root
    (root / "link-rel").symlink_to("a/b/c")                   # relative target
    (root / "a" / "up").symlink_to("..")                      # to its parent
    (root / "link-out").symlink_to(tmp_path / "outside")     # leads out of the root
    (root / "chain").symlink_to("link-in")                    # a link to a link
    (root / "broken").symlink_to(root / "missing")
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    (root / "a" / "file.txt").write_text("x")
    (tmp_path / "rel-root").symlink_to(root)
    return root


def folders(root: Path) -> list[str]:
    names = ["", "a", "a/b", "a/b/c", "a/b/d", "x y", "x y/z", "ünï", "ünï/çödé", "deep/1/2/3/4", "deep/1/2",
             "link-in", "link-in/c", "link-rel", "a/up", "a/up/a/b", "link-out", "link-out/in", "chain", "chain/d",
             "broken", "broken/x", "loop1", "loop1/x", "missing", "missing/deeper", "a/file.txt", "a/file.txt/x",
             "a/b/../b/c", "a/./b", "a//b", "link-in/..", "a/b/c/"]
    return [os.path.join(os.fspath(root), name) if name else os.fspath(root) for name in names]


def test_folders_resolved_from_their_parents_are_resolved_paths(tree: Path, monkeypatch) -> None:
    paths = folders(tree)
    monkeypatch.chdir(tree.parent)
    paths += [p.replace(os.fspath(tree), "rel-root", 1) for p in paths] + [p.replace(os.fspath(tree), "rööt", 1)
                                                                            for p in paths] + ["rööt", "."]
    rng = random.Random(3)
    for _ in range(30):  # a shared cache, filled in any order
        rng.shuffle(paths)
        dirs: dict[str, Path | None] = {}
        for path in paths:
            assert _real_dir(path, dirs) == plain_real_dir(path), path


def looked_at_plainly(paths: list[str], limits: SourceLimits, only: tuple[str, ...], skip: tuple[str, ...]) -> set:
    chosen = sorted(p for p in paths if _selected(p, only, skip))
    if limits.max_files_per_repo:
        chosen = chosen[: limits.max_files_per_repo]
    return set(chosen).union(itertools.compress(paths, evidence_files(paths)))


def test_paths_looked_at_are_the_plainly_selected_ones() -> None:
    rng = random.Random(5)
    names = ["a.py", "B.PY", "c.txt", "LICENSE", "setup.py", "d.Md", "é.py", "x.pyc", "notes", "f.ipynb", ".py", ""]
    for _ in range(400):
        paths = list(dict.fromkeys(f"{rng.choice(['', 'src/', 'src/é/', 'z/'])}{rng.choice(names)}"
                                   for _ in range(rng.randint(0, 40))))
        limits = SourceLimits(max_files_per_repo=rng.choice([None, 1, 3, 10, 100]))
        only = rng.choice([(), (".py",), (".py", ".md")])
        skip = rng.choice([(), (".pyc",), (".txt", ".ipynb")])
        assert paths_looked_at(paths, limits, only, skip) == looked_at_plainly(paths, limits, only, skip)


def test_a_folder_deeper_than_the_recursion_limit_resolves(tmp_path: Path) -> None:
    deep = os.fspath(tmp_path)
    for _ in range(300):  # shallow enough for pytest's clean-up (shutil.rmtree recurses per level)
        deep = os.path.join(deep, "d")
        os.mkdir(deep)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 100)  # a resolve one frame per folder would hit it
    try:
        found = _real_dir(deep, {})
    finally:
        sys.setrecursionlimit(limit)
    assert found == plain_real_dir(deep)
