"""Replace PII with tokens: `<EMAIL>`, `<KEY>`, `<PASSWORD>`, `<IP_ADDRESS>` (or BigCode's random private IPs)."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data.pii.detect import PRIORITY, Span, find_pii
from codefoundry.data.pii.gates import EVERYWHERE, Candidates, candidates
from codefoundry.data.pipeline import Mapper

TOKENS = {"email": "<EMAIL>", "key": "<KEY>", "password": "<PASSWORD>", "ip_address": "<IP_ADDRESS>"}
# bigcode-dataset pii/utils/replacements: 5 private IPv4 and 5 IPv6 addresses
PRIVATE_IPV4 = ["172.16.31.10", "172.16.58.3", "172.16.17.32", "192.168.127.12", "192.168.3.11"]
PRIVATE_IPV6 = ["fd00:c2b6:b24b:be67:2827:688d:e6a1:6a3b", "fd00:a516:7c1b:17cd:6d81:2137:bd2a:2c5b",
                "fc00:e968:6179::de52:7100", "fc00:db20:35b:7399::5", "fdf8:f53e:61e4::18"]


class PiiConfig(StageConfig):
    """PII redaction (bigcode-dataset `pii/`, regex + detect-secrets path; no NER model is used)."""

    enabled: bool = True
    kinds: list[Literal["email", "ip_address", "key", "password"]] = Field(
        default_factory=lambda: ["email", "ip_address", "key", "password"])
    ip_replacement: Literal["token", "private"] = "token"
    """token: `<IP_ADDRESS>`; private: one of BigCode's private IPs, chosen by the address (stable)."""


def _private_ip(value: str) -> str:
    choices = PRIVATE_IPV6 if ":" in value else PRIVATE_IPV4
    return choices[int(hashlib.sha1(value.encode()).hexdigest(), 16) % len(choices)]


def redact(text: str, config: PiiConfig | None = None, where: Candidates = EVERYWHERE) -> tuple[str, Counter[str]]:
    """`text` with PII replaced (the same value → the same replacement in a file) and counts per kind; `where` as
    in `find_pii`."""
    config = config or PiiConfig()
    spans: list[Span] = find_pii(text, frozenset(config.kinds), where)
    counts: Counter[str] = Counter()
    out, last = [], 0
    for s in spans:
        out.append(text[last:s.start])
        if s.kind == "ip_address" and config.ip_replacement == "private":
            out.append(_private_ip(s.value))
        else:
            out.append(TOKENS[s.kind])
        counts[s.kind] += 1
        last = s.end
    out.append(text[last:])
    return "".join(out), counts


class RedactPII(Mapper):
    """Rewrite `content` with PII replaced; counts per kind land in stats.json (never the values)."""

    name = "pii"

    def __init__(self, config: PiiConfig | None = None) -> None:
        super().__init__()
        self.config = config or PiiConfig()

    def transform(self, batch: pa.Table) -> pa.Table:
        column = batch.column("content").combine_chunks()
        rows, redacted_texts = [], []
        for row, (text, where) in candidates(column).items():  # only the texts where something may be found
            redacted, counts = redact(text, self.config, where)
            for kind, n in counts.items():
                self.stat_update(f"{kind}", n)
            if counts:
                self.stat_update("files_redacted")
                rows.append(row)
                redacted_texts.append(redacted)
        if rows:
            mask = np.zeros(len(column), bool)
            mask[rows] = True
            column = pc.replace_with_mask(column, pa.array(mask), pa.array(redacted_texts, pa.string()))
        i = batch.schema.get_field_index("content")
        return batch.set_column(i, batch.schema.field(i), column)


__all__ = ["PRIORITY", "TOKENS", "PiiConfig", "RedactPII", "redact"]
