"""Shared fixtures: a journal path per test, and a guard against leaked engine threads."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# ``support`` (the helpers the test files share) lives here; make it importable whatever
# pytest's import mode (property_tests/conftest.py does the same).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import engine_threads, leaked_engine_threads, schema_urls

from litedurable.testing import NoPostgresError, postgres_server

BACKENDS = ("sqlite", "postgres")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run the test's ``db_path`` on SQLite and on PostgreSQL")
    config.addinivalue_line(
        "markers", "sqlite_only(reason): in a ``both_backends`` module, run this test's "
        "``db_path`` on SQLite alone (say why: SQLite-specific, or slow and covered elsewhere)")


def pytest_generate_tests(metafunc) -> None:
    """Tests marked ``both_backends`` (a module's ``pytestmark``) that take ``db_path`` or
    ``new_db`` run once per backend, but those also marked ``sqlite_only``."""
    definition = metafunc.definition
    if ("new_db" in metafunc.fixturenames  # db_path uses it
            and definition.get_closest_marker("both_backends") is not None
            and definition.get_closest_marker("sqlite_only") is None):
        metafunc.parametrize("db_backend", BACKENDS, indirect=True)


@pytest.fixture
def db_backend(request) -> str:
    """The backend ``db_path`` names: the test's parameter, else ``LITEDURABLE_TEST_DB``
    (an experiment: ``postgres`` runs any App-level test on PostgreSQL; those that open the
    file itself fail there for that reason alone), else SQLite."""
    return getattr(request, "param", None) or os.environ.get("LITEDURABLE_TEST_DB", "sqlite")


@pytest.fixture
def new_db(request, tmp_path, db_backend) -> Callable[[str], str]:
    """A maker of fresh journals on the test's backend, for a test that needs more than one
    (export from one, import into another): ``new_db("b")`` is a path ``b.db`` inside the
    test's temporary directory, or on PostgreSQL a ``postgresql://`` URL naming a fresh
    schema; the same name is the same journal."""
    if db_backend == "postgres":
        return schema_urls(request.getfixturevalue("postgres_dsn"), "t_")
    return lambda name: str(tmp_path / f"{name}.db")


@pytest.fixture
def db_path(new_db) -> str:
    """A fresh journal: a path inside the test's temporary directory, or on PostgreSQL a
    ``postgresql://`` URL naming a fresh schema."""
    return new_db("journal")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves any ``litedurable-*`` thread running after it returns.

    Every App a test opens must be closed, and ``close()`` joins the threads it started. A
    thread still finishing its last instruction gets a bounded join before the check.
    """
    before = engine_threads()
    yield
    alive = leaked_engine_threads(before)
    assert not alive, f"threads left running after the test: {alive}"


# -- a PostgreSQL server for the session (tests/test_postgres_storage.py) ------------------



def _no_postgres(reason: str) -> None:
    """Skip, saying why; fail instead where PostgreSQL is required
    (``LITEDURABLE_REQUIRE_POSTGRES=1``, for CI)."""
    if os.environ.get("LITEDURABLE_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required here (LITEDURABLE_REQUIRE_POSTGRES) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN of a PostgreSQL database the tests may create schemas in, or a skip."""
    if importlib.util.find_spec("psycopg") is None:  # the optional extra
        _no_postgres("psycopg is not installed (pip install litedurable[postgres])")
    given = os.environ.get("LITEDURABLE_TEST_POSTGRES")
    if given:
        yield given
        return
    with contextlib.ExitStack() as stack:
        try:  # a throwaway server of the machine's binaries
            dsn = stack.enter_context(postgres_server(fsync="off"))
        except NoPostgresError as missing:
            _no_postgres(f"{missing}, and LITEDURABLE_TEST_POSTGRES is not set")
        yield dsn
