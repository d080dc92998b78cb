"""The server against a hostile client or web page, on real servers on 127.0.0.1: exact API keys, no
cross-origin access unless listed, no answer to foreign Host names (DNS rebinding), bounded bodies."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures_serve import SERVE_API_KEY

ONE_TOKEN = {"inputs": "x", "parameters": {"max_new_tokens": 1}}
LISTED = "https://ide.example"


@pytest.fixture(scope="module")
def open_server(tiny_model_dir: Path) -> Iterator:
    """No API key; one listed CORS origin and one extra allowed Host name."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, max_batch_total_tokens=2048,
                                          max_batch_prefill_tokens=256, cors_allow_origin=[LISTED],
                                          allowed_host=["codefoundry.lan", "::1"]))
    yield running
    running.stop()


def _generate(url: str, **headers: str | bytes) -> httpx.Response:
    return httpx.post(url + "/generate", json=ONE_TOKEN, headers=headers, timeout=30)


def test_api_key_is_exact_and_scheme_case_free(tiny_server) -> None:
    url = tiny_server.url
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert _generate(url, Authorization=f"{scheme} {SERVE_API_KEY}").status_code == 200, scheme
    # the key differs only in case: 401 (a case-insensitive match shrinks the key space)
    for key in (SERVE_API_KEY.upper(), SERVE_API_KEY.capitalize()):
        r = _generate(url, Authorization=f"Bearer {key}")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", key
    for bad in ("", SERVE_API_KEY, f"Basic {SERVE_API_KEY}", f"Bearer {SERVE_API_KEY}x", f"Bearer {SERVE_API_KEY[:-1]}",
                "Bearer", "Bearer t\u00e9st-key".encode("latin-1")):
        assert _generate(url, Authorization=bad).status_code == 401, bad
    openai = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1},
                        headers={"Authorization": f"bearer {SERVE_API_KEY.upper()}"}, timeout=30)
    assert openai.status_code == 401


def test_no_cross_origin_access_by_default(tiny_server) -> None:
    pre = httpx.options(tiny_server.url + "/generate", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, timeout=30)
    assert "access-control-allow-origin" not in pre.headers
    r = httpx.get(tiny_server.url + "/info", headers={"Origin": "https://evil.example"}, timeout=30)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_answers_only_listed_origins(open_server) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(open_server.url + "/generate", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})

    listed = preflight(LISTED)
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == LISTED
    assert "authorization" in listed.headers["access-control-allow-headers"].lower()
    unlisted = preflight("https://evil.example")
    assert "access-control-allow-origin" not in unlisted.headers
    r = _generate(open_server.url, Origin=LISTED)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == LISTED
    r = _generate(open_server.url, Origin="https://evil.example")
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "127.0.0.1.attacker.example",
                                  "localhost.attacker.example", "localhost:notaport", "[::2]:80", "10.0.0.1"])
def test_foreign_host_refused_on_loopback(open_server, host: str) -> None:
    for r in (_generate(open_server.url, Host=host), httpx.get(open_server.url + "/info", headers={"Host": host}),
              httpx.options(open_server.url + "/generate", headers={
                  "Host": host, "Origin": LISTED, "Access-Control-Request-Method": "POST"})):
        assert r.status_code == 403, (host, r.request.method)
        assert r.json()["error_type"] == "host_not_allowed" and "--allowed-host" in r.json()["error"]
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8080", "127.0.0.1:1", "[::1]", "[::1]:3000",
                                  "codefoundry.lan", "codefoundry.lan:443", "CodeFoundry.LAN"])
def test_loopback_and_allowed_hosts_answered(open_server, host: str) -> None:
    assert _generate(open_server.url, Host=host).status_code == 200


def test_payload_limit_also_without_content_length(tiny_server) -> None:
    auth = {"Authorization": f"Bearer {SERVE_API_KEY}", "content-type": "application/json"}

    def chunks(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield b" " * 100_000

    # a chunked body declares no length: it is counted as it arrives
    r = httpx.post(tiny_server.url + "/generate", content=chunks(21), headers=auth, timeout=30)
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"
    body = b'{"inputs": "x", "parameters": {"max_new_tokens": 1}}'
    r = httpx.post(tiny_server.url + "/generate", content=iter([body[:10], body[10:]]), headers=auth, timeout=30)
    assert r.status_code == 200, r.text


def test_loopback_detection() -> None:
    from codefoundry.serve import ServeConfig

    for host in ("127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]"):
        assert ServeConfig(host=host).loopback, host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert not ServeConfig(host=host).loopback, host


def test_any_origin_without_key_warns(tiny_server, caplog: pytest.LogCaptureFixture) -> None:
    from codefoundry.serve import create_app

    state = tiny_server.state
    for origins, key, warned in ((["*"], None, True), (["*"], "k", False), ([LISTED], None, False)):
        cfg = state.config.model_copy(update={"cors_allow_origin": origins, "api_key": key})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="codefoundry.serve.app"):
            create_app(dataclasses.replace(state, config=cfg))
        assert any("--cors-allow-origin '*' without --api-key" in m for m in caplog.messages) == warned
