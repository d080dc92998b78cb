"""Is a candidate value a credential? Placeholders, templates, sequences and random-looking strings.

The detectors find *where* a secret could be (a vendor prefix, a name such as `DB_PASSWORD`, a
URL's user-info); these checks decide whether the value found there is a real one or a stand-in
that documentation, tests and templates use (`<your-key-here>`, `xxxx`, `${DB_PASSWORD}`,
`changeme`, AWS's `…EXAMPLE` keys).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

from codefoundry.data.pii.gibberish import detector

PLACEHOLDER_PASSWORDS = {"password", "passwd", "pass", "secret", "changeme", "change_me", "change-me", "none", "null",
                         "nil", "empty", "example", "your_password", "yourpassword", "mypassword", "test", "testing",
                         "dummy", "placeholder", "redacted", "hidden", "todo", "fixme", "admin", "root", "guest",
                         "password123", "password1", "12345678", "123456", "1234", "qwerty", "letmein", "secret123",
                         "true", "false", "undefined", "default", "required", "optional", "string", "str"}
PLACEHOLDER_WORDS = re.compile(r"example|xxxx|your[_-]?|here|dummy|fake|sample|redacted|placeholder|change[_-]?me|"
                               r"insert|replace|secret[_-]?key|api[_-]?key|token[_-]?here|password|\*\*\*|\.\.\.|"
                               r"^test[_-]|[_-]test$|^(?:0+|1+|x+|a+)$|not[_-]?(?:a[_-]?)?real|^[a-z]*(?:pass|pwd)$",
                               re.I)
TEMPLATE = re.compile(r"""^(?:\$\{[^}]*\}|\$\([^)]*\)|\$[A-Za-z_]\w*|\{\{.*\}\}|\{%.*%\}|\{[\w.]*\}|%\(\w+\)s|%[A-Z_]+%|
                          <[^<>]*>|\#\{[^}]*\}|\[\[.*\]\]|@\w+@|__\w+__|ENC\[.*\]|!!?[A-Za-z][\w.-]*\s.*)$""", re.X)
HEX = re.compile(r"[0-9a-fA-F]+")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def is_template(value: str) -> bool:
    """`${VAR}`, `$VAR`, `$(cmd)`, `{{ var }}`, `%(name)s`, `<your-key>`, `#{var}`, `!vault …`: a reference."""
    return bool(TEMPLATE.match(value.strip()))


def is_placeholder(value: str) -> bool:
    """A stand-in: a word from the placeholder list, "example"/"xxxx"/"your-…" inside, one repeated character."""
    v = value.strip().strip("'\"")
    if v.lower() in PLACEHOLDER_PASSWORDS or len(set(v.lower())) <= 2:
        return True
    return bool(PLACEHOLDER_WORDS.search(v)) or is_template(v) or is_sequential(v)


def is_sequential(value: str) -> bool:
    """Alphabets and counting runs (`abcdef…`, `ABC…XYZ0123…`, `123456789`)."""
    if len(value) < 4:
        return False
    steps = sum(1 for a, b in itertools.pairwise(value) if ord(b) - ord(a) in (1, 0))
    return steps >= 0.6 * (len(value) - 1)


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def looks_random(value: str, min_length: int = 12) -> bool:
    """A machine-made secret rather than a word, an identifier or a sentence: long enough, no spaces, several
    character classes, high entropy for its length."""
    if len(value) < min_length or any(c.isspace() for c in value):
        return False
    classes = sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value),
                   any(not c.isalnum() for c in value)))
    if classes < 2 and not (HEX.fullmatch(value) and len(value) >= 16):
        return False
    if not any(c.isdigit() for c in value) and re.fullmatch(r"[A-Za-z]+(?:[_.-][A-Za-z]+)*", value.strip("_.-")):
        return False  # snake_case, kebab-case, dotted words: identifiers and names
    if value.count(".") + value.count(":") >= 2 and len(value) / (value.count(".") + value.count(":") + 1) < 8:
        return False  # `fs.s3.cse.kms.keyId`, `a:b:c`: a dotted name or path, not a token
    letters = sum(c.isalpha() for c in value)
    if letters > 0.7 * len(value) and not HEX.fullmatch(value) and not detector().is_gibberish(value):
        return False  # letters that read like English (a mostly-symbol secret has too few letters to judge)
    return entropy(value) >= min(3.0, math.log2(len(value)) - 0.7)
