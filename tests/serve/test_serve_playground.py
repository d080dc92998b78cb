"""The `/ui` playground in real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
selenium) against a real server on 127.0.0.1: tokens stream in, FIM mode, a wrong key's error, a screenshot."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fixtures_serve import SERVE_API_KEY

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1280,1000")
PROMPT = "def fibonacci(n):\n"
NEW_TOKENS = 48
FIM_PREFIX, FIM_SUFFIX = "def mean(xs):\n    total = ", "\n    return total / len(xs)\n"
WAIT_S = 20


@pytest.fixture(scope="module")
def second_server(tiny_server, tiny_model_dir: Path) -> Iterator:
    """The server compare mode talks to: no API key, and it allows the first server's page (its origin)."""
    from codefoundry.serve import ServeConfig, start_in_thread

    running = start_in_thread(ServeConfig(model=tiny_model_dir, port=0, max_batch_total_tokens=2048,
                                          max_batch_prefill_tokens=256, cors_allow_origin=[tiny_server.url]))
    yield running
    running.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    """Headless Chromium with a fresh profile; fails (never skips) when the Debian packages are missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
                    f"(bash scripts/install-system-deps.sh), or deselect with -m 'not browser'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _fill(driver, element_id: str, text: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(text)


def _greedy(url: str, inputs: str, details: bool = False):
    """`/generate`'s greedy text (and, with `details`, its token count) for what the page sends."""
    r = httpx.post(url + "/generate", json={"inputs": inputs, "parameters": {"max_new_tokens": NEW_TOKENS,
                                                                            "details": details}},
                   headers={"Authorization": f"Bearer {SERVE_API_KEY}"}, timeout=60)
    r.raise_for_status()
    body = r.json()
    return (body["generated_text"], body["details"]["generated_tokens"]) if details else body["generated_text"]


def _generate_and_wait(driver, *, keyboard: bool = False, panes: tuple[str, ...] = ("pane-self",)) -> list[str]:
    """Start a generation (button or Ctrl+Enter), wait until the panes settle; their final data-states."""
    from selenium.webdriver.common.keys import Keys

    for pane in panes:
        driver.execute_script(f"document.getElementById('{pane}').dataset.state = 'queued';")
    if keyboard:
        driver.switch_to.active_element.send_keys(Keys.CONTROL, Keys.ENTER)
    else:
        driver.find_element("id", "generate").click()

    def states(d) -> list[str]:
        return [d.find_element("id", pane).get_attribute("data-state") for pane in panes]
    _wait(driver, lambda d: all(s in ("done", "error") for s in states(d)), "the generation to finish")
    return states(driver)


def _output(driver, element_id: str = "output") -> str:
    return driver.find_element("id", element_id).get_property("textContent")


@pytest.mark.browser
def test_playground_streams_fim_and_auth_in_chromium(tiny_server, browser, tmp_path: Path) -> None:
    url = tiny_server.url
    # the page and its files need no key; they forbid inline script and framing
    page = httpx.get(url + "/ui", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(url + "/ui/nope.js", timeout=30).status_code == 404
    fim = httpx.get(url + "/ui/model.json", timeout=30).json()["fim"]
    assert fim == {"prefix": "<fim_prefix>", "suffix": "<fim_suffix>", "middle": "<fim_middle>"}

    driver = browser
    driver.get(url + "/ui")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true",
          "the page to load /ui/model.json")
    _fill(driver, "api-key", SERVE_API_KEY)
    _fill(driver, "max-new-tokens", str(NEW_TOKENS))
    _fill(driver, "prompt", PROMPT)
    assert driver.execute_script("return sessionStorage.getItem('codefoundry.playground.apiKey')") == SERVE_API_KEY

    # every change of the output's text, as the browser sees it
    driver.execute_script("""
        window.seen = [];
        const out = document.getElementById('output');
        new MutationObserver(() => window.seen.push(out.textContent.length))
            .observe(out, {childList: true, characterData: true, subtree: true});""")
    assert _generate_and_wait(driver, keyboard=True) == ["done"]
    seen = [n for n in driver.execute_script("return window.seen") if n > 0]
    assert len(set(seen)) >= 2 and seen == sorted(seen), f"the output did not grow while streaming: {seen}"
    expected = _greedy(url, PROMPT)
    assert expected and _output(driver) == expected
    stats = driver.find_element("id", "stats").text
    assert "tok/s" in stats and driver.find_element("id", "stats").get_attribute("data-tokens") == str(NEW_TOKENS)

    driver.find_element("css selector", 'input[name="mode"][value="fim"]').click()
    assert driver.find_element("id", "prompt").is_displayed() is False
    _fill(driver, "fim-prefix", FIM_PREFIX)
    _fill(driver, "fim-suffix", FIM_SUFFIX)
    assert _generate_and_wait(driver) == ["done"]
    # the page sent the prompt built with the model's FIM tokens: the same text and token count as /generate
    # (the random tiny model fills the middle with special tokens only, so that text may be empty; without
    # the FIM tokens the same code gives visible text, so a prompt built wrongly would show)
    fim_prompt = f"{fim['prefix']}{FIM_PREFIX}{fim['suffix']}{FIM_SUFFIX}{fim['middle']}"
    middle, tokens = _greedy(url, fim_prompt, details=True)
    assert _greedy(url, FIM_PREFIX + FIM_SUFFIX) != middle
    assert driver.find_element("css selector", "#output .middle").get_property("textContent") == middle
    assert _output(driver) == FIM_PREFIX + middle + FIM_SUFFIX
    assert driver.find_element("id", "stats").get_attribute("data-tokens") == str(tokens) == str(NEW_TOKENS)

    _fill(driver, "api-key", "wrong-key")
    assert _generate_and_wait(driver) == ["error"]
    error = driver.find_element("id", "error")
    assert error.is_displayed() and "401" in error.text and "API key" in error.text
    assert _output(driver) == ""

    shot = tmp_path / "playground.png"
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not refused, refused


@pytest.mark.browser
def test_playground_compare_and_chat_in_chromium(tiny_server, second_server, tiny_chat_server, browser) -> None:
    from selenium.webdriver.support.ui import Select

    driver, url = browser, tiny_server.url
    driver.get(url + "/ui")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true", "the page")
    _fill(driver, "api-key", SERVE_API_KEY)
    _fill(driver, "max-new-tokens", str(NEW_TOKENS))
    _fill(driver, "prompt", PROMPT)
    assert not driver.find_element("id", "pane-other").is_displayed()
    driver.find_element("id", "compare").click()
    _fill(driver, "other-url", second_server.url)
    Select(driver.find_element("id", "other-api")).select_by_value("openai")
    # this server through TGI's stream, the second through OpenAI's: same model, same greedy text
    assert _generate_and_wait(driver, panes=("pane-self", "pane-other")) == ["done", "done"]
    expected = _greedy(url, PROMPT)
    assert expected and _output(driver) == expected and _output(driver, "other-output") == expected
    assert "tok/s" in driver.find_element("id", "other-stats").text

    # the tiny model has no chat template: chat mode says so and does not send (the server would answer 422)
    driver.find_element("id", "compare").click()
    driver.find_element("css selector", 'input[name="mode"][value="chat"]').click()
    assert "no chat template" in driver.find_element("id", "chat-note").text
    assert not driver.find_element("id", "generate").is_enabled()

    # chat on a model with a template: the reply streams into the pane and joins the conversation; it is what
    # the chat route answers
    chat_url = tiny_chat_server.url
    driver.get(chat_url + "/ui")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true", "the page")
    _fill(driver, "api-key", SERVE_API_KEY)
    _fill(driver, "max-new-tokens", str(NEW_TOKENS))
    driver.find_element("css selector", 'input[name="mode"][value="chat"]').click()
    assert driver.find_element("id", "chat-note").text == ""
    _fill(driver, "user-message", "Write a function that adds two numbers.")
    assert _generate_and_wait(driver) == ["done"]
    r = httpx.post(chat_url + "/v1/chat/completions", timeout=60,
                   headers={"Authorization": f"Bearer {SERVE_API_KEY}"},
                   json={"messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
                         "max_tokens": NEW_TOKENS, "temperature": 0})
    reply = r.json()["choices"][0]["message"]["content"]
    turns = driver.find_elements("css selector", "#conversation li")
    assert [t.get_attribute("data-role") for t in turns] == ["user", "assistant"]
    assert turns[1].get_attribute("data-content") == reply == _output(driver)
    assert driver.find_element("id", "user-message").get_property("value") == ""

    # the same page from another origin: the second server does not allow it, and the pane says how to fix it
    driver.get(url.replace("127.0.0.1", "localhost") + "/ui")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true", "the page")
    _fill(driver, "api-key", SERVE_API_KEY)
    _fill(driver, "prompt", PROMPT)
    driver.find_element("id", "compare").click()
    _fill(driver, "other-url", second_server.url)
    assert _generate_and_wait(driver, panes=("pane-self", "pane-other")) == ["done", "error"]
    assert "--cors-allow-origin" in driver.find_element("id", "other-error").text


def test_fim_tokens_found_by_family_or_none() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from codefoundry.serve.routes.playground import fim_tokens

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0, "def": 1}, unk_token="[UNK]")))
    assert fim_tokens(tok) is None
    tok.add_special_tokens({"additional_special_tokens": ["<|fim_prefix|>", "<|fim_suffix|>"]})
    assert fim_tokens(tok) is None  # an incomplete set is no set
    tok.add_special_tokens({"additional_special_tokens": ["<|fim_middle|>"]})
    assert fim_tokens(tok) == {"prefix": "<|fim_prefix|>", "suffix": "<|fim_suffix|>", "middle": "<|fim_middle|>"}


@pytest.mark.browser
def test_playground_top_k_is_offered_only_where_it_is_sent(tiny_server, browser) -> None:
    """OpenAI's API has no top_k (the server answers 422 to unknown OpenAI parameters): in OpenAI and chat
    modes the field is disabled with a note instead of being silently dropped."""
    from selenium.webdriver.support.ui import Select

    driver, url = browser, tiny_server.url
    driver.get(url + "/ui")
    _wait(driver, lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true", "the page")
    _fill(driver, "api-key", SERVE_API_KEY)
    _fill(driver, "max-new-tokens", "8")
    _fill(driver, "prompt", PROMPT)
    top_k, note = driver.find_element("id", "top-k"), driver.find_element("id", "top-k-note")
    assert top_k.is_enabled() and note.text == ""
    _fill(driver, "top-k", "5")
    Select(driver.find_element("id", "api")).select_by_value("openai")
    assert not top_k.is_enabled() and "top_k" in note.text and "OpenAI" in note.text
    # a sampled OpenAI request from the page is accepted (no top_k in its body)
    _fill(driver, "temperature", "0.7")
    _fill(driver, "seed", "3")
    assert _generate_and_wait(driver) == ["done"]
    # the compare pane on TGI would carry it: enabled again; chat mode never does
    driver.find_element("id", "compare").click()
    assert top_k.is_enabled() and note.text == ""
    driver.find_element("css selector", 'input[name="mode"][value="chat"]').click()
    assert not top_k.is_enabled() and "top_k" in note.text
    driver.find_element("css selector", 'input[name="mode"][value="completion"]').click()
    driver.find_element("id", "compare").click()
    Select(driver.find_element("id", "api")).select_by_value("tgi")
    assert top_k.is_enabled() and top_k.get_property("value") == "5"
