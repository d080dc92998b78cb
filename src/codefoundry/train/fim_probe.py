"""A FIM probe: does a trained model fill a masked middle from its suffix?

Templated but real-looking code: one small class per file whose first method's body line
names a field that only the *suffix* mentions (the getter and setter below it), so a model
can fill it only by reading the suffix — left-to-right, the prefix says nothing about it:

    class BlueLedger:                       ┐ prefix
        def __init__(self, value):          ┘
            self._price_limit = value       ← middle (masked)
                                            ┐
        def get_price_limit(self):          │ suffix: names the field three times
            return self._price_limit        │
        ...                                 ┘

Field names are pairs of common words; 100 pairs are held out (each word still appears in
training, the pair never does). `fim_exact_match` prompts each held-out function in PSM order
(`<fim_prefix> prefix <fim_suffix> suffix <fim_middle>`), decodes greedily with
`codefoundry.generate` until `<|endoftext|>` (the end of a FIM middle in StarCoder's format)
or the end of the line (single-line infilling, as in Fried et al. 2022 / SantaCoder's FIM
evaluation: the masked middle is one line), and counts exact matches of the stripped middle.

`compare(root, steps)` trains the same model twice on the same documents — with FIM (PSM
only: the probe prompts in PSM) and without — and returns both exact-match rates.
"""

from __future__ import annotations

import random
from pathlib import Path

from codefoundry.train.config import PackConfig, TrainConfig

WORDS = ("count", "name", "size", "color", "speed", "label", "width", "depth", "price", "owner", "title", "score",
         "level", "state", "mode", "index", "limit", "rate", "total", "path")
CLASS_WORDS = ("Blue", "Red", "Fast", "Slow", "Big", "Small", "Old", "New", "Green", "Dark", "Ledger", "Widget",
               "Parser", "Buffer", "Store", "Cache", "Queue", "Engine", "Record", "Window")
HELD_OUT = 100


def document(cls: str, field: str) -> tuple[str, str, str]:
    """(prefix, middle, suffix) of one templated class; the middle is implied only by the suffix."""
    prefix = f"class {cls}:\n    def __init__(self, value):\n"
    middle = f"        self._{field} = value\n"
    suffix = (f"\n    def get_{field}(self):\n        return self._{field}\n"
              f"\n    def set_{field}(self, value):\n        self._{field} = value\n")
    return prefix, middle, suffix


def split_documents(copies: int = 2, seed: int = 0) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Training documents (`copies` classes per seen field) and `HELD_OUT` documents of unseen fields."""
    rng = random.Random(seed)
    fields = [f"{a}_{b}" for a in WORDS for b in WORDS if a != b]
    rng.shuffle(fields)

    def cls() -> str:
        return rng.choice(CLASS_WORDS[:10]) + rng.choice(CLASS_WORDS[10:])

    train = [document(cls(), f) for f in fields[HELD_OUT:] for _ in range(copies)]
    rng.shuffle(train)
    return train, [document(cls(), f) for f in fields[:HELD_OUT]]


def write_dataset(root: Path, documents: list[tuple[str, str, str]]) -> Path:
    """A `dataset/` artifact with one document per file (40 repositories, so validation has some)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codefoundry.manifest import write_manifest

    rows = [{"content": "".join(doc), "repo_name": f"probe/repo{i % 40}", "path": f"m{i}.py", "stars": 1,
             "lang": "Python"} for i, doc in enumerate(documents)]
    (root / "data" / "files").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "files" / "part-00000.parquet")
    write_manifest(root, "dataset", {"source": "codefoundry.train.fim_probe templated classes"}, seed=0)
    return root


def fim_exact_match(model_dir: Path, documents: list[tuple[str, str, str]], max_new_tokens: int = 24
                    ) -> tuple[float, list[str]]:
    """(share of documents whose middle the model fills exactly, the generated middles) — PSM, greedy."""
    from codefoundry.generate import SamplingParams, generate
    from codefoundry.model import load_model
    from codefoundry.tokenizer import load_tokenizer

    tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    ids = tok.convert_tokens_to_ids
    prompts = [[ids("<fim_prefix>"), *tok.encode(p, add_special_tokens=False), ids("<fim_suffix>"),
                *tok.encode(s, add_special_tokens=False), ids("<fim_middle>")] for p, _, s in documents]
    completions = generate(model, tok, prompts, SamplingParams(max_new_tokens=max_new_tokens, stop=["\n"]))
    texts = [c.text for c in completions]
    hits = sum(t.strip() == m.strip() for t, (_, m, _) in zip(texts, documents, strict=True))
    return hits / len(documents), texts


# The probe's model: 2 layers (enough for an induction/copy head), 192 wide, 4 heads; a 512-token BPE.
PROBE_MODEL = {"n_layer": 2, "n_embd": 192, "n_head": 4}
PROBE_FIM_RATE = 1.0      # every document permuted, PSM only (spm_rate 0): the probe prompts in PSM


def probe_config(steps: int, fim_rate: float, seed: int = 0) -> TrainConfig:
    """The training run of the probe (seq 64, batch 16, lr 5e-3 cosine to 5e-4)."""
    return TrainConfig(preset="tiny", model_overrides=PROBE_MODEL, seq_len=64, micro_batch_size=16, max_steps=steps,
                       lr=5e-3, min_lr=5e-4, warmup_steps=20, eval_interval=10**6, checkpoint_interval=10**6,
                       fim_rate=fim_rate, fim_spm_rate=0.0, seed=seed)


def compare(root: Path, steps: int, seed: int = 0) -> dict[str, float]:
    """Train with FIM and without, same data and steps; {"fim": EM, "no_fim": EM} on the held-out documents."""
    from codefoundry.tokenizer import TokenizerTrainConfig, train_tokenizer
    from codefoundry.train import pack, train

    root = Path(root)
    train_docs, held_out = split_documents(seed=seed)
    dataset = write_dataset(root / "dataset", train_docs)
    tok = train_tokenizer(dataset, root / "tokenizer", TokenizerTrainConfig(vocab_size=512, byte_budget=5_000_000))
    tokens = pack(dataset, tok, root / "tokens", PackConfig(workers=1, seed=seed))
    result = {}
    for name, rate in (("fim", PROBE_FIM_RATE), ("no_fim", 0.0)):
        model_dir = train(root / name, tok, tokens=tokens, config=probe_config(steps, rate, seed))
        result[name], _ = fim_exact_match(model_dir, held_out)
    return result
