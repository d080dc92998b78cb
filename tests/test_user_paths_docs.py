"""What a new user reads stays true: every command the README, docs/ and `--help` examples show parses,
help texts print as written, and the README's server recipes work with the clients they name."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from codefoundry.cli import run
from fixtures_lora_serve import make_lora_adapter
from fixtures_serve import TINY_CHAT_TEMPLATE

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def shown_commands(text: str) -> list[str]:
    """`codefoundry …` command lines in a page's code blocks (continuations joined, comments cut)."""
    commands: list[str] = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("codefoundry ") and " | " not in line:  # `dedup | decontaminate | …`: a choice
                commands.append(line)
    return commands


def epilog_commands() -> list[str]:
    """The `$ codefoundry …` examples of every command's --help."""
    import typer

    from codefoundry.cli import app

    found: list[str] = []

    def walk(command) -> None:
        for line in (command.epilog or "").splitlines():
            line = line.strip().removeprefix("$ ").split("  #")[0].replace("\\[", "[")
            if line.startswith("codefoundry "):
                found.append(line)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return found


DOC_COMMANDS = [c for page in PAGES for c in shown_commands(page.read_text())]


def test_the_pages_show_commands() -> None:
    assert len(DOC_COMMANDS) >= 25 and len(epilog_commands()) >= 40


@pytest.mark.parametrize("command", DOC_COMMANDS + epilog_commands())
def test_every_shown_command_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each flag a page or an example shows still exists (an unknown option fails before --help is acted on)."""
    argv = shlex.split(command)[1:]
    assert run([*argv, "--help"]) == 0, capsys.readouterr().out
    assert "Usage: codefoundry" in capsys.readouterr().out


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 240)   # wide: a docstring's own line breaks show
    assert run([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_bracketed_words_in_option_help_are_shown(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert "pip install 'codefoundry[ray]'" in help_of(["data", "curate"], capsys, monkeypatch)


def test_docstrings_are_not_broken_mid_sentence(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    demo = help_of(["demo"], capsys, monkeypatch)
    assert "a rerun skips the finished stages and continues an interrupted one" in demo
    assert "(default demo-out)" in demo and "[default: (" not in demo
    assert "An interrupted run leaves no tokenizer behind" in help_of(["tokenizer", "train"], capsys, monkeypatch)


def test_readme_resumes_training_with_the_first_commands_flags() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    first = re.search(r"codefoundry train --tokens \S+ --tokenizer \S+ --out \S+ (.*)\n", readme)
    assert first is not None
    assert f"{first.group(0).strip()} --resume" in readme


@pytest.mark.slow
def test_train_resume_as_shown_continues_the_run(train_dataset_dir: Path, train_tokenizer_dir: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's resume line is the first command plus --resume; a bare --resume of a run with other
    settings is refused in one line that says what differs, and the checkpoint is kept."""
    out = tmp_path / "model"
    where = ["train", "--dataset", str(train_dataset_dir), "--tokenizer", str(train_tokenizer_dir), "--out", str(out)]
    settings = ["--preset", "tiny", "--seq-len", "64", "--micro-batch-size", "2", "-j", "1"]
    assert run([*where, *settings, "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert run([*where, "--resume"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "seq_len" in err and len(err.splitlines()) == 1
    assert run([*where, *settings, "--max-steps", "2", "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def adapter_server(build_once, tiny_model_dir: Path) -> Iterator:
    """The tiny chat model with a LoRA adapter `mine`, on a KV pool exactly the prefill budget."""
    import json
    import shutil

    from codefoundry.serve import ServeConfig, start_in_thread

    def build(out: Path) -> None:
        shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
        config = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TINY_CHAT_TEMPLATE}))

    base = build_once("tiny_chat_model", build)
    adapter = build_once("docs_adapter", lambda p: make_lora_adapter(base, p, ["c_attn"], seed=3))
    running = start_in_thread(ServeConfig(model=base, port=0, adapters={"mine": adapter},
                                          max_batch_total_tokens=256, max_batch_prefill_tokens=256))
    yield running
    running.stop()


def test_pool_as_large_as_the_prefill_budget_starts(adapter_server) -> None:
    import httpx

    info = httpx.get(adapter_server.url + "/info").json()
    assert info["max_batch_total_tokens"] == 256 and info["max_total_tokens"] <= 256


def test_huggingface_inference_client_chats_beside_an_adapter(adapter_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """InferenceClient(URL).chat_completion sends model "dummy": the base model, as TGI takes it."""
    import huggingface_hub
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)   # the suite is offline; 127.0.0.1 is ours

    client = InferenceClient(adapter_server.url)
    reply = client.chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert isinstance(client.text_generation("def f(", max_new_tokens=2), str)


def test_a_forgotten_api_key_is_a_json_401(tiny_server) -> None:
    import httpx

    reply = httpx.post(tiny_server.url + "/generate", json={"inputs": "def f(", "parameters": {"max_new_tokens": 1}})
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert reply.json()["error_type"] == "authentication" and "Authorization: Bearer" in reply.json()["error"]
