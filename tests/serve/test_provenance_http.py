"""Provenance over HTTP on a real server (127.0.0.1): /info's lineage equals the manifests, and
/v1/provenance answers "was this code in the training data?" and "am I in it?" from the datasets
that trained the served model and its adapter; with the API key, 4xx JSON for bad input."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codefoundry.manifest import manifest_sha256, read_manifest
from codefoundry.serve import ServeConfig, start_in_thread
from conftest import STDLIB
from fixtures_serve import SERVE_API_KEY

AUTH = {"Authorization": f"Bearer {SERVE_API_KEY}"}


def _serve(model: Path, **config) -> object:
    return start_in_thread(ServeConfig(model=model, port=0, api_key=SERVE_API_KEY, max_batch_total_tokens=2048,
                                       max_batch_prefill_tokens=256, engine_process=False, **config))


@pytest.fixture(scope="module")
def server(provenance_family: dict[str, Path]) -> Iterator[str]:
    """`base` (pretrained on clean) with the adapter `ft` (fine-tuned on raw) loaded as "ft"."""
    running = _serve(provenance_family["base"], adapters={"ft": provenance_family["ft"]})
    yield running.url
    running.stop()


def _stdlib(name: str, start: int = 0, end: int = 1500) -> str:
    return (STDLIB / name).read_text(encoding="utf-8")[start:end]


def test_info_lineage_equals_the_manifests(server: str, provenance_family: dict[str, Path]) -> None:
    f = provenance_family
    info = httpx.get(f"{server}/info").json()                       # open without the key, as in TGI
    assert info["model_id"] == "base" and info["adapters"] == ["ft"]
    model = info["lineage"]["model"]
    assert model["known"] and model["artifact"]["manifest_sha256"] == manifest_sha256(f["base"])
    [clean] = model["datasets"]
    assert clean["manifest_sha256"] == manifest_sha256(f["clean"])
    assert clean["manifest_sha256"] == read_manifest(f["base"]).inputs["dataset"].manifest_sha256
    assert clean["card_sha256"] == hashlib.sha256((f["clean"] / "card.md").read_bytes()).hexdigest()
    assert clean["license_policy"] == "permissive"
    assert clean["decontaminated_against"] == sorted(read_manifest(f["clean"]).extra["decontaminated_against"])
    assert model["tokenizer"]["manifest_sha256"] == manifest_sha256(f["tokenizer"])
    assert model["training_config"]["preset"] == "tiny" and model["base_model"] is None
    ft = info["lineage"]["adapters"]["ft"]
    assert ft["artifact"]["manifest_sha256"] == manifest_sha256(f["ft"])
    assert ft["base_model"]["manifest_sha256"] == manifest_sha256(f["base"])
    raw = next(d for d in ft["datasets"] if d["name"] == "raw")
    assert raw["manifest_sha256"] == manifest_sha256(f["raw"]) and raw["decontaminated_against"] == []
    assert raw["opt_out_sha256"] == hashlib.sha256(f["opt_out"].read_bytes()).hexdigest()
    assert info["lineage"]["provenance_dataset"] == {"source": "lineage", "datasets": [f["clean"].name, "raw"]}
    assert str(f["base"].parent) not in str(info)                   # names and hashes, never the server's paths


def test_contains_answers_in_and_out(server: str, provenance_family: dict[str, Path]) -> None:
    # textwrap.py is in clean (acme/mit-tools, MIT): the base model was trained on it
    r = httpx.get(f"{server}/v1/provenance/contains", params={"snippet": _stdlib("textwrap.py", 2000, 3500)},
                  headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    by_name = {d["name"]: d for d in body["datasets"]}
    assert body["in_training_data"] and by_name[provenance_family["clean"].name]["found"]
    assert by_name[provenance_family["clean"].name]["coverage"] > 0.8
    assert by_name[provenance_family["clean"].name]["used_by"] == ["model", "adapter:ft"]  # the adapter's base
    assert not by_name["raw"]["found"] and by_name["raw"]["used_by"] == ["adapter:ft"]
    # getopt.py only in raw (rawfolk/raw-corner), which the adapter was fine-tuned on; long snippets go by POST
    r = httpx.post(f"{server}/v1/provenance/contains", json={"snippet": _stdlib("getopt.py", 0, 4000)}, headers=AUTH)
    by_name = {d["name"]: d for d in r.json()["datasets"]}
    assert r.json()["in_training_data"] and by_name["raw"]["found"]
    assert not by_name[provenance_family["clean"].name]["found"]
    # calendar.py is in no repository
    r = httpx.get(f"{server}/v1/provenance/contains", params={"snippet": _stdlib("calendar.py")}, headers=AUTH)
    assert r.status_code == 200 and r.json()["in_training_data"] is False


def test_lookup_answers_am_i_in_it(server: str) -> None:
    def ask(**params: str) -> dict:
        r = httpx.get(f"{server}/v1/provenance/lookup", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        return r.json()

    mine = ask(repo="acme/mit-tools")
    assert mine["in_training_data"] and mine["query"] == {"repo": "acme/mit-tools"}
    files = {x["path"] for d in mine["datasets"] for x in d["files"] if x["status"] == "kept"}
    assert {"textwrap.py", "shlex.py"} <= files
    gpl = ask(repo="gnu-fan/gpl-app")                     # seen, but removed for its license
    assert gpl["in_training_data"] is False
    assert any(d["removed"] and d["kept"] == 0 for d in gpl["datasets"])
    raw = ask(user="rawfolk")                              # in raw only: through the adapter
    assert raw["in_training_data"] and {d["name"] for d in raw["datasets"] if d["found"]} == {"raw"}
    nobody = ask(user="nobody-at-all")
    assert nobody["in_training_data"] is False and all(d["files"] == [] for d in nobody["datasets"])


def test_provenance_needs_the_key_and_refuses_bad_input(server: str) -> None:
    snippet = {"snippet": _stdlib("textwrap.py")}
    for route, params in (("contains", snippet), ("lookup", {"repo": "acme/mit-tools"})):
        assert httpx.get(f"{server}/v1/provenance/{route}", params=params).status_code == 401
        bad_key = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{server}/v1/provenance/{route}", params=params, headers=bad_key).status_code == 401
    for route, params in (("contains", {}), ("contains", {"snippet": "def f(): pass"}), ("lookup", {}),
                          ("lookup", {"repo": "acme/mit-tools", "user": "acme"}), ("lookup", {"repo": "no-slash"}),
                          ("lookup", {"user": "../etc"})):
        r = httpx.get(f"{server}/v1/provenance/{route}", params=params, headers=AUTH)
        assert r.status_code == 422 and r.json()["error_type"] == "validation", (route, params, r.text)
    r = httpx.post(f"{server}/v1/provenance/contains", json={"text": "x"}, headers=AUTH)
    assert r.status_code == 422 and "snippet" in r.json()["error"]


def test_model_without_manifests_is_unknown_and_dataset_flag_answers(
        provenance_family: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "downloaded"                        # a model from elsewhere: no manifest.json
    shutil.copytree(provenance_family["base"], bare,
                    ignore=shutil.ignore_patterns("manifest.json", "checkpoints", "tokens"))
    running = _serve(bare)
    try:
        lineage = httpx.get(f"{running.url}/info").json()["lineage"]
        assert lineage["model"]["known"] is False and "not recorded" in lineage["model"]["why"]
        r = httpx.get(f"{running.url}/v1/provenance/lookup", params={"user": "acme"}, headers=AUTH)
        assert r.status_code == 404 and "--dataset" in r.json()["error"]
    finally:
        running.stop()
    running = _serve(bare, dataset=provenance_family["clean"])
    try:
        info = httpx.get(f"{running.url}/info").json()
        assert info["lineage"]["provenance_dataset"] == {"source": "--dataset",
                                                         "datasets": [provenance_family["clean"].name]}
        r = httpx.get(f"{running.url}/v1/provenance/contains", params={"snippet": _stdlib("textwrap.py", 2000, 3500)},
                      headers=AUTH)
        assert r.json()["in_training_data"] and r.json()["datasets"][0]["used_by"] == ["--dataset"]
    finally:
        running.stop()
