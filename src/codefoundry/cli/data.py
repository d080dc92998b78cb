"""`codefoundry data …`: curate sources into a dataset/ artifact and inspect it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from codefoundry.cli.common import ConfigOpt, OutOpt, WorkersOpt, defaults_from, examples, stage_config
from codefoundry.errors import UserError

if TYPE_CHECKING:
    from codefoundry.data import ModelExposure

app = typer.Typer(help="Curate code into a dataset/ artifact (The Stack's pipeline) and inspect it.",
                  no_args_is_help=True, epilog=examples(
                      "codefoundry data curate site-packages stdlib --out dataset/",
                      "codefoundry data lookup dataset/ --user octocat",
                      "codefoundry data opt-out dataset/ --list opt-out.txt --out dataset-v2/",
                      "codefoundry data dedup dataset/ --out dataset-dedup/",
                  ))

SourcesArg = Annotated[list[str] | None, typer.Argument(
    help="Directories, git repositories, folders of repositories, .tar.gz/.zip archives, .jsonl/.parquet files, "
         "save_to_disk directories, or the embedded corpus: site-packages, stdlib. Their .ipynb files become the "
         "notebooks subset.", show_default=False)]


def _curate_config() -> type:
    from codefoundry.data import CurateConfig

    return CurateConfig


@app.command("curate", cls=defaults_from(_curate_config, max_file_bytes="limits.max_file_bytes",
                                        commits="commits.enabled",
                                        max_commits_per_repo="commits.max_commits_per_repo",
                                        notebooks="notebooks.enabled"), epilog=examples(
    "codefoundry data curate site-packages stdlib --out dataset/",
    "codefoundry data curate ./my-repos --out dataset/ --license-policy permissive+no_license -j 4",
    "codefoundry data curate the-stack-export.jsonl --out dataset/ --languages python,go",
    "codefoundry data curate repo.tar.gz --out dataset/ --config curate.yaml --max-file-bytes 200000",
    "codefoundry data curate ./my-repos --out /shared/dataset/ --executor ray --ray-address auto",
    "codefoundry data curate ./my-repos --out dataset/ --commits --max-commits-per-repo 500 --issues issues.jsonl",
))
def curate(
    out: Annotated[str, typer.Option("--out", "-o", help="Output dataset directory, or an fsspec URL "
                                     "(s3://bucket/dataset, memory://…; made locally, then uploaded).")],
    sources: SourcesArg = None,
    config: ConfigOpt = None,
    workers: WorkersOpt = None,
    languages: Annotated[str | None, typer.Option(
        "--languages", help="Comma-separated languages to keep (The Stack's names, any case: python,c++,c#).",
        show_default=False)] = None,
    license_policy: Annotated[str | None, typer.Option(
        "--license-policy", help="permissive | permissive+no_license | all (default: {default}).",
        show_default=False)] = None,
    max_file_bytes: Annotated[int | None, typer.Option(
        "--max-file-bytes", min=1, help="Skip files larger than this (default: {default}).",
        show_default=False)] = None,
    removed_content: Annotated[bool | None, typer.Option(
        "--removed-content/--no-removed-content", help="Keep file text in removed/ rows, never an opted-out "
        "repository's (default: {default}).",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
    opt_out: Annotated[Path | None, typer.Option(
        "--opt-out", help="File of repositories to leave out: owner, owner/repo or globs, one per line.",
        show_default=False)] = None,
    executor: Annotated[str | None, typer.Option(
        "--executor", help="local (worker processes) | ray (Ray tasks; pip install 'codefoundry[ray]'); "
        "same output either way (default: {default}).", show_default=False)] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="With --executor ray: auto, HOST:6379 or ray://HOST:10001 (default: a Ray instance "
        "started on this machine).", show_default=False)] = None,
    commits: Annotated[bool | None, typer.Option(
        "--commits/--no-commits", help="Also curate the history of the git repositories among the sources into "
        "the commits subset (default: {default}).", show_default=False)] = None,
    max_commits_per_repo: Annotated[int | None, typer.Option(
        "--max-commits-per-repo", min=1, help="With --commits: commits read per repository, newest first "
        "(default: {default}).", show_default=False)] = None,
    issues: Annotated[list[Path] | None, typer.Option(
        "--issues", help="JSONL export of GitHub issues, one per line (repeatable): the issues subset.",
        show_default=False)] = None,
    notebooks: Annotated[bool | None, typer.Option(
        "--notebooks/--no-notebooks", help="Curate .ipynb files as the notebooks subset (default: {default}).",
        show_default=False)] = None,
) -> None:
    """Curate SOURCE... into a dataset: language, license, quality filters, removed/ with reasons.

    Subsets beside files: notebooks (.ipynb of the sources), commits (--commits), issues (--issues FILE).
    Interrupted runs resume: run the same command again.
    """
    from codefoundry.data import CurateConfig
    from codefoundry.data import curate as run_curate

    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    cfg = stage_config(CurateConfig, config, workers=workers, languages=langs, license_policy=license_policy,
                       removed_content=removed_content, executor=executor, ray_address=ray_address,
                       **{"limits.max_file_bytes": max_file_bytes, "opt_out.file": opt_out,
                          "commits.enabled": commits, "commits.max_commits_per_repo": max_commits_per_repo,
                          "issues.files": issues or None, "notebooks.enabled": notebooks})
    run_curate(sources or [], out, cfg, overwrite=overwrite)


DatasetArg = Annotated[Path, typer.Argument(help="A dataset/ artifact made by `codefoundry data curate`.",
                                            show_default=False)]


@app.command("opt-out", epilog=examples(
    "codefoundry data opt-out dataset/ --list opt-out.txt --out dataset-v2/",
    "codefoundry data opt-out dataset/ --list opt-out.txt --out dataset-v2/ --models model/ --models adapters/",
))
def opt_out_cmd(
    dataset: DatasetArg,
    list_file: Annotated[Path, typer.Option("--list", help="Opt-out list: owner, owner/repo or globs, one per line.",
                                            show_default=False)],
    out: OutOpt,
    models: Annotated[list[Path] | None, typer.Option(
        "--models", help="A model or adapter directory, or a folder of them (repeatable): report which were trained "
        "on listed repositories, from their manifests' lineage (through fine-tunes and merges).",
        show_default=False)] = None,
    workers: WorkersOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
) -> None:
    """Apply an opt-out list to DATASET, writing a new dataset (the list's sha256 goes into its manifest)."""
    from codefoundry.data import exposures, model_artifacts, opt_out_dataset

    artifacts = model_artifacts(models) if models else []     # a wrong --models fails before the work
    opt_out_dataset(dataset, list_file, out, overwrite=overwrite, workers=workers)
    if artifacts:
        _print_exposures(exposures(list_file, artifacts))


def _print_exposures(found: list[ModelExposure]) -> None:
    from codefoundry.console import console

    width = max(len(str(e.artifact)) for e in found)
    for e in found:
        if e.affected:
            where = "; ".join(f"{', '.join(repos)} (in {role})" for role, repos in e.repos.items() if repos)
            verdict = f"TRAINED ON OPTED-OUT  {where}"
        elif e.unknown:
            verdict = f"unknown: dataset gone ({', '.join(e.unknown)})"
        elif not e.repos:
            verdict = "unknown: its training data is not recorded in its manifests"
        else:
            verdict = f"not trained on them (checked: {', '.join(e.repos)})"
        typer.echo(f"{e.artifact!s:<{width}}  {e.kind:<7}  {verdict}")
    hit = sum(e.affected for e in found)
    console.print(f"{hit} of {len(found)} models and adapters were trained on listed repositories: retrain or "
                  "re-fine-tune them on the new dataset", highlight=False)


@app.command("lookup", epilog=examples(
    "codefoundry data lookup dataset/ --user octocat",
    "codefoundry data lookup dataset/ --repo octocat/hello-world",
))
def lookup_cmd(
    dataset: DatasetArg,
    user: Annotated[str | None, typer.Option("--user", help="A GitHub user or organisation.",
                                             show_default=False)] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="One repository, OWNER/NAME.", show_default=False)] = None,
) -> None:
    """List a user's or repository's rows in every subset of DATASET: kept, or why each was removed."""
    from codefoundry.console import console
    from codefoundry.data import lookup

    rows = lookup(dataset, user=user, repo=repo)
    if not rows:
        console.print(f"no files of {user or repo} in {dataset}", highlight=False)
        return
    width = max(len(f"{r.repo}/{r.path}") for r in rows)
    for r in rows:
        typer.echo(f"{r.subset:<9} {r.repo}/{r.path:<{width - len(r.repo) - 1}}  {r.language or '?':<12} {r.status}")
    kept = sum(r.status == "kept" for r in rows)
    console.print(f"{len(rows)} rows: {kept} kept, {len(rows) - kept} removed", highlight=False)


@app.command("search", epilog=examples(
    'codefoundry data search dataset/ "def dedent"',
    'codefoundry data search dataset/ "shlex OR textwrap" --limit 5',
))
def search_cmd(
    dataset: DatasetArg,
    query: Annotated[str, typer.Argument(help="Words, \"a phrase\" or an FTS5 query.", show_default=False)],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most results to show.")] = 10,
) -> None:
    """Full-text search over DATASET's kept files: repository, path, language, license and a snippet."""
    from codefoundry.data import search

    for hit in search(dataset, query, limit):
        typer.echo(f"{hit.repo}/{hit.path}  [{hit.subset}; {hit.language or '?'}; {hit.license or 'no license'}]")
        typer.echo("    " + " ".join(hit.snippet.split()))


@app.command("contains", epilog=examples(
    "codefoundry data contains dataset/ --file snippet.py",
    "codefoundry data contains dataset/ --snippet \"$(sed -n 10,20p mine.py)\"",
))
def contains_cmd(
    dataset: DatasetArg,
    file: Annotated[Path | None, typer.Option("--file", help="The snippet to test (a text file; - for stdin).",
                                              show_default=False)] = None,
    snippet: Annotated[str | None, typer.Option("--snippet", help="The snippet itself.", show_default=False)] = None,
) -> None:
    """Was this code in DATASET? Spans of the snippet found (50-character n-grams in a Bloom filter, Data Portraits
    style). Exits 0 either way; the last line gives the verdict."""
    from codefoundry.data import check_snippet, contains

    if (file is None) == (snippet is None):
        raise UserError("give exactly one of --file FILE or --snippet TEXT")
    if snippet is None:
        try:
            snippet = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read {file}: {e}") from e
    check_snippet(snippet)
    m = contains(dataset, snippet)
    typer.echo(f"{m.coverage:.0%} of the snippet ({len(m.normalized)} normalised characters) is in the dataset; "
               f"{m.hits} of {m.windows} windows found, longest chain {m.longest_chain} n-grams")
    for start, end in m.spans:
        typer.echo(f"  [{start}:{end}] {m.normalized[start:end][:120]}")
    typer.echo("verdict: in the dataset" if m.found else "verdict: not found (a short or edited copy may be missed)")


@app.command("dedup", epilog=examples(
    "codefoundry data dedup dataset/ --out dataset-dedup/",
    "codefoundry data dedup dataset/ --out dataset-dedup/ --config dedup.yaml -j 2",
))
def dedup_cmd(dataset: DatasetArg, out: OutOpt, config: ConfigOpt = None, workers: WorkersOpt = None,
              overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
              ) -> None:
    """Exact + near (MinHash LSH) dedup of an existing DATASET into a new one. --config: the `dedup:` section."""
    from codefoundry.data import DedupConfig, dedup_dataset

    dedup_dataset(dataset, out, stage_config(DedupConfig, config), workers=workers, overwrite=overwrite)


@app.command("decontaminate", epilog=examples(
    "codefoundry data decontaminate dataset/ --out clean/",
    "codefoundry data decontaminate dataset/ --out clean/ --benchmark-jsonl my-eval.jsonl",
))
def decontaminate_cmd(
    dataset: DatasetArg, out: OutOpt, config: ConfigOpt = None, workers: WorkersOpt = None,
    benchmark_jsonl: Annotated[list[Path] | None, typer.Option(
        "--benchmark-jsonl", help="More benchmark strings (JSONL: a string or {\"text\", \"id\"} per line).",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
) -> None:
    """Remove files of DATASET containing benchmark material. --config: the `decontamination:` section."""
    from codefoundry.data import DecontamConfig, decontaminate_dataset

    cfg = stage_config(DecontamConfig, config, extra_jsonl=benchmark_jsonl or None)
    decontaminate_dataset(dataset, out, cfg, workers=workers, overwrite=overwrite)


@app.command("redact-pii", epilog=examples(
    "codefoundry data redact-pii dataset/ --out redacted/",
))
def redact_pii_cmd(dataset: DatasetArg, out: OutOpt, config: ConfigOpt = None, workers: WorkersOpt = None,
                   overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
                   ) -> None:
    """Redact emails, IPs, keys and passwords in DATASET (no NER model). --config: the `pii:` section."""
    from codefoundry.data import PiiConfig, redact_pii_dataset

    redact_pii_dataset(dataset, out, stage_config(PiiConfig, config), workers=workers, overwrite=overwrite)
