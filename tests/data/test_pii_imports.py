"""PII detection imports detect-secrets without `requests` (whose import costs more than detect-secrets'), and a
later `import requests` anywhere in the process still gets the real module, the one detect-secrets then uses."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r'''
import json, sys
from codefoundry.data.pii import redact
text = 'x = "' + "Qm7vTz2LwX9kRb4NcY8pHs1JdF6gWe3Ua5ViOt0ZyKx"[:32] + '"\n'
before = "requests" in sys.modules
redacted, counts = redact(text)
loaded = sorted(m for m in ("requests", "urllib3", "idna", "charset_normalizer") if m in sys.modules)
import detect_secrets.plugins.base as base
import requests
from requests.exceptions import RequestException
print(json.dumps({
    "before": before, "loaded": loaded, "keys": counts.get("key", 0), "redacted": "<KEY>" in redacted,
    "real": type(requests).__name__ == "module" and callable(requests.get),
    "same": base.requests.exceptions.RequestException is RequestException is requests.RequestException,
}))
'''

PRELOADED = r'''
import json, requests
from codefoundry.data.pii import redact
redact('x = "Qm7vTz2LwX9kRb4NcY8pHs1JdF6gWe3U"\n')
import detect_secrets.plugins.base as base
print(json.dumps({"same": base.requests is requests}))
'''


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_detect_secrets_is_imported_without_requests() -> None:
    got = _run(PROBE)
    assert got["keys"] == 1 and got["redacted"]  # the high-entropy plugin ran
    assert not got["before"] and got["loaded"] == []
    assert got["real"] and got["same"]


def test_a_process_that_imported_requests_keeps_it() -> None:
    assert _run(PRELOADED) == {"same": True}


INSIDE = r'''
import json, sys
from codefoundry.data.pii import detect
with detect._deferred("requests"):
    import requests
    stand_in = type(requests).__name__
    import requests.adapters  # another thread's import meanwhile: the real package (its `__path__`) is loaded
    from requests import Session
print(json.dumps({"stand_in": stand_in, "real": type(sys.modules["requests"]).__name__,
                  "session": Session is sys.modules["requests"].Session,
                  "adapters": hasattr(sys.modules["requests"], "adapters")}))
'''


def test_an_import_of_requests_while_it_is_deferred_gets_the_real_package() -> None:
    assert _run(INSIDE) == {"stand_in": "_DeferredModule", "real": "module", "session": True, "adapters": True}
