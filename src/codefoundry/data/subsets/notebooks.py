"""Jupyter notebooks as StarCoderData had them: parsed with `nbformat`, written in one of two forms.

    structured   <jupyter_start><jupyter_text>markdown<jupyter_code>code<jupyter_output>output
                 <jupyter_code>code<empty_output>…   (StarCoderData's `jupyter-structured`)
    script       code cells as code, markdown cells as comments, jupytext's percent format
                 (`# %%`, `# %% [markdown]`)     (StarCoderData's `jupyter-scripts`)

Outputs keep their text only (`text/plain`, streams, `ename: evalue` of errors), truncated to
`max_output_chars`; images, HTML and every other rich or binary output are dropped. The
kernel language (kernelspec, then language_info) becomes the row's `lang`; a notebook that
names none is Python (Jupyter's default kernel). Notebooks nbformat cannot read leave with
`notebook:invalid_json` or `notebook:invalid_schema`; those without code `notebook:no_code`.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from codefoundry.config import StageConfig
from codefoundry.data import language
from codefoundry.data.annotate import git_blob_sha1
from codefoundry.data.pipeline import REMOVED_SCHEMA, Step, StepResult, from_records
from codefoundry.data.pipeline.schema import with_reason

Form = Literal["structured", "script"]
SUFFIX = ".ipynb"

JUPYTER_START, JUPYTER_TEXT, JUPYTER_CODE = "<jupyter_start>", "<jupyter_text>", "<jupyter_code>"
JUPYTER_OUTPUT, EMPTY_OUTPUT = "<jupyter_output>", "<empty_output>"
TOKENS = (JUPYTER_START, JUPYTER_TEXT, JUPYTER_CODE, JUPYTER_OUTPUT, EMPTY_OUTPUT)

KERNEL_LANGUAGES = {  # kernel / language_info names that are not The Stack's names, lower case
    "python3": "Python", "python2": "Python", "ipython": "Python", "ir": "R", "bash": "Shell", "sh": "Shell",
    "c++": "C++", "cpp": "C++", "xcpp": "C++", "c#": "C#", "csharp": "C#", "javascript": "JavaScript",
    "typescript": "TypeScript", "octave": "Matlab", "matlab": "Matlab", "sql": "SQL", "go": "Go", "rust": "Rust",
}
LINE_COMMENT = {"C": "//", "C++": "//", "C#": "//", "Java": "//", "JavaScript": "//", "TypeScript": "//", "Go": "//",
                "Rust": "//", "Scala": "//", "Kotlin": "//", "Swift": "//", "SQL": "--", "Haskell": "--",
                "Lua": "--", "Matlab": "%", "Octave": "%"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebooksConfig(StageConfig):
    """The `notebooks` subset: `.ipynb` files of every source, parsed and rewritten."""

    enabled: bool = True
    forms: list[Form] = Field(default_factory=lambda: ["structured", "script"])
    """Which forms to write (StarCoderData had both; each form is deduplicated on its own)."""
    max_output_chars: int = Field(1000, ge=0)
    """Characters kept of each code cell's outputs (0: outputs dropped)."""
    min_chars: int = Field(100, ge=0)
    """Shorter rewritten notebooks leave with `notebook:too_short`."""
    max_chars: int = Field(1_000_000, ge=1)
    line_max: int = Field(1000, ge=1)           # bigcode-dataset basic filter
    alpha_frac: float = Field(0.25, ge=0, le=1)  # bigcode-dataset basic filter


class NotebookError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse(text: str) -> Any:
    """The notebook as nbformat v4, or NotebookError(notebook:invalid_json | notebook:invalid_schema)."""
    import nbformat

    captured: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():  # missing cell ids and the like: nbformat warns, the notebook is fine
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4, capture_validation_error=captured)
    except nbformat.reader.NotJSONError:
        raise NotebookError("notebook:invalid_json") from None
    except Exception:  # nbformat raises ValidationError, KeyError, TypeError… on bad shapes
        raise NotebookError("notebook:invalid_schema") from None
    if captured or not isinstance(nb.get("cells"), list):
        raise NotebookError("notebook:invalid_schema")
    return nb


def kernel_language(nb: Any) -> str | None:
    """The Stack's name of the kernel language; Python when the notebook names none."""
    meta = nb.get("metadata") or {}
    names = [(meta.get("kernelspec") or {}).get("language"), (meta.get("language_info") or {}).get("name"),
             (meta.get("kernelspec") or {}).get("name")]
    names = [str(n).strip().lower() for n in names if n]
    if not names:
        return "Python"
    known = {lang.lower(): lang for lang in language.languages()}
    for name in names:
        if name in KERNEL_LANGUAGES:
            return KERNEL_LANGUAGES[name]
        if name in known:
            return known[name]
        base = re.sub(r"[-_ ]?[0-9.]+$", "", name)  # julia-1.9, python3.11
        if base in known:
            return known[base]
    return None


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def output_text(outputs: list[Any], limit: int) -> tuple[str, int]:
    """The text of a code cell's outputs (truncated to `limit`) and how many rich/binary outputs were dropped."""
    parts, dropped = [], 0
    for out in outputs or []:
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(_text(out.get("text")))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") or {}
            if "text/plain" in data:
                parts.append(_text(data["text/plain"]))
            if any(k != "text/plain" for k in data):
                dropped += 1
        elif kind == "error":
            parts.append(f"{out.get('ename', '')}: {out.get('evalue', '')}")
    text = _ANSI.sub("", "\n".join(p.rstrip("\n") for p in parts if p.strip()))
    return text[:limit], dropped


def structured(nb: Any, max_output_chars: int) -> tuple[str, int]:
    """The structured form and the number of outputs dropped as binary/rich."""
    pieces, dropped = [JUPYTER_START], 0
    for cell in nb.cells:
        source = _text(cell.get("source"))
        if cell.get("cell_type") == "code":
            out, n = output_text(cell.get("outputs"), max_output_chars)
            dropped += n
            pieces.append(f"{JUPYTER_CODE}{source}")
            pieces.append(f"{JUPYTER_OUTPUT}{out}" if out else EMPTY_OUTPUT)
        elif source.strip():
            pieces.append(f"{JUPYTER_TEXT}{source}")
    return "".join(pieces), dropped


def script(nb: Any, lang: str) -> str:
    """jupytext's percent format: `# %%` before each code cell, markdown as comments."""
    mark = LINE_COMMENT.get(lang, "#")
    blocks = []
    for cell in nb.cells:
        source = _text(cell.get("source")).rstrip("\n")
        if cell.get("cell_type") == "code":
            blocks.append(f"{mark} %%\n{source}")
        elif source.strip():
            kind = "markdown" if cell.get("cell_type") == "markdown" else "raw"
            # trailing spaces stay (two of them break a markdown line); an empty line is the bare mark, as jupytext
            commented = "\n".join(f"{mark} {line}" if line else mark for line in source.split("\n"))
            blocks.append(f"{mark} %% [{kind}]\n{commented}")
    return "\n\n".join(blocks) + "\n"


def rewrite(text: str, form: Form, max_output_chars: int) -> tuple[str, str, int]:
    """(rewritten text, kernel language, outputs dropped) of one notebook, or NotebookError."""
    nb = parse(text)
    if not any(c.get("cell_type") == "code" and _text(c.get("source")).strip() for c in nb.cells):
        raise NotebookError("notebook:no_code")
    lang = kernel_language(nb)
    if lang is None:
        raise NotebookError("notebook:unknown_kernel")
    if form == "structured":
        body, dropped = structured(nb, max_output_chars)
        return body, lang, dropped
    return script(nb, lang), lang, 0


class NotebookRewrite(Step):
    """Raw `.ipynb` rows in, one rewritten row per notebook out (hexsha and size of the rewritten text)."""

    name = "notebook"

    def __init__(self, form: Form = "structured", max_output_chars: int = 1000) -> None:
        super().__init__()
        self.form = form
        self.max_output_chars = max_output_chars

    def process(self, batch: pa.Table) -> StepResult:
        kept, removed, reasons = [], [], []
        for row in batch.to_pylist():
            try:
                body, lang, dropped = rewrite(row["content"] or "", self.form, self.max_output_chars)
            except NotebookError as e:
                removed.append(row)
                reasons.append(e.reason)
                continue
            if dropped:
                self.stat_update("binary_outputs_dropped", dropped)
            raw = body.encode("utf-8", "surrogatepass")
            kept.append({**row, "content": body, "lang": lang, "ext": "ipynb", "hexsha": git_blob_sha1(raw),
                         "size": len(raw)})
        self.stat_update(f"form:{self.form}", len(kept))
        gone = with_reason(from_records(removed), reasons) if removed else REMOVED_SCHEMA.empty_table()
        return StepResult(from_records(kept), gone)
