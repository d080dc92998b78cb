"""Each subset's work units and steps, from the curate config and the files' work units.

    notebooks   the `.ipynb` files of every repository-like source (never the embedded corpus):
                rewrite → annotate → language → license → notebook filter → opt-out → exact dedup
                → near dedup → decontamination → PII; one part per form
    commits     the git repositories among the sources (`commits.enabled`, `--commits`):
                annotate → vendored/generated → language → license → opt-out → exact dedup
                → decontamination → PII (no near dedup: a file's successive commits share most
                of their text, and near dedup would keep one commit per file)
    issues      the `--issues` JSONL files: rewrite (bots, usernames, opted-out authors) → annotate
                → issue filter → opt-out → exact dedup → near dedup → decontamination → PII
"""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
from collections.abc import Sequence
from pathlib import Path

from codefoundry.data.annotate import Annotate
from codefoundry.data.config import CurateConfig
from codefoundry.data.dedup import NearDedup
from codefoundry.data.optout import OptOutList
from codefoundry.data.pipeline import Step, WorkUnit
from codefoundry.data.selection import LanguageFilter, LicenseFilter, VendorFilter
from codefoundry.data.sources.archive import ArchiveRepo
from codefoundry.data.sources.git import GitRepo
from codefoundry.data.sources.local import DirectoryRepo, walk
from codefoundry.data.sources.tables import TableChunk
from codefoundry.data.steps import decontamination_steps, dedup_steps, opt_out_steps, pii_steps
from codefoundry.data.subsets.commits import GitCommits
from codefoundry.data.subsets.issues import IssueRewrite, issue_units
from codefoundry.data.subsets.notebooks import SUFFIX, Form, NotebookRewrite
from codefoundry.data.subsets.part import Part
from codefoundry.data.subsets.text_filter import TextFilter

NO_NEAR_DEDUP = frozenset({"commits"})


def _table_has_notebooks(path: Path) -> bool:
    """Whether a table source names any `.ipynb` path: its bytes (JSONL) or its `path` column."""
    if path.is_dir() or path.suffix.lower() in (".parquet", ".arrow"):
        return True  # read to know: the notebooks part reads only the rows whose path ends in .ipynb
    opener = gzip.open if path.name.endswith(".gz") else open
    needle, tail = SUFFIX.encode(), b""
    with opener(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if needle in (tail + chunk).lower():
                return True
            tail = chunk[-len(needle):]
    return False


def _has_notebooks(unit: WorkUnit, tables: dict[Path, bool]) -> bool:
    """Whether a source unit may hold notebooks, from a cheap listing (archives are read to know)."""
    if isinstance(unit, GitRepo):
        out = subprocess.run(["git", "-C", str(unit.root), "ls-tree", "-r", "--name-only", "-z", "HEAD"],
                             capture_output=True, check=False).stdout
        return any(n.lower().endswith(SUFFIX.encode()) for n in out.split(b"\0"))
    if isinstance(unit, DirectoryRepo):
        return any(rel.lower().endswith(SUFFIX) for rel, _ in walk(unit.root))
    if isinstance(unit, TableChunk):
        if unit.path not in tables:
            tables[unit.path] = _table_has_notebooks(unit.path)
        return tables[unit.path]
    return isinstance(unit, ArchiveRepo)


def notebook_units(file_units: Sequence[WorkUnit]) -> list[WorkUnit]:
    """The files' units again, reading only `.ipynb` files (units that cannot hold any are left out)."""
    out: list[WorkUnit] = []
    tables: dict[Path, bool] = {}
    for unit in file_units:
        if _has_notebooks(unit, tables):
            options = dataclasses.replace(unit.options, only_suffixes=(SUFFIX,), skip_suffixes=())  # type: ignore[attr-defined]
            out.append(dataclasses.replace(unit, options=options))  # type: ignore[type-var]
    return out


def shared_steps(config: CurateConfig, subset: str) -> list[Step]:
    """Opt-out, dedup, decontamination and PII, as files have them (near dedup where it fits the subset)."""
    dedup = [s for s in dedup_steps(config.dedup) if not (subset in NO_NEAR_DEDUP and isinstance(s, NearDedup))]
    return [*opt_out_steps(config.opt_out), *dedup, *decontamination_steps(config.decontamination),
            *pii_steps(config.pii)]


def notebook_steps(config: CurateConfig, form: Form) -> list[Step]:
    nb = config.notebooks
    return [NotebookRewrite(form, nb.max_output_chars), Annotate(), LanguageFilter(config.languages),
            LicenseFilter(config.license_policy, config.permissive_licenses),
            TextFilter("notebook_filter", "notebook", nb.min_chars, nb.max_chars, nb.line_max, nb.alpha_frac),
            *shared_steps(config, "notebooks")]


def commit_steps(config: CurateConfig) -> list[Step]:
    steps: list[Step] = [Annotate()]
    if config.drop_vendored or config.drop_generated:
        steps.append(VendorFilter(config.drop_vendored, config.drop_generated))
    return [*steps, LanguageFilter(config.languages), LicenseFilter(config.license_policy,
                                                                    config.permissive_licenses),
            *shared_steps(config, "commits")]


def issue_steps(config: CurateConfig) -> list[Step]:
    iss = config.issues
    return [IssueRewrite(iss, OptOutList.from_config(config.opt_out)), Annotate(),
            TextFilter("issue_filter", "issue", iss.min_chars, iss.max_chars), *shared_steps(config, "issues")]


def subset_parts(config: CurateConfig, file_units: Sequence[WorkUnit]) -> list[Part]:
    """The parts of a curation beside `files`, in SUBSETS order."""
    parts: list[Part] = []
    if config.notebooks.enabled and config.notebooks.forms:
        units = notebook_units(file_units)
        if units:
            parts += [Part("notebooks", f"notebooks-{form}", units, notebook_steps(config, form))
                      for form in dict.fromkeys(config.notebooks.forms)]
    if config.commits.enabled:
        units = [GitCommits(u.root, u.options, config.commits) for u in file_units if isinstance(u, GitRepo)]
        parts.append(Part("commits", "commits", units, commit_steps(config)))
    if config.issues.files:
        parts.append(Part("issues", "issues", issue_units(config.issues.files, config.issues.rows_per_unit,
                                                          config.batch_rows), issue_steps(config)))
    return parts
