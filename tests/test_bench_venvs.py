"""The bench's anchor venvs are reproducible: every package they install is pinned in a requirements file.

A venv that installs a loose list (`datatrove`, `tokenizers`) gets whatever the index holds that
day, and one script's list can differ from another's for the same venv; then `make bench` from a
fresh clone fails on a dependency that moved. Here every anchor venv comes from
`bench/requirements-<name>.txt`, all of it `name==version`, and only `bench/_venvs.py` installs.
"""

from __future__ import annotations

import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+$")


def requirement_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_every_anchor_package_is_pinned() -> None:
    files = sorted(BENCH.glob("requirements-*.txt"))
    assert {f.stem.removeprefix("requirements-") for f in files} >= {"datatrove", "datasketch"}
    for f in files:
        lines = requirement_lines(f)
        assert lines, f"{f.name} is empty"
        loose = [ln for ln in lines if not PIN.match(ln)]
        assert not loose, f"{f.name}: not pinned: {loose}"
    datatrove = {ln.split("==")[0].lower() for ln in requirement_lines(BENCH / "requirements-datatrove.txt")}
    assert {"datatrove", "regex", "orjson", "tokenizers", "xxhash"} <= datatrove  # what the three scripts import


def test_scripts_get_anchor_venvs_only_from_the_requirements_files() -> None:
    used = set()
    for script in sorted(BENCH.glob("*.py")):
        text = script.read_text()
        if script.name != "_venvs.py":
            assert '"pip", "install"' not in text and "'pip', 'install'" not in text, f"{script.name} installs itself"
        used.update(re.findall(r'(?:anchor_python|run_anchor)\("([a-z0-9_-]+)"', text))
    assert used >= {"datatrove", "datasketch"}
    for name in used:
        assert (BENCH / f"requirements-{name}.txt").exists(), f"no bench/requirements-{name}.txt"
