"""The gibberish model shipped as numbers is the one training on the shipped license texts gives, bit for bit."""

from __future__ import annotations

import json
from importlib import resources

from codefoundry.data.pii.gibberish import MODEL, Gibberish, _training_text, detector, model_for, saved_model


def test_shipped_model_is_the_trained_one() -> None:
    shipped = json.loads(resources.files("codefoundry.data.pii").joinpath(MODEL).read_text(encoding="utf-8"))
    assert shipped == saved_model(), "license texts changed: regenerate with gibberish.write_model()"
    trained, loaded = Gibberish(_training_text()), detector()
    assert loaded.logp == trained.logp and loaded.threshold == trained.threshold
    for text in ["the quick brown fox", "Qm7vTz2LwX9kRb4NcY8pHs1J", "", "ab", "ünïcödé words here"]:
        assert loaded.score(text) == trained.score(text)
        assert loaded.is_gibberish(text) == trained.is_gibberish(text)


def test_the_saved_model_serves_only_the_text_it_was_trained_on() -> None:
    shipped = json.loads(resources.files("codefoundry.data.pii").joinpath(MODEL).read_text(encoding="utf-8"))
    corpus = _training_text()
    assert model_for(corpus, {**shipped, "threshold": 0.5}).threshold == 0.5  # read, not retrained
    other = corpus + "\nA further paragraph of plain English prose about software licences."
    assert model_for(other, shipped).threshold == Gibberish(other).threshold != shipped["threshold"]
