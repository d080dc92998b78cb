"""Function-level examples from a curated dataset/: a signature and docstring in, the body out.

HumanEval asks a model to continue a function from its signature and docstring, left to right,
and to stop after the body. A line-level FIM request (`codefoundry.finetune.lines`) teaches the
opposite habit (answer one line and stop), and minutes of CPU on those alone cost HumanEval
problems. So a Python function of the curated code with a docstring and a short body becomes one
example shaped like a HumanEval prompt and its answer:

    def name(args) -> T:          ┐ prompt: decorators, signature and docstring, dedented to column 0,
        \"\"\"What it does.\"\"\"       ┘ trailing whitespace stripped (as the evaluation strips its prompts)
    │ \\n    body …\\n <eos>          the body after the docstring, learned, then EOS (where generation stops)

Functions come from files that parse as Python (`ast`); methods are dedented like top-level
functions. Files are scanned in a seeded order until `max_functions` are found, so the cost stays
bounded on a large dataset/. The curated code is decontaminated against HumanEval and MBPP before
it gets here (`codefoundry.eval.contamination`), so no benchmark function becomes an example.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass

import numpy as np

from codefoundry.finetune.data import Example

MAX_FILE_CHARS = 200_000      # a bigger file is usually generated code; parsing it costs more than it gives


@dataclass(frozen=True)
class FunctionSettings:
    max_prompt_tokens: int = 256   # signature + docstring
    max_body_tokens: int = 192
    min_body_lines: int = 1
    max_body_lines: int = 24       # short bodies: HumanEval's are 1-20 lines
    max_functions: int = 2048      # stop scanning files once this many are found (a demo uses < 1,000)
    max_per_file: int = 4          # spread the examples over many files


@dataclass(frozen=True)
class FunctionText:
    prompt: str   # dedented decorators, signature and docstring, trailing whitespace stripped
    body: str     # "\n" + the dedented body after the docstring, ending in a newline


def _docstring_node(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.Expr | None:
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def split_function(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef,
                   settings: FunctionSettings) -> FunctionText | None:
    """The function `node` of a file's `lines` as (prompt, body), or None when it has no docstring, its body
    is too short or long, or its text is not cleanly cut (something after the docstring on its line)."""
    doc = _docstring_node(node)
    if doc is None or len(node.body) < 2 or doc.end_lineno is None or node.end_lineno is None:
        return None
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
    doc_end, end = doc.end_lineno, node.end_lineno            # 1-based, inclusive
    if lines[doc_end - 1][doc.end_col_offset:].strip() or node.body[1].lineno <= doc_end:
        return None                                           # `"""doc"""; x = 1` and the like
    body_lines = lines[doc_end:end]
    if not settings.min_body_lines <= sum(1 for line in body_lines if line.strip()) <= settings.max_body_lines:
        return None
    text = textwrap.dedent("".join(lines[start:end])).splitlines(keepends=True)
    if not text or not text[0].startswith(("def ", "async def ", "@")):
        return None                                           # a line less indented than `def` (a continuation)
    prompt, body = "".join(text[:doc_end - start]).rstrip(), "".join(text[doc_end - start:])
    if not body.endswith("\n"):
        body += "\n"
    return FunctionText(prompt, "\n" + body.lstrip("\n"))


def functions_in(source: str, settings: FunctionSettings) -> list[FunctionText]:
    """Every usable function of a Python file, in source order; [] when it does not parse."""
    if len(source) > MAX_FILE_CHARS:
        return []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    lines = source.splitlines(keepends=True)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            fn = split_function(lines, node, settings)
            if fn is not None:
                found.append(fn)
    return found


def function_example(fn: FunctionText, tokenizer, settings: FunctionSettings) -> Example | None:
    """The example of one function (see the module docstring); None when a part is over its token budget."""
    prompt = tokenizer.encode(fn.prompt, add_special_tokens=False)
    body = tokenizer.encode(fn.body, add_special_tokens=False)
    if not prompt or not body or len(prompt) > settings.max_prompt_tokens or len(body) > settings.max_body_tokens:
        return None
    return Example(np.asarray([*prompt, *body, tokenizer.eos_token_id], dtype=np.int64), len(prompt))


def build_function_examples(documents: list[str], tokenizer, settings: FunctionSettings, seed: int
                            ) -> list[Example]:
    """Up to `max_functions` function examples, files visited in a seeded order (≤ `max_per_file` each)."""
    if tokenizer.eos_token_id is None:
        return []
    order = np.random.RandomState(np.array([seed, 0xF00D], dtype=np.uint32)).permutation(len(documents))
    examples: list[Example] = []
    for d in order:
        if len(examples) >= settings.max_functions:
            break
        taken = 0
        for fn in functions_in(documents[int(d)], settings):
            example = function_example(fn, tokenizer, settings)
            if example is not None:
                examples.append(example)
                taken += 1
                if taken >= settings.max_per_file or len(examples) >= settings.max_functions:
                    break
    return examples
