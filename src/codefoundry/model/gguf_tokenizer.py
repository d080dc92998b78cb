"""Tokenizers between GGUF metadata (`tokenizer.ggml.*`) and HF `tokenizer.json`.

llama.cpp stores a byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`) as its token
list, token types, merges, special ids, and a pre-tokenizer name (`tokenizer.ggml.pre`) that
stands for a splitting regex hard-coded in llama.cpp. Both directions map those names to the
`tokenizers` pre-tokenizers with the same splits:

    pre                                   tokenizer.json pre_tokenizer
    smollm, starcoder, refact, codeshell  Sequence[Digits(individual), ByteLevel(regex)]   (codefoundry's own)
    gpt2                                  ByteLevel(regex)
    llama-bpe                             Sequence[Split(Llama 3 regex), ByteLevel(no regex)]

Token types (llama.cpp `LLAMA_TOKEN_TYPE_*`): 1 normal, 3 control (a special added token),
4 user-defined (a non-special added token), 5 unused (the `[PAD<i>]` rows of a padded
embedding, left out of tokenizer.json so they are never sampled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from codefoundry.atomic import atomic_write_json
from codefoundry.errors import ArtifactError

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DIGITS_THEN_GPT2 = ("smollm", "starcoder", "refact", "codeshell")
SUPPORTED_PRE = (*DIGITS_THEN_GPT2, "gpt-2", "llama-bpe")
# HF's name of a special token → llama.cpp's `tokenizer.ggml.<name>_token_id`
GGUF_ID_KEYS = {"bos": "bos", "eos": "eos", "unk": "unknown", "pad": "padding"}


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    if pre in DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre in ("gpt-2", "gpt2"):     # "gpt-2" is llama.cpp's name; files written as "gpt2" still import
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "llama-bpe":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raise ArtifactError(f"GGUF tokenizer.ggml.pre {pre!r} is not supported; supported: {', '.join(SUPPORTED_PRE)}")


def write_tokenizer_from_gguf(meta: dict[str, Any], out_dir: Path, context_length: int | None) -> None:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ArtifactError(f"GGUF tokenizer.ggml.model {kind!r} is not supported; supported: 'gpt2' "
                            "(byte-level BPE)")
    tokens, types, merges = (meta.get(f"tokenizer.ggml.{k}") for k in ("tokens", "token_type", "merges"))
    if not isinstance(tokens, list) or not tokens or not isinstance(merges, list):
        raise ArtifactError("GGUF file has no tokenizer.ggml.tokens / tokenizer.ggml.merges arrays")
    types = types if isinstance(types, list) and len(types) == len(tokens) else [NORMAL] * len(tokens)
    pre = str(meta.get("tokenizer.ggml.pre", "gpt-2"))
    vocab = {tok: i for i, (tok, ty) in enumerate(zip(tokens, types, strict=True)) if ty != UNUSED}
    if len(vocab) != sum(ty != UNUSED for ty in types):
        raise ArtifactError("GGUF tokenizer.ggml.tokens holds duplicate tokens")
    pairs = []
    for m in merges:
        left, sep, right = str(m).partition(" ")
        if not sep:
            raise ArtifactError(f"GGUF tokenizer.ggml.merges entry {m!r} is not 'left right'")
        pairs.append((left, right))
    if not all(isinstance(t, str) for t in tokens):
        raise ArtifactError("GGUF tokenizer.ggml.tokens holds values that are not strings")
    try:
        bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre == "llama-bpe")
    except Exception as e:  # the tokenizers library raises plain Exception (a merge of tokens not in the vocab)
        raise ArtifactError(f"GGUF tokenizer is inconsistent: {e}") from None
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types, strict=True) if ty == USER_DEFINED])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types, strict=True) if ty == CONTROL])

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{GGUF_ID_KEYS[key]}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    bos = token("bos")
    if meta.get("tokenizer.ggml.add_bos_token") and bos in vocab:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, vocab[bos])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    special: dict[str, Any] = {f"{k}_token": token(k) for k in GGUF_ID_KEYS if token(k) is not None}
    named = set(special.values())
    special["additional_special_tokens"] = [t for t, ty in zip(tokens, types, strict=True)
                                            if ty == CONTROL and t not in named]
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                              "gguf_pre": pre, **special}
    if context_length:
        config["model_max_length"] = context_length
    if isinstance(meta.get("tokenizer.chat_template"), str):
        config["chat_template"] = meta["tokenizer.chat_template"]
    atomic_write_json(out_dir / "tokenizer_config.json", config)
    atomic_write_json(out_dir / "special_tokens_map.json", special)


def gguf_tokenizer_metadata(model_dir: Path, vocab_size: int) -> dict[str, Any]:
    """The `tokenizer.ggml.*` values (and chat template) of the tokenizer in `model_dir`, padded to `vocab_size`."""
    from codefoundry.tokenizer import load_tokenizer

    hf = load_tokenizer(model_dir)
    data = json.loads(hf.backend_tokenizer.to_str())
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ArtifactError(f"{model_dir}: a {model.get('type')} tokenizer cannot be exported; GGUF export "
                            "supports byte-level BPE")
    vocab: dict[str, int] = model["vocab"]
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    size = max([*vocab.values(), *added.keys()]) + 1
    if size > vocab_size:
        raise ArtifactError(f"{model_dir}: the tokenizer has {size} tokens but the model's vocab_size is {vocab_size}")
    # llama.cpp's convention for the rows of a padded embedding: unused "[PAD<i>]" tokens
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [UNUSED] * vocab_size
    for t, i in vocab.items():
        tokens[i], types[i] = t, NORMAL
    for i, t in added.items():
        tokens[i], types[i] = t["content"], CONTROL if t.get("special") else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    meta: dict[str, Any] = {"model": "gpt2", "pre": config.get("gguf_pre") or _pre_name(data.get("pre_tokenizer")),
                            "tokens": tokens, "token_type": types, "merges": merges,
                            "add_bos_token": (data.get("post_processor") or {}).get("type") == "TemplateProcessing",
                            "chat_template": hf.chat_template if isinstance(hf.chat_template, str) else None}
    for key, gguf_key in GGUF_ID_KEYS.items():
        meta[f"{gguf_key}_token_id"] = getattr(hf, f"{key}_token_id", None)
    return meta


def _pre_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's `tokenizer.ggml.pre` name for a tokenizer.json pre_tokenizer (see the module docstring)."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [s.get("type") for s in steps]
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "starcoder"
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"                  # llama.cpp's pre-tokenizer name ("gpt2" is only a tokenizer.ggml.model)
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == LLAMA3_REGEX:
        return "llama-bpe"
    raise ArtifactError(f"tokenizer.json's pre_tokenizer {kinds} has no llama.cpp equivalent; supported: digits + "
                        "byte-level (starcoder), byte-level (gpt2), Llama 3's split (llama-bpe)")
