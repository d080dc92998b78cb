"""Lineage through pretraining, fine-tunes and merges: which datasets trained which weights, the
contamination verdict that follows from it, and `data opt-out --models` naming exactly the models
trained on a removed repository."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from codefoundry.cli import run
from codefoundry.eval import load_task
from codefoundry.eval.contamination import contamination_report
from codefoundry.finetune import merge
from codefoundry.lineage import describe, training_datasets
from codefoundry.manifest import manifest_sha256, read_manifest


def _datasets(artifact: Path) -> set[Path]:
    return {u.path.resolve() for u in training_datasets(artifact)}


def test_training_datasets_follow_finetunes_and_merges(provenance_family: dict[str, Path]) -> None:
    f = provenance_family
    clean, raw = f["clean"].resolve(), f["raw"].resolve()
    assert _datasets(f["base"]) == {clean}                  # not the tokenizer's dataset route, not twice
    assert _datasets(f["other"]) == {raw}
    assert _datasets(f["ft"]) == {raw, clean}               # its own data and its base's
    assert _datasets(f["other_ft"]) == {clean, raw}
    assert _datasets(f["merged"]) == {raw, clean}


def test_describe_equals_the_manifests(provenance_family: dict[str, Path]) -> None:
    f = provenance_family
    lineage = describe(f["merged"])
    assert lineage["known"]
    by_name = {d["name"]: d for d in lineage["datasets"]}
    clean = by_name[f["clean"].name]
    assert clean["manifest_sha256"] == manifest_sha256(f["clean"])
    assert clean["card_sha256"] == hashlib.sha256((f["clean"] / "card.md").read_bytes()).hexdigest()
    assert clean["license_policy"] == read_manifest(f["clean"]).config["license_policy"] == "permissive"
    assert clean["decontaminated_against"] == sorted(read_manifest(f["clean"]).extra["decontaminated_against"])
    assert "humaneval" in clean["decontaminated_against"] and clean["membership_index"]
    raw = by_name["raw"]
    assert raw["decontaminated_against"] == [] and raw["changed_since_recorded"] is False
    assert raw["opt_out_sha256"] == hashlib.sha256(f["opt_out"].read_bytes()).hexdigest()
    assert lineage["base_model"]["manifest_sha256"] == manifest_sha256(f["base"])
    assert [a["manifest_sha256"] for a in lineage["adapters"]] == [manifest_sha256(f["ft"])]
    assert lineage["tokenizer"]["manifest_sha256"] == manifest_sha256(f["tokenizer"])
    assert lineage["training_config"]["max_steps"] == read_manifest(f["base"]).config["max_steps"] == 2
    assert "/" not in str(lineage["training_config"])        # paths cut to names: /info is open to all
    adapter = describe(f["ft"])
    assert adapter["training_config"]["lora"]["r"] == 4 and adapter["base_model"]["name"] == "base"
    card = yaml.safe_load((f["ft"] / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert {d["manifest_sha256"] for d in card["codefoundry"]["training_datasets"]} == {
        manifest_sha256(f["raw"]), manifest_sha256(f["clean"])}


def test_describe_says_unknown_without_manifests(tmp_path: Path, provenance_family: dict[str, Path],
                                                 tiny_model_dir: Path, tiny_tokenizer_dir: Path) -> None:
    bare = tmp_path / "hf-model"
    shutil.copytree(provenance_family["base"], bare, ignore=shutil.ignore_patterns("manifest.json", "checkpoints"))
    lineage = describe(bare)
    assert lineage["known"] is False and "not recorded" in lineage["why"]
    # a manifest that names no dataset (random init with a tokenizer): what it has, and unknown training data
    partial = describe(tiny_model_dir)
    assert partial["known"] is False and partial["datasets"] == [] and "not recorded" in partial["why"]
    assert partial["tokenizer"]["manifest_sha256"] == manifest_sha256(tiny_tokenizer_dir)


def test_contamination_holds_through_adapters_and_merges(provenance_family: dict[str, Path],
                                                         tmp_path: Path) -> None:
    f = provenance_family
    tasks = [load_task("humaneval")]
    verdict = lambda model, adapters=(): contamination_report(model, tasks, adapters)["tasks"]["humaneval"]["verdict"]  # noqa: E731
    assert verdict(f["base"]) == "decontaminated"
    assert verdict(f["base"], [f["ft"]]) == "NOT decontaminated"        # adapter trained on raw data
    assert verdict(f["other"], [f["other_ft"]]) == "NOT decontaminated"  # clean adapter over a raw base
    assert verdict(f["other_ft"]) == "NOT decontaminated"
    assert verdict(f["merged"]) == "NOT decontaminated"
    # the merge recorded its training datasets: the verdict survives the adapter's directory being gone
    adapter = tmp_path / "ft-copy"
    shutil.copytree(f["ft"], adapter, ignore=shutil.ignore_patterns("checkpoints", "tokens"))
    merged = merge(f["base"], adapter, tmp_path / "merged")
    shutil.rmtree(adapter)
    assert verdict(merged) == "NOT decontaminated"
    assert {u.path.resolve() for u in training_datasets(merged)} == {f["raw"].resolve(), f["clean"].resolve()}


def test_opt_out_names_exactly_the_models_trained_on_the_repository(
        provenance_family: dict[str, Path], tiny_model_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    f = provenance_family
    listing = tmp_path / "leave.txt"
    listing.write_text("acme/mit-tools\n")           # in clean (MIT), not in raw (rawfolk only)
    models = [f["base"], f["other"], f["ft"], f["other_ft"], f["merged"], tiny_model_dir]
    args = ["data", "opt-out", str(f["clean"]), "--list", str(listing), "--out", str(tmp_path / "v2")]
    assert run([*args, *(a for m in models for a in ("--models", str(m)))]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("/")}
    affected = {Path(p).name for p, line in lines.items() if "TRAINED ON OPTED-OUT" in line}
    assert affected == {"base", "ft", "other_ft", "merged"}
    assert "not trained on them" in lines[str(f["other"])]
    assert "not recorded" in lines[str(tiny_model_dir)]              # trained on nothing its manifests name
    assert "acme/mit-tools" in lines[str(f["merged"])]


def test_opt_out_refuses_bad_models_before_any_work(tmp_path: Path, provenance_family: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "leave.txt"
    listing.write_text("acme/mit-tools\n")
    out = tmp_path / "v2"
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (tmp_path / "missing", empty):
        assert run(["data", "opt-out", str(provenance_family["clean"]), "--list", str(listing), "--out", str(out),
                    "--models", str(bad)]) == 1
        assert "--models" in capsys.readouterr().err and not out.exists()


def test_a_derived_dataset_counts_not_its_raw_input(provenance_family: dict[str, Path], tmp_path: Path) -> None:
    """A model trained on a decontaminated copy of raw data is decontaminated: the raw dataset it was
    derived from trained nothing (and its opted-out repositories are not the model's either)."""
    from codefoundry.data import decontaminate_dataset
    from codefoundry.manifest import write_manifest

    cleaned = decontaminate_dataset(provenance_family["raw"], tmp_path / "raw-decontaminated", workers=1)
    model = tmp_path / "model"
    model.mkdir()
    write_manifest(model, "model", {}, inputs={"dataset": cleaned, "tokenizer": provenance_family["tokenizer"]})
    assert _datasets(model) == {cleaned.resolve()}
    report = contamination_report(model, [load_task("humaneval")])
    assert report["tasks"]["humaneval"]["verdict"] == "decontaminated"


def test_data_contains_cli_verdicts(provenance_family: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import stdlib_files

    clean = str(provenance_family["clean"])
    capsys.readouterr()
    assert run(["data", "contains", clean, "--snippet", stdlib_files("textwrap.py")["textwrap.py"][2000:3500]]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "verdict: in the dataset"
    assert run(["data", "contains", clean, "--snippet", stdlib_files("getopt.py")["getopt.py"]]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("verdict: not found")
    for args in (["--snippet", "def f(): pass"], [], ["--snippet", "x" * 200, "--file", "-"]):
        assert run(["data", "contains", clean, *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
