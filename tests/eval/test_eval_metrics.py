"""pass@k: the unbiased estimator against exact binomials and the published anchors."""

from __future__ import annotations

from math import comb

import pytest

from codefoundry.eval import mean_pass_at_k, pass_at_k


def test_code_eval_docstring_anchor() -> None:
    # HF evaluate / BEH code_eval docstring: ["a*b", "a+b"] against add(2,3)==5 -> pass@1 0.5, pass@2 1.0
    assert mean_pass_at_k([(2, 1)], [1, 2]) == {"pass@1": 0.5, "pass@2": 1.0}


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (20, 0, 10), (20, 20, 1), (200, 7, 100),
                                           (200, 1, 1), (15, 14, 10)])
def test_matches_exact_binomials(n: int, c: int, k: int) -> None:
    exact = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_known_values_and_stability() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    # n large enough that C(n, k) overflows a float: the product form stays finite and exact
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)


def test_not_reported_when_n_below_k() -> None:
    assert mean_pass_at_k([(5, 2), (5, 0)], [1, 10]) == {"pass@1": pytest.approx(0.2)}
    with pytest.raises(ValueError, match="pass@10 needs at least 10 samples"):
        pass_at_k(5, 1, 10)
