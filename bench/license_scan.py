"""The license matcher on huge license files: seconds and positions gone over per word, beside an earlier matcher.

    .venv/bin/python bench/license_scan.py                       # beside the matcher of commit 4daa5cd
    .venv/bin/python bench/license_scan.py --against HEAD~3 --no-sections 1 3 --mit 300 1000

Documents: every reference text concatenated with its separator lines removed (one section, the
matcher's worst case: every reference is a candidate), repeated `--no-sections` times, and the MIT
text repeated `--mit` times. The earlier matcher is `src/codefoundry/data/license/match.py` at
`--against`, loaded from git beside ours; both must find the same licenses. Runs over
`--timeout` seconds are cut short and shown as such.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

SEPARATOR = re.compile(r"^\s*[-=_*~#]{3,}\s*$", re.MULTILINE)


def documents(concatenated: list[int], mit: list[int]) -> dict[str, str]:
    from codefoundry.data.license.match import references

    root = resources.files("codefoundry.data.license").joinpath("texts")
    every = SEPARATOR.sub("", "\n\n".join(root.joinpath(r.name).read_text(encoding="utf-8") for r in references()))
    docs = {f"every reference x{k}": every * k for k in concatenated}
    docs |= {f"MIT x{k}": root.joinpath("MIT.txt").read_text(encoding="utf-8") * k for k in mit}
    return docs


def _run(source: str | None, text: str, out: multiprocessing.Queue) -> None:
    if source is None:
        from codefoundry.data.license import match
    else:
        spec = importlib.util.spec_from_file_location("earlier_match", source)
        assert spec is not None and spec.loader is not None
        match = importlib.util.module_from_spec(spec)
        sys.modules["earlier_match"] = match
        spec.loader.exec_module(match)
    match.identify("MIT License")  # the reference texts load outside the timing
    start = time.perf_counter()
    sections = match.examine(text)
    seconds = time.perf_counter() - start
    ids = sorted({i for s in sections for i in s.ids})
    out.put((seconds, ids, sum(getattr(s, "scanned", 0) for s in sections), sum(s.words for s in sections)))


def timed(source: str | None, text: str, timeout: float) -> tuple[float, list[str], int, int] | None:
    """(seconds, ids, positions gone over, words) in a fresh process, or None past `timeout`."""
    out: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.get_context("fork").Process(target=_run, args=(source, text, out))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return out.get()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="4daa5cd", help="git revision of the earlier matcher")
    ap.add_argument("--no-sections", type=int, nargs="*", default=[1, 3])
    ap.add_argument("--mit", type=int, nargs="*", default=[300, 1000])
    ap.add_argument("--timeout", type=float, default=180)
    args = ap.parse_args()
    earlier = subprocess.run(["git", "show", f"{args.against}:src/codefoundry/data/license/match.py"],
                             capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(earlier)
    failures = 0
    print(f"{'document':<22} {'MB':>5} {'ours s':>7} {'per word':>8} {'earlier s':>9} {'ratio':>6}")
    for name, text in documents(args.no_sections, args.mit).items():
        ours = timed(None, text, args.timeout)
        before = timed(f.name, text, args.timeout)
        if ours is None:
            print(f"{name:<22} ours past {args.timeout:.0f} s")
            failures += 1
            continue
        seconds, ids, scanned, words = ours
        if before is not None and before[1] != ids:
            print(f"{name}: the matchers disagree: {before[1]} vs {ids}")
            failures += 1
        earlier_s = f"{before[0]:9.1f}" if before else f"{'>' + str(int(args.timeout)):>9}"
        ratio = f"{before[0] / seconds:6.1f}" if before else f"{'>' + str(int(args.timeout / seconds)):>6}"
        print(f"{name:<22} {len(text) / 1e6:5.2f} {seconds:7.1f} {scanned / max(words, 1):8.1f} {earlier_s} {ratio}",
              flush=True)
    Path(f.name).unlink()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
