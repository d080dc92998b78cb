"""The report as one self-contained HTML page: inline style, PNG plots as data URIs, no script."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from codefoundry.report import plots

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}.note{color:#555;font-size:.92em}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid>div{flex:1 1 480px}
"""
MODEL_NAMES = {"model": "small, pretrained from scratch", "base": "SmolLM2-135M (base)",
               "finetuned": "SmolLM2-135M + LoRA fine-tune"}


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    return f"{round(value):,}" if isinstance(value, (int, float)) else escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{c}</td>' if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">'


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f}"


def overview(facts: dict[str, Any]) -> str:
    timings = facts["timings"]
    stages = facts.get("stage_order", [])
    order = [n for n in stages if n in timings] + [n for n in timings if n not in stages]
    rows = [(escape(name), f"{timings[name]:,.1f}") for name in order]
    rows.append(("<b>total</b>", f"<b>{sum(timings.values()):,.1f}</b>"))
    plan = facts.get("plan") or {}
    used = (f"Budget {plan.get('budget_s', 0):.0f} s: curation of at most {plan.get('files_per_repo')} files per "
            f"repository; pretraining {plan.get('pretrain_s', 0):.0f} s; "
            f"fine-tuning {plan.get('finetune_s', 0):.0f} s; "
            f"evaluation on the first {plan.get('humaneval_limit')} HumanEval and first "
            f"{plan.get('infilling_limit')} single-line infilling problems, greedy.") if plan else ""
    return (f"<h2>Stages</h2><p class=note>{escape(used)} Seconds as measured by the run that did each stage's work "
            f"(a resumed stage counts only its last part).</p>" + table(["stage", "seconds"], rows))


def dataset_section(d: dict[str, Any] | None) -> str:
    if d is None:
        return "<h2>Dataset</h2><p>Not curated yet.</p>"
    t = d["totals"]
    parts = ["<h2>Dataset</h2>",
             f"<p>Sources: {escape(', '.join(d['sources']))}. Seen {_num(t.get('files'))} files "
             f"({_mb(t.get('bytes', 0))} MB); kept {_num(t.get('kept_files'))} ({_mb(t.get('kept_bytes', 0))} MB), "
             f"removed {_num(t.get('removed_files'))}. Decontaminated against: "
             f"{escape(', '.join(d['decontaminated_against']) or 'nothing')}.</p>"]
    langs = sorted(d["languages"].items(), key=lambda kv: -kv[1]["kept_bytes"])
    lics = sorted(d["licenses"].items(), key=lambda kv: -kv[1]["kept_files"])
    removed = sorted(d["removed"].items(), key=lambda kv: -kv[1]["files"])
    parts.append('<div class="grid"><div><h3>By language (kept)</h3>' + table(
        ["language", "files", "MB"], [(escape(k), _num(v["kept_files"]), _mb(v["kept_bytes"])) for k, v in langs]))
    if langs:
        top = langs[:15]
        parts.append(image(plots.bars([k for k, _ in top], [v["kept_bytes"] / 1e6 for _, v in top], "MB kept",
                                      "kept code by language"), "kept code by language"))
    parts.append('</div><div><h3>By license (kept)</h3><p class=note>A file under several licenses counts under '
                 'each.</p>' + table(
        ["license", "files", "MB"], [(escape(k), _num(v["kept_files"]), _mb(v["kept_bytes"])) for k, v in lics]))
    if lics:
        top = lics[:15]
        parts.append(image(plots.bars([k for k, _ in top], [v["kept_files"] for _, v in top], "files kept",
                                      "kept files by license"), "kept files by license"))
    parts.append("</div></div><h3>Removals by reason</h3>" + table(
        ["reason", "files", "MB"], [(escape(k), _num(v["files"]), _mb(v["bytes"])) for k, v in removed]))
    if removed:
        top = removed[:15]
        parts.append(image(plots.bars([k for k, _ in top], [v["files"] for _, v in top], "files removed",
                                      "removals by reason"), "removals by reason"))
    parts.append("<h3>Steps: dedup, PII, decontamination and the rest</h3>" + table(
        ["step", "rows in", "kept", "removed", "counters", "seconds"],
        [(escape(name), _num(s["rows_in"]), _num(s["kept"]), _num(s["removed"]),
          escape(", ".join(f"{k} {v:,}" for k, v in s["counters"].items()) or "–"),
          _num(d["step_seconds"].get(name), 2)) for name, s in d["steps"].items()], numeric_from=1))
    timed = sorted(d["step_seconds"].items(), key=lambda kv: -kv[1])
    if timed:
        parts.append(image(plots.bars([k for k, _ in timed], [v for _, v in timed], "seconds (summed over workers)",
                                      "curation time per step"), "curation time per step"))
    return "".join(parts)


def tokenizer_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<h2>Tokenizer</h2><p>Not trained yet.</p>"
    return ("<h2>Tokenizer compression</h2><p class=note>Characters per token on the same "
            f"{rows[0]['chars']:,} characters of curated code (more is better).</p>" + table(
                ["tokenizer", "vocabulary", "tokens", "chars / token"],
                [(escape(r["tokenizer"]), _num(r["vocab_size"]), _num(r["tokens"]), _num(r["chars_per_token"], 2))
                 for r in rows]))


def training_section(pretrain: dict[str, Any] | None, finetune: dict[str, Any] | None) -> str:
    runs = {name: run for name, run in (("pretraining (small, from scratch, FIM)", pretrain),
                                        ("LoRA fine-tuning of SmolLM2 (FIM)", finetune)) if run}
    if not runs:
        return "<h2>Training</h2><p>Not trained yet.</p>"
    rows = [(escape(name), _num(r["steps"]), _num(r["first_val"], 3), _num(r["last_val"], 3))
            for name, r in runs.items()]
    return ("<h2>Training</h2>" + table(["run", "steps", "first validation loss", "last validation loss"], rows)
            + image(plots.loss_curves(runs), "loss curves"))


def _score(result: dict[str, Any] | None, metric: str) -> str:
    if not result or metric not in result:
        return "–"
    problems = result["problems"]
    return f"{result[metric]:.3f} ({round(result[metric] * problems)}/{problems})"


def _contaminated(row: dict[str, Any]) -> str:
    flags = [task for task, r in row.items() if (r.get("contamination") or {}).get("contaminated")]
    return escape(", ".join(flags)) if flags else "no"


def eval_section(scores: dict[str, dict[str, Any]], plan: dict[str, Any] | None) -> str:
    if not scores:
        return "<h2>Evaluation</h2><p>Not evaluated yet.</p>"
    rows = [(escape(MODEL_NAMES.get(name, name)), _score(row.get("humaneval"), "pass@1"),
             _score(row.get("infilling"), "exact_match"), _contaminated(row)) for name, row in scores.items()]
    series = {MODEL_NAMES.get(name, name): [row.get("humaneval", {}).get("pass@1", 0.0),
                                            row.get("infilling", {}).get("exact_match", 0.0)]
              for name, row in scores.items()}
    plan = plan or {}
    note = (f"Greedy, one sample per problem: the first {plan.get('humaneval_limit')} HumanEval problems "
            f"(≤ {plan.get('humaneval_new_tokens')} new tokens, pass@1 = share solved, every program run in the "
            f"sandbox) and the first {plan.get('infilling_limit')} single-line infilling problems (exact match). "
            "A difference of a problem or two is noise at these sizes (the infilling problems come several per "
            "HumanEval function).")
    return ("<h2>Evaluation</h2>" + f"<p class=note>{escape(note)}</p>"
            + table(["model", "HumanEval pass@1", "infilling exact match", "contaminated"], rows)
            + image(plots.grouped_bars(["HumanEval pass@1", "infilling exact match"], series, "score",
                                       "base vs fine-tuned (and from scratch)"), "evaluation scores"))


def serving_section(probe: dict[str, Any] | None) -> str:
    if not probe:
        return "<h2>Serving</h2><p>Not measured yet.</p>"
    c, s = probe["concurrent"], probe["single"]
    rows = [("start-up (load, warm up)", f"{probe['startup_s']:.1f} s"),
            ("one request: tokens / s", f"{s['tokens_per_s']:.1f}"),
            ("one request: time to first token", f"{s['ttft_s'] * 1000:.0f} ms" if s["ttft_s"] else "–"),
            (f"{c['requests']} concurrent requests × {c['new_tokens_per_request']} tokens: tokens / s",
             f"{c['tokens_per_s']:.1f}"),
            ("time to first token p50 / p90", f"{c['ttft_s']['p50'] * 1000:.0f} / {c['ttft_s']['p90'] * 1000:.0f} ms"),
            ("request latency p50 / p90", f"{c['latency_s']['p50']:.2f} / {c['latency_s']['p90']:.2f} s")]
    return ("<h2>Serving</h2><p class=note>A short probe of <code>codefoundry serve</code> with the base model and "
            f"the fine-tune as adapter <code>{escape(', '.join(probe['adapters']))}</code> (half of the concurrent "
            "requests through the adapter, streamed over HTTP on 127.0.0.1).</p>"
            + table(["measure", "value"], rows))


def render(facts: dict[str, Any]) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join([
        "<h1>codefoundry demo report</h1>",
        f"<p class=note>From the artifacts in <code>{escape(facts['out'])}</code>, {when}. Raw code → curated "
        "dataset → tokenizer → a small model pretrained from scratch, and SmolLM2-135M fine-tuned with LoRA on the "
        "same code → evaluation → serving.</p>",
        overview(facts),
        dataset_section(facts["dataset"]),
        tokenizer_section(facts["compression"]),
        training_section(facts["pretrain"], facts["finetune"]),
        eval_section(facts["scores"], facts.get("plan")),
        serving_section(facts["probe"]),
    ])
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>codefoundry demo report</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")
