"""Where PII can be: one cheap pass over a file decides which lines each detector reads.

Most source lines hold nothing a detector could match, and a regex that scans every line of
every file is where the time went (an IPv4 pattern tries every digit, a hint alternation every
`p`, `s`, `t`, `k`, `a` …). Instead the file is mapped once to a byte string of character classes
(`bytes.translate`, one byte per character: the text's offsets stay valid), and C-speed
substring searches find the lines with

- `digit.digit`                 an IPv4 address can be there
- `:` + ≤ 4 hex digits + `:`    an IPv6 address can be there (the seed `_ipv6_windows` grows)
- 32 lowercase hex digits in a row  Twilio and Mailchimp keys can be there
- a secret word, `://`, `-u`, `-p`, `redis-cli` (lower-cased)  a named or positional credential

Each set is a superset of the lines its detector would match on, and every detector's
patterns stay within a line, so the spans found are the same as a scan of the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cached_property

_DIGITS = b"0123456789"
_HEX = b"0123456789abcdefABCDEF"
_LOWER_HEX = b"0123456789abcdef"


def _table(mapping: dict[bytes, bytes]) -> bytes:
    table = bytearray(b" " * 256)
    for chars, cls in mapping.items():
        for c in chars:
            table[c] = cls[0]
    table[ord("\n")] = ord("\n")
    return bytes(table)


IP_CLASSES = _table({_DIGITS: b"0", b".": b".", b":": b":", b"abcdefABCDEF": b"h"})
"""digits → 0, other hex letters → h, `.` and `:` as they are, newline kept, the rest → space."""
LOWER_HEX_CLASSES = _table({_LOWER_HEX: b"x"})
IPV6_SEED = re.compile(rb":[0h]{0,4}:")
HEX32 = b"x" * 32
HINTS = ("pass", "pwd", "secret", "token", "key", "credential", "auth", "://", "-u", "-p", "redis-cli")
"""NAME_HINT's alternatives (detect.py): a line without one has no named or positional credential."""


class Prefilter:
    """The candidate lines of one text, computed on first use."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def raw(self) -> bytes:
        """One byte per character: ASCII as it is, anything else as "?" (offsets equal the text's); made on first use
        (the detectors the gates leave a text may need none of it)."""
        return self.text.encode("ascii", "replace") if not self.text.isascii() else self.text.encode("ascii")

    @cached_property
    def ip_classes(self) -> bytes:
        return self.raw.translate(IP_CLASSES)

    def line(self, pos: int) -> tuple[int, int]:
        """(start, end) of the line holding `pos`, end at its newline (excluded)."""
        start = self.raw.rfind(b"\n", 0, pos) + 1
        end = self.raw.find(b"\n", pos)
        return start, len(self.raw) if end < 0 else end

    def _lines_with(self, haystack: bytes | str, needles: Iterable[bytes | str]) -> list[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        for needle in needles:
            i = haystack.find(needle)  # type: ignore[arg-type]
            while i >= 0:
                bounds = self.line(i)
                found.add(bounds)
                i = haystack.find(needle, bounds[1] + 1)  # type: ignore[arg-type]
        return sorted(found)

    def ipv4_lines(self) -> list[tuple[int, int]]:
        """Lines with a digit, a dot and a digit in a row."""
        classes = self.ip_classes
        return self._lines_with(classes, [b"0.0"]) if b"0.0" in classes else []

    def ipv6_seeds(self) -> Iterator[tuple[int, int]]:
        """(start, end) of each `:hhhh:` seed, as `:[0-9A-Fa-f]{0,4}:` would find them in the text."""
        if b":" not in self.raw:
            return
        for m in IPV6_SEED.finditer(self.ip_classes):
            yield m.start(), m.end()

    def has_hex32(self) -> bool:
        """Whether 32 lowercase hex digits stand in a row somewhere (Twilio, Mailchimp keys need them)."""
        return HEX32 in self.raw.translate(LOWER_HEX_CLASSES)

    def hint_lines(self, lower: str) -> list[tuple[int, int]]:
        """Lines holding a secret word or a positional marker, found in the lower-cased text (same length)."""
        return self._lines_with(lower, HINTS)
