"""The curation steps after the quality filters (issue 4), in order, from the stage config:

    opt-out → exact dedup → near dedup → decontamination → PII redaction

Opt-out runs first so that dedup chooses among the files that may stay: a duplicate whose best
copy belongs to an opted-out repository keeps another copy instead of losing them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codefoundry.data.pipeline import Step

if TYPE_CHECKING:
    from codefoundry.data.config import CurateConfig


def curation_steps(config: CurateConfig) -> list[Step]:
    from codefoundry.data.decontam import Decontaminate
    from codefoundry.data.dedup import ExactDedup, NearDedup
    from codefoundry.data.optout import OptOut, OptOutList
    from codefoundry.data.pii import RedactPII

    steps: list[Step] = []
    entries = OptOutList.from_config(config.opt_out)
    if len(entries):
        steps.append(OptOut(entries))
    if config.dedup.exact.enabled:
        steps.append(ExactDedup(config.dedup.exact))
    if config.dedup.near.enabled:
        steps.append(NearDedup(config.dedup.near))
    if config.decontamination.enabled:
        steps.append(Decontaminate(config.decontamination))
    if config.pii.enabled:
        steps.append(RedactPII(config.pii))
    return steps


def decontaminated_against(config: CurateConfig) -> list[str]:
    """Benchmarks this config decontaminates against; recorded in the manifest, read by `codefoundry eval`."""
    from codefoundry.data.decontam import benchmark_names

    return benchmark_names(config.decontamination) if config.decontamination.enabled else []


def later_policies(config: CurateConfig) -> list[str]:
    """Card lines (markdown bullets) describing these steps' settings."""
    from codefoundry.data.decontam import benchmark_names
    from codefoundry.data.dedup.near import NearDedup
    from codefoundry.data.optout import OptOutList

    lines = []
    entries = OptOutList.from_config(config.opt_out)
    if len(entries):
        lines.append(f"- Opt-out: {len(entries)} entries (list sha256 {entries.sha256[:16]}…); their repositories' "
                     "files are removed with reason `opt_out`.")
    d = config.dedup
    lines.append(f"- Exact dedup: {'on' if d.exact.enabled else 'off'} (git blob sha1; the best copy stays: permissive "
                 "> no_license > non_permissive, then stars, forks, first seen).")
    if d.near.enabled:
        p = NearDedup(d.near).default
        lines.append(f"- Near dedup: MinHash LSH, {p.ngram_size}-token shingles, {p.num_perm} hashes "
                     f"({d.near.method.replace('_', ' ')}), Jaccard ≥ {p.threshold}, {p.bands} bands × {p.rows} rows, "
                     f"{'candidate pairs verified by exact Jaccard' if d.near.verify else 'unverified'}; "
                     f"per-language overrides: {', '.join(d.near.languages) or 'none'}.")
    else:
        lines.append("- Near dedup: off.")
    c = config.decontamination
    if c.enabled:
        near = f"; near match at Jaccard ≥ {c.near_threshold}" if c.near else ""
        lines.append(f"- Decontaminated against: {', '.join(benchmark_names(c)) or 'nothing'} (case- and "
                     f"whitespace-insensitive substrings{near}).")
    else:
        lines.append("- Decontamination: off.")
    if config.pii.enabled:
        ip = "`<IP_ADDRESS>`" if config.pii.ip_replacement == "token" else "one of BigCode's private IPs"
        lines.append(f"- PII redacted ({', '.join(config.pii.kinds)}): emails → `<EMAIL>`, keys → `<KEY>`, "
                     f"passwords → `<PASSWORD>`, IP addresses → {ip}; found by regular expressions and detect-secrets "
                     "plugins with BigCode's false-positive filters. **No NER model is used** (BigCode's StarPII "
                     "cannot run offline), so names and usernames are not redacted. Counts per kind are in "
                     "stats.json under the `pii` step, never the values.")
    else:
        lines.append("- PII redaction: off (no NER model is used in any case).")
    return lines
