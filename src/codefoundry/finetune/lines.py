"""Line-level FIM examples from a curated dataset/: the hole an IDE asks a code model to fill.

An editor's completion request is a short window of the file around the cursor with a hole of
one line (sometimes a few) in it. Document-level FIM (`codefoundry.train.fim`) cuts holes of any
length at random characters in seq_len chunks, and learns every token of the chunk; in minutes of
CPU it does not teach a model to answer a one-line hole and stop. Here every example is one such
request (or, at `fim_rate` < 1, its left-to-right twin: the prefix window, then the lines after it
learned without an EOS, so plain completion does not learn to stop early), and only the answer is
learned:

    file lines:  … │ prefix lines (≤ max_prefix_tokens) │ hole: 1–max_lines lines │ suffix (≤ max_suffix_tokens) │ …

    PSM  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> │ middle <eos>
    SPM  <fim_prefix> <fim_suffix> suffix <fim_middle> prefix │ middle <eos>   (StarCoder's "variant 2")
         ───────────────── not learned (n_prompt) ─────────────┴─ learned ────

The middle ends with the tokenizer's EOS, the token generation stops at (for SmolLM2 `<|im_end|>`;
StarCoder's `<|endoftext|>`), so a served model answers the hole and nothing after it. Each piece
is tokenized on its own, as the sentinels split a FIM prompt's text. A hole is a span of lines
with at least one non-blank character; the prefix window ends and the suffix window starts on a
line boundary (windows longer than their budget keep the tokens next to the hole).

An example is a pure function of (seed, document index): the same dataset and settings give the
same examples. Repositories are held out for validation as `train pack` holds them out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from codefoundry.errors import UserError
from codefoundry.finetune.data import DataReport, Example, ExampleBatches


@dataclass(frozen=True)
class LineFimSettings:
    max_prefix_tokens: int = 256
    max_suffix_tokens: int = 128
    max_lines: int = 3            # holes of 1..max_lines lines; one line half of the time (IDE completions)
    max_middle_tokens: int = 96   # a longer hole (a minified line, a data table) is no example
    spm_rate: float = 0.5
    fim_rate: float = 1.0         # the rest are left-to-right: the prefix window, then its next lines learned
    chars_per_token: float = 3.0  # how many characters of each window to tokenize before cutting to budget
    examples: str = "lines"       # lines | functions (`codefoundry.finetune.functions`) | mix (as many of each)

    def fitted(self, seq_len: int) -> LineFimSettings:
        """These settings with the windows and the hole scaled down so that an example is ≤ seq_len + 1 tokens."""
        room = seq_len + 1 - 4                                   # the three sentinels and EOS
        want = self.max_prefix_tokens + self.max_suffix_tokens + self.max_middle_tokens
        if want <= room:
            return self
        scale = room / want
        middle = max(1, int(self.max_middle_tokens * scale))
        prefix = int(self.max_prefix_tokens * scale)
        return replace(self, max_prefix_tokens=prefix, max_middle_tokens=middle,
                       max_suffix_tokens=max(0, room - prefix - middle))


@dataclass(frozen=True)
class FimIds:
    prefix: int
    suffix: int
    middle: int
    eos: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> FimIds:
        from codefoundry.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

        ids = [tokenizer.convert_tokens_to_ids(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)]
        if any(i is None or i == tokenizer.unk_token_id for i in ids) or tokenizer.eos_token_id is None:
            raise UserError("line-level FIM needs the tokenizer's FIM tokens and an EOS token",
                            hint="import the base model with the demo (it adds StarCoder's FIM tokens)")
        return cls(*ids, eos=tokenizer.eos_token_id)


def hole_count(rng: np.random.RandomState, max_lines: int) -> int:
    """Lines in the hole: 1 with p = 1/2, else uniform over 2..max_lines."""
    if max_lines <= 1 or rng.random_sample() < 0.5:
        return 1
    return int(rng.randint(2, max_lines + 1))


def cut_hole(text: str, rng: np.random.RandomState, max_lines: int) -> tuple[str, str, str] | None:
    """(prefix, middle, suffix) of `text` with a hole of whole lines; None when it has no non-blank line."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip()]
    if not starts:
        return None
    first = starts[int(rng.randint(len(starts)))]
    last = min(len(lines), first + hole_count(rng, max_lines))
    return "".join(lines[:first]), "".join(lines[first:last]), "".join(lines[last:])


def line_fim_example(text: str, rng: np.random.RandomState, tokenizer, ids: FimIds,
                     settings: LineFimSettings) -> Example | None:
    """One FIM request cut from `text` (see the module docstring); None when `text` has no non-blank line
    or the hole drawn is longer than `max_middle_tokens`."""
    hole = cut_hole(text, rng, settings.max_lines)
    if hole is None:
        return None
    prefix, middle, suffix = hole
    spm = rng.random_sample() < settings.spm_rate

    def encode(s: str) -> list[int]:
        return tokenizer.encode(s, add_special_tokens=False) if s else []

    budget_p = int(settings.max_prefix_tokens * settings.chars_per_token)
    budget_s = int(settings.max_suffix_tokens * settings.chars_per_token)
    if len(prefix) > budget_p:                        # whole lines nearest the hole, then cut to the token budget
        cut = prefix.find("\n", len(prefix) - budget_p)
        prefix = prefix[cut + 1:] if cut != -1 else prefix[-budget_p:]
    if len(suffix) > budget_s:
        cut = suffix.rfind("\n", 0, budget_s)
        suffix = suffix[:cut + 1] if cut != -1 else suffix[:budget_s]
    p = encode(prefix)[-settings.max_prefix_tokens:] if settings.max_prefix_tokens else []
    s = encode(suffix)[:settings.max_suffix_tokens]
    m = [*encode(middle), ids.eos]
    if len(m) > settings.max_middle_tokens + 1:
        return None
    # drawn only below rate 1, so a FIM-only run's examples stay what they were
    if settings.fim_rate < 1 and p and rng.random_sample() >= settings.fim_rate:
        return Example(np.asarray(p + m[:-1] + s, dtype=np.int64), len(p))   # no EOS: a completion goes on
    prompt = [ids.prefix, ids.suffix, *s, ids.middle, *p] if spm else [ids.prefix, *p, ids.suffix, *s, ids.middle]
    return Example(np.asarray(prompt + m, dtype=np.int64), len(prompt))


def read_documents(dataset: Path, validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, validation) file contents of a curated dataset/, held out by repository as `train pack` does."""
    import pyarrow.parquet as pq

    from codefoundry.train.pack import dataset_shards, validation_repos

    shards = dataset_shards(dataset)
    held_out = validation_repos(shards, validation_fraction, seed)
    train: list[str] = []
    val: list[str] = []
    for _, shard in shards:
        table = pq.read_table(shard, columns=["content", "repo_name"])
        for content, repo in zip(table.column("content").to_pylist(), table.column("repo_name").to_pylist(),
                                 strict=True):
            if content:
                (val if repo in held_out else train).append(content)
    return train, val


def build_examples(documents: list[str], tokenizer, settings: LineFimSettings, seed: int,
                   per_document: int = 1) -> list[Example]:
    """`per_document` FIM requests from each document, in document order (ExampleBatches shuffles)."""
    ids = FimIds.from_tokenizer(tokenizer)
    examples = []
    for d, text in enumerate(documents):
        for k in range(per_document):
            rng = np.random.RandomState(np.array([seed, d, k, 0x11E5], dtype=np.uint32))
            example = line_fim_example(text, rng, tokenizer, ids, settings)
            if example is not None:
                examples.append(example)
    return examples


EXAMPLE_FORMATS = {"lines": "fim-lines", "functions": "functions", "mix": "fim-lines+functions"}


def request_examples(documents: list[str], tokenizer, settings: LineFimSettings, seed: int,
                     per_document: int = 1) -> list[Example]:
    """The examples `settings.examples` asks for: line-level FIM requests, function bodies, or both in equal
    numbers (the larger set cut to the smaller's size, seeded; ExampleBatches shuffles them together; with
    no function found, the line requests alone)."""
    from codefoundry.finetune.functions import FunctionSettings, build_function_examples

    if settings.examples not in EXAMPLE_FORMATS:
        raise UserError(f"examples {settings.examples!r}: choose one of {', '.join(EXAMPLE_FORMATS)}")
    lines = build_examples(documents, tokenizer, settings, seed, per_document) if settings.examples != "functions" \
        else []
    if settings.examples == "lines":
        return lines
    functions = build_function_examples(documents, tokenizer, FunctionSettings(), seed)
    if settings.examples == "functions":
        return functions
    if not functions or not lines:          # a corpus without documented Python functions: its line requests
        return lines or functions
    n = min(len(lines), len(functions))
    rng = np.random.RandomState(np.array([seed, 0x313C], dtype=np.uint32))
    return [*(lines[i] for i in sorted(rng.permutation(len(lines))[:n])),
            *(functions[i] for i in sorted(rng.permutation(len(functions))[:n]))]


def line_fim_batches(dataset: Path, tokenizer, seed: int, validation_fraction: float, settings: LineFimSettings,
                     per_document: int = 1, max_validation: int = 256
                     ) -> tuple[ExampleBatches, ExampleBatches, DataReport]:
    """Training and validation batches of line-level FIM requests from a curated dataset/."""
    train_docs, val_docs = read_documents(dataset, validation_fraction, seed)
    if not train_docs:
        raise UserError(f"dataset {dataset} has no training documents with content")
    train = request_examples(train_docs, tokenizer, settings, seed, per_document)
    val = request_examples(val_docs[:max_validation], tokenizer, settings, seed + 1_000_003)
    if not train:
        raise UserError(f"dataset {dataset} gives no {settings.examples} examples",
                        hint="functions need Python files with docstrings; try --examples lines")
    report = DataReport(str(dataset), f"dataset-{EXAMPLE_FORMATS[settings.examples]}",
                        rows=len(train_docs) + len(val_docs),
                        kept=len(train_docs) + len(val_docs), train=len(train), validation=len(val))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ExampleBatches(train, seed, pad), ExampleBatches(val, seed, pad, shuffle=False), report
