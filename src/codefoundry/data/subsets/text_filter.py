"""One length-and-shape filter for the rewritten subsets (notebooks, commits, issues).

BigCode's basic filter (longest line, alphanumeric share) plus length bounds, reading the
columns `Annotate` fills. Each subset makes its own instance with its own name and reason
prefix, so stats.json tells `notebook:too_short` from `issue:too_short`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from codefoundry.data.pipeline import Filter


class TextFilter(Filter):
    """Remove rows shorter than `min_chars`, longer than `max_chars`, with a line over `line_max`
    characters, or with less than `alpha_frac` letters and digits (None turns a check off)."""

    def __init__(self, name: str, prefix: str, min_chars: int = 0, max_chars: int | None = None,
                 line_max: int | None = None, alpha_frac: float | None = None) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]  # one class, a step name per subset
        self.prefix = prefix
        self.min_chars, self.max_chars, self.line_max, self.alpha_frac = min_chars, max_chars, line_max, alpha_frac

    def reasons(self, batch: pa.Table) -> Sequence[str | None]:
        contents = batch.column("content").to_pylist()
        longest = batch.column("max_line_length").to_pylist()
        alnum = batch.column("alphanum_fraction").to_pylist()
        out: list[str | None] = []
        for text, line, frac in zip(contents, longest, alnum, strict=True):
            n = len(text or "")
            if n < self.min_chars:
                out.append(f"{self.prefix}:too_short")
            elif self.max_chars is not None and n > self.max_chars:
                out.append(f"{self.prefix}:too_long")
            elif self.line_max is not None and (line or 0) > self.line_max:
                out.append(f"{self.prefix}:max_line_length")
            elif self.alpha_frac is not None and (frac or 0.0) < self.alpha_frac:
                out.append(f"{self.prefix}:alphanum_fraction")
            else:
                out.append(None)
        return out
