"""Checks on an output directory before a stage writes into it (or `--overwrite` clears it).

A stage must never write over what it reads, nor mix its files into another kind of artifact:
`--out` equal to an input, or a folder holding an input, would delete it on `--overwrite` and
mix the two otherwise; `--out` inside a source folder that is read file by file would feed the
run its own output; `--out` naming a file, or a directory holding another kind of artifact
(a tokenizer written into a dataset/), would replace that artifact's manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from codefoundry.errors import UserError
from codefoundry.manifest import artifact_kind

PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def check_out_dir(out: PathLike, kind: str, inputs: Mapping[str, PathLike | None] | None = None,
                  read_inside: Iterable[PathLike] = ()) -> None:
    """Raise `UserError` unless `out` may hold a `kind` artifact made from `inputs` (role → path).

    `read_inside`: source folders whose files the stage reads one by one (`out` must not be under them).
    """
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"--out {out} is a file, not a directory", "give a new or empty directory")
    real_out = _resolved(out_path)
    for role, path in (inputs or {}).items():
        if path is None or not os.path.exists(path):
            continue
        real = _resolved(path)
        if real == real_out:
            raise UserError(f"--out {out} is the {role} this command reads", "choose another --out")
        if real.is_relative_to(real_out):
            raise UserError(f"--out {out} holds the {role} {path}: writing there would mix with it or, with "
                            "--overwrite, delete it", "choose an --out outside the inputs")
    for source in read_inside:
        if os.path.isdir(source) and real_out.is_relative_to(_resolved(source)):
            raise UserError(f"--out {out} is inside the source {source}: the run would read its own output",
                            "choose an --out outside the sources")
    found = artifact_kind(out_path)
    if found is not None and found != kind:
        raise UserError(f"--out {out} holds {_a(found)} artifact; this command writes {_a(kind)}",
                        "choose another --out")


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
