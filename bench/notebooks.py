"""Notebook script form against jupytext's percent format: same cells, and notebooks per second.

    .venv/bin/python bench/notebooks.py [--notebooks 2000]

Notebooks are made from real code: each stdlib module becomes a notebook whose markdown cells
are its functions' docstrings and whose code cells are the functions (nbformat v4, a Python
kernelspec, a text output on every other cell). Ours: `codefoundry.data.subsets.notebooks.rewrite`
(nbformat parse + script form), the code `data curate` runs. Anchor: jupytext
(`jupytext.reads(..., fmt="ipynb")` + `jupytext.writes(..., fmt="py:percent")`) in its own venv
(`bench/requirements-jupytext.txt`), on the same files, in the same run. Parity: each notebook's
code cells and markdown cells, read back from both scripts, must be the same (jupytext escapes
comments that look like magics, `# %n` → `# # %n`, for its round trip; that is not counted).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat import v4

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _venvs import anchor_python
from codefoundry.data.subsets.notebooks import rewrite

ANCHOR = r'''
import json, sys, time
import jupytext
paths = json.loads(sys.stdin.read())
texts = [open(p, encoding="utf-8").read() for p in paths]
start = time.perf_counter()
out = [jupytext.writes(jupytext.reads(t, fmt="ipynb"), fmt="py:percent") for t in texts]
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "scripts": out}, sys.stdout)
'''


def module_notebook(source: str) -> nbformat.NotebookNode | None:
    """A notebook of a module's functions: docstring → markdown cell, function → code cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    lines = source.splitlines()
    cells = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.end_lineno:
            doc = ast.get_docstring(node)
            if doc:
                cells.append(v4.new_markdown_cell(doc))
            outputs = [v4.new_output("stream", name="stdout", text=f"{node.name} defined\n")] if len(cells) % 2 else []
            cells.append(v4.new_code_cell("\n".join(lines[node.lineno - 1: node.end_lineno]), outputs=outputs))
    if not any(c.cell_type == "code" for c in cells):
        return None
    return v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})


def cells_of(script: str) -> list[tuple[str, str]]:
    """(kind, text) of each cell of a percent-format script; markdown comment marks removed; header skipped."""
    cells: list[tuple[str, list[str]]] = []
    for line in script.split("\n"):
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, body in cells:
        text = "\n".join(body).strip("\n")
        if kind == "markdown":
            text = "\n".join(ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in text.split("\n"))
        out.append((kind, text))
    return out


def same_cells(ours: str, theirs: str) -> bool:
    """Same cells, up to jupytext's escaping of comments that look like magics (`# %n …` → `# # %n …`),
    which it adds for its round trip; the script form keeps code verbatim."""
    a, b = cells_of(ours), cells_of(theirs)
    if len(a) != len(b):
        return False
    for (kind_a, text_a), (kind_b, text_b) in zip(a, b, strict=True):
        lines_a, lines_b = text_a.split("\n"), text_b.split("\n")
        if kind_a != kind_b or len(lines_a) != len(lines_b):
            return False
        for x, y in zip(lines_a, lines_b, strict=True):
            indent = y[: len(y) - len(y.lstrip())]
            if x != y and indent + "# " + x.lstrip() != y:
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", type=int, default=2000)
    args = parser.parse_args()
    modules = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    with tempfile.TemporaryDirectory() as tmp:
        paths: list[Path] = []
        for module in modules:
            if len(paths) >= args.notebooks:
                break
            try:
                nb = module_notebook(module.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
            if nb is not None:
                paths.append(Path(tmp) / f"{len(paths):05d}.ipynb")
                paths[-1].write_text(nbformat.writes(nb), encoding="utf-8")
        texts = [p.read_text(encoding="utf-8") for p in paths]
        start = time.perf_counter()
        ours = [rewrite(t, "script", 1000)[0] for t in texts]
        our_seconds = time.perf_counter() - start
        python = anchor_python("jupytext")
        done = subprocess.run([str(python), "-c", ANCHOR], input=json.dumps([str(p) for p in paths]),
                              capture_output=True, text=True, check=True)
        anchor = json.loads(done.stdout)
    same = sum(same_cells(a, b) for a, b in zip(ours, anchor["scripts"], strict=True))
    cells = sum(len(cells_of(a)) for a in ours)
    print(f"{len(paths)} notebooks ({cells} cells, {sum(map(len, texts)) / 1e6:.1f} MB of .ipynb)")
    print(f"same cells as jupytext py:percent (up to its magic escaping): {same}/{len(paths)} notebooks")
    print(f"codefoundry: {len(paths) / our_seconds:,.0f} notebooks/s   jupytext: "
          f"{len(paths) / anchor['seconds']:,.0f} notebooks/s   ratio {anchor['seconds'] / our_seconds:.2f}×")


if __name__ == "__main__":
    main()
