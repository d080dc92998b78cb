"""A labelled PII set: real-looking code files in several languages with planted PII and hard negatives.

Each file mixes ordinary code with planted items (emails, IPv4/IPv6 addresses, keys of the
services detect-secrets knows plus high-entropy tokens, passwords in assignments/config) and
hard negatives that must stay (hashes next to "sha256", UUIDs, base64 blobs, example.com
placeholders, private IPs, DNS servers, version strings, env lookups, test fixtures).
`evaluate` counts, per kind, planted items found (TP), planted items missed (FN) and spans
reported that are not planted items (FP).
"""

from __future__ import annotations

import base64
import ipaddress
import random
import string
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from codefoundry.data.pii.detect import POPULAR_DNS, find_pii

KINDS = ("email", "ip_address", "key", "password")
FIRST = ["jane", "omar", "li", "maria", "kwame", "ana", "piotr", "yuki", "sofia", "arjun", "chen", "fatima", "lucas"]
LAST = ["smith", "haddad", "wei", "garcia", "mensah", "silva", "nowak", "tanaka", "rossi", "patel", "zhang", "khan"]
DOMAINS = ["acme-corp.io", "gmail.com", "outlook.com", "uni-heidelberg.de", "mail.ru", "fastmail.fm", "proton.me",
           "initech.co.uk", "globex.com", "cs.stanford.edu", "yandex.ru", "hey.com"]
WORDS = ["falcon", "river", "summer", "purple", "tiger", "cobalt", "maple", "orbit", "pepper", "quartz", "violet"]


@dataclass
class LabelledFile:
    text: str
    language: str
    planted: set[tuple[str, str]] = field(default_factory=set)   # (kind, value) that must be redacted
    negatives: set[str] = field(default_factory=set)               # values that must stay


def _rand(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def email(rng: random.Random) -> str:
    sep = rng.choice([".", "_", ""])
    return f"{rng.choice(FIRST)}{sep}{rng.choice(LAST)}{rng.randint(1, 99) if rng.random() < 0.3 else ''}" \
           f"@{rng.choice(DOMAINS)}"


def ipv4(rng: random.Random) -> str:
    while True:
        ip = ".".join(str(rng.randint(1, 223)) for _ in range(4))
        if ipaddress.ip_address(ip).is_global and ip not in POPULAR_DNS and any(len(p) > 1 for p in ip.split(".")):
            return ip


def ipv6(rng: random.Random) -> str:
    prefix = rng.choice(["2a03:2880", "2600:1f18", "2607:f8b0", "2a00:1450", "2001:4860"])
    return prefix + ":" + ":".join(f"{rng.randint(1, 0xFFFF):x}" for _ in range(6))


def key(rng: random.Random) -> str:
    up, al = string.ascii_uppercase + "234567", string.ascii_letters + string.digits
    kind = rng.randrange(7)
    if kind == 0:
        return "AKIA" + _rand(rng, up, 16)
    if kind == 1:
        return "ghp_" + _rand(rng, al, 36)
    if kind == 2:
        return f"xoxb-{rng.randint(10**11, 10**12)}-{rng.randint(10**12, 10**13)}-{_rand(rng, al, 24)}"
    if kind == 3:
        return "sk_live_" + _rand(rng, al, 24)
    if kind == 4:
        return "SG." + _rand(rng, al + "_-", 22) + "." + _rand(rng, al + "_-", 43)
    if kind == 5:
        return base64.b64encode(rng.randbytes(30)).decode()
    return rng.randbytes(20).hex()


def password(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"{rng.choice(WORDS).capitalize()}{rng.randint(10, 9999)}{rng.choice('!#$%&*')}"
    if style == 1:
        return f"{rng.choice(WORDS)}-{rng.choice(WORDS).capitalize()}#{rng.randint(1, 99)}"
    return _rand(rng, string.ascii_letters + string.digits + "!@#%^&*", rng.randint(10, 16))


NEGATIVES: list[Callable[[random.Random], tuple[str, str]]] = [
    lambda r: (f'digest = "{r.randbytes(32).hex()}"  # sha256 of the release tarball', ""),
    lambda r: (f'CHECKSUM_MD5 = "{r.randbytes(16).hex()}"', ""),
    lambda r: (f'request_id = "{uuid.UUID(bytes=r.randbytes(16))}"', ""),
    lambda r: (f'ICON = "data:image/png;base64,{base64.b64encode(r.randbytes(120)).decode()}"', ""),
    lambda r: ('contact = "someone@example.com"  # placeholder', "someone@example.com"),
    lambda r: ('REMOTE = "git@github.com:acme/tools.git"', "git@github.com"),
    lambda r: ('server_ip = "192.168.1.20"', "192.168.1.20"),
    lambda r: ('dns = ["8.8.8.8", "1.1.1.1"]', "8.8.8.8"),
    lambda r: ('__version__ = "1.2.3.4"', "1.2.3.4"),
    lambda r: ('netmask = "255.255.255.0"', "255.255.255.0"),
    lambda r: ('bind = "127.0.0.1"', "127.0.0.1"),
    lambda r: ('password = os.environ["DB_PASSWORD"]', ""),
    lambda r: ('password = "changeme"  # set in production', "changeme"),
    lambda r: ('PASSWORD = "${DB_PASSWORD}"', "${DB_PASSWORD}"),
    lambda r: ('api_key = "<YOUR_API_KEY>"', "<YOUR_API_KEY>"),
    lambda r: ('ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"', "abcdefghijklmnopqrstuvwxyz0123456789"),
    lambda r: ('handler = "get_user_by_name_and_email_address"', "get_user_by_name_and_email_address"),
    lambda r: ('m = a@b.T  # matrix product', ""),
]

TEMPLATES: dict[str, Callable[[str, str, str, str, str], str]] = {
    "Python": lambda e, ip, k, p, neg: f'''"""Service client.

Maintainer: {e}
"""
import os

HOST = "{ip}"
API_TOKEN = "{k}"
{neg}


def connect(user="svc"):
    db_password = "{p}"
    return {{"host": HOST, "user": user, "password": db_password}}
''',
    "JavaScript": lambda e, ip, k, p, neg: f'''// Deploy settings; questions to {e}
const config = {{
  host: "{ip}",
  apiKey: "{k}",
  password: "{p}",
}};
// {neg}
module.exports = config;
''',
    "Go": lambda e, ip, k, p, neg: f'''package settings

// Owner: {e}
const upstream = "{ip}"
const port = 8080
const token = "{k}"
var password = "{p}"

// {neg}
func Addr() string {{ return upstream }}
''',
    "YAML": lambda e, ip, k, p, neg: f'''# contact: {e}
database:
  host: {ip}
  password: "{p}"
secrets:
  api_key: "{k}"
# {neg}
''',
    "Shell": lambda e, ip, k, p, neg: f'''#!/bin/sh
# report problems to {e}
export SERVER_ADDR="{ip}"
export ACCESS_TOKEN="{k}"
export DB_PASSWORD="{p}"
# {neg}
ssh deploy@"$SERVER_ADDR" ./restart.sh
''',
    "Java": lambda e, ip, k, p, neg: f'''/** @author {e} */
public class Settings {{
    static final String HOST = "{ip}";
    static final String API_SECRET = "{k}";
    static final String password = "{p}";
    // {neg}
}}
''',
}


def build_labelled_set(n_files: int = 360, seed: int = 0) -> list[LabelledFile]:
    """`n_files` files (languages in turn), each with one planted item of each kind and one hard negative."""
    rng = random.Random(seed)
    langs = list(TEMPLATES)
    out = []
    for i in range(n_files):
        lang = langs[i % len(langs)]
        e, ip, k, p = email(rng), (ipv6(rng) if rng.random() < 0.3 else ipv4(rng)), key(rng), password(rng)
        neg_line, neg_value = rng.choice(NEGATIVES)(rng)
        text = TEMPLATES[lang](e, ip, k, p, neg_line)
        f = LabelledFile(text, lang, {("email", e), ("ip_address", ip), ("key", k), ("password", p)})
        if neg_value:
            f.negatives.add(neg_value)
        out.append(f)
    return out


@dataclass
class KindScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def evaluate(files: list[LabelledFile]) -> tuple[dict[str, KindScore], int, Counter[str]]:
    """(per-kind scores, hard negatives redacted, false-positive values by kind:value for inspection)."""
    scores = {k: KindScore() for k in KINDS}
    negatives_hit = 0
    fps: Counter[str] = Counter()
    for f in files:
        found = {(s.kind, s.value) for s in find_pii(f.text)}
        for kind, value in f.planted:
            if (kind, value) in found:
                scores[kind].tp += 1
            else:
                scores[kind].fn += 1
        for kind, value in found - f.planted:
            scores[kind].fp += 1
            fps[f"{kind}:{value[:40]}"] += 1
        negatives_hit += sum(1 for v in f.negatives if any(v == value for _, value in found))
    return scores, negatives_hit, fps
