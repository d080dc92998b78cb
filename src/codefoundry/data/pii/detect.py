"""Find PII in code: emails, IP addresses, keys and passwords (bigcode-dataset `pii/`, regex path, no NER).

Every detector returns `Span(start, end, kind, value)` over the text; `find_pii` merges them
(keys win over the others on overlap). False-positive rules follow BigCode where it had them:
- IPs: private/reserved ranges, BigCode's popular DNS servers, version-like `x.x.x.x` with no
  "dns"/"server" within 100 characters, date-like strings, strings without a digit.
- keys: detect-secrets with BigCode's plugin list, then `is_potential_uuid`,
  `is_likely_id_string`, `is_templated_secret`, `is_sequential_string`, hashes (length
  32/40/64 on a line naming sha/md5/hash/byte), hash-heavy files, and the gibberish check
  (for the high-entropy plugins; BigCode also ran it on vendor patterns such as `AKIA…`,
  where it dropped real keys whose letters happen to read like English).
- passwords (BigCode's Keyword plugin was off; added here): detect-secrets' KeywordDetector on
  lines naming a password, with the same filters and a list of placeholders.
- emails: placeholder domains (example.com, test, localhost, …) and `git@host` remotes are skipped.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from codefoundry.data.pii.gibberish import detector

EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})@"
                   r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})(?![\w-])")
LOCAL_TAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}$")
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "example", "test", "localhost", "invalid",
                       "domain.com", "email.com", "yourdomain.com", "company.com", "foo.com", "bar.com", "xxx.com")
PLACEHOLDER_USERS = {"git", "noreply", "no-reply", "user", "username", "name", "your", "youremail", "email", "foo",
                     "someone", "xxx", "test", "john.doe", "jane.doe"}

IPV4 = re.compile(r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.])")  # candidates; ipaddress decides
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}:|::)[0-9A-Fa-f:]{2,37}(?<![^:]:)(?![\w:])")
POPULAR_DNS = {"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "76.76.19.19", "76.223.122.150", "9.9.9.9",
               "149.112.112.112", "208.67.222.222", "208.67.220.220", "8.26.56.26", "8.20.247.20", "94.140.14.14",
               "94.140.15.15"}  # bigcode-dataset pii/utils/emails_ip_addresses_detection.py
DATE = re.compile(r"^(?:(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d)\b")
VERSION = re.compile(r"^\d\.\d\.\d\.\d$")

# bigcode-dataset pii/utils/keys_detection.py: the plugins BigCode enabled (BasicAuth, Keyword, PrivateKey off)
KEY_PLUGINS = ["ArtifactoryDetector", "AWSKeyDetector", "AzureStorageKeyDetector", "CloudantDetector",
               "DiscordBotTokenDetector", "GitHubTokenDetector", "IbmCloudIamDetector", "IbmCosHmacDetector",
               "JwtTokenDetector", "MailchimpDetector", "NpmDetector", "SendGridDetector", "SlackDetector",
               "SoftlayerDetector", "StripeDetector", "TwilioKeyDetector"]
HEX = re.compile(r"[0-9a-fA-F]+")
HASH_WORDS = re.compile(r"sha|md5|hash|byte|checksum|digest|integrity", re.I)
PASSWORD_WORDS = re.compile(r"pass(?:word|wd|phrase)?\b|passwd|pwd|pass_?word", re.I)
PLACEHOLDER_PASSWORDS = {"password", "passwd", "pass", "secret", "changeme", "change_me", "xxx", "xxxx", "xxxxxx",
                         "xxxxxxxx", "none", "null", "empty", "example", "your_password", "yourpassword", "mypassword",
                         "test", "testing", "dummy", "placeholder", "redacted", "hidden", "todo", "fixme", "admin",
                         "root", "password123", "12345678", "123456", "<password>", "***", "******", "********"}
KEY_CANDIDATE = re.compile(r"[A-Za-z0-9+/=_\-.]{16,}")  # lines with such a token (and a digit) are scanned


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str    # email | ip_address | key | password
    value: str


def emails(text: str) -> Iterator[Span]:
    at = text.find("@")
    while at >= 0:  # anchored on "@": the pattern is tried only where it can match
        m = None
        left = LOCAL_TAIL.search(text, max(0, at - 64), at)
        if left is not None:
            m = EMAIL.match(text, left.start())
        if m is not None and m.start(2) == at + 1:
            user, domain = m.group(1).lower(), m.group(2).lower()
            if user not in PLACEHOLDER_USERS and not any(domain == d or domain.endswith("." + d)
                                                         for d in PLACEHOLDER_DOMAINS):
                yield Span(m.start(), m.end(), "email", m.group(0))
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


def ip_addresses(text: str) -> Iterator[Span]:
    for pattern in (IPV4, IPV6):
        for m in pattern.finditer(text):
            value = m.group(0)
            if pattern is IPV6 and (value.count(":") < 2 or len(value) < 7):
                continue
            if _ip_ok(text, m.start(), m.end(), value):
                yield Span(m.start(), m.end(), "ip_address", value)


@cache
def _plugins() -> tuple[list[Any], Any, Any]:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString, HexHighEntropyString
    from detect_secrets.plugins.keyword import KeywordDetector

    classes = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
    keys = [classes[name]() for name in KEY_PLUGINS if name in classes]
    keys += [Base64HighEntropyString(limit=4.5), HexHighEntropyString(limit=3.0)]  # bigcode-dataset limits
    return keys, KeywordDetector(), detector()


def _filtered(value: str, line: str) -> bool:
    """True if the candidate secret is a known false positive (BigCode's filters)."""
    from detect_secrets.filters.heuristic import (
        is_likely_id_string,
        is_potential_uuid,
        is_sequential_string,
        is_templated_secret,
    )

    if is_potential_uuid(value) or is_templated_secret(value) or is_sequential_string(value) or _runs(value):
        return True
    if is_likely_id_string(value, line):
        return True
    return len(value) in (32, 40, 64) and bool(HASH_WORDS.search(line))  # bigcode: is_hash


def _runs(value: str) -> bool:
    """Alphabets and counting sequences (`ABC…XYZ0123…`) that detect-secrets' sequence list misses."""
    steps = sum(1 for a, b in itertools.pairwise(value) if ord(b) - ord(a) == 1)
    return steps >= 0.6 * (len(value) - 1)


def secrets(text: str) -> Iterator[Span]:
    """Keys (detect-secrets plugins + filters + gibberish) and passwords (keyword plugin + filters)."""
    keys, keyword, gib = _plugins()
    lines = text.split("\n")
    hash_heavy = sum(1 for line in lines if "sha" in line.lower() or "hash" in line.lower()) > 0.02 * len(lines)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    candidates = {bisect.bisect_right(starts, m.start()) for m in KEY_CANDIDATE.finditer(text)
                  if any(c.isdigit() for c in m.group(0))}
    passwords = {bisect.bisect_right(starts, m.start()) for m in PASSWORD_WORDS.finditer(text)}
    for n in sorted(candidates | passwords):
        line, start_of_line = lines[n - 1], starts[n - 1]
        if len(line) > 2000:
            continue
        found: dict[str, str] = {}
        for plugin in keys if n in candidates else ():
            for s in plugin.analyze_line(filename="f", line=line, line_number=n):
                value = _whole_token(line, s.secret_value or "")
                high_entropy = type(plugin).__name__.endswith("HighEntropyString")
                if high_entropy and (hash_heavy or len(value) > 100 or "base64," in line):
                    continue
                if high_entropy and not HEX.fullmatch(value) and not gib.is_gibberish(value):
                    continue  # vendor patterns (AKIA…, ghp_…) are specific already; the model knows letters only
                if len(value) > 8 and not _filtered(value, line):
                    found.setdefault(value, "key")
        if n in passwords:
            for s in keyword.analyze_line(filename="f.py", line=line, line_number=n):
                value = s.secret_value or ""
                if (len(value) >= 4 and value.lower().strip("'\"") not in PLACEHOLDER_PASSWORDS
                        and not _filtered(value, line) and not value.startswith(("$", "%", "{", "<"))):
                    found.setdefault(value, "password")
        for value, kind in found.items():
            i = line.find(value)
            while i >= 0:
                yield Span(start_of_line + i, start_of_line + i + len(value), kind, value)
                i = line.find(value, i + len(value))


TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-./+=]*")


def _whole_token(line: str, value: str) -> str:
    """Plugins that capture a prefix group (GitHub's `ghp`) report only it: extend to the whole token."""
    i = line.find(value)
    if i < 0 or not value:
        return value
    m = TOKEN_CHARS.match(line, i + len(value))
    return value + (m.group(0) if m else "")


PRIORITY = {"key": 0, "password": 1, "email": 2, "ip_address": 3}


def find_pii(text: str, kinds: frozenset[str] = frozenset(PRIORITY)) -> list[Span]:
    """Non-overlapping PII spans, in text order; on overlap the higher-priority kind (key first) wins."""
    spans: list[Span] = []
    if "email" in kinds:
        spans += emails(text)
    if "ip_address" in kinds:
        spans += ip_addresses(text)
    if kinds & {"key", "password"}:
        spans += [s for s in secrets(text) if s.kind in kinds]
    spans.sort(key=lambda s: (PRIORITY[s.kind], s.start, -s.end))
    chosen: list[Span] = []
    for s in spans:
        if all(s.end <= c.start or s.start >= c.end for c in chosen):
            chosen.append(s)
    return sorted(chosen, key=lambda s: s.start)
