"""Incremental detokenization with TGI's prefix/read offsets (`text_generation_server/models/model.py`).

Byte-level BPE splits multi-byte characters across tokens, and some tokenizers change how a
token reads depending on its left neighbour, so a token's text is not `decode([token])`.
Each step decodes a short window twice:

    ids       … p p p p p r r n          prefix_offset ──┐       read_offset ──┐
    prefix_text = decode(ids[prefix_offset:read_offset])                        │
    new_text    = decode(ids[prefix_offset:])                                   │
    emit new_text[len(prefix_text):] — unless it ends in U+FFFD (an incomplete character):
    then emit nothing and wait for the next token.

`skip_special_tokens=True` (the default) leaves special tokens out of the emitted text. The
engine keeps them (False), as TGI's `decode_token` does, so each token's details show its
text, and leaves special tokens' pieces out of the generated text itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLACEMENT = "\ufffd"
PREFIX_WINDOW = 5   # TGI starts prefix_offset 5 tokens before the end of the prompt


class IncrementalDetokenizer:
    """Turns one sequence's generated token ids into text, a complete character at a time."""

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int], skip_special_tokens: bool = True) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)   # HF fast tokenizer → tokenizers.Tokenizer
        self._decode = backend.decode
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = list(prompt_ids)
        self.prefix_offset = max(0, len(self.ids) - PREFIX_WINDOW)
        self.read_offset = len(self.ids)
        self.text = ""          # everything emitted so far

    def _window(self, start: int, end: int | None = None) -> str:
        return self._decode(self.ids[start:end], skip_special_tokens=self.skip_special_tokens)

    def add(self, token_id: int) -> str:
        """Append one token; return the text that is now complete (maybe "")."""
        self.ids.append(token_id)
        prefix_text = self._window(self.prefix_offset, self.read_offset)
        new_text = self._window(self.prefix_offset)
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            delta = new_text[len(prefix_text):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end of a sequence: whatever is still held back (an unfinished character reads as U+FFFD)."""
        prefix_text = self._window(self.prefix_offset, self.read_offset)
        new_text = self._window(self.prefix_offset)
        delta = new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""
        self.prefix_offset = self.read_offset = len(self.ids)
        self.text += delta
        return delta
