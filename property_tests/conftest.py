"""Hypothesis profiles: a quick derandomized one for CI, a long one on request.

    LITEDURABLE_PROFILE=long python -m pytest property_tests
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# The helpers shared with tests/ (``import support``) live in tests/support.py.
TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

settings.register_profile(
    "quick", max_examples=100, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("LITEDURABLE_PROFILE", "quick"))
