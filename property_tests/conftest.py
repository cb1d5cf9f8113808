"""Hypothesis profiles: a quick derandomized one for CI, a long one on request; and
``pg_journals``, fresh PostgreSQL journals for the ``..._on_postgres`` variants.

    LITEDURABLE_PROFILE=long python -m pytest property_tests
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
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

# After the profile: ``journals`` reads its example count.
from journals import Journals, postgres_journals  # noqa: E402

from litedurable.testing import NoPostgresError, postgres_server  # noqa: E402


@pytest.fixture(scope="session")
def pg_journals() -> Iterator[Journals]:
    """Fresh PostgreSQL journals for generated examples: on ``$LITEDURABLE_TEST_POSTGRES``,
    else on a throwaway server of the machine's binaries; a skip without one (a failure
    with ``LITEDURABLE_REQUIRE_POSTGRES=1``, as in tests/conftest.py)."""

    def unavailable(reason: str) -> None:
        if os.environ.get("LITEDURABLE_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here (LITEDURABLE_REQUIRE_POSTGRES) but "
                        f"{reason}")
        pytest.skip(reason)

    if importlib.util.find_spec("psycopg") is None:
        unavailable("psycopg is not installed (pip install litedurable[postgres])")
    given = os.environ.get("LITEDURABLE_TEST_POSTGRES")
    if given:
        yield postgres_journals(given)
        return
    with contextlib.ExitStack() as stack:
        try:
            dsn = stack.enter_context(postgres_server(fsync="off"))
        except NoPostgresError as missing:
            unavailable(f"{missing}, and LITEDURABLE_TEST_POSTGRES is not set")
        yield postgres_journals(dsn)
