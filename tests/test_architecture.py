"""The package's shape: dependencies point one way and each library has one home."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import sender

PACKAGE = Path(sender.__file__).parent

# Lower layers first; a module may import only modules of a strictly lower layer.
# A package's ``__init__`` sits with (or above) the modules it re-exports.
LAYERS: list[set[str]] = [
    {"errors", "lifecycle", "readonly", "_lazy"},
    {"signing"},
    {"addresses", "storeurl"},
    {"models", "vocabulary", "clock", "loop", "home", "redact", "pacing.limits"},
    {
        "compose.sites",
        "compose.codes",
        "compose.linkhosts",
        "compose.event",
        "feedback.mailparse",
        "feedback.prose",
        "participants",
        "pacing.schedule",
        "pacing.redis_limits",
        "pacing",
        "store.records",
    },
    {
        "config",
        "store.base",
        "store.rules",
        "store.sqlite.schema",
        "store.postgres.schema",
    },
    {"store.sql", "store.sqlite.limits"},
    {"store.common"},
    {"store.sqlite.checkpoint", "store.postgres.database"},
    {"store.sqlite.file", "store.postgres.limits"},
    {
        "store.sqlite.runs",
        "store.sqlite.outbox",
        "store.sqlite.progress",
        "store.sqlite.events",
        "store.sqlite.feedback",
        "store.postgres.runs",
        "store.postgres.outbox",
        "store.postgres.progress",
        "store.postgres.events",
        "store.postgres.feedback",
    },
    {"store.sqlite.store", "store.postgres.store"},
    {"store.sqlite", "store.postgres"},
    {"store.url", "store.limits"},
    {
        "compose.links",
        "compose.render",
        "compose.mime",
        "compose.ical",
        "compose.dkim",
        "compose",
        "servers.smtpd",
        "store",
        "feedback.intake",
        "feedback.bounces",
        "feedback.sns",
        "checks.resolve",
        "checks.mtasts",
        "transport.base",
    },
    {
        "transport.smtp",
        "transport.ses",
        "servers.capture",
        "servers.inbound",
        "servers",
        "compose.composer",
        "checks.doctor",
    },
    {
        "transport",
        "testing",
        "feedback.suppression",
        "feedback.unsubscribe",
        "feedback",
        "checks.validate",
        "webhooks",
        "landing",
        "checks.gmail",
        "checks",
    },
    {"client"},
    {"bulk.settings", "bulk.workers"},
    {"bulk.status", "bulk.ingest"},
    {"bulk.lease"},
    {"bulk.dispatcher"},
    {"bulk.runner"},
    {"bulk.drain", "bulk"},
    {"invites"},
    {"configured"},
    {"service.auth", "service.schemas", "service.html", "service.preview"},
    {"service.state"},
    {"service.web"},
    {
        "service.links",
        "service.codes",
        "service.messages",
        "service.feedback",
        "service.inbound",
        "service.landing",
        "service.admin",
        "service.unsubscribe",
    },
    {"service.runs"},
    {"service.application"},
    {"service.serve", "service"},
    {"cli.app"},
    {"cli.checks", "cli.doctor", "cli.bounces"},
    {"cli.runs"},
    {"cli.queue"},
    {"cli.calendar"},
    {"cli.messages"},
    {"cli.serve", "cli.webhooks"},
    {"cli"},
    {"__init__", "__main__"},
]

# The same rule, coarser: the packages that ``ls sender/`` shows, lowest first. A module may
# import its own package and any package of a strictly lower layer; ARCHITECTURE.md draws it.
FOUNDATION = {
    "_lazy",
    "storeurl",
    "errors",
    "lifecycle",
    "readonly",
    "addresses",
    "models",
    "vocabulary",
    "clock",
    "loop",
    "home",
    "redact",
    "signing",
}
PACKAGE_LAYERS: list[set[str]] = [
    {"foundation"},
    {"pacing"},
    {"store", "config", "participants"},
    {"compose", "servers"},
    {"transport", "checks", "feedback", "testing", "webhooks", "landing"},
    {"client"},
    {"bulk"},
    {"invites"},
    {"configured"},
    {"service"},
    {"cli"},
    {"__init__", "__main__"},
]

# The command line is one subpackage; click and rich live there and nowhere else.
CLI = {
    "cli.app",
    "cli.bounces",
    "cli.calendar",
    "cli.checks",
    "cli.doctor",
    "cli.messages",
    "cli.queue",
    "cli.runs",
    "cli.serve",
    "cli.webhooks",
}

# The HTTP API: FastAPI (and Starlette, pydantic beneath it) live in one module, uvicorn in one.
WEB = {"service.web"}

# Each third-party library is imported by exactly these modules.
OWNERS = {
    "jinja2": {"compose.render"},
    "markupsafe": {"compose.render"},  # jinja2's escaper, beside jinja2
    "itsdangerous": {"compose.links"},
    "aiosmtplib": {"transport.smtp"},
    "aiosmtpd": {"servers.smtpd"},
    "publicsuffixlist": {"compose.sites"},
    "idna": {"addresses"},
    "click": CLI,
    "rich": CLI,
    "uvloop": {"loop"},
    "dns": {"checks.resolve"},
    "email_validator": {"checks.validate"},
    "dkim": {"compose.dkim"},
    "cryptography": {"compose.dkim", "feedback.sns"},  # DKIM keys; SNS certificates
    # SNS certificates, SES, webhooks; MTA-STS policies (HTTPS only, no redirects)
    "httpx": {"checks.mtasts", "feedback.sns", "transport.ses", "webhooks"},
    "fastapi": WEB,
    "starlette": WEB,
    "pydantic": WEB,
    "uvicorn": {"service.serve"},
    "icalendar": {"compose.ical"},
    "psycopg": {
        "store.postgres.schema",
        "store.postgres.database",
        "store.postgres.outbox",
    },
    "psycopg_pool": {"store.postgres.database"},
    "redis": {"pacing.redis_limits"},
}


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


@functools.cache
def imports(path: Path) -> frozenset[str]:
    """Runtime imports, read once per module; ``if TYPE_CHECKING:`` ones are not dependencies."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def sender_imports(name: str) -> list[str]:
    """The sender modules ``name`` imports at run time (``sender.models.Address`` is ``models``)."""
    prefix = "sender."
    found = (i.removeprefix(prefix) for i in imports(MODULES[name]) if i.startswith(prefix))
    return sorted(target for target in found if target in MODULES)


def index_in(layers: list[set[str]], name: str, *, table: str) -> int:
    """Where ``name`` stands in ``layers`` (bottom first); ``table`` names them in the message."""
    for index, layer in enumerate(layers):
        if name in layer:
            return index
    raise AssertionError(f"sender.{name} is in no layer of {table}; add it there")


def layer_of(name: str) -> int:
    return index_in(LAYERS, name, table="LAYERS")


def package_of(name: str) -> str:
    """``compose.links`` is in ``compose``; a flat module is its own package, or the foundation."""
    top = name.split(".")[0]
    return "foundation" if top in FOUNDATION else top


def package_layer_of(package: str) -> int:
    return index_in(PACKAGE_LAYERS, package, table="PACKAGE_LAYERS")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name: str) -> None:
    """Each module imports only sender modules from lower layers."""
    own = layer_of(name)
    for target in sender_imports(name):
        assert layer_of(target) < own, (
            f"sender.{name} imports sender.{target}, which is not below it"
        )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_packages_point_down(name: str) -> None:
    """A module imports from its own package or from packages of lower layers only."""
    own = package_of(name)
    others = [target for target in sender_imports(name) if package_of(target) != own]
    for target in others:
        assert package_layer_of(package_of(target)) < package_layer_of(own), (
            f"sender.{name} imports sender.{target}: package {package_of(target)} "
            f"is not below {own}"
        )


def test_every_package_has_a_layer() -> None:
    """Each top-level module and subpackage of sender is placed in PACKAGE_LAYERS."""
    for name in MODULES:
        package_layer_of(package_of(name))


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_third_party_library_has_one_home(library: str) -> None:
    """A third-party library is imported only by the module that wraps it."""
    users = {
        name
        for name, path in MODULES.items()
        if any(i == library or i.startswith(library + ".") for i in imports(path))
    }
    assert users <= OWNERS[library], f"{library} imported by {sorted(users - OWNERS[library])}"
