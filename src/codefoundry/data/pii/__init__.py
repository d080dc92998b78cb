"""PII redaction as BigCode's regex path did it, plus the credentials it missed; no NER model (StarPII cannot
run offline).

Modules: `detect` (emails, IPs, the merge), `vendors` (vendor key patterns, private-key blocks),
`assignments` (secret-named assignments, URL passwords, connection strings, command-line flags),
`values` (placeholder, template and randomness checks), `gibberish`, `labelled` (the evaluation set).

Public API:
    RedactPII(config)       the curation step (a Mapper): content rewritten, counts per kind in stats
    redact(text, config)    (redacted text, Counter per kind)
    find_pii(text)          the spans found: Span(start, end, kind, value, rule)
    PiiConfig
"""

from codefoundry.data.pii.detect import Span, find_pii
from codefoundry.data.pii.redact import TOKENS, PiiConfig, RedactPII, redact

__all__ = ["TOKENS", "PiiConfig", "RedactPII", "Span", "find_pii", "redact"]
