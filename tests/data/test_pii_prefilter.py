"""The PII prefilter: the lines it hands the detectors hold every match a scan of the whole text finds, in ASCII and
non-ASCII files, at line starts and ends; detect-secrets' plugins report the same strings through the fast path."""

from __future__ import annotations

import re

import pytest

from codefoundry.data.pii import find_pii
from codefoundry.data.pii.detect import IPV4, NAME_HINT, _entropy_plugins, _plugin_strings, ip_addresses
from codefoundry.data.pii.prefilter import Prefilter

TEXTS = [
    "server = '203.0.113.77'\n",
    "203.0.113.77",                                   # no newline at all: the line is the text
    "x = 1\n8.8.4.4\n\n93.184.216.34\n",               # at a line start, a popular DNS server kept out
    "ünïcödé = 'naïve' # 2001:db8::1 and 93.184.216.34 after non-ASCII\n",
    "v = '1.2.3.4' # dns server\nw = 'version 1.2.3.4'\n",
    "addr = 'fe80::1%eth0', '2606:4700:4700::1111'\n",
    "a١٢٣.٤.٥.٦ — Arabic-Indic digits are not an address\n",
    "ratio = 0.5\nnot.an.ip\n1.2.3\n",
    "x" * 5000 + " 93.184.216.34\n",
    "mixed\r\n93.184.216.34\r\n",
]


def whole_text_ipv4(text: str) -> list[tuple[int, int]]:
    """Where the IPv4 pattern matches when it scans the whole text (what the prefilter must not lose); a match of
    non-ASCII digits (`\\d` is Unicode) is never an address (`ipaddress` reads ASCII only), so it may be lost."""
    return [(m.start(), m.end()) for m in IPV4.finditer(text) if m.group().isascii()]


@pytest.mark.parametrize("text", TEXTS)
def test_ipv4_lines_hold_every_whole_text_match(text: str) -> None:
    lines = Prefilter(text).ipv4_lines()
    for start, end in whole_text_ipv4(text):
        assert any(lo <= start and end <= hi for lo, hi in lines), (start, end, lines)


@pytest.mark.parametrize("text", TEXTS)
def test_ipv6_seeds_are_the_whole_text_seeds(text: str) -> None:
    seeds = [(m.start(), m.end()) for m in re.finditer(r":[0-9A-Fa-f]{0,4}:", text)]
    assert list(Prefilter(text).ipv6_seeds()) == seeds


def test_addresses_found_through_the_prefilter() -> None:
    values = [s.value for t in TEXTS for s in ip_addresses(t)]
    assert values.count("93.184.216.34") == 4
    assert IPV4.search(TEXTS[6]) and not list(ip_addresses(TEXTS[6]))
    assert "203.0.113.77" not in values  # documentation range (TEST-NET-3): not global
    assert "2606:4700:4700::1111" in values and "8.8.4.4" not in values


@pytest.mark.parametrize("text", [
    'DB_PASSWORD = "hunter2hunter2"\n', "x = 1\nAPI_TOKEN=8c1f0a9e7d6b5c4a3f2e\n",
    "url = 'postgres://u:s3cr3tPassw0rd@db.internal/x'\n", "mysql -u root -pS3cr3tPw\n",
    "İstanbul = 1\napi_key = 'Zk9sL2xQm4Rt7Wv1Yb3N'\n",  # lower-casing changes the length: the regex path
])
def test_hint_lines_hold_every_hint(text: str) -> None:
    lower = text.lower()
    if len(lower) == len(text):
        lines = Prefilter(text).hint_lines(lower)
        for m in NAME_HINT.finditer(lower):
            assert any(lo <= m.start() < hi for lo, hi in lines)
    assert [s.kind for s in find_pii(text)] and all(s.kind in ("key", "password") for s in find_pii(text))


def test_hex32_gate() -> None:
    assert Prefilter("sid = 'AC" + "0123456789abcdef" * 2 + "'").has_hex32()
    assert not Prefilter("sid = 'AC" + "0123456789ABCDEF" * 2 + "'").has_hex32()  # Twilio's are lowercase
    twilio = "TWILIO = 'AC" + "3f9a1c5e7b2d4068" * 2 + "'\n"
    assert [s.rule for s in find_pii(twilio)] == ["twilio"]


@pytest.mark.parametrize("line", [
    "k = 'c2VjcmV0LWtleS1mb3ItdGVzdGluZy0xMjM0NTY3ODkw'",
    "h = 'a3f9c1e7b5d2048f6e1a9c3b7d5f2e8a'; h2 = \"a3f9c1e7b5d2048f6e1a9c3b7d5f2e8a\"",
    "s = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' + 'Zx9Qw2Er7Ty4Ui1Op3As6Df8Gh0Jk5Lz'",
    "n = '12345678901234567890'",
    "nothing quoted here",
])
def test_plugin_strings_equal_detect_secrets_analyze_line(line: str) -> None:
    plugins, _ = _entropy_plugins()
    for plugin in plugins:
        expected = {s.secret_value for s in plugin.analyze_line(filename="f", line=line, line_number=0)}
        got = _plugin_strings(plugin, line)
        assert sorted(got) == sorted(expected) and len(got) == len(set(got))
