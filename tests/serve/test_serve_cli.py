"""`codefoundry serve` flag errors, and an 8K-token prompt on the `long` preset."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from codefoundry.cli import run


def test_serve_cli_bad_model_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["serve", "--model", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err
    assert run(["serve"]) == 1
    assert "no model given" in capsys.readouterr().err


def test_serve_cli_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    from codefoundry.serve import ServeConfig

    assert run(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for flag in ("--model", "--api-key", "--max-concurrent-requests", "--max-batch-total-tokens", "--otlp-endpoint",
                 "--cors-allow-origin", "--allowed-host", "--dtype"):
        assert flag in out
    # the defaults shown are the config's
    for field in ("host", "port", "max_concurrent_requests", "max_batch_prefill_tokens", "max_stop_sequences"):
        assert f"(default {ServeConfig.model_fields[field].default}" in out, field


def test_serve_cli_unknown_dtype_in_config_names_the_key(tiny_model_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\ndtype: float64\nport: 0\n")
    assert run(["serve", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "'dtype'" in err and "float64" in err and "bfloat16" in err
    assert "internal error" not in err and "Traceback" not in err
    assert run(["serve", "--model", str(tiny_model_dir), "--dtype", "fp8", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "'dtype'" in err and "fp8" in err and "internal error" not in err


@pytest.mark.slow
def test_serve_8k_prompt_on_long_preset(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    import torch

    from codefoundry.model import GPTBigCodeForCausalLM, preset, save_pretrained
    from codefoundry.serve import ServeConfig, start_in_thread
    from codefoundry.tokenizer import load_tokenizer

    torch.manual_seed(0)
    vocab = len(load_tokenizer(tiny_tokenizer_dir))
    save_pretrained(GPTBigCodeForCausalLM(preset("long", vocab_size=vocab)), tmp_path / "long",
                    tokenizer_dir=tiny_tokenizer_dir)
    running = start_in_thread(ServeConfig(model=tmp_path / "long", port=0, max_batch_total_tokens=8192 + 256))
    try:
        assert httpx.get(running.url + "/info").json()["max_total_tokens"] == 8192
        text = "def f(x):\n    return [i * x for i in range(10)]\n" * 800
        r = httpx.post(running.url + "/generate", timeout=600, json={
            "inputs": text, "parameters": {"truncate": 8184, "max_new_tokens": 8, "details": True}})
        assert r.status_code == 200, r.text
        assert r.headers["x-prompt-tokens"] == "8184" and r.json()["details"]["generated_tokens"] == 8
    finally:
        running.stop()


def test_serve_cli_missing_report_is_one_line_error(tiny_model_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["serve", "--model", str(tiny_model_dir), "--report", str(tmp_path / "report.html")]) == 1
    err = capsys.readouterr().err
    assert "error: --report" in err and "report.html" in err and "Traceback" not in err
