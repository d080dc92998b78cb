"""What a model or adapter was made from, read from the manifests along its inputs.

    describe(model_dir)            → the lineage `/info` shows: the artifact, its tokenizer, base model,
                                     merged adapters, and every dataset that trained its weights
                                     (`known: false` when no dataset is recorded: a model from elsewhere)
    training_datasets(artifact)    → those datasets, each with the hash its consumer recorded
    decontaminated_against(...)    → a dataset's decontamination record

A dataset's text reaches a model's weights through the model's (or adapter's, or merge's) inputs,
but not through a tokenizer (only its vocabulary came from its dataset) nor through a dataset's
own input dataset (a derived dataset, e.g. after an opt-out, is what was trained on, not the raw
one it came from). A recorded input that is no longer on disk is still listed, with what its
consumer recorded (`on_disk: false`). Paths are never shown: `/info` is open without the API key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codefoundry.errors import ArtifactError
from codefoundry.manifest import MANIFEST_NAME, Manifest, manifest_sha256, read_manifest

# the kinds whose own inputs did not train the weights of what consumes them
_NOT_THROUGH = ("dataset", "tokenizer")


@dataclass(frozen=True)
class Upstream:
    """One artifact met walking a manifest's inputs."""

    role: str                       # e.g. "adapter/model/dataset"
    path: Path
    kind: str
    recorded_sha256: str | None     # the manifest hash its consumer recorded (None for the start)
    manifest: Manifest | None       # None: no longer on disk (or unreadable)

    @property
    def current_sha256(self) -> str | None:
        try:
            return manifest_sha256(self.path) if self.manifest is not None else None
        except ArtifactError:
            return None

    @property
    def changed(self) -> bool:
        """Its manifest no longer hashes to what its consumer recorded (rebuilt or edited since)."""
        current = self.current_sha256
        return self.recorded_sha256 is not None and current is not None and current != self.recorded_sha256


def _read(path: Path) -> Manifest | None:
    try:
        return read_manifest(path) if (path / MANIFEST_NAME).exists() else None
    except ArtifactError:
        return None


def upstream(artifact_dir: str | Path, *, weights_only: bool = False) -> Iterator[Upstream]:
    """Walk `artifact_dir`'s inputs depth-first. `weights_only`: do not go past datasets and tokenizers."""
    start = Path(artifact_dir)
    stack: list[tuple[str, Path, str | None, str | None]] = [("", start, None, None)]
    seen: set[Path] = set()
    while stack:
        role, path, recorded, kind = stack.pop()
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        manifest = _read(path)
        if manifest is None and recorded is None:
            return                  # the start itself has no manifest: nothing is recorded
        kind = manifest.kind if manifest is not None else (kind or "unknown")
        here = role or kind
        yield Upstream(here, path, kind, recorded, manifest)
        if manifest is None or (weights_only and path != start and kind in _NOT_THROUGH):
            continue
        # a merge's record of its training datasets: found here even once its adapter's directory is gone
        # (pushed first, so the inputs' own walk, popped first, names them when it still can)
        for snap in reversed(_snapshot(manifest)):
            stack.append((f"{here}/{snap['role']}", Path(snap["path"]), snap["manifest_sha256"], "dataset"))
        for sub_role, ref in reversed(list(manifest.inputs.items())):
            stack.append((f"{here}/{sub_role}", Path(ref.path), ref.manifest_sha256, ref.kind))


SNAPSHOT_KEY = "training_datasets"


def _snapshot(manifest: Manifest) -> list[dict[str, str]]:
    value = manifest.extra.get(SNAPSHOT_KEY) if isinstance(manifest.extra, dict) else None
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, dict) and all(isinstance(v.get(k), str)
                                                           for k in ("role", "path", "manifest_sha256"))]


def training_dataset_record(inputs: dict[str, Path]) -> list[dict[str, str]]:
    """What a merge writes under `extra["training_datasets"]`: the training datasets of its inputs (role →
    artifact), with the roles they have from the merged model and the hashes recorded along the way."""
    record = []
    for role, artifact in inputs.items():
        for u in training_datasets(artifact):
            sha = u.recorded_sha256 or u.current_sha256
            if sha is not None:
                record.append({"role": f"{role}/{u.role.split('/', 1)[1]}", "path": str(u.path.resolve()),
                               "manifest_sha256": sha})
    return record


def training_datasets(artifact_dir: str | Path) -> list[Upstream]:
    """The datasets whose text trained `artifact_dir`'s weights (through fine-tunes and merges)."""
    return [u for u in upstream(artifact_dir, weights_only=True) if u.kind == "dataset" and u.role != "dataset"]


def decontaminated_against(dataset: Path, manifest: Manifest | None) -> list[str] | None:
    """The dataset's `decontaminated_against` list (stats.json ∪ manifest extra), None if neither records it.

    Both are read defensively: a missing or malformed field counts as "not recorded".
    """
    found: list[str] | None = None
    extra = manifest.extra if manifest is not None and isinstance(manifest.extra, dict) else {}
    sources: list[Any] = [extra.get("decontaminated_against")]
    try:
        stats = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
        sources.append(stats.get("decontaminated_against") if isinstance(stats, dict) else None)
    except (OSError, ValueError):
        pass
    for value in sources:
        if isinstance(value, list):
            found = sorted({*(found or []), *(str(v) for v in value)})
    return found


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def opt_out_sha256(manifest: Manifest) -> str | None:
    """The sha256 of the opt-out list applied to a dataset (recorded by `data curate --opt-out` and `data opt-out`)."""
    recorded = manifest.extra.get("opt_out_sha256") if isinstance(manifest.extra, dict) else None
    return recorded if isinstance(recorded, str) else None


def _shown(value: Any) -> Any:
    """A config value with absolute paths cut to their last part (the server's layout stays private)."""
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def _artifact(u: Upstream) -> dict[str, Any]:
    facts: dict[str, Any] = {"role": u.role, "kind": u.kind, "name": u.path.name,
                             "manifest_sha256": u.current_sha256 or u.recorded_sha256,
                             "on_disk": u.manifest is not None}
    if u.recorded_sha256 is not None:
        facts["recorded_sha256"] = u.recorded_sha256
        facts["changed_since_recorded"] = u.changed
    if u.manifest is not None:
        facts["created"] = u.manifest.created
    return facts


def dataset_facts(u: Upstream) -> dict[str, Any]:
    """A training dataset as lineage shows it: hashes of its manifest, card and opt-out list; its policies."""
    facts = _artifact(u)
    m = u.manifest
    config = m.config if m is not None and isinstance(m.config, dict) else {}
    facts.update({
        "card_sha256": _file_sha256(u.path / "card.md") if m is not None else None,
        "license_policy": config.get("license_policy"),
        "decontaminated_against": decontaminated_against(u.path, m) if m is not None else None,
        "opt_out_sha256": opt_out_sha256(m) if m is not None else None,
        "membership_index": (u.path / "index" / "contains.json").exists(),
    })
    return facts


def _with_config(u: Upstream) -> dict[str, Any]:
    facts = _artifact(u)
    if u.manifest is not None:
        facts["config"] = _shown(u.manifest.config)
        facts["seed"] = u.manifest.seed
        source = u.manifest.extra.get("source") if isinstance(u.manifest.extra, dict) else None
        if isinstance(source, dict) and source.get("gguf"):
            facts["imported_from"] = {"gguf": Path(str(source["gguf"])).name, "sha256": source.get("sha256")}
    return facts


def describe(artifact_dir: str | Path) -> dict[str, Any]:
    """The lineage of a model (or adapter) directory, or `known: false` when it carries no manifest."""
    path = Path(artifact_dir)
    if _read(path) is None:
        return {"known": False, "why": f"{path.name} has no codefoundry {MANIFEST_NAME}: what it was made from "
                                       "is not recorded (a model from elsewhere, e.g. a GGUF or Hugging Face "
                                       "download)"}
    walk = list(upstream(path))
    root = walk[0]
    datasets = [dataset_facts(u) for u in training_datasets(path)]
    tokenizer = next((u for u in walk if u.kind == "tokenizer"), None)
    base_paths = [Path(ref.path).resolve() for ref in root.manifest.inputs.values() if ref.kind == "model"] \
        if root.manifest is not None else []
    bases = [u for u in walk[1:] if u.path.resolve() in base_paths]
    adapters = [u for u in walk[1:] if u.kind == "adapter"]
    trained = next((u for u in walk if u.kind == "model" and u.manifest is not None
                    and u.manifest.inputs.keys() & {"tokens", "dataset"}), None)
    out: dict[str, Any] = {
        "known": bool(datasets),
        "artifact": _with_config(root),
        "datasets": datasets,
        "tokenizer": _with_config(tokenizer) if tokenizer else None,
        "training_config": _shown(root.manifest.config) if root.kind == "adapter" and root.manifest else
        _shown(trained.manifest.config) if trained and trained.manifest else None,
        "base_model": _with_config(bases[0]) if bases else None,
        "adapters": [_with_config(a) for a in adapters],
    }
    if not datasets:
        imported = out["artifact"].get("imported_from") or (out["base_model"] or {}).get("imported_from")
        origin = f"imported from {imported['gguf']}" if imported else "no dataset among the inputs of its manifests"
        out["why"] = f"{origin}: what its weights were trained on is not recorded"
    return out
