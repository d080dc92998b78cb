"""Provenance: what the served model was trained on, answered from its manifests and its dataset's indexes.

    GET /v1/provenance/contains?snippet=…      "was this code in the training data?" (POST {"snippet"} too,
                                               for snippets longer than a URL carries)
    GET /v1/provenance/lookup?repo=OWNER/NAME  "am I in it?" (or ?user=OWNER): kept rows, removed rows by reason

Both need the API key when one is set, like the generation routes. The datasets asked are the ones
that trained the served weights (`codefoundry.lineage.training_datasets` of the model and of each
loaded adapter), or the one `--dataset` names, for a model whose lineage points to no dataset on
this machine. `lineage_of` builds the `lineage` that `/info` shows.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from codefoundry.data import MEMBERSHIP_METHOD, check_snippet, contains, lookup
from codefoundry.errors import UserError
from codefoundry.lineage import describe, training_datasets
from codefoundry.manifest import MANIFEST_NAME, manifest_sha256
from codefoundry.serve.errors import ServeError, validation
from codefoundry.serve.state import ServerState, State, require_api_key

router = APIRouter(tags=["Provenance"], dependencies=[Depends(require_api_key)])

MAX_FILES_SHOWN = 200
_GITHUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class ServedDataset:
    """A dataset on this machine whose text trained (part of) what is served."""

    path: Path
    used_by: list[str] = field(default_factory=list)    # "model", "adapter:NAME", or "--dataset"

    def shown(self) -> dict[str, Any]:
        try:
            sha = manifest_sha256(self.path)
        except Exception:  # a dataset without a manifest (--dataset): it still answers from its index
            sha = None
        return {"name": self.path.name, "manifest_sha256": sha, "used_by": self.used_by}


async def served_artifacts(state: ServerState) -> list[tuple[str, Path]]:
    """("model", dir) and ("adapter:NAME", dir) for each adapter loaded now."""
    out: list[tuple[str, Path]] = [("model", Path(state.config.model))] if state.config.model else []
    try:
        loaded = {a["name"]: Path(a["path"]) for a in await state.engine_loop.call("adapters")}
    except Exception:  # the engine is gone: /info still answers, from the adapters it was started with
        loaded = dict(state.config.adapters)
    return out + [(f"adapter:{name}", path) for name, path in sorted(loaded.items())]


_lineage_cache: dict[tuple[str, int], dict[str, Any]] = {}


def _describe_cached(path: Path) -> dict[str, Any]:
    """`describe(path)`, recomputed only when its manifest changes (/info is polled)."""
    try:
        stamp = (path / MANIFEST_NAME).stat().st_mtime_ns
    except OSError:
        stamp = -1
    key = (str(path.resolve()), stamp)
    if key not in _lineage_cache:
        _lineage_cache[key] = describe(path)
    return _lineage_cache[key]


async def lineage_of(state: ServerState) -> dict[str, Any]:
    """The served model's lineage and each loaded adapter's, from their manifests."""
    served = await served_artifacts(state)
    model = next((p for label, p in served if label == "model"), None)
    return {"model": _describe_cached(model) if model is not None else {"known": False, "why": "no model"},
            "adapters": {label.removeprefix("adapter:"): _describe_cached(p)
                         for label, p in served if label.startswith("adapter:")},
            "provenance_dataset": _dataset_source(state, served)}


def _dataset_source(state: ServerState, served: list[tuple[str, Path]]) -> dict[str, Any]:
    """Where /v1/provenance answers from: the lineage's datasets, or --dataset."""
    if state.config.dataset is not None:
        return {"source": "--dataset", "datasets": [Path(state.config.dataset).name]}
    found = _lineage_datasets(served)
    return {"source": "lineage", "datasets": [d.path.name for d in found]}


def _lineage_datasets(served: list[tuple[str, Path]]) -> list[ServedDataset]:
    by_path: dict[Path, ServedDataset] = {}
    for label, artifact in served:
        for u in training_datasets(artifact):
            if u.manifest is None:
                continue
            entry = by_path.setdefault(u.path.resolve(), ServedDataset(u.path))
            if label not in entry.used_by:
                entry.used_by.append(label)
    return list(by_path.values())


async def provenance_datasets(state: ServerState) -> list[ServedDataset]:
    """The datasets to ask: --dataset, or those in the lineage that are on this machine; 404 if none."""
    if state.config.dataset is not None:
        return [ServedDataset(Path(state.config.dataset), ["--dataset"])]
    found = _lineage_datasets(await served_artifacts(state))
    if not found:
        raise ServeError("not_found", "the served model's lineage names no dataset on this machine, so its training "
                                      "data cannot be searched; start the server with --dataset DIR (the dataset/ "
                                      "artifact it was trained on)")
    return found


class SnippetBody(BaseModel):
    snippet: str = Field(..., description="The code to look for (compared lower-cased, whitespace runs as one space).")


def _check_snippet(snippet: str) -> None:
    try:
        check_snippet(snippet)
    except UserError as e:
        raise validation(str(e)) from None


def _contains(datasets: list[ServedDataset], snippet: str) -> dict[str, Any]:
    answers, normalized = [], 0
    for d in datasets:
        try:
            m = contains(d.path, snippet)
        except UserError:
            raise ServeError("not_found", f"dataset {d.path.name} has no readable membership index (rebuild it with "
                                          "`codefoundry data curate`)") from None
        normalized = len(m.normalized)
        answers.append({**d.shown(), "found": m.found, "coverage": round(m.coverage, 4),
                        "longest_chain": m.longest_chain, "chain_needed": m.chain_needed,
                        "spans": [list(s) for s in m.spans], "windows": m.windows, "hits": m.hits})
    return {"in_training_data": any(a["found"] for a in answers), "normalized_chars": normalized,
            "datasets": answers, "method": MEMBERSHIP_METHOD,
            "note": "found: the text was in the data (chance matches are ruled out to 1 in 1,000); not found: no "
                    "long enough run of stored pieces matched, so a short or edited copy may be missed"}


@router.get("/v1/provenance/contains", summary="Was this code in the served model's training data?")
async def contains_get(state: State, snippet: str) -> dict[str, Any]:
    _check_snippet(snippet)
    datasets = await provenance_datasets(state)
    return await asyncio.to_thread(_contains, datasets, snippet)


@router.post("/v1/provenance/contains", summary="The same, with the snippet in a JSON body")
async def contains_post(state: State, body: SnippetBody) -> dict[str, Any]:
    _check_snippet(body.snippet)
    datasets = await provenance_datasets(state)
    return await asyncio.to_thread(_contains, datasets, body.snippet)


def _lookup(datasets: list[ServedDataset], user: str | None, repo: str | None) -> dict[str, Any]:
    answers = []
    for d in datasets:
        try:
            rows = lookup(d.path, user=user, repo=repo)
        except UserError:
            raise ServeError("not_found", f"dataset {d.path.name} is not a readable dataset/ artifact") from None
        removed: dict[str, int] = {}
        for r in rows:
            if r.status != "kept":
                removed[r.status] = removed.get(r.status, 0) + 1
        kept = sum(r.status == "kept" for r in rows)
        answers.append({**d.shown(), "kept": kept, "removed": removed, "found": kept > 0,
                        "repositories": sorted({r.repo for r in rows}),
                        "files": [{"subset": r.subset, "repo": r.repo, "path": r.path, "language": r.language or None,
                                   "status": r.status} for r in rows[:MAX_FILES_SHOWN]],
                        "truncated": len(rows) > MAX_FILES_SHOWN})
    return {"query": {"user": user} if user else {"repo": repo},
            "in_training_data": any(a["found"] for a in answers), "datasets": answers}


@router.get("/v1/provenance/lookup", summary="Are this user's (or repository's) files in the training data?")
async def lookup_get(state: State, repo: str | None = None, user: str | None = None) -> dict[str, Any]:
    if (repo is None) == (user is None):
        raise validation("give exactly one of `repo` (OWNER/NAME) or `user` (OWNER)")
    if repo is not None:
        owner, sep, name = repo.partition("/")
        if not sep or not _GITHUB_NAME.fullmatch(owner) or not _GITHUB_NAME.fullmatch(name):
            raise validation(f"`repo` must be OWNER/NAME (letters, digits, '.', '_', '-'). Given: {repo[:100]!r}")
    elif not _GITHUB_NAME.fullmatch(user or ""):
        raise validation(f"`user` must be a GitHub user or organisation name. Given: {(user or '')[:100]!r}")
    datasets = await provenance_datasets(state)
    return await asyncio.to_thread(_lookup, datasets, user, repo)
