"""Notebooks: real .ipynb files written with nbformat (one with a PNG output, malformed ones) through
the `notebook` step, in both of StarCoderData's forms."""

from __future__ import annotations

import base64
import json

import nbformat
import pyarrow as pa
import pytest
from nbformat import v4

from codefoundry.data.pipeline import REMOVED_SCHEMA, from_records
from codefoundry.data.subsets.notebooks import NotebookRewrite, kernel_language, rewrite

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8).decode()


def plot_notebook() -> str:
    """A Python notebook: markdown, a printed value, a plot (PNG + text/plain), an error, a silent cell."""
    nb = v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                  "display_name": "Python 3"}})
    nb.cells = [
        v4.new_markdown_cell("# Sales report\nWe load the data and plot the totals."),
        v4.new_code_cell("totals = [3, 5, 8]\nprint(sum(totals))",
                         outputs=[v4.new_output("stream", name="stdout", text="16\n")]),
        v4.new_code_cell("plt.plot(totals)", outputs=[v4.new_output(
            "display_data", data={"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"})]),
        v4.new_code_cell("1 / 0", outputs=[v4.new_output("error", ename="ZeroDivisionError",
                                                         evalue="division by zero", traceback=["\x1b[31m…"])]),
        v4.new_code_cell("x = 'quiet'"),
        v4.new_code_cell("print('a' * 5000)", outputs=[v4.new_output("stream", name="stdout", text="a" * 5000)]),
    ]
    return nbformat.writes(nb)


def r_notebook() -> str:
    nb = v4.new_notebook(metadata={"kernelspec": {"name": "ir", "language": "R", "display_name": "R"}})
    nb.cells = [v4.new_markdown_cell("Fit a model"), v4.new_code_cell("fit <- lm(y ~ x, data = df)")]
    return nbformat.writes(nb)


def test_structured_form_keeps_text_outputs_and_drops_images() -> None:
    text, lang, dropped = rewrite(plot_notebook(), "structured", max_output_chars=100)
    assert lang == "Python" and dropped == 1
    assert text.startswith("<jupyter_start><jupyter_text># Sales report")
    assert "<jupyter_code>totals = [3, 5, 8]\nprint(sum(totals))<jupyter_output>16" in text
    assert "<jupyter_output><Figure size 640x480 with 1 Axes>" in text and PNG[:40] not in text
    assert "<jupyter_output>ZeroDivisionError: division by zero" in text and "\x1b" not in text
    assert "<jupyter_code>x = 'quiet'<empty_output>" in text
    assert "<jupyter_output>" + "a" * 100 + "<jupyter_code>" not in text  # no code cell follows the last
    assert text.endswith("<jupyter_output>" + "a" * 100)  # truncated to max_output_chars


def test_script_form_is_jupytext_percent_with_markdown_as_comments() -> None:
    text, lang, _ = rewrite(plot_notebook(), "script", max_output_chars=100)
    assert lang == "Python"
    assert text.startswith("# %% [markdown]\n# # Sales report\n# We load the data and plot the totals.\n\n# %%\n")
    assert "# %%\ntotals = [3, 5, 8]\nprint(sum(totals))\n" in text
    assert "16" not in text.replace("5000", "") and "<jupyter" not in text  # no outputs, no tokens
    compile(text, "nb.py", "exec")  # the script form of a Python notebook is Python
    r_text, r_lang, _ = rewrite(r_notebook(), "script", max_output_chars=100)
    assert r_lang == "R" and r_text == "# %% [markdown]\n# Fit a model\n\n# %%\nfit <- lm(y ~ x, data = df)\n"


@pytest.mark.parametrize(("meta", "lang"), [
    ({"kernelspec": {"name": "julia-1.9", "display_name": "Julia 1.9"}}, "Julia"),
    ({"language_info": {"name": "scala"}}, "Scala"),
    ({}, "Python"),
    ({"kernelspec": {"name": "mystery-kernel", "language": "klingon", "display_name": "?"}}, None),
])
def test_kernel_language(meta: dict, lang: str | None) -> None:
    assert kernel_language(v4.new_notebook(metadata=meta)) == lang


def _batch(contents: list[str]) -> pa.Table:
    rows = [{"repo_name": "acme/nb", "path": f"nb{i}.ipynb", "content": c, "licenses": ["MIT"],
             "license_type": "permissive", "size": len(c)} for i, c in enumerate(contents)]
    return from_records(rows, REMOVED_SCHEMA).drop_columns(["reason"])


def test_malformed_notebooks_leave_with_reasons_and_good_ones_get_new_hashes() -> None:
    empty_code = v4.new_notebook()
    empty_code.cells = [v4.new_markdown_cell("only prose here")]
    bad_cell = json.loads(r_notebook())
    bad_cell["cells"][0]["cell_type"] = "spreadsheet"
    contents = [plot_notebook(), "{not json", json.dumps({"cells": "nope", "nbformat": 4}),
                json.dumps(bad_cell), nbformat.writes(empty_code), '{"nbformat": 4, "nbformat_minor": 5}', r_notebook()]
    step = NotebookRewrite("structured", 200)
    kept, removed = step(_batch(contents))
    assert kept.column("path").to_pylist() == ["nb0.ipynb", "nb6.ipynb"]
    assert kept.column("lang").to_pylist() == ["Python", "R"]
    assert all(c.startswith("<jupyter_start>") for c in kept.column("content").to_pylist())
    assert kept.column("size").to_pylist() == [len(c.encode()) for c in kept.column("content").to_pylist()]
    assert dict(zip(removed.column("path").to_pylist(), removed.column("reason").to_pylist(), strict=True)) == {
        "nb1.ipynb": "notebook:invalid_json", "nb2.ipynb": "notebook:invalid_schema",
        "nb3.ipynb": "notebook:invalid_schema", "nb4.ipynb": "notebook:no_code", "nb5.ipynb": "notebook:invalid_schema"}
    assert step.stats.counters["binary_outputs_dropped"] == 1
    script = NotebookRewrite("script", 200)(_batch(contents)).kept
    assert set(script.column("hexsha").to_pylist()).isdisjoint(kept.column("hexsha").to_pylist())


def test_script_form_keeps_markdown_line_breaks_as_jupytext_does() -> None:
    nb = v4.new_notebook()
    nb.cells = [v4.new_markdown_cell("First line  \nsecond line\n\nnew paragraph"), v4.new_code_cell("x = 1")]
    text, _, _ = rewrite(nbformat.writes(nb), "script", 100)
    # two trailing spaces are a markdown hard break; an empty line is the bare comment mark
    assert text.startswith("# %% [markdown]\n# First line  \n# second line\n#\n# new paragraph\n\n# %%\nx = 1\n")
