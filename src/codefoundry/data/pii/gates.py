"""Which texts of a batch each secret detector can find anything in: one RE2 scan per detector over the whole batch.

Most files hold no vendor key, no private key, no quoted 16-character token and no credential
assignment; Python's regex engine and the per-line loops cost the same on those files as on the
others. RE2 (`google-re2`: a DFA, one pass, no backtracking; compiled once per process) scans the
batch's texts joined by newlines, so a pattern that is a *superset* of what a detector can report
tells which texts the detector may skip. Each gate is written so that a text it rejects is one where the detector
yields nothing:

- lookarounds are dropped (RE2 has none; without them a pattern matches more, never less);
- Python's `\\d` and `\\w` are Unicode: "ASCII digits (word characters) or any non-ASCII" stand for
  them; Python's `\\s` is Unicode, so a class `[^\\s…]` becomes `[^\\n…]` (more chars);
- case-insensitive words are spelled with every character that Python's `re.I` or `str.lower()`
  equates with a letter (the Kelvin sign U+212A for k, `ſ` for s, `İ` and `ı` for i), which RE2's own
  `(?i)` misses in part;
- bounded parts (`{1,500}?`, a back-reference to the opening quote) are relaxed.

The detectors then run as before on the texts a gate lets through, so their spans are unchanged
(`tests/data/test_pii_gates.py` compares gated and ungated results).
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import re2

# every character that Python's case-insensitive matching or `str.lower()` equates with a lowercase ASCII letter
_FOLDS = {"i": "iI\u0130\u0131", "k": "kK\u212a", "s": "sS\u017f"}  # İ ı, Kelvin sign, long s


def fold(word: str) -> str:
    """`word` as an RE2 pattern matching it in any case, Python's way (`fold("sas")` → `[sSſ][aA][sSſ]`)."""
    return "".join(f"[{_FOLDS.get(c, c + c.upper())}]" if c.isalpha() else re.escape(c) for c in word)


def _words(*words: str) -> str:
    return "(?:" + "|".join(fold(w) for w in words) + ")"


DIGIT = r"0-9\x{80}-\x{10FFFF}"
r"""Python's Unicode `\d` inside an RE2 class: ASCII digits and any non-ASCII character (a class of every
Unicode digit, `\p{Nd}`, makes RE2 compile a large program, and it compiles anew for every batch)."""

# What every match of each vendor pattern (vendors.py) contains. A pattern led by a literal is cheap for RE2 (it
# skips ahead to the literal), an alternation of literals costs one DFA pass, and counted classes (`{32}`) in an
# alternation multiply its states: so the literals go in one pattern and the three shapes without a distinctive
# literal get their own.
VENDOR_ANCHORS: dict[str, str] = {
    "aws_access_key_id": "A3T|ABIA|ACCA|AKIA|ASIA",
    "github": "gh[pousr]_",
    "github_fine_grained": "github_pat_",
    "gitlab": "gl(?:pat|dt|ft|soat|rt|cbt|ptt|imt)-",
    "slack": "xox[abposre]-",
    "slack_app": "xapp-",
    "slack_webhook": r"hooks\.slack\.com",
    "stripe": "k_live_",
    "sendgrid": r"SG\.",
    "npm": "npm_|_authToken=",
    "pypi": "pypi-Ag",
    "mailgun": "key-",
    "mailchimp": "-us[0-9]",
    "twilio": "AC[0-9a-f]{32}",  # and SK…: see VENDOR_SHAPES
    "google_api_key": "AIza",
    "openai": "T3BlbkFJ",
    "anthropic": "sk-ant-",
    "huggingface": "hf_",
    "discord_webhook": "/api/webhooks/",
    "discord": rf"\.[A-Za-z{DIGIT}_\-]{{6}}\.[A-Za-z{DIGIT}_\-]{{27}}",
    "telegram": ":AA",
    "jwt": "eyJ",
    "azure_storage": "AccountKey=",
    "artifactory": f"AKC|AP[{DIGIT}A-F]",
    "square": "sq0(?:csp|atp)-",
}
VENDOR_SHAPES = ("twilio", "discord")
"""Vendor anchors with a counted class: tested on their own (twilio's two prefixes apart, each a literal lead)."""
VENDOR_GATE = ("|".join(v for k, v in VENDOR_ANCHORS.items() if k not in VENDOR_SHAPES),
               VENDOR_ANCHORS["twilio"], "SK[0-9a-f]{32}", VENDOR_ANCHORS["discord"])


NAME_CHAR = r"[^\x00-\x2c\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
"""Python's `[\\w.\\-]` in a name: ASCII letters, digits, `_`, `.`, `-`, and (more than needed) any non-ASCII."""
SECRET_WORD = _words("pass", "pwd", "secret", "token", "key", "credential", "auth", "psk", "sas")
"""assignments.SECRET_WORD, searched in a lower-cased name: what a name needs for the quoted-value form."""
NAME_KIND_WORD = _words("pass", "pw", "secret", "token", "key", "credential", "psk", "sas", "contrasena", "senha")
"""What a name needs for `assignments.name_kind` to call it a credential: one of its parts is a password word
(pass…, pw…, contrasena, senha), a secret word (secret, token, …key, credential, psk, sas) or a final `key`."""

# assignments.QUOTED_VALUE after a secret-named token (`…password = "…"`, `"token": '…'`, `api_key => "…"`); a
# value shorter than 4 characters is never a credential (assignments.value_ok)
_QUOTED = (SECRET_WORD + NAME_CHAR + r"*[\"'`]?\]?(?:[ \t]*:[ \t]*[A-Za-z_][^\n]*)?[ \t]*(?::=|=>|={1,3}|:|,)"
           r"[ \t]*(?:[rbuRB]{0,2}|new String\()[\"'`][^\"'`\n]{4,}[\"'`]")
# assignments.LINE and DOCKER_ENV: an unquoted `NAME=value`, `export NAME=value`, `name: value`, `ENV NAME value`;
# LINE's value is one token to the end of the line (or a `#` comment), and value_ok rejects one with a bracket
_LINE = (r"^[ \t]*(?:-[ \t]+)?(?:(?:export|set|setx|ENV|ARG|readonly|declare(?:[ \t]+-[^ \t\n]+)?)[ \t]+)?[\"']?"
         + NAME_CHAR + "*" + NAME_KIND_WORD + NAME_CHAR
         + r"*[\"']?[ \t]*[=:][ \t]*[^\s'\"`()\[\]{}<>][^\s()\[\]{}<>]*[ \t]*(?:[ \t]#[^\n]*)?$"
         + r"|^[ \t]*(?:ENV|setenv)[ \t]")
_XML = r"<[^<>\n]*" + NAME_KIND_WORD + r"[^<>\n]*>[^<\n]{4,}</"
# assignments.positional: URL user-info, connection strings, curl -u, .netrc, mysql/sshpass/redis-cli/docker -p,
# --password flags, Authorization headers
_POSITIONAL = "|".join([
    r"://[^:/@'\"<>\n]*:[^:/@'\"<>\n]+@",
    _words("password", "pwd") + r"[ \t]*=",
    r"(?:-u|--user)[ \t=]",
    r"password[ \t]",
    r"mysql[^\n]*-p",
    r"sshpass",
    r"redis-cli|docker",
    r"--(?:pass|token|api-key|apikey|secret|client-secret|auth-token)",
    fold("authorization"),
])

# detect-secrets' base64 and hex plugins report a quoted string only above their entropy limits (4.5 and 3.0 bits
# per character): a string of k distinct characters has at most log2(k) bits, so a reported string has 23+ (base64)
# or 9+ (hex) characters
_HIGH_ENTROPY = r"[\"'][A-Za-z0-9+/\\\-_=]{23,}[\"']|[\"'][0-9a-fA-F]{9,}[\"']"
_HIGH_ENTROPY_AFTER_QUOTE = r"(?:[A-Za-z0-9+/\\\-_=]{23,}[\"']|[0-9a-fA-F]{9,}[\"'])"
# detect.IPV4 (`\d` is Unicode) and detect.IPV6 (what it matches, before its look-arounds)
_IP = r"\.".join([f"[{DIGIT}]{{1,3}}"] * 4) + "|(?:[0-9A-Fa-f]{1,4}:|::)[0-9A-Fa-f:]{2}"

# detect.EMAIL, as `emails` anchors it on an "@": a local part's last character, the "@", then a domain label and
# its dot (ASCII classes in Python too: the pattern has no `\w`)
_EMAIL = r"[A-Za-z0-9._%+\-]@[A-Za-z0-9][A-Za-z0-9\-]*\.[A-Za-z0-9]"

GATES: dict[str, str | tuple[str, ...]] = {
    "email": _EMAIL,
    "vendor": VENDOR_GATE,
    "private_key": r"PRIVATE KEY|Private-Lines:",
    "high_entropy": _HIGH_ENTROPY,
    "assignment": "(?m)(?:" + "|".join([_QUOTED, _LINE, _XML, _POSITIONAL]) + ")",
    "ip_address": _IP,
}
"""Detector → RE2 pattern (or patterns) that every text it reports something in matches."""
LINE_GATED = ("high_entropy", "assignment")
"""Detectors that read single lines: their gate also picks the lines (these patterns stay within a line)."""
LINE_SCANS: dict[str, tuple[str, ...]] = {
    "high_entropy": ('"' + _HIGH_ENTROPY_AFTER_QUOTE, "'" + _HIGH_ENTROPY_AFTER_QUOTE),
    "assignment": (GATES["assignment"],),
}
"""Each line gate as patterns whose matched lines together are the gate's: a pattern led by one literal byte is
scanned with `memchr` between candidates (RE2's prefix acceleration), which a leading class (`["']`) prevents —
the high-entropy gate as two such scans costs ~0.4× its one scan."""

ALL = frozenset(GATES)
Line = tuple[int, int]


@dataclass(frozen=True)
class Candidates:
    """Where one text can hold something for each secret detector."""

    detectors: frozenset[str] = ALL
    """Detectors (keys of `GATES`) that may find something in the text; the others have nothing to read."""
    lines: dict[str, list[Line]] = field(default_factory=dict)
    """For `LINE_GATED` detectors whose gate ran: the (start, end) of the lines it matched, in text order."""

    vendors: frozenset[str] | None = None
    """The vendor patterns (keys of `VENDOR_ANCHORS`) whose anchor the text holds; None: all of them."""

    def lines_for(self, detector: str) -> list[Line] | None:
        """The lines `detector` needs to read; None: every line."""
        return self.lines.get(detector)


EVERYWHERE = Candidates()


@cache
def compiled() -> dict[str, tuple[re2._Regexp, ...]]:
    """Each gate compiled once per process (UTF-8 byte patterns): RE2 keeps its DFA states between batches, where
    Arrow's regex kernels compile the pattern and build the DFA anew for every call. A line-gated pattern is extended
    to its line's end, so that one match per line finds the lines holding one."""
    return {name: tuple(re2.compile(f"(?:{p})[^\n]*".encode() if name in LINE_GATED else p.encode())
                        for p in _patterns(pattern))
            for name, pattern in GATES.items()}


@cache
def any_text_gate() -> re2._Regexp:
    """Every pattern of the gates that pick texts (not lines), as one alternation: one scan finds the rows where any
    of them matches, and where the first match starts (none of them matches before it), where each gate's own scan
    of that row begins. One alternation costs about one pattern's scan; the patterns one by one cost each theirs."""
    return re2.compile("|".join(f"(?:{p})" for name, pattern in GATES.items() if name not in LINE_GATED
                                for p in _patterns(pattern)).encode())


def _vendor_anchor_patterns() -> dict[str, str]:
    return {**VENDOR_ANCHORS, "twilio": f"{VENDOR_ANCHORS['twilio']}|SK[0-9a-f]{{32}}"}


@cache
def vendor_anchors() -> dict[str, re2._Regexp]:
    """Each vendor pattern's anchor alone (twilio's two prefixes as one): on a text the vendor gate passed, which
    patterns can match there, so that the others are not run."""
    return {name: re2.compile(anchor.encode()) for name, anchor in _vendor_anchor_patterns().items()}


@dataclass(frozen=True)
class PatternSet:
    """Several patterns searched in one RE2 pass (`re2.Set`), each named: which of them match somewhere in a text.

    RE2's set search has no fallback when its DFA runs out of memory: it then reports no match. `names` is only
    called where at least one pattern is known to match, so an empty answer means that failure, and the patterns
    are then searched one by one."""

    patterns: tuple[tuple[str, re2._Regexp], ...]
    searcher: re2.Set

    @classmethod
    def of(cls, named: list[tuple[str, str]]) -> PatternSet:
        searcher = re2.Set.SearchSet()
        for _, pattern in named:
            searcher.Add(pattern.encode())
        searcher.Compile()
        return cls(tuple((name, re2.compile(pattern.encode())) for name, pattern in named), searcher)

    def names(self, text: bytes, start: int, end: int) -> frozenset[str]:
        """Names of the patterns matching within `text[start:end]`, where at least one of them matches."""
        found = self.searcher.Match(memoryview(text)[start:end])
        if found:
            return frozenset(self.patterns[i][0] for i in found)
        return frozenset(name for name, pattern in self.patterns if pattern.search(text, start, end) is not None)


@cache
def text_gate_set() -> PatternSet:
    """The patterns of the gates that pick texts, each named by its gate: on a row where `any_text_gate` matched,
    one pass tells which gates pass it."""
    return PatternSet.of([(name, p) for name, pattern in GATES.items() if name not in LINE_GATED
                          for p in _patterns(pattern)])


@cache
def vendor_anchor_set() -> PatternSet:
    """`vendor_anchors` in one pass: on a row the vendor gate passed (so at least one anchor is there)."""
    return PatternSet.of(list(_vendor_anchor_patterns().items()))


@cache
def line_scans() -> dict[str, tuple[re2._Regexp, ...]]:
    """`LINE_SCANS` compiled once per process, each extended to its line's end (one match per line)."""
    return {name: tuple(re2.compile(f"(?:{p})[^\n]*".encode()) for p in patterns)
            for name, patterns in LINE_SCANS.items()}


def _patterns(pattern: str | tuple[str, ...]) -> tuple[str, ...]:
    return (pattern,) if isinstance(pattern, str) else pattern


def _joined(column: pa.Array) -> tuple[bytes, list[int]]:
    """The rows' UTF-8 bytes joined by newlines (null as empty) and each row's start in them [n + 1].

    No gate pattern matches a newline, so a match in the joined bytes lies within one row; and `(?m)^`, `$` see a
    row's edges as a text's edges: the matches are those of each row searched alone."""
    if column.null_count:
        column = pc.fill_null(column, "")
    if pa.types.is_large_string(column.type):
        width = np.int64
    elif pa.types.is_string(column.type):
        width = np.int32
    else:
        raise TypeError(f"content must be strings, not {column.type}")
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=width, count=len(column) + 1,
                            offset=column.offset * width().itemsize).astype(np.int64)
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    bounds = offsets.tolist()
    joined = b"\n".join([data[lo:hi] for lo, hi in itertools.pairwise(bounds)])
    starts = offsets - offsets[0]
    starts += np.arange(len(starts))  # a newline after each row
    return joined, starts.tolist()


def _first_matches(pattern: re2._Regexp, joined: bytes, starts: list[int]) -> list[tuple[int, int]]:
    """(row, offset in `joined` where its first match starts) of the rows holding a match of `pattern`: one search per
    such row (after a match, the search goes on at the next row's start)."""
    found, pos = [], 0
    while (m := pattern.search(joined, pos)) is not None:
        row = bisect.bisect_right(starts, m.start()) - 1
        found.append((row, m.start()))
        pos = starts[row + 1]
    return found


def _line_starts(patterns: tuple[re2._Regexp, ...], joined: bytes, starts: list[int]) -> dict[int, list[int]]:
    """Row → the byte offsets (in the row, increasing) where the matches of line-extended `patterns` start: one per
    line and pattern (two patterns may both start a match in one line)."""
    found: dict[int, list[int]] = {}
    for pattern in patterns:
        row = 0
        for m in pattern.finditer(joined):
            at = m.start()
            if at >= starts[row + 1]:
                row = bisect.bisect_right(starts, at, row) - 1
            found.setdefault(row, []).append(at - starts[row])
    if len(patterns) > 1:
        found = {row: sorted(offsets) for row, offsets in found.items()}
    return found


def _matched_lines(text: str, raw: bytes, starts: list[int]) -> list[Line]:
    """The (start, end) of the lines of `text` holding the byte offsets `starts` (increasing), in characters; each line
    once."""
    if not text.isascii():  # byte offsets → character offsets, decoding each stretch between two starts once
        chars, last, pos = [], 0, 0
        for start in starts:
            pos += len(raw[last:start].decode("utf-8"))
            chars.append(pos)
            last = start
        starts = chars
    lines: list[Line] = []
    for start in starts:
        if lines and start <= lines[-1][1]:
            continue  # in the line before
        end = text.find("\n", start)
        lines.append((text.rfind("\n", 0, start) + 1, len(text) if end < 0 else end))
    return lines


def candidates(column: pa.Array | pa.ChunkedArray) -> dict[int, tuple[str, Candidates]]:
    """Row → (its text, where each detector may find something) for the rows of `column` where any detector may
    find something; the other rows hold nothing to redact (and are not converted to Python strings)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    joined, starts = _joined(column)
    detectors: dict[int, list[str]] = {}
    line_starts: dict[int, dict[str, list[int]]] = {}
    vendors: dict[int, frozenset[str]] = {}
    gates = compiled()
    scans = line_scans()
    for name in LINE_GATED:
        for row, found in _line_starts(scans[name], joined, starts).items():
            detectors.setdefault(row, []).append(name)
            line_starts.setdefault(row, {})[name] = found
    text_gates, anchors = text_gate_set(), vendor_anchor_set()
    for row, first in _first_matches(any_text_gate(), joined, starts):
        end = starts[row + 1] - 1
        passed = text_gates.names(joined, first, end)
        detectors.setdefault(row, []).extend(name for name in gates if name in passed)
        if "vendor" in passed:
            vendors[row] = anchors.names(joined, first, end)
    out = {}
    for row in sorted(detectors):
        raw = joined[starts[row]:starts[row + 1] - 1]
        text = raw.decode("utf-8")
        lines = {name: _matched_lines(text, raw, found) for name, found in line_starts.get(row, {}).items()}
        out[row] = (text, Candidates(frozenset(detectors[row]), lines, vendors.get(row)))
    return out
