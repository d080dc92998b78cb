"""Fill the derived columns of file records: hexsha, size, ext, lang, and the line statistics.

Only null cells are filled, so readers may set what they know (git gives hexsha, a Stack
export gives lang). The statistics are computed over whole Arrow columns at once:

    avg_line_length    mean characters per line (lines split on "\\n", a final newline ends
                       the last line rather than starting an empty one, as str.splitlines)
    max_line_length    longest line, in characters
    alphanum_fraction  share of characters that are letters or digits (str.isalnum)
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codefoundry.data import language
from codefoundry.data.pipeline import Mapper


def git_blob_sha1(data: bytes) -> str:
    """The id git gives these bytes as a blob (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def line_stats(content: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(avg_line_length, max_line_length, alphanum_fraction) for each text; nulls stay null."""
    content = content.combine_chunks() if isinstance(content, pa.ChunkedArray) else content
    n = len(content)
    valid = pc.is_valid(content).to_numpy(zero_copy_only=False)
    text = pc.fill_null(content, "")
    chars = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
    newlines = pc.count_substring(text, "\n").to_numpy(zero_copy_only=False).astype(np.int64)
    ends_nl = pc.ends_with(text, "\n").to_numpy(zero_copy_only=False)
    n_lines = np.maximum(newlines + (~ends_nl).astype(np.int64), 1)
    avg = (chars - newlines) / n_lines
    lines = pc.split_pattern(text, "\n")
    lengths = pc.utf8_length(pc.list_flatten(lines)).to_numpy(zero_copy_only=False)
    offsets = lines.offsets.to_numpy()
    longest = np.maximum.reduceat(lengths, offsets[:-1]) if n and len(lengths) else np.zeros(n, np.int64)
    alnum = _alnum_counts(text)
    frac = np.divide(alnum, chars, out=np.zeros(n), where=chars > 0)
    mask = ~valid
    return (pa.array(avg, pa.float64(), mask=mask), pa.array(longest, pa.int64(), mask=mask),
            pa.array(frac, pa.float64(), mask=mask))


_ASCII_ALNUM = np.zeros(256, dtype=np.int64)
_ASCII_ALNUM[[ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]] = 1


def _alnum_counts(text: pa.Array) -> np.ndarray:
    """Letters and digits per string: a byte table over the UTF-8 buffer, str.isalnum for non-ASCII rows."""
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], width)[text.offset: text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    cum = np.concatenate([[0], np.cumsum(_ASCII_ALNUM[data])])
    counts = cum[offsets[1:]] - cum[offsets[:-1]]
    non_ascii = np.flatnonzero(~pc.string_is_ascii(text).to_numpy(zero_copy_only=False))
    for i in non_ascii:
        counts[i] = sum(map(str.isalnum, text[int(i)].as_py()))
    return counts


class Annotate(Mapper):
    """Compute missing hexsha/size/ext/lang and (always) the line statistics of each row."""

    name = "annotate"

    def transform(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return batch
        content = batch.column("content")
        paths = batch.column("path").to_pylist()
        updates: dict[str, pa.Array] = {}
        if batch.column("hexsha").null_count or batch.column("size").null_count:
            raw = [None if c is None else c.encode("utf-8") for c in content.to_pylist()]
            updates["hexsha"] = pc.coalesce(batch.column("hexsha"), pa.array(
                [None if b is None else git_blob_sha1(b) for b in raw], pa.string()))
            updates["size"] = pc.coalesce(batch.column("size"), pa.array(
                [None if b is None else len(b) for b in raw], pa.int64()))
        if batch.column("ext").null_count or batch.column("lang").null_count:
            heads = pc.utf8_slice_codeunits(pc.fill_null(content, ""), 0, 200).to_pylist()
            detected = [language.detect(p or "", h.encode("utf-8", "replace")) for p, h in zip(paths, heads,
                                                                                                  strict=True)]
            updates["ext"] = pc.coalesce(batch.column("ext"), pa.array([d[0] for d in detected], pa.string()))
            updates["lang"] = pc.coalesce(batch.column("lang"), pa.array([d[1] for d in detected], pa.string()))
        avg, longest, frac = line_stats(content)
        updates |= {"avg_line_length": avg, "max_line_length": longest, "alphanum_fraction": frac}
        for name, values in updates.items():
            batch = batch.set_column(batch.schema.get_field_index(name), name, values)
        return batch
