"""Find PII in code: emails, IP addresses, keys and passwords (bigcode-dataset `pii/`, regex path, no NER).

Every detector returns `Span(start, end, kind, value, rule)` over the text; `find_pii` merges them
(keys win over the others on overlap). False-positive rules follow BigCode where it had them:
- IPs: private/reserved ranges, BigCode's popular DNS servers, version-like `x.x.x.x` with no
  "dns"/"server" within 100 characters, date-like strings, strings without a digit.
- keys with a vendor shape (`vendors.py`: AWS, GitHub, Slack, Stripe, npm, Mailgun, …) and
  private-key blocks (BigCode left detect-secrets' PrivateKey plugin off): dropped only when
  they are placeholders (`AKIA…EXAMPLE`, `ghp_xxxx…`). BigCode ran its ID-string and gibberish
  filters on these too, and so kept `AWS_ACCESS_KEY_ID = "AKIA…"` (an `…_ID` name) and real keys
  whose letters read like English; detect-secrets itself exempts its regex plugins from the first.
- generic high-entropy strings (detect-secrets' base64/hex plugins, BigCode's limits): UUIDs,
  `is_likely_id_string`, templates, sequences, hashes (a line naming sha/md5/hash/digest…),
  hash-heavy files, and the gibberish check (letters that read like English are not a key).
- credentials by position (`assignments.py`, BigCode's Keyword plugin was off): secret-named
  assignments, quoted or unquoted (`.env`, `export`, YAML, INI, Dockerfile `ENV`), URL
  passwords, connection strings, `curl -u`, `mysql -p`, `--password` flags, `Authorization`
  headers; placeholders and template references (`${DB_PASSWORD}`, `<your-key-here>`) stay.
- every value found is also redacted wherever else it occurs in the same file.
- emails: placeholder domains (example.com, test, localhost, …), `git@host` remotes and a URL's
  user-info (`https://deploy@host`) are skipped.
"""

from __future__ import annotations

import bisect
import importlib
import ipaddress
import math
import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from codefoundry.data.pii.assignments import assigned_secrets
from codefoundry.data.pii.gates import EVERYWHERE, Candidates
from codefoundry.data.pii.gibberish import detector
from codefoundry.data.pii.prefilter import HINTS, Prefilter
from codefoundry.data.pii.values import is_placeholder, is_sequential
from codefoundry.data.pii.vendors import private_keys, vendor_matches

EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})@"
                   r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})(?![\w-])")
LOCAL_TAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}$")
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "example", "test", "localhost", "invalid",
                       "domain.com", "email.com", "yourdomain.com", "company.com", "foo.com", "bar.com", "xxx.com")
PLACEHOLDER_USERS = {"git", "noreply", "no-reply", "user", "username", "name", "your", "youremail", "email", "foo",
                     "someone", "xxx", "test", "john.doe", "jane.doe"}

IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.])")  # candidates; ipaddress decides
# every IPv6 address has two colons with at most 4 hex digits between them: Prefilter.ipv6_seeds finds these
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|::)[0-9A-Fa-f:]{2,37}(?<![^:]:)(?![\w:])")
POPULAR_DNS = {"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "76.76.19.19", "76.223.122.150", "9.9.9.9",
               "149.112.112.112", "208.67.222.222", "208.67.220.220", "8.26.56.26", "8.20.247.20", "94.140.14.14",
               "94.140.15.15"}  # bigcode-dataset pii/utils/emails_ip_addresses_detection.py
IP_CHARS = frozenset("0123456789abcdefABCDEF:.")
WORD_CHAR = re.compile(r"\w")
DATE = re.compile(r"^(?:(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d)\b")
VERSION = re.compile(r"^\d\.\d\.\d\.\d$")

HEX = re.compile(r"[0-9a-fA-F]+")
HASH_WORDS = re.compile(r"sha|md5|hash|byte|checksum|digest|integrity|fingerprint", re.I)
HASH_LINE = re.compile(r"sha|hash", re.I)
# lines with a quoted token of 16+ characters holding a digit are scanned (detect-secrets reads quoted strings only)
KEY_CANDIDATE = re.compile(r"[\"'][A-Za-z0-9+/=_\\\-]{16,}[\"']")
DIGIT = re.compile(r"\d")
NAME_HINT = re.compile(r"pass|pwd|secret|token|key|credential|auth|://|-u|-p|redis-cli")  # on the lower-cased text
NAME_HINT_ANY_CASE = re.compile(NAME_HINT.pattern, re.I)  # where lower-casing changes the length (`İ` → `i̇`)
REPEAT_MIN = 6  # shorter values are not looked for elsewhere in the file: too many innocent matches


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str    # email | ip_address | key | password
    value: str
    rule: str = ""  # the detector that found it: a vendor pattern, "high_entropy_base64", "assignment", …


def _url_userinfo(text: str, start: int) -> bool:
    """Whether the local part starting at `start` is a URL's user-info (`https://user@host`, `://u:pw@host`)."""
    i = text.rfind("://", max(0, start - 200), start)
    return i >= 0 and not any(c.isspace() or c in "/\"'<>" for c in text[i + 3:start])


def emails(text: str) -> Iterator[Span]:
    at = text.find("@")
    while at >= 0:  # anchored on "@": the pattern is tried only where it can match
        m = None
        left = LOCAL_TAIL.search(text, max(0, at - 64), at)
        if left is not None:
            m = EMAIL.match(text, left.start())
        if m is not None and m.start(2) == at + 1 and not _url_userinfo(text, m.start()):
            user, domain = m.group(1).lower(), m.group(2).lower()
            if user not in PLACEHOLDER_USERS and not any(domain == d or domain.endswith("." + d)
                                                         for d in PLACEHOLDER_DOMAINS):
                yield Span(m.start(), m.end(), "email", m.group(0), "email")
        at = text.find("@", at + 1)


def _ip_ok(text: str, start: int, end: int, value: str) -> bool:
    if not any(c.isdigit() for c in value) or DATE.match(value):
        return False
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    if not ip.is_global or value in POPULAR_DNS:
        return False
    if VERSION.match(value):
        context = text[max(0, start - 100):end + 100].lower()
        return "dns" in context or "server" in context
    return True


def _ipv6_windows(text: str, pre: Prefilter) -> Iterator[tuple[int, int]]:
    """Stretches of hex digits, colons and dots around each `:…:` seed: where an IPv6 address can be."""
    end = 0
    for seed_start, seed_end in pre.ipv6_seeds():
        if seed_start < end:
            continue
        start = seed_start
        while start and text[start - 1] in IP_CHARS:
            start -= 1
        end = seed_end
        while end < len(text) and text[end] in IP_CHARS:
            end += 1
        yield start, end


def ip_addresses(text: str, pre: Prefilter | None = None) -> Iterator[Span]:
    pre = pre or Prefilter(text)
    for line_start, line_end in pre.ipv4_lines():  # the pattern stays within a line
        for m in IPV4.finditer(text, line_start, line_end):
            value = m.group(0)
            if m.start() and (text[m.start() - 1] == "." or WORD_CHAR.match(text, m.start() - 1)):
                continue  # inside a longer dotted number or a word
            if _ip_ok(text, m.start(), m.end(), value):
                yield Span(m.start(), m.end(), "ip_address", value, "ip_address")
    for start, end in _ipv6_windows(text, pre):
        for m in IPV6.finditer(text, start, end):
            value = m.group(0)
            if value.count(":") < 2 or len(value) < 7:
                continue
            if _ip_ok(text, m.start(), m.end(), value):
                yield Span(m.start(), m.end(), "ip_address", value, "ip_address")


class _DeferredModule(types.ModuleType):
    """Stands in for a module while another package imports it: the first use of one of its attributes imports the
    real module (which then replaces this one in `sys.modules`) and answers from it."""

    def __getattr__(self, name: str) -> Any:  # only for names a module object lacks: `__spec__` is None here
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


@contextmanager
def _deferred(name: str) -> Iterator[None]:
    """Within the block, `import name` gives a `_DeferredModule`; afterwards, the real module again."""
    if name in sys.modules:
        yield
        return
    stand_in = _DeferredModule(name)
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]


def _import_detect_secrets() -> None:
    """Import detect-secrets without `requests`: its plugins import requests at module level, but only their network
    verification (never called here) uses it, and requests with urllib3, idna and charset_normalizer cost more to
    import (~0.07 s) than detect-secrets itself. What it imports stands in for requests until first used."""
    with _deferred("requests"):
        importlib.import_module("detect_secrets.plugins.high_entropy_strings")
        importlib.import_module("detect_secrets.filters.heuristic")


@cache
def _entropy_plugins() -> tuple[list[Any], Any]:
    _import_detect_secrets()
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString

    return [Base64HighEntropyString(limit=4.5), HexHighEntropyString(limit=3.0)], detector()  # bigcode-dataset limits


def _plugin_strings(plugin: Any, line: str) -> list[str]:
    """What `plugin.analyze_line(…)` reports for `line` (its quoted strings above its entropy limit, each once),
    without building detect-secrets' `PotentialSecret` records: the plugin's own regex and entropy, and first a
    bound that skips most strings (a string of k distinct characters has at most log2(k) bits per character)."""
    found: dict[str, None] = {}
    for match in plugin.regex.findall(line):
        value = match[1] if isinstance(match, tuple) else match
        if value in found or math.log2(len(set(value))) <= plugin.entropy_limit:
            continue
        if plugin.calculate_shannon_entropy(value) > plugin.entropy_limit:
            found[value] = None
    return list(found)


def _generic_false_positive(value: str, line: str) -> bool:
    """BigCode's filters for a high-entropy string with no vendor prefix: UUIDs, templates, sequences, IDs
    (`user_id = "…"`), hashes (on a line naming sha/md5/hash/digest…)."""
    from detect_secrets.filters.heuristic import is_likely_id_string, is_potential_uuid, is_templated_secret

    if is_potential_uuid(value) or is_templated_secret(value) or is_sequential(value) or is_placeholder(value):
        return True
    return is_likely_id_string(value, line) or bool(HASH_WORDS.search(line))


def _line_bounds(text: str, pos: int) -> tuple[int, int]:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return start, (len(text) if end < 0 else end)


def _high_entropy(text: str, lines: list[tuple[int, int]]) -> Iterator[Span]:
    """detect-secrets' base64 and hex high-entropy strings (quoted literals), with BigCode's filters and gibberish
    check; skipped in hash-heavy files (lock files, checksum lists)."""
    plugins, gib = _entropy_plugins()
    hash_heavy: bool | None = None
    for start, end in lines:
        line = text[start:end]
        for plugin in plugins:
            for value in _plugin_strings(plugin, line):
                if len(value) <= 8 or len(value) > 100 or "base64," in line:
                    continue
                if not HEX.fullmatch(value) and not gib.is_gibberish(value):
                    continue
                if _generic_false_positive(value, line):
                    continue
                if hash_heavy is None:
                    hash_lines = {text.rfind("\n", 0, m.start()) for m in HASH_LINE.finditer(text)}
                    hash_heavy = len(hash_lines) > 0.02 * (text.count("\n") + 1)
                if hash_heavy:
                    return
                rule = "high_entropy_hex" if HEX.fullmatch(value) else "high_entropy_base64"
                i = line.find(value)
                while i >= 0:
                    yield Span(start + i, start + i + len(value), "key", value, rule)
                    i = line.find(value, i + len(value))


def _repeats(text: str, spans: list[Span]) -> Iterator[Span]:
    """Every other occurrence of a secret value found in this file, as a whole token."""
    for value, kind in {s.value: s.kind for s in spans if len(s.value) >= REPEAT_MIN and "\n" not in s.value}.items():
        i = text.find(value)
        while i >= 0:
            j = i + len(value)
            if not (i and text[i - 1].isalnum() and value[0].isalnum()) and \
                    not (j < len(text) and text[j].isalnum() and value[-1].isalnum()):
                yield Span(i, j, kind, value, "repeated")
            i = text.find(value, j)


def secrets(text: str, pre: Prefilter | None = None, where: Candidates = EVERYWHERE) -> Iterator[Span]:
    """Keys and passwords: vendor patterns and private-key blocks (whole text), high-entropy strings (lines with a
    quoted 16+-character token holding a digit), named assignments and positional forms (lines with a secret word,
    `://`, `-u`, `-p`), then every other occurrence of each value found. `where` (`gates.candidates`) names the
    detectors that can find anything in `text`, and the lines the line-reading ones need to read."""
    pre = pre or Prefilter(text)
    found: list[Span] = []
    gates = where.detectors
    if "vendor" in gates:
        found += [Span(s, e, "key", text[s:e], name) for name, s, e in vendor_matches(text, pre, where.vendors)
                  if not is_placeholder(text[s:e])]
    if "private_key" in gates:
        found += [Span(s, e, "key", text[s:e], "private_key") for s, e in private_keys(text)]
    if "high_entropy" in gates:
        found += _high_entropy(text, _key_candidate_lines(text, where.lines_for("high_entropy")))
    if "assignment" in gates:
        found += _assignments(text, pre, where.lines_for("assignment"))
    yield from found
    yield from _repeats(text, found)


def _key_candidate_lines(text: str, lines: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The lines with a quoted 16+-character token holding a digit, among `lines` (None: all of them). A token never
    spans lines, so the tokens that `finditer` finds in a line are those it finds there in the whole text."""
    if lines is None:
        return sorted({_line_bounds(text, m.start()) for m in KEY_CANDIDATE.finditer(text)
                       if DIGIT.search(text, m.start(), m.end())})
    return [(start, end) for start, end in lines
            if any(DIGIT.search(text, m.start(), m.end()) for m in KEY_CANDIDATE.finditer(text, start, end))]


def _hinted(line: str, same_length: bool) -> bool:
    """Whether `line` holds a secret word or positional marker, as `Prefilter.hint_lines` finds them."""
    if same_length:
        lower = line.lower()
        return any(hint in lower for hint in HINTS)
    return NAME_HINT_ANY_CASE.search(line) is not None


def _assignments(text: str, pre: Prefilter, lines: list[tuple[int, int]] | None = None) -> Iterator[Span]:
    """Named assignments and positional forms on the lines with a secret word, `://`, `-u`, `-p` (among `lines`, the
    lines where they can be; None: all)."""
    if lines is not None:
        same_length = text.isascii() or len(text.lower()) == len(text)
        hinted = [(start, end) for start, end in lines if end - start <= 2000 and _hinted(text[start:end], same_length)]
    else:
        lower = text.lower()  # a search of the lower-cased text is much faster than a case-insensitive one
        if len(lower) == len(text):
            hinted = pre.hint_lines(lower)
        else:
            hinted = sorted({_line_bounds(text, m.start()) for m in NAME_HINT_ANY_CASE.finditer(text)})
    for start, end in hinted:
        if end - start <= 2000:
            for rule, kind, s, e in assigned_secrets(text[start:end]):
                yield Span(start + s, start + e, kind, text[start + s:start + e], rule)


PRIORITY = {"key": 0, "password": 1, "email": 2, "ip_address": 3}


def find_pii(text: str, kinds: frozenset[str] = frozenset(PRIORITY), where: Candidates = EVERYWHERE) -> list[Span]:
    """Non-overlapping PII spans, in text order; on overlap the higher-priority kind (key first) wins.
    `where`: the secret detectors that can find anything in `text`, and where (`gates.candidates` decides it for a
    whole batch at once)."""
    spans: list[Span] = []
    pre = Prefilter(text)  # one pass decides which lines the IP, key and credential detectors read
    if "email" in kinds and "email" in where.detectors:
        spans += emails(text)
    if "ip_address" in kinds and "ip_address" in where.detectors:
        spans += ip_addresses(text, pre)
    if kinds & {"key", "password"}:
        spans += [s for s in secrets(text, pre, where) if s.kind in kinds]
    spans.sort(key=lambda s: (PRIORITY[s.kind], s.start, -s.end))
    chosen: list[Span] = []  # in text order, non-overlapping: a new span only meets its two neighbours
    starts: list[int] = []
    for s in spans:
        i = bisect.bisect_right(starts, s.start)
        if (i == 0 or chosen[i - 1].end <= s.start) and (i == len(chosen) or s.end <= chosen[i].start):
            chosen.insert(i, s)
            starts.insert(i, s.start)
    return chosen
