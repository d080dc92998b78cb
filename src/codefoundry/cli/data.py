"""`codefoundry data …`: curate sources into a dataset/ artifact and inspect it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codefoundry.cli.common import ConfigOpt, OutOpt, WorkersOpt, examples, stage_config

app = typer.Typer(help="Curate code into a dataset/ artifact (The Stack's pipeline) and inspect it.",
                  no_args_is_help=True)

SourcesArg = Annotated[list[str], typer.Argument(
    help="Directories, git repositories, folders of repositories, .tar.gz/.zip archives, .jsonl/.parquet files, "
         "save_to_disk directories, or the embedded corpus: site-packages, stdlib.", show_default=False)]


@app.command("curate", epilog=examples(
    "codefoundry data curate site-packages stdlib --out dataset/",
    "codefoundry data curate ./my-repos --out dataset/ --license-policy permissive+no_license -j 4",
    "codefoundry data curate the-stack-export.jsonl --out dataset/ --languages python,go",
    "codefoundry data curate repo.tar.gz --out dataset/ --config curate.yaml --max-file-bytes 200000",
))
def curate(
    sources: SourcesArg,
    out: OutOpt,
    config: ConfigOpt = None,
    workers: WorkersOpt = None,
    languages: Annotated[str | None, typer.Option(
        "--languages", help="Comma-separated languages to keep (The Stack's names, any case: python,c++,c#).",
        show_default=False)] = None,
    license_policy: Annotated[str | None, typer.Option(
        "--license-policy", help="permissive | permissive+no_license | all (default: permissive).",
        show_default=False)] = None,
    max_file_bytes: Annotated[int | None, typer.Option(
        "--max-file-bytes", min=1, help="Skip files larger than this (default: 1000000).", show_default=False)] = None,
    removed_content: Annotated[bool | None, typer.Option(
        "--removed-content/--no-removed-content", help="Keep file text in removed/ rows (default: no).",
        show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
) -> None:
    """Curate SOURCE... into a dataset: language, license, quality filters, removed/ with reasons.

    Interrupted runs resume: run the same command again.
    """
    from codefoundry.data import CurateConfig
    from codefoundry.data import curate as run_curate

    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    cfg = stage_config(CurateConfig, config, workers=workers, languages=langs, license_policy=license_policy,
                       removed_content=removed_content, **{"limits.max_file_bytes": max_file_bytes})
    run_curate(sources, Path(out), cfg, overwrite=overwrite)
