"""Secrets whose shape the vendor patterns cut short or did not know: every character of them is redacted."""

from __future__ import annotations

import pytest

from codefoundry.data.pii import redact

# Random-looking bodies (not sequences or placeholder words), built the way each vendor issues them.
BODY = "Qm7vTz2LwX9kRb4NcY8pHs1JdF6gWe3Ua5ViOt0ZyKx"
OPENAI_PROJECT = "sk-proj-" + (BODY + "-" + BODY[:16]) + "T3BlbkFJ" + (BODY[::-1] + "_" + BODY[:30])
OPENAI_SERVICE = "sk-svcacct-" + BODY[:40] + "_" + BODY[:17] + "T3BlbkFJ" + BODY[5:43] + "-" + BODY[:19]
SLACK_APP = "xapp-1-A07QN8ZT4KD-7731955208466-" + "9f3c1a7be25d48e0c6b1f49a2d7e83c5f0a6b9d21c4e7f3a8b5d2c9e0f1a6b3d"
DISCORD_WEBHOOK = ("https://discord.com/api/webhooks/1187465203319484416/"
                   "Kq3vZ8_Lm2XpT7-nR9bWc4YhJ6dFs1GeUa5VoI0tNkQ3zyMx8Lw2Pr7Tb9Hc4Jn6Ds1F")


@pytest.mark.parametrize("secret", [OPENAI_PROJECT, OPENAI_SERVICE, SLACK_APP, DISCORD_WEBHOOK],
                         ids=["openai-project", "openai-service-account", "slack-app", "discord-webhook"])
@pytest.mark.parametrize("line", ["client = make({!r})\n", "{}\n", "  - url: {}\n"], ids=["call", "bare", "yaml"])
def test_whole_secret_redacted(secret: str, line: str) -> None:
    text = "import os\n\n" + line.format(secret) + "print('done')\n"
    out, counts = redact(text)
    assert counts["key"] >= 1
    # no tail of the secret survives: not its last 12 characters, nor any 12-character piece of it
    assert secret[-12:] not in out
    assert not any(secret[i:i + 12] in out for i in range(len(secret) - 12) if not secret[i:i + 12].isalpha())
    assert out.startswith("import os\n\n") and out.endswith("print('done')\n")
