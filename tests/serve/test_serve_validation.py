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
    ({"best_of": 2}, False, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 3, "do_sample": True}, False, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"best_of": 2, "do_sample": True}, True, "`best_of` != 1 is not supported when streaming tokens"),
    ({"decoder_input_details": True}, True, "`decoder_input_details` == true is not supported when streaming"),
    ({"seed": -1}, False, "`seed` must be an unsigned 64-bit integer"),
    ({"typical_p": 0.0}, False, "`typical_p` must be > 0.0 and < 1.0. Given: 0.0"),
    ({"frequency_penalty": 3.0}, False, "`frequency_penalty` must be >= -2.0 and <= 2.0. Given: 3.0"),
    ({"repetition_penalty": float("nan")}, False, "`repetition_penalty` must be a finite number"),
    ({"stop": [""]}, False, "`stop` must be a list of non-empty strings"),
    ({"adapter_id": "lora"}, False, "adapter 'lora' is not loaded"),
])
def test_serve_validation_rules(validator: Validator, params: dict, stream: bool, message: str) -> None:
    error = _error(validator, "x", stream=stream, **params)
    assert error.startswith("Input validation error: ") and message in error


def test_serve_validation_draws_the_seed(validator: Validator) -> None:
    """The seed is fixed when a request is validated, so every reply can report the one it sampled with."""
    a = validator.validate("def f(x):", GenerateParameters(do_sample=True, max_new_tokens=2), stream=False)
    b = validator.validate("def f(x):", GenerateParameters(temperature=0.7, max_new_tokens=2), stream=False)
    assert isinstance(a.params.seed, int) and isinstance(b.params.seed, int) and a.params.seed != b.params.seed
    assert validator.validate("x", GenerateParameters(do_sample=True, seed=5), stream=False).params.seed == 5
    assert validator.validate("x", GenerateParameters(max_new_tokens=2), stream=False).params.seed is None
    openai = validator.validate_openai("x", max_tokens=2, temperature=0.5)
    assert isinstance(openai.params.seed, int) and openai.params.max_new_tokens == 2 and openai.details


def test_openai_mapping_is_shared_and_checked(validator: Validator) -> None:
    """`SamplingParams.from_openai`: temperature 0 is greedy whatever top_p says, top_p 1 is off, ranges checked."""
    from codefoundry.generate import SamplingParams, ValidationError

    greedy = SamplingParams.from_openai(temperature=0, top_p=0.5, max_new_tokens=7, stop="\n")
    assert not greedy.sampling and greedy.top_p is None and greedy.max_new_tokens == 7 and greedy.stop == ("\n",)
    default = SamplingParams.from_openai()
    assert default.sampling and default.temperature is None and default.max_new_tokens == 20
    assert SamplingParams.from_openai(temperature=0.2, top_p=1.0).top_p is None
    assert SamplingParams.from_openai(temperature=0.2, top_p=0.95, seed=3).top_p == 0.95
    for bad, message in (({"temperature": -1.0}, "`temperature` must be strictly positive"),
                         ({"temperature": float("inf")}, "`temperature` must be a finite number"),
                         ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
                         ({"presence_penalty": 2.5}, "`presence_penalty` must be >= -2.0 and <= 2.0")):
        with pytest.raises(ValidationError, match=message):
            SamplingParams.from_openai(**bad)
    # through the server's validator: the same rule, as a 422 with TGI's prefix; a null max_tokens fills the budget
    with pytest.raises(ServeError, match="`temperature` must be strictly positive"):
        validator.validate_openai("x", max_tokens=None, temperature=-0.5)
    v = validator.validate_openai("def f(x):", max_tokens=None, temperature=0)
    assert v.params.max_new_tokens == 32 - len(v.input_ids) and v.params.seed is None
