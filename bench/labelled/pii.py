"""A labelled PII set: real-looking files with planted PII and hard negatives.

Two families:
- code files (Python, JavaScript, Go, YAML, Shell, Java), each with one planted email,
  IPv4/IPv6 address, key (AWS, GitHub, Slack, Stripe, SendGrid, high-entropy base64/hex) and
  password, and one hard negative (hashes next to "sha256", UUIDs, base64 blobs, example.com
  placeholders, private IPs, DNS servers, version strings, env lookups, placeholders);
- credential files: leaked-credential lines as they appear in Python settings, `.env`, CI YAML,
  shell `export` and JSON config, for every vendor pattern; the credential forms that have no
  vendor prefix (private-key blocks, passwords in URLs and connection strings, `curl -u`,
  `mysql -p`, Django `SECRET_KEY`, unquoted values, a value repeated on another line); each
  file with realistic negatives (hashes, digests, UUIDs, IDs, placeholders such as
  `<your-key-here>` or `xxxx`, template references, public keys and certificates, test fixtures).

Every planted item carries the pattern it exercises (`LabelledFile.patterns`), so recall is
reported per vendor pattern. `evaluate` counts, per kind and per pattern, planted items found
(TP), missed (FN), and spans reported that cover no planted item (FP).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import re
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
ALNUM = string.ascii_letters + string.digits


@dataclass
class LabelledFile:
    text: str
    language: str
    planted: set[tuple[str, str]] = field(default_factory=set)   # (kind, value) that must be redacted
    negatives: set[str] = field(default_factory=set)               # values that must stay
    patterns: dict[str, str] = field(default_factory=dict)         # planted value → the pattern it exercises

    def plant(self, kind: str, value: str, pattern: str) -> None:
        self.planted.add((kind, value))
        self.patterns[value] = pattern


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


def key(rng: random.Random) -> tuple[str, str]:
    """(pattern, value): a vendor key or a generic high-entropy token."""
    up, al = string.ascii_uppercase + "234567", ALNUM
    kind = rng.randrange(7)
    if kind == 0:
        return "aws_access_key_id", "AKIA" + _rand(rng, up, 16)
    if kind == 1:
        return "github", "ghp_" + _rand(rng, al, 36)
    if kind == 2:
        return "slack", f"xoxb-{rng.randint(10**11, 10**12)}-{rng.randint(10**12, 10**13)}-{_rand(rng, al, 24)}"
    if kind == 3:
        return "stripe", "sk_live_" + _rand(rng, al, 24)
    if kind == 4:
        return "sendgrid", "SG." + _rand(rng, al + "_-", 22) + "." + _rand(rng, al + "_-", 43)
    if kind == 5:
        return "high_entropy_base64", base64.b64encode(rng.randbytes(30)).decode()
    return "high_entropy_hex", rng.randbytes(20).hex()


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


def build_code_files(n_files: int = 360, seed: int = 0) -> list[LabelledFile]:
    """`n_files` code files (languages in turn), each with one planted item of each kind and one hard negative."""
    rng = random.Random(seed)
    langs = list(TEMPLATES)
    out = []
    for i in range(n_files):
        lang = langs[i % len(langs)]
        e, ip, (pattern, k), p = email(rng), (ipv6(rng) if rng.random() < 0.3 else ipv4(rng)), key(rng), password(rng)
        neg_line, neg_value = rng.choice(NEGATIVES)(rng)
        f = LabelledFile(TEMPLATES[lang](e, ip, k, p, neg_line), lang)
        f.plant("email", e, "email")
        f.plant("ip_address", ip, "ipv6" if ":" in ip else "ipv4")
        f.plant("key", k, pattern)
        f.plant("password", p, "password_assignment")
        if neg_value:
            f.negatives.add(neg_value)
        out.append(f)
    return out


def build_labelled_set(n_files: int = 360, seed: int = 0, credential_repeats: int = 2) -> list[LabelledFile]:
    """The code files, then the credential files (`credential_repeats` of each vendor × context and form)."""
    return build_code_files(n_files, seed) + build_credential_files(credential_repeats, seed)


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


@dataclass
class Evaluation:
    kinds: dict[str, KindScore]        # per kind: planted found (tp) / missed (fn), spans covering nothing (fp)
    patterns: dict[str, KindScore]     # per planted pattern: tp / fn
    rules: dict[str, KindScore]        # per detector rule that reported a span: tp / fp
    negatives_hit: int                 # hard negatives reported as PII
    false_positives: Counter[str]      # "kind:rule:value" of false positives, for inspection


def evaluate(files: list[LabelledFile]) -> Evaluation:
    """Score `find_pii` on `files`. A planted item is found when a span of its kind covers its value."""
    result = Evaluation({k: KindScore() for k in KINDS}, {}, {}, 0, Counter())
    for f in files:
        spans = find_pii(f.text)
        for kind, value in f.planted:
            hit = any(s.kind == kind and value in s.value for s in spans)
            pattern = result.patterns.setdefault(f.patterns.get(value, kind), KindScore())
            for score in (result.kinds[kind], pattern):
                score.tp += hit
                score.fn += not hit
        for s in spans:
            rule = result.rules.setdefault(getattr(s, "rule", "") or s.kind, KindScore())
            if any(kind == s.kind and (value in s.value or s.value in value) for kind, value in f.planted):
                rule.tp += 1
            else:
                rule.fp += 1
                result.kinds[s.kind].fp += 1
                result.false_positives[f"{s.kind}:{getattr(s, 'rule', '')}:{s.value[:40]}"] += 1
        result.negatives_hit += sum(1 for v in f.negatives if any(v == s.value for s in spans))
    return result


# ---- credential files: vendor keys in five file contexts, and the credential forms without a vendor prefix ----

def _jwt(rng: random.Random) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    payload = {"iss": "supabase", "ref": _rand(rng, string.ascii_lowercase, 20), "role": "service_role",
               "iat": rng.randint(1_600_000_000, 1_700_000_000)}
    return "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + b64(json.dumps(payload).encode()) + "." + b64(rng.randbytes(32))


# pattern → (environment variable it is usually stored in, generator); every one is a "key"
VENDORS: dict[str, tuple[str, Callable[[random.Random], str]]] = {
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID", lambda r: "AKIA" + _rand(r, string.ascii_uppercase + "234567", 16)),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY", lambda r: _rand(r, ALNUM + "/+", 40)),
    "github": ("GITHUB_TOKEN", lambda r: r.choice(["ghp_", "gho_", "ghs_"]) + _rand(r, ALNUM, 36)),
    "github_fine_grained": ("GH_PAT", lambda r: "github_pat_11" + _rand(r, string.ascii_uppercase + string.digits, 20)
                            + "_" + _rand(r, ALNUM, 59)),
    "gitlab": ("GITLAB_TOKEN", lambda r: "glpat-" + _rand(r, ALNUM + "_-", 20)),
    "slack": ("SLACK_BOT_TOKEN", lambda r: f"xoxb-{r.randint(10**11, 10**12)}-{r.randint(10**12, 10**13)}-"
                                           f"{_rand(r, ALNUM, 24)}"),
    "slack_webhook": ("SLACK_WEBHOOK_URL", lambda r: "https://hooks.slack.com/services/"
                                                     f"T{_rand(r, string.ascii_uppercase, 8)}/"
                                                     f"B{_rand(r, string.ascii_uppercase, 10)}/{_rand(r, ALNUM, 24)}"),
    "stripe": ("STRIPE_SECRET_KEY", lambda r: r.choice(["sk_live_", "rk_live_"]) + _rand(r, ALNUM, r.choice([24, 99]))),
    "sendgrid": ("SENDGRID_API_KEY", lambda r: "SG." + _rand(r, ALNUM + "_-", 22) + "." + _rand(r, ALNUM + "_-", 43)),
    "npm": ("NPM_TOKEN", lambda r: "npm_" + _rand(r, ALNUM, 36)),
    "pypi": ("PYPI_API_TOKEN", lambda r: "pypi-AgEIcHlwaS5vcmc" + _rand(r, ALNUM + "_-", r.randint(70, 160))),
    "mailgun": ("MAILGUN_API_KEY", lambda r: "key-" + _rand(r, string.ascii_lowercase + string.digits, 32)),
    "mailchimp": ("MAILCHIMP_API_KEY", lambda r: r.randbytes(16).hex() + f"-us{r.randint(1, 21)}"),
    "twilio": ("TWILIO_API_KEY", lambda r: "SK" + r.randbytes(16).hex()),
    "google_api_key": ("GOOGLE_API_KEY", lambda r: "AIza" + _rand(r, ALNUM + "_-", 35)),
    "openai": ("OPENAI_API_KEY", lambda r: "sk-" + r.choice(["", "proj-"]) + _rand(r, ALNUM, 20) + "T3BlbkFJ"
                                           + _rand(r, ALNUM, 20)),
    "anthropic": ("ANTHROPIC_API_KEY", lambda r: "sk-ant-api03-" + _rand(r, ALNUM + "_-", 93) + "AA"),
    "huggingface": ("HF_TOKEN", lambda r: "hf_" + _rand(r, string.ascii_letters, 34)),
    "discord": ("DISCORD_BOT_TOKEN", lambda r: r.choice("MN") + _rand(r, ALNUM, 23) + "." + _rand(r, ALNUM + "_-", 6)
                                               + "." + _rand(r, ALNUM + "_-", 27)),
    "telegram": ("TELEGRAM_BOT_TOKEN", lambda r: f"{r.randint(10**8, 10**10 - 1)}:AA{_rand(r, ALNUM + '_-', 33)}"),
    "jwt": ("SUPABASE_SERVICE_ROLE_KEY", _jwt),
    "artifactory": ("ARTIFACTORY_API_KEY", lambda r: "AKCp" + _rand(r, ALNUM, 69)),
    "square": ("SQUARE_APPLICATION_SECRET", lambda r: "sq0csp-" + _rand(r, ALNUM + "_-", 43)),
    "azure_storage": ("AZURE_STORAGE_CONNECTION_STRING", lambda r: base64.b64encode(r.randbytes(64)).decode()),
}
WRAPPED = {"azure_storage": "DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey={};"
                            "EndpointSuffix=core.windows.net"}

# (name, value that must stay): IDs, hashes, digests, placeholders, test fixtures and harmless settings
NEGATIVE_PAIRS: list[Callable[[random.Random], tuple[str, str]]] = [
    lambda r: ("COMMIT_SHA", r.randbytes(20).hex()),
    lambda r: ("IMAGE_DIGEST", "sha256:" + r.randbytes(32).hex()),
    lambda r: ("ASSET_MD5", r.randbytes(16).hex()),
    lambda r: ("TENANT_ID", str(uuid.UUID(bytes=r.randbytes(16)))),
    lambda r: ("OAUTH_CLIENT_ID", _rand(r, ALNUM, 20)),
    lambda r: ("GOOGLE_ANALYTICS_ID", "G-" + _rand(r, string.ascii_uppercase + string.digits, 10)),
    lambda r: ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),  # AWS's documentation example
    lambda r: ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    lambda r: ("API_KEY", "<your-key-here>"),
    lambda r: ("GITHUB_TOKEN", "<your-token-here>"),
    lambda r: ("STRIPE_SECRET_KEY", "sk_live_" + "x" * 24),
    lambda r: ("GITHUB_TOKEN", "ghp_" + "x" * 36),
    lambda r: ("MAILGUN_API_KEY", "key-" + "x" * 32),
    lambda r: ("OPENAI_API_KEY", "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    lambda r: ("DB_PASSWORD", "xxxx"),
    lambda r: ("DB_PASSWORD", "changeme"),
    lambda r: ("SECRET_KEY", "change-me-in-production"),
    lambda r: ("TEST_API_TOKEN", "test-token"),
    lambda r: ("TOKEN_TTL_SECONDS", "3600"),
    lambda r: ("PASSWORD_MIN_LENGTH", "12"),
    lambda r: ("AUTH_PROVIDER", "github"),
    lambda r: ("TOKEN_URL", "https://oauth2.googleapis.com/token"),
    lambda r: ("REDIS_URL", "redis://localhost:6379/0"),
    lambda r: ("DATABASE_URL", "postgres://app:password@localhost:5432/app"),
    lambda r: ("PAD_TOKEN", "<|endoftext|>"),
    lambda r: ("SORT_KEY", "created_at"),
    lambda r: ("SSH_KEY_FINGERPRINT", "SHA256:" + base64.b64encode(r.randbytes(32)).decode().rstrip("=")),
]
# Per context: (the secret names' spelling, an assignment line, the file around the lines, a reference that must stay)
Context = tuple[Callable[[str], str], Callable[[str, str, random.Random], str], Callable[[str], str], str]
CONTEXTS: dict[str, Context] = {
    "python": (str, lambda n, v, r: (f'{n} = os.environ.get("{n}", "{v}")' if r.random() < 0.2 else f'{n} = "{v}"'),
               lambda body: f'"""Production settings for the billing service."""\nimport os\n\nDEBUG = False\n'
                            f'ALLOWED_HOSTS = ["billing.acme-corp.io"]\n{body}\nTIME_ZONE = "UTC"\n',
               'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]'),
    "dotenv": (str, lambda n, v, r: f'{n}="{v}"' if r.random() < 0.3 else f"{n}={v}",
               lambda body: f"# local overrides, loaded by python-dotenv\nNODE_ENV=production\nPORT=8080\n{body}\n"
                            "LOG_LEVEL=info\n",
               "DB_PASSWORD=${POSTGRES_PASSWORD}"),
    "ci_yaml": (str, lambda n, v, r: f'      {n}: "{v}"' if r.random() < 0.4 else f"      {n}: {v}",
                lambda body: "name: deploy\non:\n  push:\n    branches: [main]\njobs:\n  deploy:\n"
                             f"    runs-on: ubuntu-latest\n    env:\n{body}\n    steps:\n"
                             "      - uses: actions/checkout@v4\n      - run: ./scripts/deploy.sh\n",
                "      GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}"),
    "shell": (str, lambda n, v, r: r.choice([f"export {n}={v}", f'export {n}="{v}"', f"export {n}='{v}'"]),
              lambda body: f"#!/usr/bin/env bash\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n{body}\n"
                           "exec node server.js\n",
              'export API_TOKEN="$(cat /run/secrets/api_token)"'),
    "json": (lambda n: re.sub(r"_([a-z])", lambda m: m.group(1).upper(), n.lower()),
             lambda n, v, r: f'  "{n}": "{v}",',
             lambda body: '{\n  "name": "billing-service",\n  "port": 8080,\n' + body + '\n  "logLevel": "info"\n}\n',
             '  "password": "",'),
}
LANGUAGE = {"python": "Python", "dotenv": "dotenv", "ci_yaml": "YAML", "shell": "Shell", "json": "JSON"}


def _vendor_file(pattern: str, context: str, rng: random.Random) -> LabelledFile:
    env_name, make = VENDORS[pattern]
    spell, line, wrap, reference = CONTEXTS[context]
    value = make(rng)
    shown = WRAPPED.get(pattern, "{}").format(value)
    neg_name, neg_value = rng.choice(NEGATIVE_PAIRS)(rng)
    lines = [line(spell(env_name), shown, rng), line(spell(neg_name), neg_value, rng), reference]
    f = LabelledFile(wrap("\n".join(lines)), LANGUAGE[context])
    f.plant("key", value, pattern)
    f.negatives.add(neg_value)
    return f


def _pem(rng: random.Random, label: str, lines: int, head: str = "MIIE", width: int = 64) -> list[str]:
    body = head + base64.b64encode(rng.randbytes(width * lines)).decode()
    return [body[i:i + width] for i in range(0, width * lines, width)] + [base64.b64encode(rng.randbytes(20)).decode()]


def _block_body(text: str, label: str) -> str:
    """The text between a BEGIN and END marker, stripped of blanks and `\\n` escapes: what must be redacted."""
    start = text.index(f"-----BEGIN {label}-----") + len(f"-----BEGIN {label}-----")
    end = text.index(f"-----END {label}-----", start)
    return re.sub(r"^(?:\s|\\n)+|(?:\s|\\n)+$", "", text[start:end])


def _safe_password(rng: random.Random) -> str:
    """A password that survives unquoted in a URL, a shell line or a connection string."""
    return rng.choice([f"{rng.choice(WORDS).capitalize()}{rng.randint(10, 9999)}{rng.choice('!*-_.')}",
                       _rand(rng, ALNUM + "-_.!*", rng.randint(10, 18))])


def _private_key_files(rng: random.Random) -> list[LabelledFile]:
    rsa = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *_pem(rng, "RSA", 24), "-----END RSA PRIVATE KEY-----"])
    ssh = "\n".join(["-----BEGIN OPENSSH PRIVATE KEY-----",
                     *_pem(rng, "OPENSSH", 6, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAB", 70),
                     "-----END OPENSSH PRIVATE KEY-----"])
    pkcs8 = "\\n".join(["-----BEGIN PRIVATE KEY-----", *_pem(rng, "", 25, "MIIEvQ"),
                        "-----END PRIVATE KEY-----"]) + "\\n"
    cert = "\n".join(["-----BEGIN CERTIFICATE-----", *_pem(rng, "", 18, "MIIDdz"), "-----END CERTIFICATE-----"])
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + base64.b64encode(rng.randbytes(32)).decode().rstrip("=")
    ec = "\n".join(["-----BEGIN EC PRIVATE KEY-----", *_pem(rng, "EC", 2, "MHcCAQEE"), "-----END EC PRIVATE KEY-----"])
    files = [
        (rsa + "\n", "PEM", "RSA PRIVATE KEY", ""),
        (ssh + "\n", "PEM", "OPENSSH PRIVATE KEY", pub + " deploy@ci"),
        ('{\n  "type": "service_account",\n  "project_id": "acme-billing",\n  "private_key_id": "'
         + rng.randbytes(20).hex() + '",\n  "private_key": "' + pkcs8 + '",\n  "client_email": '
         '"ci@acme-billing.iam.gserviceaccount.com"\n}\n', "JSON", "PRIVATE KEY", ""),
        ("tls:\n  certificate: |\n" + "\n".join("    " + x for x in cert.splitlines())
         + "\n  key: |\n" + "\n".join("    " + x for x in ec.splitlines()) + "\n", "YAML", "EC PRIVATE KEY",
         _block_body(cert, "CERTIFICATE")),
        ('SIGNING_KEY = """' + rsa + '\n"""\n\n\ndef sign(payload: bytes) -> bytes:\n'
         "    return rsa.sign(payload, load_pem(SIGNING_KEY), \"SHA-256\")\n", "Python", "RSA PRIVATE KEY", ""),
    ]
    out = []
    for text, lang, label, negative in files:
        f = LabelledFile(text, lang)
        f.plant("key", _block_body(text, label), "private_key")
        if "client_email" in text:
            f.plant("email", "ci@acme-billing.iam.gserviceaccount.com", "email")
        if negative:
            f.negatives.add(negative)
        out.append(f)
    # a documentation placeholder block is not a key
    doc = LabelledFile("Put your key in `deploy/id_rsa`:\n\n    -----BEGIN RSA PRIVATE KEY-----\n    ...\n"
                       "    -----END RSA PRIVATE KEY-----\n", "Markdown")
    doc.negatives.add("...")
    return [*out, doc]


def _form_files(rng: random.Random) -> list[LabelledFile]:
    """(text, [(kind, value, pattern)], [negatives]) for the credential forms with no vendor prefix."""
    p = [_safe_password(rng) for _ in range(16)]
    host = "db-primary.internal.acme-corp.io"
    django = "django-insecure-" + _rand(rng, "abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)", 50)
    cases: list[tuple[str, str, list[tuple[str, str, str]], list[str]]] = [
        (f'DATABASE_URL = "postgres://billing:{p[0]}@{host}:5432/billing"\nREDIS_URL = "redis://localhost:6379/0"\n',
         "Python", [("password", p[0], "url_password")], [host, "redis://localhost:6379/0"]),
        (f"REDIS_URL=redis://:{p[1]}@cache.acme-corp.io:6379/0\nQUEUE_URL=amqp://guest:guest@localhost:5672//\n",
         "dotenv", [("password", p[1], "url_password")], ["cache.acme-corp.io:6379/0", "amqp://guest:guest@localhost"]),
        (f"## Deploying\n\nClone with the deploy account:\n\n    git clone https://deploy:{p[2]}@git.acme-corp.io/team/"
         "app.git\n\nor use `postgresql://${DB_USER}:${DB_PASS}@${DB_HOST}/app`.\n",
         "Markdown", [("password", p[2], "url_password")], ["git.acme-corp.io/team/app.git", "${DB_PASS}"]),
        ('{\n  "ConnectionStrings": {\n    "Default": "Server=tcp:acme.database.windows.net,1433;Database=orders;'
         f'User ID=app;Password={p[3]};Encrypt=True;"\n  }},\n  "Logging": {{ "LogLevel": "Warning" }}\n}}\n',
         "JSON", [("password", p[3], "connection_string")], ["acme.database.windows.net"]),
        (f'<connectionStrings>\n  <add name="Shop" connectionString="Data Source=db01;Initial Catalog=Shop;User Id=sa;'
         f'Pwd={p[4]};" />\n  <add name="Dev" connectionString="Data Source=.;Password=&lt;password&gt;;" />\n'
         "</connectionStrings>\n", "XML", [("password", p[4], "connection_string")], ["Initial Catalog=Shop"]),
        (f"#!/bin/sh\ncurl -u deploy:{p[5]} https://ci.acme-corp.io/job/app/build\n"
         'curl -u "$CI_USER:$CI_TOKEN" https://ci.acme-corp.io/api/json\n',
         "Shell", [("password", p[5], "curl_user")], ["$CI_USER:$CI_TOKEN", "https://ci.acme-corp.io/job/app/build"]),
        (f"#!/bin/bash\nset -e\nmysqldump -u root -p{p[6]} shop > backup.sql\nmysql -u root -p shop < schema.sql\n"
         'mysql -u app -p"$MYSQL_PASSWORD" -e "SELECT 1"\n',
         "Shell", [("password", p[6], "mysql_password")], ["$MYSQL_PASSWORD", "backup.sql"]),
        ("FROM mysql:8.0\nCOPY schema.sql /docker-entrypoint-initdb.d/\n"
         f"RUN mysql -h db -u app -p'{p[7]}' -e 'SELECT 1'\n",
         "Dockerfile", [("password", p[7], "mysql_password")], ["schema.sql"]),
        (f"from pathlib import Path\n\nBASE_DIR = Path(__file__).resolve().parent.parent\nSECRET_KEY = '{django}'\n"
         "DEBUG = True\nALLOWED_HOSTS: list[str] = []\n", "Python", [("key", django, "django_secret_key")], []),
        (f"DB_HOST=db\nDB_PASSWORD={p[8]}\nPASSWORD_MIN_LENGTH=12\n", "dotenv",
         [("password", p[8], "unquoted_password")], ["PASSWORD_MIN_LENGTH=12"]),
        ("services:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: app\n"
         f"      POSTGRES_PASSWORD: {p[9]}\n  app:\n    environment:\n"
         "      DB_PASSWORD: ${POSTGRES_PASSWORD}\n", "YAML",
         [("password", p[9], "unquoted_password")], ["${POSTGRES_PASSWORD}", "postgres:16"]),
        (f"#!/bin/sh\nexport PGPASSWORD={p[10]}\npsql -h db -U app -c 'VACUUM'\n", "Shell",
         [("password", p[10], "unquoted_password")], ["VACUUM"]),
        (f"[database]\nhost = db.acme-corp.io\nuser = app\npassword = {p[11]}\n\n[cache]\nttl = 300\n", "INI",
         [("password", p[11], "unquoted_password")], ["db.acme-corp.io"]),
        (f"spring.datasource.url=jdbc:mysql://db:3306/shop\nspring.datasource.password={p[12]}\n", "INI",
         [("password", p[12], "unquoted_password")], ["jdbc:mysql://db:3306/shop"]),
        (f"FROM node:20\nENV NODE_ENV=production\nENV MYSQL_ROOT_PASSWORD={p[13]}\nCMD [\"node\", \"server.js\"]\n",
         "Dockerfile", [("password", p[13], "unquoted_password")], ["node:20"]),
        (f'REDIS_PASSWORD = "{p[14]}"\n\n\ndef client():\n    c = redis.Redis(host="cache", port=6379)\n'
         f'    c.auth("{p[14]}")  # inlined once more by hand\n    return c\n', "Python",
         [("password", p[14], "reused_value")], ['host="cache"']),
        (f"export DB_PASS='{p[15]}'\npsql \"postgresql://app@db/app\" -c \"ALTER USER app PASSWORD '{p[15]}'\"\n",
         "Shell", [("password", p[15], "reused_value")], ["postgresql://app@db/app"]),
        ('def test_login(client):\n    client.login(username="alice", password="test")\n'
         '    assert mask("ghp_" + "a" * 36) == "ghp_****"\n    token = "test-token"\n', "Python", [],
         ['password="test"', '"test-token"']),
    ]
    out = []
    for text, lang, planted, negatives in cases:
        f = LabelledFile(text, lang)
        for kind, value, pattern in planted:
            f.plant(kind, value, pattern)
        f.negatives.update(negatives)
        out.append(f)
    return out


def build_credential_files(repeats: int = 2, seed: int = 0) -> list[LabelledFile]:
    """Each vendor pattern in each context, and each credential form, `repeats` times with fresh values."""
    rng = random.Random(seed + 1)
    out = []
    for _ in range(repeats):
        out += [_vendor_file(pattern, context, rng) for pattern in VENDORS for context in CONTEXTS]
        out += _private_key_files(rng) + _form_files(rng)
    return out
