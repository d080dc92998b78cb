"""Provenance and request bodies an attacker sends: a snippet too long to check, a body that is not UTF-8.

Before: a 2 MB snippet (the payload limit) cost minutes of CPU and gigabytes of memory per request;
a body that is not UTF-8 got FastAPI's `{"detail"}` 400 instead of the `{"error", "error_type"}` every
other refusal has.
"""

from __future__ import annotations

import time

import httpx

from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}", "Content-Type": "application/json"}


def test_snippet_too_long_is_a_422_at_once(tiny_server) -> None:
    snippet = "".join(f"def function_{i}(argument):\n    return argument * {i}\n" for i in range(4000))
    started = time.monotonic()
    r = httpx.post(tiny_server.url + "/v1/provenance/contains", json={"snippet": snippet}, headers=AUTH, timeout=60)
    assert r.status_code == 422, r.text
    assert "at most 100,000 are checked" in r.json()["error"] and r.json()["error_type"] == "validation"
    assert time.monotonic() - started < 10


def test_body_that_is_not_utf8_is_a_422_with_the_error_shape(tiny_server) -> None:
    for path, body in [("/generate", b'{"inputs": "\xff\xfe abc"}'), ("/v1/completions", b'{"prompt": "\xff x"}'),
                       ("/v1/provenance/contains", b'{"snippet": "\xff\xfe"}')]:
        r = httpx.post(tiny_server.url + path, content=body, headers=AUTH, timeout=60)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error_type"] == "validation" and "UTF-8" in r.json()["error"], (path, r.text)
    assert httpx.get(tiny_server.url + "/no-such-route", timeout=60).status_code == 404
