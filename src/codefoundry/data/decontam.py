"""Decontamination: remove files that contain benchmark material (bigcode-dataset `decontamination/`).

BigCode removed a file if any benchmark string occurred in it as a case-insensitive exact
substring. Here the strings come from `codefoundry.benchmarks.BENCHMARK_SETS` (HumanEval
prompts and canonical solutions, HumanEval-infilling, MBPP, optionally MultiPL-E) and from
any JSONL of strings; all of them go into one Aho–Corasick automaton (pyahocorasick), so a
file is scanned once whatever the number of strings.

Normalisation, applied to both sides: lowercase (as BigCode) and **all whitespace removed**,
so a solution pasted with other indentation, line breaks or spacing still matches. Strings
shorter than `min_chars` after normalising are skipped (BigCode dropped the trivial HumanEval
solutions such as `return x + y` by hand).

Optional near match: a file whose 5-token shingle set has Jaccard ≥ 0.58 with a benchmark
item (bigcode-dataset `minhash.py` threshold). The Jaccard is computed exactly through an
inverted index of the items' shingles, which is what their MinHash estimated.

Each removed row's reason names the benchmark and item: `decontam:<benchmark>:<item id>`
(`decontam_near:` for near matches).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np
import pyarrow as pa
from pydantic import Field

from codefoundry.benchmarks import BENCHMARK_SETS
from codefoundry.config import StageConfig
from codefoundry.data.dedup.minhash import shingle_sets
from codefoundry.data.pipeline import Filter
from codefoundry.errors import UserError

DEFAULT_BENCHMARKS = ["humaneval", "humaneval-infilling", "mbpp"]  # bigcode-dataset: MultiPL-E left out


class DecontamConfig(StageConfig):
    """Settings of the decontamination step."""

    enabled: bool = True
    benchmarks: list[str] = Field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    """Names from codefoundry.benchmarks.BENCHMARK_SETS (humaneval, humaneval-infilling, mbpp, multiple)."""
    extra_jsonl: list[Path] = Field(default_factory=list)
    """More benchmarks: JSONL files, one string per line (a JSON string, or an object with "text" and an
    optional "id"); the benchmark is named after the file's stem."""
    min_chars: int = Field(18, ge=1)
    """Skip strings shorter than this after normalising (trivial one-liners like `return x + y`)."""
    near: bool = False
    """Also remove files whose shingle-set Jaccard with a benchmark item reaches near_threshold."""
    near_threshold: float = Field(0.58, gt=0, le=1)   # bigcode-dataset decontamination/minhash.py
    ngram_size: int = Field(5, ge=1)


_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
"""What `str.split()` splits on below 128 (bytes.split() leaves out \x1c-\x1f)."""


def normalize(text: str) -> str:
    """Lowercase with all whitespace removed: how both files and benchmark strings are compared."""
    if text.isascii():  # the same in bytes: one translate instead of a string per word
        return text.encode("ascii").lower().translate(None, _ASCII_SPACE).decode("ascii")
    return "".join(text.lower().split())


def read_jsonl_strings(path: Path) -> list[tuple[str, str]]:
    """(item id, text) from a JSONL of strings; errors name the file and line."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read benchmark file {path}: {e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not JSON ({e.msg})", "each line must be a JSON string or an object "
                            'with "text"') from e
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            out.append((str(value.get("id", n)), value["text"]))
        elif isinstance(value, str):
            out.append((str(n), value))
        else:
            raise UserError(f'{path}:{n}: expected a JSON string or an object with a "text" string')
    return out


def benchmark_strings(config: DecontamConfig) -> list[tuple[str, str, str]]:
    """(benchmark, item id, text) for every string to match."""
    out = []
    for name in config.benchmarks:
        if name not in BENCHMARK_SETS:
            raise UserError(f"unknown benchmark {name!r} in decontamination.benchmarks",
                            f"choose from {', '.join(BENCHMARK_SETS)}, or give a JSONL in extra_jsonl")
        out += [(name, item, text) for item, text in BENCHMARK_SETS[name].strings()]
    for path in config.extra_jsonl:
        out += [(Path(path).stem, item, text) for item, text in read_jsonl_strings(Path(path))]
    return out


def benchmark_names(config: DecontamConfig) -> list[str]:
    """The benchmarks a dataset is decontaminated against (for the card)."""
    return [*config.benchmarks, *(Path(p).stem for p in config.extra_jsonl)]


_INDEXES: dict[str, tuple[Any, Any]] = {}
"""Built benchmark indexes by config (JSON), shared by the step's copies in one process."""


class Decontaminate(Filter):
    """Remove files containing a benchmark string (case- and whitespace-insensitive)."""

    name = "decontaminate"
    columns = ("content",)

    def __init__(self, config: DecontamConfig | None = None) -> None:
        super().__init__()
        self.config = config or DecontamConfig()
        self._automaton: Any = None
        self._near: NearIndex | None = None

    def setup(self) -> None:
        # one index per process and config: a curation's subsets each run their own copy of this step
        key = self.config.model_dump_json()
        if key not in _INDEXES:
            self._build()
            _INDEXES[key] = (self._automaton, self._near)
        self._automaton, self._near = _INDEXES[key]

    def _build(self) -> None:
        automaton = ahocorasick.Automaton()
        strings = benchmark_strings(self.config)
        for bench, item, text in strings:
            key = normalize(text)
            if len(key) >= self.config.min_chars and key not in automaton:
                automaton.add_word(key, (bench, item))
        if len(automaton):
            automaton.make_automaton()
            self._automaton = automaton
        if self.config.near:
            self._near = NearIndex(strings, self.config.ngram_size)

    def match(self, text: str) -> str | None:
        """The reason for removing `text`, or None if it holds no benchmark material."""
        if self._automaton is None and self._near is None:
            self.setup()
        if self._automaton is not None:
            for _, (bench, item) in self._automaton.iter(normalize(text)):
                return f"decontam:{bench}:{item}"
        return None

    def reasons(self, batch: pa.Table) -> Sequence[str | None]:
        texts = [t or "" for t in batch.column("content").to_pylist()]
        out = [self.match(t) for t in texts]
        if self._near is not None:
            todo = [i for i, r in enumerate(out) if r is None]
            for i, hit in zip(todo, self._near.best([texts[i] for i in todo], self.config.near_threshold),
                              strict=True):
                if hit is not None:
                    out[i] = f"decontam_near:{hit[0]}:{hit[1]}"
        return out


class NearIndex:
    """Exact shingle-set Jaccard of files against every benchmark item, through an inverted index."""

    def __init__(self, strings: Iterable[tuple[str, str, str]], ngram: int) -> None:
        items = list(strings)
        sets = shingle_sets([t for _, _, t in items], ngram)
        keep = [i for i, s in enumerate(sets) if len(s)]
        self.items = [(items[i][0], items[i][1]) for i in keep]
        self.sizes = np.array([len(sets[i]) for i in keep], dtype=np.int64)
        hashes = np.concatenate([sets[i] for i in keep]) if keep else np.empty(0, np.uint64)
        owners = np.repeat(np.arange(len(keep)), self.sizes)
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.owners = hashes[order], owners[order]
        self.ngram = ngram

    def best(self, texts: list[str], threshold: float) -> list[tuple[str, str] | None]:
        out: list[tuple[str, str] | None] = []
        for s in shingle_sets(texts, self.ngram) if texts else []:
            lo = np.searchsorted(self.hashes, s, side="left")
            hi = np.searchsorted(self.hashes, s, side="right")
            hits = np.concatenate([self.owners[a:b] for a, b in zip(lo, hi, strict=True) if b > a] or
                                  [np.empty(0, np.int64)])
            if not len(hits):
                out.append(None)
                continue
            inter = np.bincount(hits, minlength=len(self.items))
            jac = inter / (len(s) + self.sizes - inter)
            k = int(np.argmax(jac))
            out.append(self.items[k] if jac[k] >= threshold else None)
        return out
