"""PII redaction: planted PII replaced by tokens, hard negatives left alone, counts but never values in stats."""

from __future__ import annotations

from codefoundry.data.pii import PiiConfig, RedactPII, find_pii, redact
from codefoundry.data.pii.gibberish import detector
from codefoundry.data.pipeline import from_records
from labelled.pii import build_labelled_set, evaluate

SAMPLE = '''"""Billing client. Maintainer: Jane Smith <jane.smith@acme-corp.io>"""
import os

UPSTREAM = "52.14.201.77"
UPSTREAM_V6 = "2a03:2880:f12f:83:face:b00c:0:25de"
aws_access_key = "AKIAZ3M5P7Q9R2T4V6X8"
GITHUB_TOKEN = "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"
db_password = "Summer2024!x"
# hard negatives: all of these stay
support = "someone@example.com"
remote = "git@github.com:acme/billing.git"
local, resolver = "192.168.1.10", "8.8.8.8"
__version__ = "1.2.3.4"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
request_id = "123e4567-e89b-12d3-a456-426614174000"
password = os.environ["DB_PASSWORD"]
fallback_password = "changeme"
cc = "jane.smith@acme-corp.io"
'''


def test_redacts_each_kind_and_leaves_hard_negatives() -> None:
    out, counts = redact(SAMPLE)
    assert counts == {"email": 2, "ip_address": 2, "key": 2, "password": 1}
    for secret in ("jane.smith@acme-corp.io", "52.14.201.77", "2a03:2880", "AKIAZ3M5", "ghp_wWPw", "Summer2024!x"):
        assert secret not in out
    assert "Maintainer: Jane Smith <<EMAIL>>" in out and 'cc = "<EMAIL>"' in out  # same value, same token
    assert 'UPSTREAM = "<IP_ADDRESS>"' in out and 'aws_access_key = "<KEY>"' in out
    assert 'db_password = "<PASSWORD>"' in out
    for negative in ("someone@example.com", "git@github.com", "192.168.1.10", "8.8.8.8", "1.2.3.4",
                     "9f86d081884c7d659a2f", "123e4567-e89b", 'os.environ["DB_PASSWORD"]', '"changeme"'):
        assert negative in out


def test_private_ip_replacement_is_consistent() -> None:
    text = 'a = "52.14.201.77"\nb = "52.14.201.77"\nc = "93.184.216.34"\n'
    out, _ = redact(text, PiiConfig(ip_replacement="private"))
    lines = out.splitlines()
    assert lines[0].split("=")[1] == lines[1].split("=")[1]
    assert "52.14.201.77" not in out and "93.184.216.34" not in out
    assert all(x.split('"')[1].startswith(("172.", "192.168.")) for x in lines)


def test_step_counts_kinds_not_values() -> None:
    step = RedactPII()
    kept, removed = step(from_records([{"content": SAMPLE, "path": "billing.py"}, {"content": "x = 1\n"}]))
    assert removed.num_rows == 0 and kept.num_rows == 2
    assert "AKIAZ3M5" not in kept.column("content")[0].as_py()
    assert step.stats.counters == {"email": 2, "ip_address": 2, "key": 2, "password": 1, "files_redacted": 1}


def test_gibberish_model_trained_from_shipped_text() -> None:
    g = detector()
    assert g.is_gibberish("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert not g.is_gibberish("get_user_by_name_and_email")


def test_labelled_set_precision_recall() -> None:
    files = build_labelled_set(n_files=60, seed=5)
    scores, negatives_hit, _ = evaluate(files)
    for kind, s in scores.items():
        assert s.precision >= 0.95, (kind, s)
        assert s.recall >= 0.9, (kind, s)
    assert negatives_hit <= 2
    assert find_pii("nothing to see here\n") == []
