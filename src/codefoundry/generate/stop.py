"""When a sequence stops, in TGI's order: `length`, then `eos_token`, then `stop_sequence`.

Stop sequences are matched on the decoded text, not on token ids, so a stop string split
across tokens ("Pa" + "ris") is found, and so is one that ends inside a token ("\\n\\n" in a
token "\\n\\ndef"); the output is then cut right after the stop string. As in TGI, the stop
string stays in the generated text (`Completion.stop_sequence` says which one it was).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from codefoundry.generate.params import FinishReason


@dataclass(frozen=True)
class Stop:
    reason: FinishReason
    keep_chars: int | None = None      # of the step's new text, how many characters to keep (None = all)
    stop_sequence: str | None = None   # which stop string matched


class StopChecker:
    """One sequence's stop rules. Call `check(token_id, new_text)` once per generated token."""

    def __init__(self, max_new_tokens: int, stop: Sequence[str] = (), eos_token_ids: Iterable[int] = (),
                 ignore_eos: bool = False) -> None:
        self.max_new_tokens = max_new_tokens
        self.stop = tuple(stop)
        self.eos_token_ids = frozenset() if ignore_eos else frozenset(eos_token_ids)
        self.generated = 0
        self._tail = ""        # the last (longest stop - 1) characters of text seen so far
        self._keep = max((len(s) for s in self.stop), default=1) - 1

    def check(self, token_id: int, new_text: str) -> Stop | None:
        """Account for one more generated token whose completed text is `new_text` (may be "")."""
        self.generated += 1
        if self.generated >= self.max_new_tokens:
            return Stop(FinishReason.LENGTH)
        if token_id in self.eos_token_ids:
            return Stop(FinishReason.EOS_TOKEN)
        if not self.stop or not new_text:
            return None
        window = self._tail + new_text
        best: tuple[int, str] | None = None      # (end of the match in window, stop string), earliest end wins
        for s in self.stop:
            # only matches that end inside the new text; earlier ones were seen by earlier calls
            at = window.find(s, max(0, len(self._tail) - len(s) + 1))
            if at >= 0 and (best is None or at + len(s) < best[0]):
                best = (at + len(s), s)
        if best is not None:
            return Stop(FinishReason.STOP_SEQUENCE, keep_chars=best[0] - len(self._tail), stop_sequence=best[1])
        self._tail = window[-self._keep:] if self._keep else ""
        return None
