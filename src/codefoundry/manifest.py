"""`manifest.json`: what produced an artifact directory, and from which inputs.

Every artifact (dataset/, tokenizer/, tokens/, model/, adapters/NAME/, eval/) carries one:

    {"kind": "dataset", "command": [...], "config": {...}, "seed": 0,
     "versions": {"codefoundry": ..., "python": ..., "torch": ..., "transformers": ...},
     "created": "2026-11-25T22:40:00+00:00",
     "inputs": {"dataset": {"path": "/abs/dataset", "kind": "dataset",
                            "manifest_sha256": "…"}},
     "extra": {...}}

An input's `manifest_sha256` is the sha256 of its manifest file's bytes, so a model's
manifest pins the exact dataset manifest it was trained on, and `lineage` follows the chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from codefoundry.atomic import atomic_write_json
from codefoundry.errors import ArtifactError, UserError

MANIFEST_NAME = "manifest.json"
VERSIONED_PACKAGES = ("codefoundry", "torch", "transformers", "tokenizers", "datasets", "pyarrow", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages an artifact's bytes depend on (without importing them)."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class InputRef:
    """One input artifact: where it was and the hash of its manifest at the time."""

    path: str
    kind: str
    manifest_sha256: str


@dataclass
class Manifest:
    kind: str
    command: list[str]
    config: dict[str, Any]
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    inputs: dict[str, InputRef] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        fields = dict(data)
        fields["inputs"] = {k: InputRef(**v) for k, v in (fields.get("inputs") or {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in known})


def manifest_sha256(artifact_dir: str | Path) -> str:
    """sha256 of an artifact's manifest bytes (the lineage hash)."""
    path = Path(artifact_dir) / MANIFEST_NAME
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise ArtifactError(f"{artifact_dir} has no {MANIFEST_NAME}: is it a codefoundry artifact?") from None


def input_ref(artifact_dir: str | Path) -> InputRef:
    """Reference an input artifact by its absolute path, kind and manifest hash."""
    manifest = read_manifest(artifact_dir)
    return InputRef(str(Path(artifact_dir).resolve()), manifest.kind, manifest_sha256(artifact_dir))


def write_manifest(
    artifact_dir: str | Path,
    kind: str,
    config: BaseModel | Mapping[str, Any],
    *,
    seed: int | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    extra: Mapping[str, Any] | None = None,
    command: list[str] | None = None,
) -> Manifest:
    """Write `artifact_dir/manifest.json` atomically and return it.

    `inputs` maps a role ("dataset", "tokenizer", …) to an input artifact directory; each
    must already have a manifest, whose hash is recorded.
    """
    _check_not_replacing(Path(artifact_dir), kind)
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    manifest = Manifest(
        kind=kind,
        command=list(command if command is not None else sys.argv),
        config=cfg,
        seed=seed,
        inputs={role: input_ref(path) for role, path in (inputs or {}).items()},
        extra=dict(extra or {}),
    )
    atomic_write_json(Path(artifact_dir) / MANIFEST_NAME, manifest.to_json())
    return manifest


def artifact_kind(artifact_dir: str | Path) -> str | None:
    """The `kind` in `artifact_dir/manifest.json`, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((Path(artifact_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def _check_not_replacing(artifact_dir: Path, kind: str) -> None:
    """Refuse to write a `kind` manifest over another kind's: that artifact would lose its record."""
    found = artifact_kind(artifact_dir)
    if found is not None and found != kind:
        raise ArtifactError(f"{artifact_dir} holds a {found} artifact; refusing to write a {kind} manifest over it",
                            "choose another --out")


def read_manifest(artifact_dir: str | Path, kind: str | None = None) -> Manifest:
    """Read an artifact's manifest; with `kind`, insist the artifact is of that kind."""
    path = Path(artifact_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{artifact_dir} has no {MANIFEST_NAME}: is it a codefoundry artifact?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} cannot be read: {e}") from None
    manifest = Manifest.from_json(data)
    if kind is not None and manifest.kind != kind:
        raise ArtifactError(f"{artifact_dir} is a {manifest.kind} artifact, expected a {kind}")
    return manifest


def verify_inputs(artifact_dir: str | Path) -> dict[str, bool]:
    """For each recorded input: does its manifest still hash to what was recorded?"""
    result = {}
    for role, ref in read_manifest(artifact_dir).inputs.items():
        try:
            result[role] = manifest_sha256(ref.path) == ref.manifest_sha256
        except ArtifactError:
            result[role] = False
    return result


def lineage(artifact_dir: str | Path) -> Iterator[tuple[str, Path, Manifest]]:
    """Walk the input chain depth-first: (role path like "model/dataset", dir, manifest)."""
    stack: list[tuple[str, Path]] = [("", Path(artifact_dir))]
    seen: set[Path] = set()
    while stack:
        role, path = stack.pop()
        resolved = path.resolve()
        if resolved in seen or not (path / MANIFEST_NAME).exists():
            continue
        seen.add(resolved)
        manifest = read_manifest(path)
        yield role or manifest.kind, path, manifest
        for sub_role, ref in reversed(list(manifest.inputs.items())):
            stack.append((f"{role or manifest.kind}/{sub_role}", Path(ref.path)))


# Output directories, checked before a stage writes into one (or `--overwrite` clears it).
# A stage must never write over what it reads, nor mix its files into another kind of artifact:
# `--out` equal to an input, or a folder holding an input, would delete it on `--overwrite` and
# mix the two otherwise; `--out` inside a source folder that is read file by file would feed the
# run its own output; `--out` naming a file, or a directory holding another kind of artifact
# (a tokenizer written into a dataset/), would replace that artifact's manifest.

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
