"""Validation without a server: defaults resolved into `ValidRequest`, TGI's rules and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from codefoundry.serve import Limits, ServeError, Validator
from codefoundry.serve.schemas import GenerateParameters


@pytest.fixture(scope="module")
def validator(tiny_tokenizer_dir: Path) -> Validator:
    from codefoundry.tokenizer import load_tokenizer

    return Validator(load_tokenizer(tiny_tokenizer_dir), Limits(max_input_tokens=20, max_total_tokens=32))


def _error(validator: Validator, inputs: str, stream: bool = False, **params: object) -> str:
    with pytest.raises(ServeError) as e:
        validator.validate(inputs, GenerateParameters(**params), stream=stream)
    assert e.value.status == 422 and e.value.error_type == "validation"
    return e.value.body()["error"]


def test_serve_validation_defaults(validator: Validator) -> None:
    v = validator.validate("def f(x):", None, stream=False)
    assert v.params.do_sample and v.params.sampling                 # no parameters at all: TGI samples
    assert v.params.max_new_tokens == 32 - len(v.input_ids)        # null max_new_tokens fills max_total_tokens
    v = validator.validate("def f(x):", GenerateParameters(max_new_tokens=5), stream=False)
    assert not v.params.sampling and v.params.seed is None and not v.return_full_text and not v.details
    assert validator.validate("x", GenerateParameters(), stream=False, default_return_full_text=True).return_full_text


def test_serve_validation_truncate_keeps_last_tokens(validator: Validator) -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    full = validator.tokenize(text)
    assert len(full) > 20
    v = validator.validate(text, GenerateParameters(truncate=6, max_new_tokens=2), stream=False)
    assert v.input_ids == full[-6:] and validator.tokenize(v.inputs) == full[-6:]
    assert "`inputs` tokens must be <= 20. Given:" in _error(validator, text, max_new_tokens=2)
    assert "`truncate` must be strictly positive and less than 20. Given: 0" in _error(validator, "x", truncate=0)


def test_serve_validation_special_tokens_recognised(validator: Validator) -> None:
    ids = validator.validate("<fim_prefix>a<fim_suffix>b<fim_middle>", GenerateParameters(max_new_tokens=1),
                             stream=False).input_ids
    assert ids[0] == 1 and 3 in ids and ids[-1] == 2


@pytest.mark.parametrize(("params", "stream", "message"), [
    ({"best_of": 2}, False, "`best_of` must be > 0 and <= 1. Given: 2"),
    ({"best_of": 2}, True, "`best_of` != 1 is not allowed for this endpoint"),
    ({"decoder_input_details": True}, True, "`decoder_input_details` == true is not supported when streaming"),
    ({"seed": -1}, False, "`seed` must be an unsigned 64-bit integer"),
    ({"typical_p": 0.0}, False, "`typical_p` must be > 0.0 and < 1.0. Given: 0.0"),
    ({"frequency_penalty": 3.0}, False, "`frequency_penalty` must be >= -2.0 and <= 2.0. Given: 3.0"),
    ({"repetition_penalty": float("nan")}, False, "`repetition_penalty` must be a finite number"),
    ({"stop": [""]}, False, "`stop` must be a list of non-empty strings"),
    ({"watermark": True}, False, "watermark is not supported"),
    ({"adapter_id": "lora"}, False, "adapters are not supported"),
])
def test_serve_validation_rules(validator: Validator, params: dict, stream: bool, message: str) -> None:
    error = _error(validator, "x", stream=stream, **params)
    assert error.startswith("Input validation error: ") and message in error
