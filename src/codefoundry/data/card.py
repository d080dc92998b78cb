"""`card.md`: a dataset card like The Stack's, rendered from stats.json and the config.

The YAML front matter names each subset as a `datasets` config, so both
`datasets.load_dataset(DIR, "files")` and the Hub viewer find the shards. Tables (languages,
licenses, removals, steps) come from stats.json, so a new step's removals show up here
without touching this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from codefoundry.data.config import CurateConfig
from codefoundry.data.decontam import benchmark_names
from codefoundry.data.dedup import NearDedup
from codefoundry.data.optout import OptOutList
from codefoundry.data.subsets.part import SUBSETS

TOP_ROWS = 30
SUBSET_TEXT = {
    "files": "Source files, one row per file (The Stack).",
    "notebooks": "Jupyter notebooks parsed with nbformat, one row per notebook and form: structured "
                 "(`<jupyter_start><jupyter_text>…<jupyter_code>…<jupyter_output>…`, outputs truncated, images and "
                 "other binary outputs dropped) and/or script (jupytext percent format, markdown as comments); "
                 "`lang` is the kernel language.",
    "commits": "Git commits, one row per changed file: `<commit_before>{old}<commit_msg>{message}<commit_after>{new}`; "
               "merges, bot commits, uninformative messages and large diffs removed; no author e-mail in the text; "
               "`path` is the changed file, the license the repository's.",
    "issues": "GitHub issues, one row per issue: `<issue_start>Title: …\\nusername_0: …<issue_comment>username_1: …"
              "<issue_closed>`; logins replaced by username_0, username_1, … within each issue; bot comments and "
              "bot-only issues removed; `path` is `issues/<number>`.",
}


def front_matter(subsets: Sequence[str]) -> str:
    configs = [{"config_name": name, "data_files": [{"split": "train", "path": f"data/{name}/*.parquet"}]}
               for name in subsets]
    meta = {"configs": configs, "license": "other", "language": ["code"], "task_categories": ["text-generation"],
            "tags": ["code", "codefoundry"]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def _table(title: str, header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _group_rows(group: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    items = sorted(group.items(), key=lambda kv: (-kv[1].get("kept_bytes", 0), -kv[1].get("files", 0), kv[0]))
    return [[name, f"{c.get('kept_files', 0):,}", _mb(c.get("kept_bytes", 0)), f"{c.get('removed_files', 0):,}"]
            for name, c in items[:TOP_ROWS]]


def render_card(stats: Mapping[str, Any], config: CurateConfig, sources: Sequence[str]) -> str:
    """The dataset card text (deterministic: no dates, no timings)."""
    # files first: `datasets` loads the first config when none is named
    subsets = sorted(stats["subsets"], key=lambda n: (SUBSETS.index(n) if n in SUBSETS else len(SUBSETS), n))
    parts = [front_matter(subsets), "# Dataset card\n",
             "Source code curated with `codefoundry data curate`, following The Stack / StarCoderData: files "
             "from repositories, a language per file, a license per repository, and BigCode's quality "
             "filters. Every removed file is kept in `removed/` with its `reason`.\n",
             "## Load it\n", "```python", "import datasets",
             *[f'{name} = datasets.load_dataset("path/to/this/dir", "{name}", split="train")' for name in subsets],
             "```",
             "DuckDB: `SELECT lang, count(*) FROM 'data/files/*.parquet' GROUP BY lang`.\n",
             "## Sources\n", *[f"- `{s}`" for s in sources], "",
             "## Policies\n",
             f"- License policy: **{config.license_policy}** (license types kept; The Stack v2 decides the type: "
             "permissive if every detected license is on the permissive list, no_license if none was found; "
             "a dual license such as `GPL-3.0 OR MIT` counts as one, on the list when any of its choices is).",
             f"- Permissive list: {', '.join(config.permissive_licenses)}.",
             f"- Languages: {', '.join(config.languages) if config.languages else 'all known languages'}.",
             f"- Vendored files dropped: {config.drop_vendored}; generated files dropped: {config.drop_generated}.",
             f"- Max file size: {config.limits.max_file_bytes:,} bytes.",
             "- Removed rows keep their text: " + ("yes, except those of opted-out repositories." if
                                                   config.removed_content else "no."),
             "- Quality filters: " + ", ".join(f"{name} ({'on' if getattr(config.filters, name).enabled else 'off'})"
                                               for name in type(config.filters).model_fields) + ".",
             *step_policies(config), *subset_policies(config, subsets), ""]
    for name in subsets:
        s = stats["subsets"][name]
        t = s["totals"]
        parts += [f"## Subset `{name}`\n", SUBSET_TEXT.get(name, "") + "\n",
                  f"{t['kept_files']:,} rows kept ({_mb(t['kept_bytes'])} MB) of {t['files']:,} seen "
                  f"({_mb(t['bytes'])} MB); {t['removed_files']:,} removed.\n",
                  _table("Languages", ["language", "files", "MB", "removed files"], _group_rows(s["languages"])),
                  _table("Licenses", ["license", "files", "MB", "removed files"], _group_rows(s["licenses"])),
                  _table("License types", ["type", "files", "MB", "removed files"], _group_rows(s["license_types"])),
                  _table("Removals", ["reason", "files", "MB"],
                         [[r, f"{c['files']:,}", _mb(c["bytes"])] for r, c in
                          sorted(s["removed"].items(), key=lambda kv: (-kv[1]["files"], kv[0]))]),
                  _table("Steps", ["step", "rows in", "kept", "removed"],
                         [[n, f"{c['rows_in']:,}", f"{c['kept']:,}", f"{sum(c['removed'].values()):,}"]
                          for n, c in s.get("steps", {}).items()])]
    parts += ["## Columns\n",
              "hexsha (git blob id), size, ext, lang, repo_name, path, licenses (SPDX), license_type, stars, forks, "
              "content, avg_line_length, max_line_length, alphanum_fraction — as in The Stack.\n"]
    return "\n".join(parts)


def subset_policies(config: CurateConfig, subsets: Sequence[str]) -> list[str]:
    """Card lines on the settings of the subsets beside files that this dataset has."""
    lines = []
    if "notebooks" in subsets:
        nb = config.notebooks
        lines.append(f"- Notebooks: forms {', '.join(nb.forms)}; outputs truncated to {nb.max_output_chars:,} "
                     f"characters; {nb.min_chars:,}–{nb.max_chars:,} characters, lines ≤ {nb.line_max:,}, "
                     f"alphanumeric share ≥ {nb.alpha_frac}; each form deduplicated on its own.")
    if "commits" in subsets:
        c = config.commits
        lines.append(f"- Commits: ≤ {c.max_commits_per_repo:,} per repository; ≤ {c.max_changed_lines:,} changed "
                     f"lines per file, ≤ {c.max_files_per_commit} files per commit, files ≤ {c.max_file_bytes:,} "
                     f"bytes; messages ≥ {c.min_message_chars} characters; exact dedup only.")
    if "issues" in subsets:
        i = config.issues
        lines.append(f"- Issues: {i.min_chars:,}–{i.max_chars:,} characters, ≤ {i.max_comments} comments of "
                     f"≤ {i.max_comment_chars:,} characters; common-English-word share ≥ {i.min_natural_language}.")
    return lines


def step_policies(config: CurateConfig) -> list[str]:
    """Card lines (markdown bullets) describing the opt-out, dedup, decontamination and PII settings."""
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
                     f"passwords → `<PASSWORD>`, IP addresses → {ip}; found by vendor key patterns "
                     "(AWS, GitHub, Slack, Stripe, …), private-key blocks (body redacted), secrets assigned to "
                     "secret-looking names (quoted or not), passwords in URLs and connection strings and on command "
                     "lines, and detect-secrets' high-entropy plugins with BigCode's false-positive filters (generic "
                     "candidates only); a value found once is redacted wherever it recurs in the file. "
                     "**No NER model is used** (BigCode's StarPII "
                     "cannot run offline), so names and usernames are not redacted. Counts per kind are in "
                     "stats.json under the `pii` step, never the values.")
    else:
        lines.append("- PII redaction: off (no NER model is used in any case).")
    return lines
