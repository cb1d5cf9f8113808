"""Shared fixtures: a journal path per test, and a guard against leaked engine threads."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# ``support`` (the helpers the test files share) lives here; make it importable whatever
# pytest's import mode (property_tests/conftest.py does the same).
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import engine_threads, leaked_engine_threads

BACKENDS = ("sqlite", "postgres")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "both_backends: run the test's ``db_path`` on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc) -> None:
    """Tests marked ``both_backends`` (a module's ``pytestmark``) run once per backend."""
    if ("db_path" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("both_backends") is not None):
        metafunc.parametrize("db_backend", BACKENDS, indirect=True)


@pytest.fixture
def db_backend(request) -> str:
    """The backend ``db_path`` names: the test's parameter, else ``LITEDURABLE_TEST_DB``
    (an experiment: ``postgres`` runs any App-level test on PostgreSQL; those that open the
    file itself fail there for that reason alone), else SQLite."""
    return getattr(request, "param", None) or os.environ.get("LITEDURABLE_TEST_DB", "sqlite")


@pytest.fixture
def db_path(request, tmp_path, db_backend) -> str:
    """A fresh journal: a path inside the test's temporary directory, or on PostgreSQL a
    ``postgresql://`` URL naming a fresh schema."""
    if db_backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        sep = "&" if "?" in dsn else "?"
        return f"{dsn}{sep}schema=t_{uuid.uuid4().hex[:12]}"
    return str(tmp_path / "journal.db")


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        _no_postgres("no PostgreSQL binaries (pg_config not on PATH) and "
                    "LITEDURABLE_TEST_POSTGRES is not set")
    bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                            check=True).stdout.strip()
    initdb, pg_ctl = os.path.join(bindir, "initdb"), os.path.join(bindir, "pg_ctl")
    if not (os.path.exists(initdb) and os.path.exists(pg_ctl)):
        _no_postgres(f"no initdb/pg_ctl in {bindir} and LITEDURABLE_TEST_POSTGRES is not set")
    as_user: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    root = tempfile.mkdtemp(prefix="litedurable-pg-")
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            _no_postgres("running as root and there is no 'postgres' user to run the server")
        os.chown(root, postgres.pw_uid, postgres.pw_gid)
        as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"
    data, port = os.path.join(root, "data"), _free_port()
    subprocess.run([*as_user, initdb, "-D", data, "-U", user, "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, pg_ctl, "-D", data, "-o", options, "-l",
                    os.path.join(root, "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
