"""A labelled near-duplicate set made from real files, and precision/recall/F1 per pair.

Pairs (one base file each, so clusters never chain two pairs together):
    edited     a real stdlib/site-packages .py file and a copy changed by controlled edits —
               identifiers renamed, reformatted (indentation, blank lines, quotes), lines
               inserted from another file, lines deleted — with edit strength drawn so that
               about half of the pairs land in Jaccard [0.6, 0.8], around the 0.7 threshold
    licence    two unrelated files that share only a long licence header (hard negatives)
    template   files generated from one template (stdlib `encodings/cp*.py` codec tables)
Truth is the exact Jaccard of the 5-token shingle sets ≥ 0.7, as BigCode's threshold.
"""

from __future__ import annotations

import random
import re
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from codefoundry.data.dedup.minhash import jaccard, shingle_sets

IDENT = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]{2,}\b")
KEYWORDS = frozenset(["def", "class", "return", "import", "from", "self", "None", "True", "False", "for",
                      "while", "with", "yield", "lambda"])
APACHE_HEADER = """# Licensed to the Apache Software Foundation (ASF) under one
# or more contributor license agreements.  See the NOTICE file
# distributed with this work for additional information
# regarding copyright ownership.  The ASF licenses this file
# to you under the Apache License, Version 2.0 (the
# "License"); you may not use this file except in compliance
# with the License.  You may obtain a copy of the License at
#
#   http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing,
# software distributed under the License is distributed on an
# "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
# KIND, either express or implied.  See the License for the
# specific language governing permissions and limitations
# under the License.
"""


@dataclass(frozen=True)
class Pair:
    a: int          # index into QualitySet.docs
    b: int
    jaccard: float  # exact Jaccard of the shingle sets
    kind: str       # edited | licence | template

    @property
    def duplicate(self) -> bool:
        return self.jaccard >= 0.7


@dataclass
class QualitySet:
    docs: list[str]
    pairs: list[Pair]

    def share_in(self, lo: float, hi: float, kind: str = "edited") -> float:
        sel = [p for p in self.pairs if p.kind == kind]
        return sum(lo <= p.jaccard <= hi for p in sel) / max(1, len(sel))


def source_files(limit: int = 4000, min_bytes: int = 2_000, max_bytes: int = 40_000) -> list[str]:
    """Readable stdlib and site-packages .py files of a useful size, in a stable order."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    out: list[str] = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "encodings" in path.parts or "test" in path.parts or len(out) >= limit:
                continue
            try:
                if min_bytes <= path.stat().st_size <= max_bytes:
                    out.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
    return list(dict.fromkeys(out))


def rename(text: str, fraction: float, rng: random.Random) -> str:
    names = sorted({m for m in IDENT.findall(text) if m not in KEYWORDS})
    chosen = set(rng.sample(names, int(len(names) * fraction))) if names else set()
    return IDENT.sub(lambda m: m.group(0) + "_r" if m.group(0) in chosen else m.group(0), text)


def reformat(text: str, rng: random.Random) -> str:
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        line = " " * ((len(line) - len(stripped)) // 2) + stripped  # 4-space → 2-space indentation
        lines.append(line.replace("'", '"') + (" " if rng.random() < 0.1 else ""))
        if rng.random() < 0.05:
            lines.append("")
    return "\n".join(lines) + "\n"


def delete_lines(text: str, fraction: float, rng: random.Random) -> str:
    lines = text.splitlines()
    return "\n".join(line for line in lines if rng.random() >= fraction) + "\n"


def insert_lines(text: str, donor: str, fraction: float, rng: random.Random) -> str:
    lines, extra = text.splitlines(), donor.splitlines()
    for _ in range(int(len(lines) * fraction)):
        if extra:
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(extra))
    return "\n".join(lines) + "\n"


def edit(text: str, donor: str, strength: float, rng: random.Random) -> str:
    """A copy of `text` changed by a random mix of the controlled edits, scaled by `strength` (0–1)."""
    ops = rng.sample(["rename", "delete", "insert"], rng.randint(1, 3))
    if rng.random() < 0.5:
        text = reformat(text, rng)
    for op in ops:
        if op == "rename":
            text = rename(text, strength * 0.3, rng)
        elif op == "delete":
            text = delete_lines(text, strength * 0.25, rng)
        else:
            text = insert_lines(text, donor, strength * 0.25, rng)
    return text


def build_quality_set(n_edited: int = 600, seed: int = 0, ngram: int = 5) -> QualitySet:
    """Edited pairs with quotas per Jaccard band (½ in [0.6, 0.8]) plus licence-header and template negatives."""
    rng = random.Random(seed)
    files = source_files()
    rng.shuffle(files)
    quotas = {"0.6-0.8": n_edited // 2, "0.8-1.0": n_edited // 4, "0.0-0.6": n_edited - n_edited // 2 - n_edited // 4}
    docs: list[str] = []
    pairs: list[Pair] = []
    it = iter(files)
    for base in it:
        if not any(quotas.values()):
            break
        want = rng.choice([k for k, v in quotas.items() if v])
        lo, hi = (float(x) for x in want.split("-"))
        donor = next(it, base)
        for _ in range(12):  # search the edit strength that lands in the wanted band
            strength = rng.uniform({"0.6-0.8": 0.25, "0.8-1.0": 0.0, "0.0-0.6": 0.5}[want],
                                   {"0.6-0.8": 0.75, "0.8-1.0": 0.35, "0.0-0.6": 1.0}[want])
            copy = edit(base, donor, strength, rng)
            sa, sb = shingle_sets([base, copy], ngram)
            j = jaccard(sa, sb)
            if lo <= j < hi or (hi == 1.0 and j == 1.0):
                docs += [base, copy]
                pairs.append(Pair(len(docs) - 2, len(docs) - 1, j, "edited"))
                quotas[want] -= 1
                break
    for _ in range(60):  # licence header in common, bodies unrelated
        a, b = next(it, None), next(it, None)
        if a is None or b is None:
            break
        a, b = APACHE_HEADER + a[:1500], APACHE_HEADER + b[:1500]
        docs += [a, b]
        pairs.append(Pair(len(docs) - 2, len(docs) - 1, jaccard(*shingle_sets([a, b], ngram)), "licence"))
    for a, b in _template_pairs(rng):
        docs += [a, b]
        pairs.append(Pair(len(docs) - 2, len(docs) - 1, jaccard(*shingle_sets([a, b], ngram)), "template"))
    return QualitySet(docs, pairs)


def _template_pairs(rng: random.Random, n: int = 40) -> list[tuple[str, str]]:
    enc = sorted((Path(sysconfig.get_paths()["stdlib"]) / "encodings").glob("cp*.py"))
    texts = [p.read_text(encoding="utf-8") for p in enc]
    rng.shuffle(texts)
    return [(texts[i], texts[i + 1]) for i in range(0, min(len(texts) - 1, 2 * n), 2)]


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int


def score(pairs: Sequence[Pair], predicted: Callable[[int, int], bool]) -> Scores:
    """Per-pair precision/recall/F1 of `predicted(a, b)` against exact Jaccard ≥ 0.7."""
    tp = fp = fn = tn = 0
    for p in pairs:
        guess = predicted(p.a, p.b)
        if guess and p.duplicate:
            tp += 1
        elif guess:
            fp += 1
        elif p.duplicate:
            fn += 1
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, fp, fn, tn)
