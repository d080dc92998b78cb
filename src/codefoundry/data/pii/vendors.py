"""Vendor key patterns and private-key blocks: secrets recognisable by their own shape, whatever they are named.

The patterns are those of detect-secrets' plugins that BigCode enabled (AWS, GitHub, Slack, Stripe,
SendGrid, npm, Twilio, Mailchimp, Discord, JWT, Azure storage, Artifactory, Square), with the
ones detect-secrets added later (GitLab, OpenAI, PyPI, Telegram) and a few it lacks (GitHub
fine-grained tokens, Slack app-level tokens, Discord webhooks, Mailgun, Google API keys, Hugging Face,
Anthropic, npm tokens outside `.npmrc`). A prefix this specific is evidence enough: unlike generic
high-entropy strings, a match is not dropped because its variable name ends in `_ID` or because its
letters read like English, only when it is a placeholder (`AKIA…EXAMPLE`, `ghp_xxxx…`).

Private keys: the whole body of a PEM/OpenSSH/PGP block (`-----BEGIN … PRIVATE KEY-----` to its
`END` line, also inside a string with `\\n` escapes, and to the end of the base64 lines when the
`END` line is missing) and PuTTY's `Private-Lines`; certificates and public keys are not secrets.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator

from codefoundry.data.pii.prefilter import Prefilter

# name → (literals of which a match contains one, tested with `in` before a regex that is slower than that test,
# or none; pattern; secret group). Patterns start with a literal so the regex engine skips ahead fast; the character
# before a secret must not be a word character (checked in `vendor_matches`, cheaper than a leading look-behind).
VENDOR_PATTERNS: dict[str, tuple[tuple[str, ...], str, int]] = {
    "aws_access_key_id": ((),
                          r"((?:A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA)[0-9A-Z]{16})(?![A-Za-z0-9])", 1),
    "github": ((), r"(gh[pousr]_[A-Za-z0-9_]{36,255})(?![A-Za-z0-9_])", 1),
    "github_fine_grained": (("github_pat_",), r"(github_pat_[A-Za-z0-9_]{70,255})", 1),
    "gitlab": ((), r"(gl(?:pat|dt|ft|soat|rt|cbt|ptt|imt)-[A-Za-z0-9_\-]{20,50})(?![A-Za-z0-9_\-])", 1),
    "slack": ((), r"(xox(?:a|b|p|o|s|r|e)-(?:\d+-)+[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)", 1),
    "slack_app": (("xapp-",), r"(xapp-\d-[A-Za-z0-9]+-\d+-[A-Za-z0-9]+)", 1),
    "slack_webhook": (("hooks.slack.com",), r"(https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/"
                                            r"[A-Za-z0-9_]+)", 1),
    "stripe": (("k_live_",), r"((?:r|s)k_live_[0-9A-Za-z]{24,247})(?![A-Za-z0-9])", 1),
    "sendgrid": (("SG.",), r"(SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43})", 1),
    "npm": (("npm_", "_authToken"), r"(npm_[A-Za-z0-9]{36})(?![A-Za-z0-9])|_authToken=[ \t]*([A-Za-z0-9_\-.+/=]{16,})",
            0),
    "pypi": (("pypi-AgE",), r"(pypi-Ag(?:EIcHlwaS5vcmc|ENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_\-]{50,})", 1),
    "mailgun": ((), r"(key-[0-9a-z]{32})(?![A-Za-z0-9])", 1),
    "mailchimp": ((), r"-us[0-9]{1,2}(?![A-Za-z0-9])", 0),
    "twilio": ((), r"((?:AC|SK)[0-9a-f]{32})(?![A-Za-z0-9])", 1),
    "google_api_key": ((), r"(AIza[0-9A-Za-z_\-]{35})(?![A-Za-z0-9_\-])", 1),
    # project and service-account keys (`sk-proj-…`, `sk-svcacct-…`) carry 58-74 characters, `-` and `_` included,
    # on each side of the marker: all of them are the secret
    "openai": (("T3BlbkFJ",), r"(sk-[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,})", 1),
    "anthropic": (("sk-ant-",), r"(sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_\-]{80,})", 1),
    "huggingface": ((), r"(hf_[A-Za-z]{34})(?![A-Za-z0-9_])", 1),
    "discord_webhook": (("/api/webhooks/",), r"(https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/"
                                              r"[A-Za-z0-9_\-]{60,})", 1),
    "discord": ((), r"\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,38}(?![A-Za-z0-9_\-])", 0),
    "telegram": ((), r":AA[0-9A-Za-z_\-]{33}(?![A-Za-z0-9_\-])", 0),
    "jwt": (("eyJ",), r"(eyJ[A-Za-z0-9_\-]{10,}={0,2}\.eyJ[A-Za-z0-9_\-]{10,}={0,2}\.[A-Za-z0-9_\-]{16,}={0,2})", 1),
    "azure_storage": (("AccountKey=",), r"AccountKey=([A-Za-z0-9+/=]{88})", 1),
    "artifactory": ((), r"((?:AKC[A-Za-z0-9]{10,}|AP[\dABCDEF][A-Za-z0-9]{8,}))(?=[\s\"']|$)", 1),
    "square": ((), r"(sq0(?:csp|atp)-[0-9A-Za-z_\-]{22,43})", 1),
}
COMPILED = {name: (markers, re.compile(pattern, re.M), group) for name, (markers, pattern, group)
            in VENDOR_PATTERNS.items()}
# Three patterns are matched from their distinctive middle and extended to the left here
LEFT_PARTS = {"mailchimp": re.compile(r"[0-9a-f]{32}$"), "discord": re.compile(r"[MNO][A-Za-z\d_\-]{23,25}$"),
              "telegram": re.compile(r"\d{8,10}$")}
WORD = re.compile(r"\w")


HEX32_PATTERNS = {"twilio", "mailchimp"}
"""Patterns that need 32 lowercase hex digits in a row: skipped where `Prefilter.has_hex32` finds none."""


def vendor_matches(text: str, pre: Prefilter | None = None,
                   names: Collection[str] | None = None) -> Iterator[tuple[str, int, int]]:
    """(pattern name, start, end) of every vendor-pattern secret in `text`; `names`: the only patterns that can match
    there (`gates.candidates` decides it), None: all."""
    hex32: bool | None = None
    for name, (markers, pattern, group) in COMPILED.items():
        if names is not None and name not in names:
            continue
        if markers and not any(marker in text for marker in markers):
            continue
        if name in HEX32_PATTERNS:
            if hex32 is None:
                hex32 = (pre or Prefilter(text)).has_hex32()
            if not hex32:
                continue
        for m in pattern.finditer(text):
            g = group or next((i for i in range(1, (m.lastindex or 0) + 1) if m.group(i) is not None), 0)
            start, end = m.start(g), m.end(g)
            if name in LEFT_PARTS:
                left = LEFT_PARTS[name].search(text, max(0, start - 40), start)
                if left is None:
                    continue
                start = left.start()
            if start and WORD.match(text, start - 1):
                continue
            if name == "artifactory" and start and text[start - 1] not in " \t\n=:\"'":
                continue
            yield name, start, end


BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----")
BLANKS = re.compile(r"(?:\s|\\[nr])*")
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{32,}")
PUTTY = re.compile(r"^Private-Lines: *(\d+)[ \t]*\r?\n((?:[ \t]*[A-Za-z0-9+/=]+[ \t]*(?:\r?\n|$))+)", re.M)
BASE64_LINES = re.compile(r"(?:[A-Za-z0-9+/=]{16,}[\"',+ \t]*(?:\r?\n|\\n)?[ \t\"]*)+")
MAX_BODY = 20_000


def private_keys(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each private key's body, between its BEGIN and END lines (markers and layout kept)."""
    if "PRIVATE KEY" in text:
        for m in BEGIN.finditer(text):
            end_marker = f"-----END {m.group(1)}PRIVATE KEY{m.group(2) or ''}-----"
            stop = text.find(end_marker, m.end(), m.end() + MAX_BODY)
            start = BLANKS.match(text, m.end()).end()
            if stop < 0:  # truncated: the base64 lines that follow
                body = BASE64_LINES.match(text, start)
                stop = body.end() if body else start
            end = stop
            while end > start and (text[end - 1].isspace() or text.endswith("\\n", start, end)):
                end -= 2 if text.endswith("\\n", start, end) else 1
            if BASE64_RUN.search(text, start, end):  # `...` in documentation is not a key
                yield start, end
    if "Private-Lines:" in text:
        for m in PUTTY.finditer(text):
            yield m.start(2), m.end(2) - (len(m.group(2)) - len(m.group(2).rstrip()))
