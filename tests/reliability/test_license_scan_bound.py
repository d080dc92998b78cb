"""The license matcher's work grows with the length of a license file, not with its square.

A license file of many licenses (or of one license many times) once cost every candidate reference a full
rescan of the document after each match: a 1.9 MB file took a minute. The work is measured as the document
positions the matcher went over (`Section.scanned`), so the bound holds whatever the machine's load.
"""

from __future__ import annotations

from codefoundry.data.license import identify
from codefoundry.data.license.match import examine, references
from fixtures_data import license_text

PER_WORD = 60
"""Positions gone over per word of the document: about one pass per candidate reference plus the recounts near
each match (measured: 17 on MIT repeated, 35-36 on twelve references, flat as the copies grow); the quadratic
matcher went over 63 per word of MIT × 20, 264 of the twelve references once, and more with every copy."""


def _work(text: str) -> tuple[int, int]:
    """(words, positions gone over) of matching `text`."""
    sections = examine(text)
    return sum(s.words for s in sections), sum(s.scanned for s in sections)


def test_one_license_repeated_is_matched_in_linear_work() -> None:
    mit = license_text("MIT")
    for copies in (20, 200):
        words, scanned = _work(mit * copies)
        assert scanned <= PER_WORD * words, (copies, words, scanned)
    assert identify(mit * 200) == ["MIT"]


def test_every_reference_at_once_is_matched_in_linear_work() -> None:
    texts = [license_text(ref.name.removesuffix(".txt")) for ref in references()[:12]]
    once = "\n\n".join(texts)
    for copies in (1, 3):
        words, scanned = _work(once * copies)
        assert scanned <= PER_WORD * words, (copies, words, scanned)
    assert identify(once * 3) == identify(once)  # the same licenses, however many times they repeat
