"""What the report shows, read from the demo's artifacts (plain dicts and lists; nothing is computed twice).

Every figure comes from a file a stage wrote: the dataset's stats.json and manifest.json
(composition, removals, per-step seconds), the training runs' metrics.jsonl, each evaluation's
results.json, the serving probe's probe.json and the demo's timings.json. Only the tokenizer's
compression is measured here, on a sample of the curated code, because no stage records it.
A missing artifact gives an empty section, never an error: the report of an unfinished run shows
what is finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

COMPRESSION_SAMPLE_BYTES = 1_000_000
"""Characters of curated code (the first files of the first shard) each tokenizer encodes for chars/token."""


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dataset_facts(dataset: Path) -> dict[str, Any] | None:
    """Composition by language and license, removals by reason, the steps' counts and seconds."""
    stats, manifest = _json(dataset / "stats.json"), _json(dataset / "manifest.json")
    if stats is None:
        return None
    files = stats["subsets"].get("files", {})
    totals = files.get("totals", {})
    steps = files.get("steps", {})
    extra = (manifest or {}).get("extra", {})
    return {
        "totals": totals,
        "languages": {k: v for k, v in files.get("languages", {}).items() if v.get("kept_files")},
        "licenses": {k: v for k, v in files.get("licenses", {}).items() if v.get("kept_files")},
        "license_types": files.get("license_types", {}),
        "removed": files.get("removed", {}),
        "steps": {name: {"rows_in": s.get("rows_in", 0), "kept": s.get("kept", 0),
                         "removed": sum(s.get("removed", {}).values()), "reasons": s.get("removed", {}),
                         "counters": s.get("counters", {})} for name, s in steps.items()},
        "step_seconds": extra.get("step_seconds", {}),
        "seconds": extra.get("seconds"),
        "sources": extra.get("sources", []),
        "decontaminated_against": extra.get("decontaminated_against", []),
    }


def code_sample(dataset: Path, limit: int = COMPRESSION_SAMPLE_BYTES) -> str:
    """The first `limit` characters of kept code, file by file, from the first shard."""
    shards = sorted((dataset / "data" / "files").glob("*.parquet"))
    if not shards:
        return ""
    parts, size = [], 0
    for batch in pq.ParquetFile(shards[0]).iter_batches(columns=["content"], batch_size=256):
        for text in batch.column(0).to_pylist():
            parts.append(text)
            size += len(text)
            if size >= limit:
                return "".join(parts)[:limit]
    return "".join(parts)


def compression(out: Path) -> list[dict[str, Any]]:
    """Characters per token on the same curated code for the demo's tokenizer and the base model's."""
    from codefoundry.tokenizer import load_tokenizer

    sample = code_sample(out / "dataset")
    rows = []
    for label, path in (("codefoundry tokenizer (trained by the demo)", out / "tokenizer"),
                        ("SmolLM2 tokenizer (base model)", out / "base")):
        if not sample or not (path / "tokenizer.json").exists():
            continue
        tokenizer = load_tokenizer(path)
        # the fast tokenizer's own encode: the sample is far over model_max_length, which only matters to a model
        tokens = len(tokenizer.backend_tokenizer.encode(sample, add_special_tokens=False).ids)
        rows.append({"tokenizer": label, "vocab_size": len(tokenizer), "chars": len(sample), "tokens": tokens,
                     "chars_per_token": len(sample) / tokens if tokens else 0.0})
    return rows


def training_facts(run: Path) -> dict[str, Any] | None:
    """A training run's metrics.jsonl (loss per step, validation loss) and the manifest's summary."""
    records = _jsonl(run / "metrics.jsonl")
    if not records:
        return None
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    return {"train": train, "val": val, "steps": train[-1][0] if train else 0,
            "first_val": val[0][1] if val else None, "last_val": val[-1][1] if val else None}


def gather(out: Path) -> dict[str, Any]:
    """Everything the report shows, from the artifacts under `out` (the demo's directory)."""
    from codefoundry.eval.demo import read_scores

    return {
        "out": str(out),
        "plan": _json(out / "plan.json"),
        "timings": _json(out / "timings.json") or {},
        "dataset": dataset_facts(out / "dataset"),
        "compression": compression(out),
        "pretrain": training_facts(out / "model"),
        "finetune": training_facts(out / "adapters" / "code"),
        "scores": read_scores(out),
        "probe": _json(out / "serve" / "probe.json"),
    }
