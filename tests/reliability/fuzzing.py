"""Shared settings of the property-based tests of hostile input: how many examples, how long each may take.

The default run draws a few dozen examples per property (seconds in all); `CODEFOUNDRY_FUZZ=slow`
draws twenty times as many (`make test-all` or a long run by hand):

    CODEFOUNDRY_FUZZ=slow .venv/bin/python -m pytest -n 0 tests/reliability -k fuzz

Every example must finish within `DEADLINE` (a hang is a failure, not a slow test) and may raise
only the parser's own error types; peak memory is bounded by each test's own sizes.
"""

from __future__ import annotations

import os
import resource
from datetime import timedelta

from hypothesis import HealthCheck, settings

SLOW = os.environ.get("CODEFOUNDRY_FUZZ") == "slow"
DEADLINE = timedelta(seconds=5)


def fuzz(examples: int) -> settings:
    """`examples` per property in the default run (twenty times as many in the slow one), each within DEADLINE."""
    return settings(max_examples=examples * 20 if SLOW else examples, deadline=DEADLINE, derandomize=not SLOW,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large], database=None)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
