"""Fine-tuning data → training and validation batches, with every skipped row counted by reason.

A JSONL row becomes one sequence, right-padded within its micro-batch; the prompt is masked:

    tokens   [ prompt ................ | response ............ EOS ] pad pad
    inputs     t0 t1 …                                    t(n-2)      pad pad
    labels     -100 … -100            | t(k) …            t(n-1)      -100 -100
                 (mask_prompt)          the response is learned

Right padding needs no attention mask: a causal model's real positions never see the pads.
A curated `dataset/` is packed (`codefoundry.train.pack`) into OUT/tokens and read as in pretraining:
seq_len chunks with FIM (`codefoundry.train.samples`).

Like the pretraining samples, a batch is a pure function of the sample indices (a seeded
permutation per epoch), so a resumed run reads exactly the sequences the uninterrupted one did.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from codefoundry.errors import ArtifactError, UserError
from codefoundry.finetune.config import FinetuneConfig
from codefoundry.finetune.rows import FORMAT_KEYS, Renderer, detect_format

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Batch:
    x: torch.Tensor        # [B, T] input ids
    y: torch.Tensor        # [B, T] labels (aligned: y[t] is the target after x[..t]), -100 ignored
    tokens: int            # real (non-padding) input tokens


class Batches(Protocol):
    def __len__(self) -> int: ...
    def batch(self, indices: range | list[int]) -> Batch: ...


@dataclass
class DataReport:
    """What was read: the format, the rows, and why each skipped row was skipped."""

    path: str
    format: str
    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_line: dict[str, int] = field(default_factory=dict)   # reason → first line number with it
    train: int = 0            # sequences (rows, or seq_len chunks of a dataset/)
    validation: int = 0
    sha256: str | None = None

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] += 1
        self.first_line.setdefault(reason, line)

    def summary(self) -> str:
        reasons = ", ".join(f"{r} ×{n} (first at line {self.first_line[r]})" for r, n in self.skipped.most_common())
        return f"{self.kept} of {self.rows} rows kept" + (f"; skipped: {reasons}" if reasons else "")

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "sha256": self.sha256, "rows": self.rows,
                "kept": self.kept, "skipped": dict(self.skipped), "train_sequences": self.train,
                "validation_sequences": self.validation}


@dataclass(frozen=True)
class Example:
    ids: np.ndarray      # [n] int64 tokens, prompt then response
    n_prompt: int        # leading tokens not learned (0 when nothing is masked)


class ExampleBatches:
    """Tokenized rows in a seeded order per epoch; `batch` pads to the longest row of the batch."""

    def __init__(self, examples: list[Example], seed: int, pad_id: int, shuffle: bool = True) -> None:
        self.examples, self.seed, self.pad_id, self.shuffle = examples, seed, pad_id, shuffle

    def __len__(self) -> int:
        return len(self.examples)

    @lru_cache(maxsize=2)  # noqa: B019 (one or two live epochs per object)
    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.examples))
        return np.random.RandomState(np.array([self.seed, epoch, 0xF1E7], dtype=np.uint32)).permutation(
            len(self.examples))

    def example(self, index: int) -> Example:
        epoch, pos = divmod(index, len(self.examples))
        return self.examples[int(self._order(epoch)[pos])]

    def batch(self, indices: range | list[int]) -> Batch:
        chosen = [self.example(i) for i in indices]
        width = max(len(e.ids) for e in chosen) - 1
        x = torch.full((len(chosen), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(chosen), width), IGNORE, dtype=torch.long)
        tokens = 0
        for row, e in enumerate(chosen):
            ids = torch.from_numpy(e.ids)
            n = len(ids) - 1
            x[row, :n] = ids[:-1]
            y[row, :n] = ids[1:]
            y[row, :max(0, e.n_prompt - 1)] = IGNORE            # targets that are prompt tokens
            tokens += n
        return Batch(x, y, tokens)


class PackedBatches:
    """A packed `tokens/` split through pretraining's FIM batcher (`codefoundry.train.samples`)."""

    def __init__(self, batcher: Any) -> None:
        self.batcher = batcher

    def __len__(self) -> int:
        return len(self.batcher.samples)

    def batch(self, indices: range | list[int]) -> Batch:
        x, y = self.batcher.batch(indices)
        return Batch(x, y, x.numel())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed value or the `invalid_json` marker) for every non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--data {path} is not UTF-8 text: {e}") from None
    except OSError as e:
        raise UserError(f"--data {path} cannot be read: {e.strerror or e}") from None
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError:
            out.append((number, _INVALID))
    return out


_INVALID = object()


def resolve_format(path: Path, requested: str, rows: list[tuple[int, Any]]) -> str:
    """`requested`, or for auto the format of a directory (dataset) or of the first object row."""
    if path.is_dir():
        if requested not in ("auto", "dataset"):
            raise UserError(f"--data {path} is a directory (a curated dataset/), but --format is {requested}")
        return "dataset"
    if requested == "dataset":
        raise UserError(f"--format dataset needs a curated dataset/ directory; {path} is a file")
    if requested != "auto":
        return requested
    for _, row in rows:
        fmt = detect_format(row)
        if fmt is not None:
            return fmt
    keys = "; ".join(f"{name}: {', '.join(k)}" for name, k in FORMAT_KEYS.items())
    raise UserError(f"--data {path}: no row has the keys of a known format ({keys})",
                    hint="or give --format instruction|chat|commits")


def tokenize_rows(path: Path, rows: list[tuple[int, Any]], fmt: str, tokenizer, config: FinetuneConfig
                  ) -> tuple[list[Example], DataReport]:
    """Render and tokenize every row; bad ones are counted in the report, never raised."""
    renderer = Renderer(fmt, tokenizer, config.data.template)
    eos = tokenizer.eos_token_id
    report = DataReport(str(path), fmt)
    examples = []
    for line, row in rows:
        report.rows += 1
        if row is _INVALID:
            report.skip("invalid_json", line)
            continue
        try:
            text = renderer.render(row)
        except ValueError as e:
            report.skip(str(e), line)
            continue
        prompt = tokenizer.encode(text.prompt, add_special_tokens=False)
        response = tokenizer.encode(text.response, add_special_tokens=False)
        if text.eos and eos is not None:
            response.append(eos)
        ids = prompt + response
        if len(ids) - 1 > config.seq_len:
            report.skip("too_long", line)
            continue
        if len(ids) < 2:
            report.skip("empty_field:response", line)
            continue
        examples.append(Example(np.asarray(ids, dtype=np.int64), len(prompt) if config.data.mask_prompt else 0))
    report.kept = len(examples)
    return examples, report


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation): a seeded `fraction` of the rows held out (none when fewer than 2 rows)."""
    n_val = 0 if len(examples) < 2 else min(len(examples) - 1, round(fraction * len(examples)))
    held = set(np.random.RandomState(seed).permutation(len(examples))[:n_val].tolist())
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def jsonl_batches(path: Path, tokenizer, config: FinetuneConfig) -> tuple[ExampleBatches, ExampleBatches, DataReport]:
    """Training and validation batches of a JSONL file; an error when no row is usable."""
    if not path.exists():
        raise UserError(f"--data {path} does not exist")
    rows = read_jsonl(path)
    if not rows:
        raise UserError(f"--data {path} has no rows", hint="one JSON object per line, e.g. "
                        '{"instruction": "…", "response": "…"}')
    fmt = resolve_format(path, config.data.format, rows)
    examples, report = tokenize_rows(path, rows, fmt, tokenizer, config)
    report.sha256 = file_sha256(path)
    if not examples:
        raise UserError(f"--data {path}: no usable row ({report.summary()})",
                        hint=f"{fmt} rows need " + ", ".join((*FORMAT_KEYS.get(fmt, ()),
                                                              *(("response",) if fmt == "instruction" else ()))) +
                        f"; rows longer than seq_len {config.seq_len} tokens are skipped")
    if report.skipped:
        log.warning("%s: %s", path, report.summary())
    train, val = split_examples(examples, config.data.validation_fraction, config.seed)
    report.train, report.validation = len(train), len(val)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return (ExampleBatches(train, config.seed, pad), ExampleBatches(val, config.seed, pad, shuffle=False), report)


def has_fim_tokens(tokenizer) -> bool:
    from codefoundry.train import FimTokens

    try:
        FimTokens.from_tokenizer(tokenizer)
    except ArtifactError:
        return False
    return True


def dataset_batches(dataset: Path, model_dir: Path, tokenizer, out: Path, config: FinetuneConfig
                    ) -> tuple[PackedBatches, PackedBatches, DataReport, float]:
    """A curated dataset/ packed into OUT/tokens (reused when already packed) → FIM batches."""
    from codefoundry.train import PackConfig, pack
    from codefoundry.train.pack import is_packed, read_index
    from codefoundry.train.samples import Batcher, PackedSamples

    fim_rate = config.data.fim_rate
    if fim_rate is None:
        fim_rate = 0.5 if has_fim_tokens(tokenizer) else 0.0
        if not fim_rate:
            log.info("the tokenizer has no FIM tokens: continued pretraining without FIM")
    tokens = out / "tokens"
    if not is_packed(tokens, dataset, model_dir):
        pack(dataset, model_dir, tokens, PackConfig(validation_fraction=config.data.validation_fraction,
                                                    seed=config.seed))
    train = PackedSamples(tokens, "train", config.seq_len, config.seed)
    val = PackedSamples(tokens, "validation", config.seq_len, config.seed, shuffle=False)
    if not len(train):
        train.context(0)  # raises the "too little data" error
    index = read_index(tokens)
    report = DataReport(str(dataset), "dataset", train=len(train), validation=len(val))
    report.rows = report.kept = sum(e["num_documents"] for split in index["splits"].values() for e in split.values())
    val_seed = config.seed + 1_000_003  # validation FIM draws from another stream than training's
    return (PackedBatches(Batcher(train, tokenizer, config.seed, fim_rate, config.data.fim_spm_rate)),
            PackedBatches(Batcher(val, tokenizer, val_seed, fim_rate, config.data.fim_spm_rate)), report, fim_rate)
