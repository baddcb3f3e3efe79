"""Shared fixtures: real SMTP servers on loopback in the test's own loop, and a test CA."""

from __future__ import annotations

import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme
from hypothesis import settings

from sender.config import SmtpSecurity
from sender.pacing.limits import Limiter, MemoryLimiter
from sender.store import SqliteStore
from sender.store.sqlite.limits import SqliteLimiter
from sender.testing import RecordingSMTPServer

# Speed is measured in bench/, never asserted in tests: hypothesis's per-example deadline
# is a timing check, and on a shared 2-core machine it fails for reasons no user sees.
settings.register_profile("sender", deadline=None)
settings.load_profile("sender")

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright never downloads a browser

USER = "lms"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def smtp_user() -> str:
    """The login the auth-requiring server fixtures accept."""
    return USER


@pytest.fixture
def smtp_password() -> str:
    """The password that goes with ``smtp_user``."""
    return PASSWORD


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium for the whole session (Debian's, driven by Playwright).

    A missing browser fails the tests that need it, saying how to install it.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's browser with `apt-get install -y chromium` "
            "(.ci/run does); Playwright's own browser download is not used"
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority; its server certificate covers 127.0.0.1 and localhost."""
    return trustme.CA()


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test CA's certificate as a PEM file, for ``SmtpSettings.ca_file``."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def server_tls_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server-side TLS context with a certificate the test CA signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
async def smtp_server() -> AsyncIterator[RecordingSMTPServer]:
    """A started plain-SMTP recording server that accepts everything until scripted."""
    async with RecordingSMTPServer() as server:
        yield server


def secured_server(security: SmtpSecurity, context: ssl.SSLContext) -> RecordingSMTPServer:
    """A recording server that needs TLS in mode ``security`` and AUTH as USER/PASSWORD."""
    return RecordingSMTPServer(
        security=security,
        tls_context=context,
        require_starttls=security is SmtpSecurity.STARTTLS,
        credentials={USER: PASSWORD},
    )


@pytest.fixture
async def starttls_server(server_tls_context: ssl.SSLContext) -> AsyncIterator[RecordingSMTPServer]:
    """A recording server that requires STARTTLS and then AUTH as USER/PASSWORD."""
    async with secured_server(SmtpSecurity.STARTTLS, server_tls_context) as server:
        yield server


@pytest.fixture
async def tls_server(server_tls_context: ssl.SSLContext) -> AsyncIterator[RecordingSMTPServer]:
    """A recording server with implicit TLS (as on port 465) and AUTH as USER/PASSWORD."""
    async with secured_server(SmtpSecurity.TLS, server_tls_context) as server:
        yield server


@pytest.fixture
def starttls_url(starttls_server: RecordingSMTPServer, ca_file: str) -> str:
    """``starttls_server``'s smtp+starttls:// URL with the login and the test CA in it."""
    host = f"{starttls_server.host}:{starttls_server.port}"
    return f"smtp+starttls://{USER}:{PASSWORD}@{host}?ca_file={ca_file}"


@pytest.fixture(params=[SmtpSecurity.STARTTLS, SmtpSecurity.TLS], ids=["starttls", "tls"])
async def auth_server(
    request: pytest.FixtureRequest, server_tls_context: ssl.SSLContext
) -> AsyncIterator[RecordingSMTPServer]:
    """A recording server that needs TLS and AUTH: the test runs once per TLS mode."""
    async with secured_server(request.param, server_tls_context) as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A fresh, empty SQLite outbox in a temporary directory."""
    outbox = SqliteStore(tmp_path / "outbox.sqlite3")
    yield outbox
    await outbox.aclose()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released), so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's empty directory as the working directory, with no SENDER_* settings leaking in.

    Modules whose every test needs it say ``pytestmark = pytest.mark.usefixtures("workdir")``.
    """
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SENDER_"):
            monkeypatch.delenv(name)
    return tmp_path


# --- PostgreSQL: one database per test session (and xdist worker), clean tables per test ---
# Owned by the PostgreSQL store (issue 12). The server is the machine's own, with trust auth;
# SENDER_TEST_POSTGRES names another. A test that asks for it fails when it is not reachable.

POSTGRES_ADMIN_URL = os.environ.get(
    "SENDER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
POSTGRES_DOWN = (
    "PostgreSQL is not reachable at {url} ({error}). Start it: `service postgresql start` "
    "or `pg_ctlcluster 15 main start` (`pg_isready -h 127.0.0.1` says when it is up)"
)


def postgres_url_for(database: str) -> str:
    """The admin URL with its database replaced by ``database``."""
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Any]:
    """An autocommit connection to the server's admin database, or a failed test saying why."""
    import psycopg

    try:
        conn = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.fail(POSTGRES_DOWN.format(url=POSTGRES_ADMIN_URL, error=first), pytrace=False)
    with conn:
        yield conn


@pytest.fixture(scope="session")
def postgres_database(postgres_admin: Any) -> Iterator[Callable[[str], str]]:
    """Creates fresh databases (unique per xdist worker) and drops them when the session ends.

    Called with a label, it returns the URL of a new empty database.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    made: list[str] = []

    def create(label: str) -> str:
        name = f"sender_test_{worker}_{label}_{secrets.token_hex(4)}"
        postgres_admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres_url_for(name)

    yield create
    for name in made:
        postgres_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(postgres_database: Callable[[str], str]) -> str:
    """The session's own database: every PostgreSQL store of the session shares it."""
    return postgres_database("session")


@pytest.fixture(scope="session")
def _postgres_cleaner(postgres_url: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        yield conn


@pytest.fixture
def postgres_backend(postgres_url: str, _postgres_cleaner: Any) -> Callable[[Path], Any]:
    """A factory like ``SqliteStore``'s: the same path is the same data, a new path a fresh one.

    The first store on a path empties every table (so each test or hypothesis
    example starts clean without a database of its own); later ones see what it wrote.
    """
    from sender.store.postgres import PostgresStore
    from sender.store.postgres.schema import TABLES

    seen: set[Path] = set()

    def open_postgres(path: Path) -> PostgresStore:
        if path not in seen:
            seen.add(path)
            (exists,) = _postgres_cleaner.execute(
                "SELECT to_regclass('runs') IS NOT NULL"
            ).fetchone()
            if exists:
                # DELETE, not TRUNCATE: 0.1 ms instead of 16 on the few rows a test leaves
                _postgres_cleaner.execute("; ".join(f"DELETE FROM {t}" for t in TABLES))  # noqa: S608
        return PostgresStore(postgres_url, min_size=0, max_size=4)

    return open_postgres


# --- end of the PostgreSQL block ------------------------------------------------------------


# --- shared limiters: memory, a SQLite file, PostgreSQL, Redis ---------------------------

REDIS_URL = os.environ.get("SENDER_TEST_REDIS", "redis://127.0.0.1:6379/15")
REDIS_DOWN = (
    "Redis is not reachable at {url} ({error}). Start it: `service redis-server start` "
    "or `redis-server --daemonize yes` (`redis-cli ping` says PONG when it is up)"
)
BACKENDS = ["memory", "sqlite", "postgres", "redis"]


def redis_url() -> str:
    """The test Redis, or a failed test saying how to start it."""
    host_port = REDIS_URL.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        pytest.fail(REDIS_DOWN.format(url=REDIS_URL, error=exc), pytrace=False)
    return REDIS_URL


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Limiter]:
    """A factory of limiters of one backend that share their state (memory: one instance)."""
    if request.param == "memory":
        shared = MemoryLimiter()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SqliteLimiter(tmp_path / "limits.sqlite3")
    if request.param == "postgres":
        from sender.store.postgres.limits import PostgresLimiter

        url = request.getfixturevalue("postgres_url")
        return lambda: PostgresLimiter(url, max_size=2)
    from sender.pacing.redis_limits import RedisLimiter

    url = redis_url()
    return lambda: RedisLimiter(url)


@pytest.fixture
async def limiters(backend: Callable[[], Limiter]) -> AsyncIterator[list[Limiter]]:
    """Three limiters on one shared state, closed afterwards."""
    made = [backend() for _ in range(3)]
    yield made
    for limiter in {id(limiter): limiter for limiter in made}.values():
        await limiter.aclose()
