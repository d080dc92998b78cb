"""The RE2 gates (`pii/gates.py`) skip only texts and lines where a detector finds nothing: `RedactPII` on a batch
(gated) redacts every text exactly as `redact` on the text alone (every detector on every line) does, on generated
credential lines in many forms, ASCII and not, the labelled set and the package's own sources."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from codefoundry.data.pii import RedactPII, redact
from codefoundry.data.pii import gates as G
from codefoundry.data.pii.vendors import VENDOR_PATTERNS, vendor_matches

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from labelled.pii import build_labelled_set

ROOT = Path(__file__).resolve().parents[2]
RNG_CHARS = "Qm7vTz2LwX9kRb4NcY8pHs1JdF6gWe3Ua5ViOt0ZyKx"
NAMES = ["password", "DB_PASSWORD", "apiKey", "secret_key", "SECRET_KEY", "pw", "DB_PW", "senha", "contrasena",
         "passwort", "auth_token", "client_secret", "psk", "sas_token", "token", "user_id", "password_length",
         "cache_key", "tokenizer", "\u212aEY", "pa\u017fs", "credent\u0130al", "t\u0131ken", "API_\u212aEY",
         "naïve_password", "пароль_password", "self.password", "settings.DB_PASSWORD", "key", "jwt_key",
         "MASTER_KEY", "signing-key", "x"]
VALUES = ["hunter2hunter2", "Xy7#qP", "p4&s!", "h2Kq", "S3cr3t!Passw0rd", RNG_CHARS[:24], RNG_CHARS[5:37],
          "changeme", "xxxx", "${DB_PASSWORD}", "<your-key-here>", "get_password()", "os.environ['X']", "abc",
          "ünïcödé-Pa55wörd", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "deadbeefcafef00d1234", "Zm9vYmFyYmF6cXV4" * 2,
          "none", "1234567"]
SEPARATORS = [" = ", "=", ": ", ":", " := ", " => ", " == ", ", ", " ", "\t=\t"]
PREFIXES = ["", "    ", "export ", "ENV ", "setenv ", "- ", "declare -x ", "readonly ", "\t", "  - ", "ARG "]
QUOTES = ["", '"', "'", "`"]
POSITIONAL = [
    "url = 'postgres://admin:{v}@db.internal:5432/app'",
    "curl -u deploy:{v} https://api.acme-corp.io",
    "curl --user=deploy:{v} x",
    "mysql -h db -uroot -p{v} app",
    "mysqldump -p'{v}' app > dump.sql",
    "sshpass -p {v} ssh host",
    "redis-cli -h cache -a {v} ping",
    "docker login -u me -p {v} registry.io",
    "app --password={v} --verbose",
    "app --api-key {v}",
    'headers = {{"Authorization": "Bearer {v}{v}"}}',
    "authorization: token {v}{v}",
    "AUTHORİZATION: Bearer {v}{v}",
    "Server=db;Database=app;User Id=sa;Password={v};",
    "host=db user=app password={v} dbname=x",
    "machine api.acme-corp.io login me password {v}",
    "<password>{v}</password>",
    "<db:secretKey>{v}</db:secretKey>",
]
OTHER = [
    "# contact jane.smith@globex.com or ops@acme-corp.io",
    "server = '93.184.216.34'  # dns",
    "addr = '2606:4700:4700::1111'",
    "v = '١٢٣.٤.٥.٦'",
    "ver = '1.2.3.4' # version",
    "x = std::vector<int>()",
    "AWS_KEY = 'AKIA" + "Q7XZ2LWT9KRB4NCY'",
    "tok = 'ghp_" + RNG_CHARS[:36] + "'",
    "sl = 'xoxb-1234567890-" + RNG_CHARS[:24] + "'",
    "mg = 'key-" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9'",
    "tw = 'SK" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9'",
    "dc = 'MTA4OTQ1NjcyMzQ1Njc4OTAx" + "." + "GhT3xQ" + "." + RNG_CHARS[:32] + "'",
    "blob = '" + RNG_CHARS + "'",
    "digest = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'  # sha256",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + RNG_CHARS * 2 + "\n-----END RSA PRIVATE KEY-----",
    "plain code line with nothing in it",
    "",
    "é" * 30 + " password = '" + RNG_CHARS[:20] + "'",
    "mixed\r",
    "x" * 2100 + " password = 'S3cr3t!Passw0rd'",
]


def _line(rng: random.Random) -> str:
    value = rng.choice(VALUES)
    roll = rng.random()
    if roll < 0.55:
        q = rng.choice(QUOTES)
        name = rng.choice(NAMES)
        nq = rng.choice(["", '"', "'"]) if roll < 0.2 else ""
        line = f"{rng.choice(PREFIXES)}{nq}{name}{nq}{rng.choice(SEPARATORS)}{q}{value}{q}"
        return line + rng.choice(["", "", " # note", ";", ",", "  # password"])
    if roll < 0.8:
        return rng.choice(POSITIONAL).format(v=value)
    return rng.choice(OTHER)


def generated_texts(n: int, seed: int = 0) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = []
    for _ in range(n):
        lines = [_line(rng) for _ in range(rng.randint(1, 30))]
        text = "\n".join(lines) + rng.choice(["", "\n", "\n\n"])
        texts.append(text)
    return [*texts, None, "", "\n", "password"]


def source_texts(limit: int = 60) -> list[str]:
    files = sorted((ROOT / "src" / "codefoundry").rglob("*.py"))[:limit]
    return [p.read_text(encoding="utf-8") for p in files]


def assert_gated_equals_plain(texts: list[str | None]) -> None:
    step = RedactPII()
    batch = pa.table({"content": pa.array(texts, pa.string()), "id": pa.array(range(len(texts)))})
    out = step.transform(batch)
    assert out.column("id").to_pylist() == list(range(len(texts)))
    expected_counts: dict[str, int] = {}
    for text, got in zip(texts, out.column("content").to_pylist(), strict=True):
        if not text:
            assert got == text
            continue
        want, counts = redact(text)
        assert got == want, text
        for kind, n in counts.items():
            expected_counts[kind] = expected_counts.get(kind, 0) + n
        expected_counts["files_redacted"] = expected_counts.get("files_redacted", 0) + bool(counts)
    assert dict(step.stats.counters) == {k: v for k, v in expected_counts.items() if v}
    assert expected_counts.get("password", 0) > 0 and expected_counts.get("key", 0) > 0


def test_gated_batch_equals_each_text_alone_on_generated_lines() -> None:
    texts = generated_texts(1500)
    assert_gated_equals_plain(texts)


def test_gated_batch_equals_each_text_alone_on_labelled_set_and_sources() -> None:
    labelled = [f.text for f in build_labelled_set(160, credential_repeats=1)]
    assert_gated_equals_plain(labelled + source_texts())


def test_a_small_batch_redacts_the_same() -> None:
    texts = generated_texts(3, seed=7)
    out = RedactPII().transform(pa.table({"content": pa.array(texts, pa.string())}))
    assert out.column("content").to_pylist() == [redact(t)[0] if t else t for t in texts]


def test_fold_spells_every_character_python_equates_with_a_letter() -> None:
    any_letter = re.compile("[a-z]", re.I)
    chars = [c for c in map(chr, range(0x80, sys.maxunicode + 1)) if not 0xD800 <= ord(c) <= 0xDFFF
             and (any_letter.fullmatch(c) or (len(c.lower()) == 1 and c.lower().isascii()))]
    assert chars  # the Kelvin sign, long s, dotted and dotless i at least
    for letter in "abcdefghijklmnopqrstuvwxyz":
        same = [letter, letter.upper()] + [c for c in chars if re.fullmatch(letter, c, re.I) or c.lower() == letter]
        hits = pc.match_substring_regex(pa.array(same), f"^{G.fold(letter)}$").to_pylist()
        assert all(hits), [c for c, h in zip(same, hits, strict=True) if not h]


def test_every_vendor_pattern_has_an_anchor_that_its_matches_contain() -> None:
    assert set(G.VENDOR_ANCHORS) == set(VENDOR_PATTERNS) == set(G.vendor_anchors())
    texts = [f.text for f in build_labelled_set(200, credential_repeats=2)] + [t for t in OTHER if t]
    seen = set()
    for text in texts:
        for name, start, end in vendor_matches(text):
            seen.add(name)
            around = text[max(0, start - 40):end + 2]
            assert any(p.search(around.encode()) for p in G.compiled()["vendor"]), name
            assert G.vendor_anchors()[name].search(around.encode()), name  # and its own anchor, for `names`
    assert len(seen) >= 20


@pytest.mark.parametrize("text", ["a\nb password = 'x'\nc", "ünï\npassword='S3cr3t!Passw0rd'\n€€\ntoken: 'abc'",
                                  "password = 'S3cr3t!Passw0rd'", "\n\npw=hunter2hunter2\n"])
def test_matched_lines_are_python_offsets(text: str) -> None:
    found = G.candidates(pa.array([text], pa.string()))
    _, where = found[0]
    lines = where.lines_for("assignment")
    assert lines, text
    for start, end in lines:
        assert (start == 0 or text[start - 1] == "\n") and (end == len(text) or text[end] == "\n")
        assert re.search(r"pass|pw|token", text[start:end])


def _alone(text: str) -> tuple[frozenset[str], dict[str, list[tuple[int, int]]]]:
    """The detectors and matched lines of one text searched alone (a batch of one row), as Python's `re` finds the
    gate patterns' line starts in it: the reference for the joined-batch search."""
    detectors, lines = set(), {}
    for name, pattern in G.GATES.items():
        patterns = (pattern,) if isinstance(pattern, str) else pattern
        if name in G.LINE_GATED:
            starts = [m.start() for m in G.compiled()[name][0].finditer(text.encode())]
            if starts:
                detectors.add(name)
                lines[name] = G._matched_lines(text, text.encode(), starts)
        elif any(G.compiled()[name][i].search(text.encode()) for i in range(len(patterns))):
            detectors.add(name)
    return frozenset(detectors), lines


def test_gates_on_a_joined_batch_equal_each_text_searched_alone() -> None:
    # rows that end without a newline, rows that start with a `^`-anchored form, empty rows and nulls between them:
    # a match never runs from one row into the next, and a row's first line is a line start
    rng = random.Random(3)
    pieces = ["password=hunter2hunter2", "export DB_PASSWORD=S3cr3tPassw0rd", "ENV API_KEY value", "é", "",
              "x = 1", "'" + RNG_CHARS[:24] + "'", "contact ops@acme-corp.io", "93.184.216.34", "AKIA",
              "Q7XZ2LWT9KRB4NCY", "\n", "-----BEGIN RSA PRIVATE KEY-----", "  - token: abcdefgh", "ghp_",
              "пароль", "\u212aEY=abcdef", "<password>hunter2</", "password>", "@"]
    texts: list[str | None] = []
    for _ in range(400):
        texts.append("".join(rng.choice(pieces) + rng.choice(["", "\n", " ", "\r\n"])
                             for _ in range(rng.randint(0, 6))))
    texts += [None, "", "password=hunter2hunter2", None, "ops@acme-corp.io"]
    found = G.candidates(pa.array(texts, pa.string()))
    for row, text in enumerate(texts):
        detectors, lines = _alone(text or "")
        if not detectors or not text:
            assert row not in found, (row, text)
            continue
        got_text, where = found[row]
        assert got_text == text
        assert where.detectors == detectors, text
        assert where.lines == lines, text
    assert sum(1 for _, w in found.values() if w.lines.get("assignment")) > 50  # the joined search found lines


def test_no_gate_pattern_matches_a_newline() -> None:
    # what the joined search relies on: a row's match cannot begin in one row and end in the next
    for name, patterns in G.compiled().items():
        for pattern in patterns:
            for probe in ("password=\nhunter2hunter2", "ops@\nacme-corp.io", "93.184.\n216.34", "'abc\ndef" * 9,
                          "PRIVATE\nKEY", "AK\nIA", "ENV\n", "<password>\nx</"):
                for m in pattern.finditer(probe.encode()):
                    assert b"\n" not in m.group(), (name, probe)


def test_email_gate_passes_every_text_with_an_email() -> None:
    locals_ = ["a", "jane.smith", "x+tag", "o'neil", "ü", "1", "_x", "a-b", "%", "."]
    domains = ["globex.com", "sub.acme-corp.io", "x.y.z.org", "localhost", "example.com", "a.b", "b.co", "-x.com",
               "ü.com", "x..com", "x", "xn--bcher-kva.ch", "1.2.3.4"]
    texts = [f"{pre}{user}@{domain}{post}" for user in locals_ for domain in domains
             for pre, post in (("", ""), ("mail ", ">"), ("<", "\n"), ("é", "é"))]
    texts += ["@property\ndef x(self): ...", "@functools.cache", "git@github.com:org/repo.git"]
    emails_found = [t for t in texts if redact(t)[1].get("email")]
    assert len(emails_found) > 50
    out = RedactPII().transform(pa.table({"content": pa.array(texts, pa.string())}))
    assert out.column("content").to_pylist() == [redact(t)[0] for t in texts]


def _line_texts() -> list[str]:
    """Lines around the high-entropy gate's bounds: both quotes, mixed quotes, several strings per line, 8/9-digit
    hex and 22/23-character tokens, non-ASCII, CRLF, empty lines and texts."""
    rng = random.Random(11)
    hex_ = "0123456789abcdefABCDEF"
    pieces = ["x = ", "é", "€ ", "\r\n", "\n", " ", "", "#", "token = ", '"', "'", "ü'", "'ü"]
    for n in (8, 9, 10, 22, 23, 24, 40):
        body = "".join(rng.choice(RNG_CHARS + "+/=-_\\") for _ in range(n))
        hexes = "".join(rng.choice(hex_) for _ in range(n))
        for q1, q2 in (('"', '"'), ("'", "'"), ('"', "'"), ("'", '"')):
            pieces += [q1 + body + q2, q1 + hexes + q2]
    texts = ["", "\n", "''", '""', "'" + "a" * 23 + "'"]
    for _ in range(600):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    return texts


def test_line_scans_find_the_lines_of_each_line_gate() -> None:
    # the split scans (one per leading byte) against the gate's own pattern, line by line
    texts = _line_texts()
    assert set(G.LINE_SCANS) == set(G.LINE_GATED)
    found_lines = 0
    for name in G.LINE_GATED:
        plain = G.compiled()[name][0]
        for text in texts:
            raw = text.encode()
            expected = G._matched_lines(text, raw, [m.start() for m in plain.finditer(raw)])
            starts = G._line_starts(G.line_scans()[name], raw + b"\n", [0, len(raw) + 1]).get(0, [])
            assert G._matched_lines(text, raw, starts) == expected, (name, text)
            found_lines += len(expected)
    assert found_lines > 500
    found = G.candidates(pa.array(texts, pa.string()))  # and in a joined batch
    for row, text in enumerate(texts):
        _, lines = _alone(text)
        assert (found[row][1].lines if row in found else {}) == lines, text


def test_pattern_sets_name_the_patterns_that_match() -> None:
    texts = [f.text for f in build_labelled_set(120, credential_repeats=1)] + _line_texts() + [
        "AKIA" + "Z" * 16, "x ghp_" + "a" * 36 + " SK" + "0" * 32, "mail ops@acme-corp.io 10.0.0.1",
        "-----BEGIN RSA PRIVATE KEY-----", "é€ hooks.slack.com/x eyJhbGciOi", "fe80::1 key-0123"]
    gate_set, anchor_set = G.text_gate_set(), G.vendor_anchor_set()
    checked = 0
    for text in texts:
        raw = text.encode()
        for patterns in (gate_set, anchor_set):
            expected = frozenset(n for n, p in patterns.patterns if p.search(raw) is not None)
            if expected:
                for start, end in ((0, len(raw)), (1, len(raw)), (0, max(0, len(raw) - 1))):
                    inside = frozenset(n for n, p in patterns.patterns if p.search(raw, start, end) is not None)
                    if inside:
                        assert patterns.names(raw, start, end) == inside, text
                        checked += 1
    assert checked > 200
    # a set search that reports nothing where a pattern matches (RE2's set has no fallback when its DFA runs out
    # of memory) falls back to searching the patterns one by one
    silent = G.PatternSet(gate_set.patterns, G.PatternSet.of([("never", "\\x00never\\x00")]).searcher)
    raw = b"ops@acme-corp.io AKIA"
    assert silent.names(raw, 0, len(raw)) == gate_set.names(raw, 0, len(raw)) == {"email", "vendor"}
