"""License detection vs ground truth we did not write: the installed distributions' own metadata.

For every distribution in this environment whose metadata declares its license in a
machine-readable way (a `License-Expression`, else "License :: OSI Approved :: …"
classifiers), detect the license from its license FILES alone (text matching, no metadata)
and compare the SPDX id sets. A classifier that names no version or variant ("BSD License",
"Apache Software License") agrees with any id of that family.

    .venv/bin/python bench/license_agreement.py [--markdown]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import metadata

from codefoundry.data.license import MODIFIED, PERMISSIVE, UNKNOWN
from codefoundry.data.license.match import DEFAULT_THRESHOLD
from codefoundry.data.license.spdx import canonical, from_classifier, parse_expression
from codefoundry.data.sources.python_env import distributions, license_files_evidence


def ground_truth(dist: metadata.Distribution) -> tuple[str, set[str]] | None:
    """(where it came from, SPDX ids or family wildcards) from the distribution's metadata, or None."""
    expression = dist.metadata.get("License-Expression")
    if expression:
        return "License-Expression", {canonical(i) for i in parse_expression(expression)}
    ids = {from_classifier(c) for c in dist.metadata.get_all("Classifier") or [] if c.startswith("License :: OSI")}
    ids.discard(None)
    return ("classifier", ids) if ids else None  # type: ignore[return-value]


def agrees(truth: set[str], detected: set[str]) -> bool:
    def family(i: str) -> str:
        return i.split("-")[0]

    if not detected:
        return False
    exact = {t for t in truth if not t.endswith("*")}
    families = {t[:-2] for t in truth if t.endswith("*")}
    rest = set(detected)
    for t in exact:
        if t not in rest:
            # classifier "Apache Software License" etc. carry no version: any version of the family agrees
            same = {d for d in rest if family(d) == family(t)}
            if not same:
                return False
            rest -= same
        else:
            rest.discard(t)
    for f in families:
        same = {d for d in rest if family(d) == f}
        if not same:
            return False
        rest -= same
    return not rest


def _primary(files: dict[str, list[str]]) -> str | None:
    """The first license in the distribution's main license file (shallowest path; LICENSE/COPYING names first)."""
    def rank(path: str) -> tuple[int, int, str]:
        name = path.rsplit("/", 1)[-1].upper()
        return path.count("/"), 0 if name.startswith(("LICENSE", "LICENCE", "COPYING")) else 1, path

    for path in sorted(files, key=rank):
        if files[path]:
            return canonical(files[path][0])
    return None


def agrees_primary(truth: set[str], primary: str) -> bool:
    family = primary.split("-")[0]
    return primary in truth or any(t.endswith("*") and t[:-2] == family for t in truth) or \
        any(t.split("-")[0] == family and t in ("Apache-2.0",) for t in truth)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a bench/RESULTS.md section")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    flagged = []  # (distribution, license file, marker): every one is either a true restriction or a false alarm
    for dist_info in distributions():
        dist = metadata.Distribution.at(dist_info)
        files = license_files_evidence(dist, DEFAULT_THRESHOLD)
        flagged += [(dist.metadata["Name"], path, marker) for path, ids in files.items()
                    for marker in (MODIFIED, UNKNOWN) if marker in ids]
        truth = ground_truth(dist)
        if truth is None:
            continue
        detected = {canonical(i) for ids in files.values() for i in ids}
        if "LGPL-3.0" in detected:
            detected.discard("GPL-3.0")
        primary = _primary(files)
        rows.append((dist.metadata["Name"], truth[0], truth[1], detected, len(files),
                     agrees(truth[1], detected), primary, bool(primary) and agrees_primary(truth[1], primary)))
    seconds = time.perf_counter() - start
    n = len(rows)
    ok = sum(r[5] for r in rows)
    no_files = [r for r in rows if r[4] == 0]
    with_files = n - len(no_files)
    ok_with_files = sum(r[5] for r in rows if r[4])
    bad = [r for r in rows if not r[5]]
    primary_ok = sum(r[7] for r in rows)
    print(f"distributions with a declared license: {n}; agreement {ok}/{n} = {ok / max(n, 1):.1%}; "
          f"among the {with_files} that ship license files: {ok_with_files}/{with_files} = "
          f"{ok_with_files / max(with_files, 1):.1%}; primary license agrees: {primary_ok}/{n} = "
          f"{primary_ok / max(n, 1):.1%}; license files flagged modified/unknown: {len(flagged)}; {seconds:.1f}s",
          file=sys.stderr)
    if args.markdown:
        print(f"- distributions declaring a license (License-Expression or OSI classifier): **{n}**")
        print(f"- detection from license files alone agrees with metadata: **{ok}/{n} = {ok / max(n, 1):.1%}**")
        print(f"- of these, {with_files} ship license files; agreement among them: "
              f"**{ok_with_files}/{with_files} = {ok_with_files / max(with_files, 1):.1%}**")
        print(f"- **primary license** (the first license in the main LICENSE/COPYING file) is the declared one: "
              f"**{primary_ok}/{n} = {primary_ok / max(n, 1):.1%}**")
        print(f"- permissive-or-not agreement (the decision curation makes): "
              f"{sum(_permissive(r[2]) == _permissive(r[3]) for r in rows)}/{n}")
        print(f"- license files flagged `{MODIFIED}` or `{UNKNOWN}` (all distributions): {len(flagged)}"
              + "".join(f"\n  - {name}: `{path}` → {marker}" for name, path, marker in flagged))
        print(f"- time: {seconds:.1f} s for all distributions\n")
        print("Disagreements of the full sets (distribution: metadata → detected from files; primary):\n")
        for name, source, truth, detected, nfiles, _, primary, good_primary in sorted(bad, key=lambda r: r[0].lower()):
            shown = ", ".join(sorted(detected)) or ("no license files" if not nfiles else "nothing matched")
            verdict = f"primary {primary} {'agrees' if good_primary else 'DISAGREES'}" if primary else "no primary"
            print(f"- {name}: {source} {', '.join(sorted(truth))} → {shown}; {verdict}")
    else:
        for name, source, truth, detected, nfiles, good, primary, good_primary in sorted(
                rows, key=lambda r: r[0].lower()):
            print(f"{'ok ' if good else 'BAD'} {'ok ' if good_primary else 'BAD'} {name:28s} {source:18s} "
                  f"{sorted(truth)} -> {sorted(detected)} primary {primary} ({nfiles} files)")
    return 0


def _permissive(ids: set[str]) -> bool:
    return bool(ids) and all(i in PERMISSIVE or i == "BSD-*" for i in ids)


if __name__ == "__main__":
    sys.exit(main())
