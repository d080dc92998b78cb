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
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codefoundry.data import language
from codefoundry.data.pipeline import Mapper


def git_blob_sha1(data: bytes) -> str:
    """The id git gives these bytes as a blob (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


_ASCII_ALNUM = np.zeros(256, dtype=bool)
_ASCII_ALNUM[[ord(c) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]] = True


def ascii_alnum(data: np.ndarray) -> np.ndarray:
    """`_ASCII_ALNUM[data]` by comparisons (a table lookup per byte cost ~2x more): digits, then letters of either
    case (`| 32` lowers A-Z and leaves a-z)."""
    mask = (data - np.uint8(48)) < 10
    letters = data | np.uint8(32)
    letters -= np.uint8(97)
    mask |= letters < 26
    return mask


def _buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets [n+1] as int64, UTF-8 bytes) of a string array, zero-copy."""
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], width)[text.offset: text.offset + len(text) + 1].astype(np.int64)
    data = np.frombuffer(text.buffers()[2], np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _non_ascii_bytes(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in `data` of the UTF-8 continuation bytes (10xxxxxx) and of the lead bytes of multi-byte characters
    (11xxxxxx) of `rows`: the bytes where a row's bytes and characters differ."""
    continuation, leads = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for row in rows.tolist():  # row by row: the ASCII rows between them are not read
        start = offsets[row]
        top = data[start: offsets[row + 1]] >> np.uint8(6)
        continuation.append(np.flatnonzero(top == 2) + start)
        leads.append(np.flatnonzero(top == 3) + start)
    return np.concatenate(continuation), np.concatenate(leads)


def _code_points(data: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The code points of the (valid UTF-8) multi-byte characters whose lead bytes are at `leads`."""
    first = data[leads].astype(np.int64)
    size = 2 + (first >= 0xE0) + (first >= 0xF0)
    points = first & np.where(size == 2, 0x1F, np.where(size == 3, 0x0F, 0x07))
    for k in (1, 2, 3):
        more = size > k
        follow = data[leads[more] + k].astype(np.int64) & 0x3F
        points[more] = (points[more] << 6) | follow
    return points


def line_stats(content: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(avg_line_length, max_line_length, alphanum_fraction) for each text; nulls stay null.

    Works on the Arrow buffers: newline positions and an ASCII letter/digit test over the
    UTF-8 bytes; in rows with non-ASCII text, a line's characters are its bytes less its
    continuation bytes, and each distinct non-ASCII code point is tested with `str.isalnum`,
    so lengths and fractions count characters, as `str` does.
    """
    content = content.combine_chunks() if isinstance(content, pa.ChunkedArray) else content
    n = len(content)
    valid = pc.is_valid(content).to_numpy(zero_copy_only=False)
    text = pc.fill_null(content, "")
    offsets, data = _buffers(text)
    ascii_rows = pc.string_is_ascii(text).to_numpy(zero_copy_only=False)
    non_ascii = np.flatnonzero(~ascii_rows)
    continuation, leads = _non_ascii_bytes(data, offsets, non_ascii)
    chars = np.diff(offsets)  # characters: bytes less continuation bytes (Arrow strings are valid UTF-8)
    if len(continuation):
        chars -= np.bincount(np.searchsorted(offsets, continuation, side="right") - 1, minlength=n)
    avg, longest, frac = np.zeros(n), np.zeros(n, np.int64), np.zeros(n)
    # Lines as byte segments: a line starts at each row start and after each newline.
    newlines = np.flatnonzero(data[offsets[0]: offsets[-1]] == 10) + offsets[0]
    starts = np.sort(np.concatenate((offsets[:-1], newlines + 1)), kind="stable")
    starts = starts[np.concatenate(([True], starts[1:] != starts[:-1]))] if len(starts) else starts
    starts = starts[starts < offsets[-1]]
    if len(starts):
        row_of = np.searchsorted(offsets, starts, side="right") - 1
        ends = np.minimum(np.append(starts[1:], offsets[-1]), offsets[row_of + 1])
        lengths = ends - starts - (data[ends - 1] == 10)           # without the newline itself
        if len(continuation):  # a line's characters: its bytes less its UTF-8 continuation bytes
            line_of = np.searchsorted(starts, continuation, side="right") - 1
            lengths -= np.bincount(line_of, minlength=len(starts))
        first = np.flatnonzero(np.diff(row_of, prepend=-1))       # first segment of each non-empty row
        rows = row_of[first]
        n_lines = np.diff(np.append(first, len(starts)))
        longest[rows] = np.maximum.reduceat(lengths, first)
        n_newlines = np.diff(np.searchsorted(newlines, offsets))
        avg[rows] = (chars[rows] - n_newlines[rows]) / n_lines
    # one count per row over a boolean mask: a cumulative sum over every byte cost ~20x more
    alnum_mask = ascii_alnum(data[offsets[0]: offsets[-1]])
    bounds = (offsets - offsets[0]).tolist()
    alnum = np.fromiter((np.count_nonzero(alnum_mask[lo:hi]) for lo, hi in itertools.pairwise(bounds)),
                        dtype=np.int64, count=n)
    if len(leads):  # non-ASCII letters and digits: str.isalnum of each distinct code point
        points, inverse = np.unique(_code_points(data, leads), return_inverse=True)
        is_alnum = np.array([chr(c).isalnum() for c in points.tolist()], dtype=bool)[inverse]
        alnum += np.bincount(np.searchsorted(offsets, leads[is_alnum], side="right") - 1, minlength=n)
    np.divide(alnum, chars, out=frac, where=chars > 0)
    mask = ~valid
    return (pa.array(avg, pa.float64(), mask=mask), pa.array(longest, pa.int64(), mask=mask),
            pa.array(frac, pa.float64(), mask=mask))


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
