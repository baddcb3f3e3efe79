"""Settings as frozen dataclasses, and (for the CLI only) loading them from files.

Library code receives these objects through constructors; only :func:`load_settings`
reads ``sender.toml`` and the environment, and only the CLI calls it.
"""

from __future__ import annotations

import email.utils
import math
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sender.addresses import split_address
from sender.errors import ConfigurationError
from sender.home import KEY_WARNING, create_once, private_dir, tighten, tighten_home
from sender.models import Address
from sender.pacing.limits import LIMITS_IN_STORE, check_limits
from sender.pacing.schedule import RateLimits, RetryPolicy, parse_domain_rate
from sender.signing import secret_bytes
from sender.storeurl import sqlite_store_url, store_file
from sender.vocabulary import Stream, WebhookEvent

__all__ = [
    "ASSERTION_TTL",
    "DAY",
    "DEFAULT_MAX_AGE",
    "MAIL_PURPOSES",
    "MAX_CONCURRENCY",
    "ApiKey",
    "BouncePolicy",
    "CliConfig",
    "InboundLimits",
    "LinkSettings",
    "Scope",
    "SenderSettings",
    "SesSettings",
    "SmtpSecurity",
    "SmtpSettings",
    "StreamSettings",
    "TransportSettings",
    "WebhookEndpoint",
    "check_lms_login_url",
    "load_config",
    "local_secret",
    "parse_address",
    "parse_api_keys",
    "parse_duration",
    "parse_ses_topics",
    "parse_webhooks",
    "require_real_identity",
    "transport_from_url",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, /, *, setting: str = "duration") -> timedelta:
    """Parse ``90``, ``30s``, ``15m``, ``12h``, ``7d`` or ``2w`` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigurationError(
            f"{setting}: {text!r} is not a duration like 30s, 15m, 12h or 7d", setting=setting
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not seconds <= MAX_DURATION.total_seconds():  # also inf, from very many digits
        raise ConfigurationError(
            f"{setting}: {text[:40]!r} is longer than {MAX_DURATION.days}d", setting=setting
        )
    return timedelta(seconds=seconds)


MAX_DURATION = timedelta(days=3650)  # ten years: a longer link or retry is a typo
MAX_CONCURRENCY = 256  # messages in flight at once (RunSettings.concurrency, SMTP pool)


class SmtpSecurity(StrEnum):
    """How the SMTP connection is protected."""

    NONE = "none"  # plain SMTP; for loopback and trusted relays only
    STARTTLS = "starttls"  # plain connect, then STARTTLS before anything else (required)
    TLS = "tls"  # implicit TLS from the first byte (port 465)


_SCHEMES = {
    "smtp": SmtpSecurity.NONE,
    "smtp+starttls": SmtpSecurity.STARTTLS,
    "smtps": SmtpSecurity.TLS,
}
_DEFAULT_PORTS = {SmtpSecurity.NONE: 25, SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465}


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to connect for sending, and how hard to use each connection."""

    host: str
    port: int
    security: SmtpSecurity = SmtpSecurity.NONE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0  # seconds, for connecting and for every single command
    pool_size: int = 4  # concurrent connections
    max_messages_per_connection: int = 100  # then the connection is replaced
    validate_certs: bool = True
    ca_file: str | None = None  # extra CA bundle, e.g. for a private relay
    local_hostname: str | None = None  # EHLO name; default: the machine's FQDN
    # Connections open at once to this server, over every process sharing a limiter; None: no cap
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigurationError("smtp: the URL names no host", setting="smtp_url")
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"smtp: port {self.port} is out of range", setting="smtp_url")
        if not 0 < self.timeout <= MAX_DURATION.total_seconds():  # NaN fails too
            raise ConfigurationError(
                f"smtp: timeout must be a positive number of seconds, not {self.timeout}",
                setting="smtp.timeout",
            )
        if self.pool_size < 1:
            raise ConfigurationError("smtp: pool_size must be at least 1", setting="pool_size")
        if self.max_messages_per_connection < 1:
            raise ConfigurationError(
                "smtp: max_messages_per_connection must be at least 1",
                setting="max_messages_per_connection",
            )
        if (self.username is None) != (self.password is None):
            raise ConfigurationError(
                "smtp: give both a user and a password, or neither", setting="smtp_url"
            )
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigurationError(
                "smtp: max_connections must be at least 1", setting="max_connections"
            )

    @classmethod
    def from_url(
        cls,
        url: str,
        /,
        *,
        pool_size: int | None = None,
        timeout: float | None = None,
        max_messages_per_connection: int | None = None,
        max_connections: int | None = None,
    ) -> SmtpSettings:
        """Parse ``smtp://``, ``smtp+starttls://`` or ``smtps://`` URLs.

        ``user:password@host:port`` as usual (percent-encode ``@`` and ``:`` in
        passwords). Query parameters: ``timeout``, ``pool_size``,
        ``max_messages_per_connection``, ``max_connections``, ``verify=false``, ``ca_file``,
        ``local_hostname``. Keyword arguments override the query.
        """
        try:
            parts = urlsplit(url)
            port_in_url = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"smtp URL is malformed: {exc}", setting="smtp_url") from exc
        security = _SCHEMES.get(parts.scheme.lower())
        if security is None:
            raise ConfigurationError(
                f"smtp URL scheme {parts.scheme!r} is not one of {', '.join(_SCHEMES)}",
                setting="smtp_url",
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {
            "timeout",
            "pool_size",
            "max_messages_per_connection",
            "max_connections",
            "verify",
            "ca_file",
            "local_hostname",
        }
        if unknown:
            raise ConfigurationError(
                f"smtp URL has unknown parameter(s): {', '.join(sorted(unknown))}",
                setting="smtp_url",
            )

        def number(name: str, given: float | None, default: float, kind: type) -> float:
            if given is not None:
                return given
            if name not in query:
                return default
            try:
                return kind(query[name])  # type: ignore[no-any-return]
            except ValueError as exc:
                raise ConfigurationError(
                    f"smtp URL parameter {name}={query[name]!r} is not a number", setting=name
                ) from exc

        verify = query.get("verify", "true").lower()
        if verify not in {"true", "false", "1", "0", "yes", "no"}:
            raise ConfigurationError("smtp URL parameter verify must be true or false")
        return cls(
            host=parts.hostname or "",
            port=port_in_url or _DEFAULT_PORTS[security],
            security=security,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            timeout=float(number("timeout", timeout, 30.0, float)),
            pool_size=int(number("pool_size", pool_size, 4, int)),
            max_messages_per_connection=int(
                number("max_messages_per_connection", max_messages_per_connection, 100, int)
            ),
            validate_certs=verify in {"true", "1", "yes"},
            ca_file=query.get("ca_file"),
            local_hostname=query.get("local_hostname"),
            max_connections=(
                int(number("max_connections", max_connections, 0, int))
                if max_connections is not None or "max_connections" in query
                else None
            ),
        )

    @property
    def address(self) -> str:
        """``host:port`` (an IPv6 host in brackets): the server, never the login."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redacted_url(self) -> str:
        """The URL with the password left out, for logs and messages."""
        scheme = {v: k for k, v in _SCHEMES.items()}[self.security]
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.address}"


_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
_LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, slots=True)
class SesSettings:
    """Sending through Amazon SES v2 (``ses://REGION``); credentials come from the
    standard AWS environment variables when sending, never from here."""

    region: str
    configuration_set: str | None = None
    # Another endpoint than SES's own (tests: a loopback server); loopback hosts only,
    # so a URL cannot send signed requests, or mail, to an arbitrary host.
    endpoint: str | None = None
    timeout: float = 30.0  # seconds, for connecting and for each request
    pool_size: int = 4  # requests in flight at once

    def __post_init__(self) -> None:
        if not _REGION.fullmatch(self.region):
            raise ConfigurationError(
                f"ses: {self.region!r} is not an AWS region such as eu-west-1",
                setting="transport",
            )
        if self.configuration_set is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,64}", self.configuration_set
        ):
            raise ConfigurationError(
                "ses: configuration_set must be 1 to 64 letters, digits, - or _",
                setting="transport",
            )
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in {"http", "https"} or parts.hostname not in _LOOPBACK_HOSTS:
                raise ConfigurationError(
                    "ses: endpoint may only name a loopback host (http://127.0.0.1:PORT)",
                    setting="transport",
                )
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigurationError(
                f"ses: timeout must be a positive number of seconds, not {self.timeout}",
                setting="smtp_timeout",
            )
        if self.pool_size < 1:
            raise ConfigurationError("ses: pool_size must be at least 1", setting="pool_size")

    @classmethod
    def from_url(
        cls, url: str, /, *, pool_size: int | None = None, timeout: float | None = None
    ) -> SesSettings:
        """Parse ``ses://REGION[?configuration_set=NAME]`` (and ``endpoint=`` for tests)."""
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigurationError(f"ses URL is malformed: {exc}", setting="transport") from exc
        if parts.scheme.lower() != "ses":
            raise ConfigurationError("ses URL must start with ses://", setting="transport")
        if parts.username is not None or parts.port is not None or parts.path not in {"", "/"}:
            raise ConfigurationError(
                "ses URL is ses://REGION[?configuration_set=NAME]; credentials come from "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                setting="transport",
            )
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"configuration_set", "endpoint"}
        if unknown:
            raise ConfigurationError(
                f"ses URL has unknown parameter(s): {', '.join(sorted(unknown))}",
                setting="transport",
            )
        return cls(
            region=parts.hostname or "",
            configuration_set=query.get("configuration_set"),
            endpoint=query.get("endpoint"),
            timeout=timeout if timeout is not None else 30.0,
            pool_size=pool_size if pool_size is not None else 4,
        )

    @property
    def address(self) -> str:
        """Where requests go: the endpoint's host and port, never a credential."""
        if self.endpoint is not None:
            return urlsplit(self.endpoint).netloc
        return f"email.{self.region}.amazonaws.com:443"

    def redacted_url(self) -> str:
        """The URL as given (it holds no secret), for logs, messages and run identity."""
        query = [f"configuration_set={self.configuration_set}"] if self.configuration_set else []
        if self.endpoint is not None:
            query.append(f"endpoint={self.endpoint}")
        return f"ses://{self.region}" + (f"?{'&'.join(query)}" if query else "")


TransportSettings = SmtpSettings | SesSettings
"""Where messages go: an SMTP server or SES."""


def transport_from_url(
    url: str,
    /,
    *,
    pool_size: int | None = None,
    timeout: float | None = None,
    max_messages_per_connection: int | None = None,
    max_connections: int | None = None,
) -> TransportSettings:
    """``ses://...`` as :class:`SesSettings`, anything else as an SMTP URL."""
    if url.lower().startswith("ses:"):
        return SesSettings.from_url(url, pool_size=pool_size, timeout=timeout)
    return SmtpSettings.from_url(
        url,
        pool_size=pool_size,
        timeout=timeout,
        max_messages_per_connection=max_messages_per_connection,
        max_connections=max_connections,
    )


DEFAULT_MAX_AGE = timedelta(days=14)
# The purposes sender's own mail gives its links: ``invitation`` (the invitation and the
# calendar templates) and ``get_link``; ``login`` is what ``sender link issue`` and
# ``POST /v1/links`` give by default. A link's purpose is its signing salt.
MAIL_PURPOSES = ("login", "invitation", "get_link")
ASSERTION_TTL = timedelta(seconds=60)  # how long the landing page's assertion is good for
_PURPOSE_WORD = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Personal login links: the keys that sign them, where they point, how long they live.

    ``one_time_purposes``: links of these purposes are redeemed once, by the landing
    page's POST (or :meth:`sender.Sender.redeem_link`); others stay reusable until they
    expire. ``lms_login_url``: where the landing page's POST sends the participant, with
    a signed assertion good for ``assertion_ttl`` and one use.
    """

    secret_keys: tuple[str, ...] = field(repr=False)  # oldest first; the newest signs
    base_url: str
    max_age: timedelta = DEFAULT_MAX_AGE
    one_time_purposes: tuple[str, ...] = ("login",)
    lms_login_url: str | None = None  # absolute http(s) URL; None: no landing page POST
    assertion_ttl: timedelta = ASSERTION_TTL

    @property
    def purposes(self) -> tuple[str, ...]:
        """Every purpose a link may be verified for without naming one: the mail's and
        the one-time ones."""
        return tuple(dict.fromkeys(MAIL_PURPOSES + self.one_time_purposes))

    def __post_init__(self) -> None:
        if not self.secret_keys or any(not key for key in self.secret_keys):
            raise ConfigurationError(
                "links: at least one non-empty secret key is needed", setting="secret_keys"
            )
        if any(len(key) < 16 for key in self.secret_keys):
            raise ConfigurationError(
                "links: secret keys must be at least 16 characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                setting="secret_keys",
            )
        if not timedelta(0) < self.max_age <= MAX_DURATION:
            raise ConfigurationError(
                f"links: max_age must be positive and at most {MAX_DURATION.days} days",
                setting="max_age",
            )
        for purpose in self.one_time_purposes:
            if not isinstance(purpose, str) or not _PURPOSE_WORD.match(purpose):
                raise ConfigurationError(
                    f"one_time_purposes: {str(purpose)[:40]!r} is not a purpose (1-32 "
                    "lowercase letters, digits, '_', '.' or '-')",
                    setting="one_time_purposes",
                )
        if self.lms_login_url is not None:
            check_lms_login_url(self.lms_login_url)
        if not timedelta(seconds=1) <= self.assertion_ttl <= timedelta(minutes=10):
            raise ConfigurationError("assertion_ttl must be 1s to 10m", setting="assertion_ttl")


def check_lms_login_url(url: str, /) -> str:
    """``lms_login_url`` must be an absolute http(s) URL without a fragment: the landing
    page redirects there, and nowhere a request could choose."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.fragment
        or parts.username is not None
        or any(ch in url for ch in "\r\n\x00\t \\")
    ):
        raise ConfigurationError(
            f"lms_login_url {url[:80]!r} must be an absolute http:// or https:// URL "
            "without user info or #fragment",
            setting="lms_login_url",
        )
    return url


def parse_address(text: str, /, *, setting: str) -> Address:
    """Parse ``Name <addr@example.com>`` or a bare address from configuration."""
    if any(ch in text for ch in "\r\n\x00"):
        raise ConfigurationError(f"{setting} must be on one line", setting=setting)
    name, addr = email.utils.parseaddr(text)
    parts = split_address(addr)
    if parts is None or "." not in parts[1].strip("."):
        raise ConfigurationError(
            f"{setting}: {text!r} is not an address like 'Name <noreply@example.com>'",
            setting=setting,
        )
    return Address(email=addr, name=name)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """One stream's own sending identity (``[streams.NAME]`` in sender.toml).

    What is not given falls back to the top-level setting, so a stream can have its own
    From and DKIM key and share the rest. Reminders sent from another From, return-path
    domain and DKIM ``d=`` never spend the reputation that invitations need.
    """

    from_address: Address | None = None
    return_path: str | None = None
    bounce_domain: str | None = None
    dkim_domain: str | None = None  # all three dkim_* or none
    dkim_selector: str | None = None
    dkim_private_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        given = [self.dkim_domain, self.dkim_selector, self.dkim_private_key]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ConfigurationError(
                "a stream's DKIM signing needs dkim_domain, dkim_selector and dkim_key together",
                setting="streams",
            )


@dataclass(frozen=True, slots=True)
class SenderSettings:
    """Everything a :class:`sender.Sender` needs besides a transport."""

    from_address: Address  # always the From header; a teacher goes in Reply-To
    links: LinkSettings
    reply_to: Address | None = None
    organization: str | None = None  # shown in templates; default: From's display name
    template_dirs: tuple[Path, ...] = ()
    allowed_link_domains: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # extra headers on every message
    return_path: str | None = None  # envelope sender, where bounces go; default: From
    bounce_domain: str | None = None  # signed VERP return paths: bounces+<key>-<sig>@domain
    dkim_domain: str | None = None  # DKIM signing (d=); all three dkim_* or none
    dkim_selector: str | None = None
    dkim_private_key: bytes | None = field(default=None, repr=False)  # PEM
    # authserv-ids of relays whose Authentication-Results (dmarc=pass) vouch for a From
    trusted_authserv_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        given = [self.dkim_domain, self.dkim_selector, self.dkim_private_key]
        if any(v is not None for v in given) and not all(v is not None for v in given):
            raise ConfigurationError(
                "DKIM signing needs dkim_domain, dkim_selector and dkim_key together",
                setting="dkim",
            )

    message_id_domain: str | None = None  # default: From's domain
    # Streams with a sending identity of their own ([streams.subscription]), by name.
    streams: tuple[tuple[Stream, StreamSettings], ...] = ()
    # Where `sender serve` is reached from outside (https://...): one-click unsubscribe URLs.
    public_url: str | None = None

    @property
    def organization_name(self) -> str:
        return self.organization or self.from_address.name or self.from_address.domain

    def for_stream(self, stream: Stream, /) -> SenderSettings:
        """These settings with ``stream``'s own identity over the top-level one."""
        own = dict(self.streams).get(stream)
        if own is None:
            return self
        dkim = (
            (own.dkim_domain, own.dkim_selector, own.dkim_private_key)
            if own.dkim_domain is not None
            else (self.dkim_domain, self.dkim_selector, self.dkim_private_key)
        )
        return replace(
            self,
            from_address=own.from_address or self.from_address,
            return_path=own.return_path or (None if own.from_address else self.return_path),
            bounce_domain=own.bounce_domain or self.bounce_domain,
            dkim_domain=dkim[0],
            dkim_selector=dkim[1],
            dkim_private_key=dkim[2],
            streams=(),
        )

    def sending_domains(self) -> dict[str, str]:
        """Each stream's sending domain (its From's), for the complaint-rate guard."""
        return {stream.value: self.for_stream(stream).from_address.domain for stream in Stream}


DAY = 86_400.0


class Scope(StrEnum):
    """What an API key of ``sender serve`` may do; a key given without scopes may do all."""

    LINKS = "links"  # issue and verify Get Links
    SEND = "send"  # send one message now
    RUNS = "runs"  # enqueue runs, read their status
    ADMIN = "admin"  # the suppression list and the bounce report


API_KEY_MIN = 16  # characters; a shorter key is guessable


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key the HTTP API accepts (``Authorization: Bearer KEY``) and what it may do."""

    key: str = field(repr=False)
    scopes: frozenset[Scope] = frozenset(Scope)
    name: str = ""  # shown in logs instead of the key: "key 2" by position

    def __post_init__(self) -> None:
        if len(self.key) < API_KEY_MIN or not self.key.isprintable() or " " in self.key:
            raise ConfigurationError(
                f"api_keys: {self.name or 'a key'} must be at least {API_KEY_MIN} printable "
                "characters without spaces; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                setting="api_keys",
            )


def parse_api_keys(value: object, /) -> tuple[ApiKey, ...]:
    """``api_keys`` (sender.toml: a list; ``SENDER_API_KEYS``: comma-separated): each entry
    ``KEY`` (every scope) or ``KEY:scope+scope`` with scopes from links, send, runs, admin.

    Errors name the setting and the entry's position, never the key itself.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigurationError(
            'api_keys must be a list of "KEY" or "KEY:scope+scope" strings',
            setting="api_keys",
        )
    keys = []
    for position, entry in enumerate(value, start=1):
        key, colon, scope_text = entry.strip().partition(":")
        name = f"key {position}"
        scopes = frozenset(Scope)
        if colon:
            words = [word.strip() for word in scope_text.split("+")]
            unknown = [word for word in words if word not in set(Scope)]
            if unknown or not words:
                raise ConfigurationError(
                    f"api_keys: {name} names the scope {(unknown or [''])[0][:20]!r}; "
                    f"scopes are {', '.join(Scope)} joined by '+'",
                    setting="api_keys",
                )
            scopes = frozenset(Scope(word) for word in words)
        keys.append(ApiKey(key, scopes, name))
    if len({k.key for k in keys}) != len(keys):
        raise ConfigurationError("api_keys: a key is listed twice", setting="api_keys")
    return tuple(keys)


_TOPIC_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}")


def parse_ses_topics(value: object, /) -> tuple[str, ...]:
    """``ses_topics`` (sender.toml: a list; ``SENDER_SES_TOPICS``: comma-separated): the SNS
    topic ARNs whose SES notifications ``POST /v1/inbound/ses`` accepts; none: it accepts none.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigurationError(
            "ses_topics must be a list of SNS topic ARNs", setting="ses_topics"
        )
    for position, arn in enumerate(value, start=1):
        if not _TOPIC_ARN.fullmatch(arn):
            raise ConfigurationError(
                f"ses_topics: entry {position} ({arn[:80]!r}) is not an SNS topic ARN like "
                "arn:aws:sns:eu-west-1:123456789012:ses-bounces",
                setting="ses_topics",
            )
    return tuple(dict.fromkeys(value))


WEBHOOK_TIMEOUT = 10.0  # seconds an endpoint may take to answer one delivery


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """One ``[[webhooks]]`` entry: where events go, the secrets that sign them (newest
    last; several during a rotation) and which events it wants (empty: all)."""

    url: str
    secrets: tuple[str, ...] = field(repr=False)
    events: frozenset[WebhookEvent] = frozenset()
    timeout: float = WEBHOOK_TIMEOUT
    name: str = "webhooks[1]"  # shown in errors and logs instead of the secret

    def wants(self, event: str, /) -> bool:
        return not self.events or event in self.events


_WEBHOOK_FIELDS = {"url", "secret", "events", "timeout"}


def parse_webhooks(value: object, /) -> tuple[WebhookEndpoint, ...]:
    """``[[webhooks]]`` (or ``SENDER_WEBHOOK_URL`` with ``SENDER_WEBHOOK_SECRET``): each
    entry's ``url`` (http or https), ``secret`` (``whsec_…``, or a list of them to rotate),
    ``events`` (default: all) and ``timeout`` (default 10 s).

    Errors name the entry and its field (``webhooks[2].secret``), never a secret.
    """
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigurationError(
            "webhooks must be a list of tables ([[webhooks]] with url and secret)",
            setting="webhooks",
        )
    endpoints = []
    for position, entry in enumerate(value, start=1):
        name = f"webhooks[{position}]"
        unknown = sorted(set(entry) - _WEBHOOK_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"{name}: unknown field {unknown[0][:40]!r}; fields are "
                f"{', '.join(sorted(_WEBHOOK_FIELDS))}",
                setting=f"{name}.{unknown[0][:40]}",
            )
        url = entry.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(ch in str(url) for ch in "\r\n\x00 ")
        ):
            raise ConfigurationError(
                f"{name}.url must be an http:// or https:// URL", setting=f"{name}.url"
            )
        given = entry.get("secret")
        if isinstance(given, str):
            given = [given]
        if (
            not isinstance(given, list)
            or not given
            or not all(isinstance(item, str) for item in given)
        ):
            raise ConfigurationError(
                f'{name}.secret must be "whsec_…" or a list of them', setting=f"{name}.secret"
            )
        for secret in given:
            secret_bytes(secret, setting=f"{name}.secret")
        events = entry.get("events", [])
        known = set(WebhookEvent)
        if not isinstance(events, list) or not all(
            isinstance(event, str) and event in known for event in events
        ):
            raise ConfigurationError(
                f"{name}.events must be a list of {', '.join(WebhookEvent)}",
                setting=f"{name}.events",
            )
        timeout = _seconds({f"{name}.timeout": entry.get("timeout")}, f"{name}.timeout")
        if timeout is not None and timeout > 300:
            raise ConfigurationError(
                f"{name}.timeout must be at most 300s", setting=f"{name}.timeout"
            )
        endpoints.append(
            WebhookEndpoint(
                url=str(url),
                secrets=tuple(given),
                events=frozenset(WebhookEvent(event) for event in events),
                timeout=WEBHOOK_TIMEOUT if timeout is None else timeout,
                name=name,
            )
        )
    return tuple(endpoints)


def _webhook_from_environment(env: Mapping[str, str]) -> list[dict[str, object]] | None:
    """``SENDER_WEBHOOK_URL`` and ``SENDER_WEBHOOK_SECRET`` (comma-separated to rotate):
    one endpoint, for every event, in place of sender.toml's; one without the other is an
    error, so a half-configured deployment does not silently send nothing."""
    url = env.get("SENDER_WEBHOOK_URL")
    secret = env.get("SENDER_WEBHOOK_SECRET")
    if not url and not secret:
        return None
    if not url or not secret:
        missing = "SENDER_WEBHOOK_URL" if not url else "SENDER_WEBHOOK_SECRET"
        raise ConfigurationError(
            f"SENDER_WEBHOOK_URL and SENDER_WEBHOOK_SECRET go together; {missing} is not set",
            setting="webhooks",
        )
    secrets = [item.strip() for item in secret.split(",") if item.strip()]
    return [{"url": url.strip(), "secret": secrets}]


# --- Loading (CLI only) ---------------------------------------------------------------

DEFAULT_STATE_DIR = Path(".sender")
DEFAULT_FROM = "Example Academy <noreply@lms.example.com>"
DEFAULT_BASE_URL = "https://lms.example.com/login"
_PATH_KEYS = ("home", "maildir", "templates", "dkim_key")  # relative to sender.toml's folder
# (and so is the path of a sqlite:/// store URL)
_TOML_KEYS = {
    "home",
    "from",
    "reply_to",
    "organization",
    "base_url",
    "secret_keys",
    "link_ttl",
    "one_time_purposes",
    "lms_login_url",
    "assertion_ttl",
    "smtp_url",
    "transport",  # the same as smtp_url; either may name an SMTP server or ses://REGION
    "maildir",
    "templates",
    "allowed_link_domains",
    "headers",
    "return_path",
    "bounce_domain",
    "dkim_domain",
    "dkim_selector",
    "dkim_key",
    "pool_size",
    "max_messages_per_connection",
    "max_connections",
    "smtp_timeout",
    "rate",
    "domain_rate",
    "concurrency",
    "workers",
    "relay_timeouts",
    "domain_rates",
    "domain_groups",
    "retry_first",
    "bounce_budget",
    "soft_bounce_limit",
    "pause_single_sends",
    "sender_side_pause",
    "validate",
    "dns_server",
    "trusted_authserv_ids",
    "retry_max_age",
    "inbound_backlog",
    "inbound_max_sessions",
    "inbound_max_recipients",
    "store",
    "limits",
    "public_url",
    "streams",
    "api_keys",
    "ses_topics",
    "webhooks",
}


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    """When bounces suppress an address, and when they pause bulk sending."""

    soft_limit: int = 3
    soft_window: float = 7 * DAY
    budget: int = 80  # hard bounces per window; providers suspend at about 100 a day
    max_rate: float = 0.05  # hard bounces / messages sent in the window ...
    min_sent: int = 200  # ... judged once this many were sent
    window: float = DAY
    pause_single_sends: bool = False  # get_link and one invitation still go by default
    # Sender-side refusals (DMARC, a blocklisted IP, a content filter) from one receiving
    # provider within sender_side_window that pause bulk mail to that provider.
    sender_side_pause: int = 5
    sender_side_window: float = 3600.0
    # Complaints / delivered over ``window``, per stream and per sending domain: above
    # complaint_warn `sender status` warns, above complaint_pause that stream's bulk runs
    # pause. Judged once complaint_min_delivered messages were delivered in the window:
    # below that, one complaint alone is 0.1% or more.
    complaint_warn: float = 0.001
    complaint_pause: float = 0.003
    complaint_min_delivered: int = 1000

    def __post_init__(self) -> None:
        if (
            self.soft_limit < 1
            or self.budget < 1
            or self.min_sent < 1
            or self.sender_side_pause < 1
            or self.complaint_min_delivered < 1
        ):
            raise ConfigurationError("bounce limits must be at least 1", setting="bounce_budget")
        if not 0 < self.max_rate <= 1 or self.window <= 0 or self.soft_window <= 0:
            raise ConfigurationError(
                "bounce rate must be in (0, 1] and windows positive", setting="bounce_budget"
            )
        if self.sender_side_window <= 0:
            raise ConfigurationError(
                "sender_side_window must be positive", setting="sender_side_pause"
            )
        if not 0 < self.complaint_warn <= self.complaint_pause <= 1:
            raise ConfigurationError(
                "complaint rates must be 0 < warn <= pause <= 1", setting="complaint_pause"
            )


@dataclass(frozen=True, slots=True)
class InboundLimits:
    """How much the inbound listener takes at once (``inbound_*`` in sender.toml)."""

    backlog: int = 1024  # connections the kernel queues while the listener is busy
    max_sessions: int = 1000  # open SMTP sessions; the next client hears 421 and retries
    max_recipients: int = 100  # RCPT TOs per transaction (RFC 5321's minimum); then 452

    def __post_init__(self) -> None:
        for name in ("backlog", "max_sessions", "max_recipients"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigurationError(
                    f"inbound_{name} must be at least 1, not {value}", setting=f"inbound_{name}"
                )


@dataclass(frozen=True, slots=True)
class CliConfig:
    """What the CLI resolved from flags, environment, ``sender.toml`` and defaults."""

    sender: SenderSettings
    smtp: TransportSettings | None  # SMTP or SES; None: the embedded capture server
    maildir: Path
    state_dir: Path
    generated_secret: Path | None  # set when no key was configured and a local one is used
    config_file: Path | None
    store: str  # the outbox's URL (sqlite:////abs/path or postgresql://...); may hold a password
    # Where the limits every process shares live: "store" (the outbox's) or redis://host:port/db.
    limiter: str = LIMITS_IN_STORE
    limits: RateLimits = field(default_factory=RateLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 4  # bulk messages in flight; also the SMTP pool size
    workers: int = 1  # processes composing and sending a bulk run
    relay_timeouts: int = 3  # timeouts in a row per connection before a run pauses
    bounces: BouncePolicy = field(default_factory=BouncePolicy)
    validate: bool | None = None  # check addresses before queueing; None: when sending for real
    dns_server: str | None = None  # HOST:PORT for those checks; None: the system's resolver
    inbound: InboundLimits = field(default_factory=InboundLimits)
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)  # for `sender serve`
    ses_topics: tuple[str, ...] = ()  # SNS topics POST /v1/inbound/ses accepts
    webhooks: tuple[WebhookEndpoint, ...] = ()  # where events go, signed


def require_real_identity(config: CliConfig, /) -> None:
    """Refuse to send through a real SMTP server with the example From or base URL.

    The samples (``DEFAULT_FROM``, ``DEFAULT_BASE_URL``) make the embedded capture server
    work with no configuration; a real server would deliver them to people.
    """
    if config.smtp is None:
        return
    missing = []
    if config.sender.from_address.email == parse_address(DEFAULT_FROM, setting="from").email:
        missing.append("from (SENDER_FROM)")
    if urlsplit(config.sender.links.base_url).hostname == urlsplit(DEFAULT_BASE_URL).hostname:
        missing.append("base_url (SENDER_BASE_URL)")
    if missing:
        raise ConfigurationError(
            f"sending through {config.smtp.redacted_url()} needs your own "
            f"{' and '.join(missing)} in sender.toml or the environment; the example "
            "values are only for the embedded capture server",
            setting=missing[0].partition(" ")[0],
        )


def local_secret(state_dir: Path, /) -> tuple[str, Path]:
    """The generated key under ``state_dir``, created (mode 0600) on first use.

    Concurrent first commands race safely: each writes a key under a temporary name
    and links it into place, and all of them then read the one that was linked first.
    """
    path = state_dir / "secret.key"
    try:
        if not path.exists():
            private_dir(state_dir)
            made = create_once(
                path,
                lambda temporary: temporary.write_text(
                    secrets.token_urlsafe(32) + "\n", encoding="ascii"
                ),
            )
            if made:  # a new key (perhaps after one was lost): warn about it again
                (state_dir / KEY_WARNING).unlink(missing_ok=True)
        tighten(path)
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use the key file {path}: {exc.strerror or exc}", setting="secret_keys"
        ) from exc
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        key = ""
    if len(key) < 16:
        raise ConfigurationError(
            f"{path} holds no usable key (it needs one line of at least 16 characters); "
            "restore it from a backup, or configure secret_keys (SENDER_SECRET_KEYS)",
            setting="secret_keys",
        )
    return key, path


def load_config(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
) -> CliConfig:
    """Merge defaults < ``sender.toml`` < environment < flags into frozen settings.

    ``overrides`` holds flag values by TOML key (None means "not given").
    """
    env = os.environ if environ is None else environ
    found_file = config_file
    if found_file is None and Path("sender.toml").is_file():
        found_file = Path("sender.toml")
    values: dict[str, object] = {}
    if found_file is not None:
        try:
            with found_file.open("rb") as handle:
                values = tomllib.load(handle)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {found_file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"{found_file} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{found_file} is not valid TOML: {exc}") from exc
        unknown = set(values) - _TOML_KEYS
        if unknown:
            raise ConfigurationError(
                f"{found_file}: unknown setting(s) {', '.join(sorted(unknown))}",
                setting=sorted(unknown)[0],
            )
        values = _paths_relative_to(found_file.parent, values)
        if "transport" in values:
            if "smtp_url" in values:
                raise ConfigurationError(
                    f"{found_file}: give transport or smtp_url, not both", setting="transport"
                )
            values["smtp_url"] = values.pop("transport")
    for key, var in (
        ("home", "SENDER_HOME"),
        ("secret_keys", "SENDER_SECRET_KEYS"),
        ("base_url", "SENDER_BASE_URL"),
        ("smtp_url", "SENDER_SMTP_URL"),
        ("from", "SENDER_FROM"),
        ("trusted_authserv_ids", "SENDER_TRUSTED_AUTHSERV_IDS"),
        ("store", "SENDER_STORE"),
        ("limits", "SENDER_LIMITS"),
        ("api_keys", "SENDER_API_KEYS"),
        ("ses_topics", "SENDER_SES_TOPICS"),
        ("lms_login_url", "SENDER_LMS_LOGIN_URL"),
    ):
        if env.get(var):
            values[key] = env[var]
    if (webhook := _webhook_from_environment(env)) is not None:
        values["webhooks"] = webhook
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def text(key: str, default: str | None = None) -> str | None:
        value = values.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{key} must be a string", setting=key)
        if value is not None and any(ch in value for ch in "\r\n\x00"):
            raise ConfigurationError(f"{key} must be one line of text", setting=key)
        return value

    home = Path(text("home") or state_dir).absolute()
    if home.is_dir():
        tighten_home(home)
    keys_value = values.get("secret_keys")
    generated: Path | None = None
    if isinstance(keys_value, str):
        keys = tuple(k.strip() for k in keys_value.split(",") if k.strip())
    elif isinstance(keys_value, list) and all(isinstance(k, str) for k in keys_value):
        keys = tuple(keys_value)
    elif keys_value is None:
        key, generated = local_secret(home)
        keys = (key,)
    else:
        raise ConfigurationError("secret_keys must be a list of strings", setting="secret_keys")

    links = LinkSettings(
        secret_keys=keys,
        base_url=text("base_url", DEFAULT_BASE_URL) or DEFAULT_BASE_URL,
        max_age=_duration(values, "link_ttl") or DEFAULT_MAX_AGE,
        one_time_purposes=(
            ("login",)
            if values.get("one_time_purposes") is None
            else _names(values.get("one_time_purposes"), "one_time_purposes")
        ),
        lms_login_url=text("lms_login_url"),
        assertion_ttl=_duration(values, "assertion_ttl") or ASSERTION_TTL,
    )
    reply_to = text("reply_to")
    templates = values.get("templates")
    template_dirs: tuple[Path, ...]
    if templates is None:
        template_dirs = ()
    elif isinstance(templates, str):
        template_dirs = (Path(templates),)
    elif isinstance(templates, list) and all(isinstance(t, str) for t in templates):
        template_dirs = tuple(Path(t) for t in templates)
    else:
        raise ConfigurationError("templates must be a path or a list of paths", setting="templates")
    allowed = values.get("allowed_link_domains", [])
    if not isinstance(allowed, list) or not all(isinstance(d, str) for d in allowed):
        raise ConfigurationError(
            "allowed_link_domains must be a list of domains", setting="allowed_link_domains"
        )
    headers = _headers(values.get("headers", {}))
    settings = SenderSettings(
        from_address=parse_address(text("from", DEFAULT_FROM) or DEFAULT_FROM, setting="from"),
        links=links,
        reply_to=parse_address(reply_to, setting="reply_to") if reply_to else None,
        organization=text("organization"),
        template_dirs=template_dirs,
        allowed_link_domains=tuple(allowed),
        headers=headers,
        return_path=text("return_path"),
        bounce_domain=text("bounce_domain"),
        dkim_domain=text("dkim_domain"),
        dkim_selector=text("dkim_selector"),
        dkim_private_key=_read_key(text("dkim_key")),
        trusted_authserv_ids=_names(values.get("trusted_authserv_ids"), "trusted_authserv_ids"),
        streams=_streams(values.get("streams"), found_file.parent if found_file else None),
        public_url=_public_url(text("public_url")),
    )

    def integer(key: str) -> int | None:
        value = values.get(key)
        if value is None:
            return None
        if isinstance(value, str) and value.isdecimal():  # not "²": isdigit, but no int
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigurationError(f"{key} must be a whole number", setting=key)
        return value

    def whole(key: str, default: int, *, most: int, note: str = "") -> int:
        """A whole-number setting from 1 to ``most``; ``default`` when not given."""
        value = integer(key)
        if value is None:
            return default
        if not 1 <= value <= most:
            raise ConfigurationError(f"{key} must be 1 to {most}{note}, not {value}", setting=key)
        return value

    limits, retry = _sending_policy(values, paced=bool(values.get("smtp_url")))
    pool_size = whole("pool_size", 4, most=MAX_CONCURRENCY)
    concurrency = whole("concurrency", pool_size, most=MAX_CONCURRENCY)
    workers = whole("workers", 1, most=min(concurrency, 64), note=" (and at most concurrency)")
    per_connection = whole("max_messages_per_connection", 100, most=10**6)
    max_connections = whole("max_connections", 0, most=10**6) or None  # not given: no cap
    smtp_timeout = _seconds(values, "smtp_timeout")
    smtp_url = text("smtp_url")
    smtp = (
        transport_from_url(
            smtp_url,
            pool_size=concurrency,
            max_messages_per_connection=per_connection,
            timeout=smtp_timeout,
            max_connections=max_connections,
        )
        if smtp_url
        else None
    )
    if isinstance(smtp, SesSettings) and workers > 1:
        raise ConfigurationError(
            "workers > 1 needs an SMTP transport; with ses:// one process sends "
            "(up to concurrency requests at once), so set workers = 1",
            setting="workers",
        )
    maildir = Path(text("maildir") or home / "maildir")
    return CliConfig(
        sender=settings,
        smtp=smtp,
        maildir=maildir,
        state_dir=home,
        generated_secret=generated,
        config_file=found_file,
        store=_store(text("store"), home),
        limiter=check_limits(text("limits") or LIMITS_IN_STORE),
        limits=limits,
        retry=retry,
        concurrency=concurrency,
        workers=workers,
        relay_timeouts=whole("relay_timeouts", 3, most=1000),
        validate=_flag(values, "validate"),
        dns_server=text("dns_server"),
        bounces=BouncePolicy(
            budget=whole("bounce_budget", 80, most=10**9),
            soft_limit=whole("soft_bounce_limit", 3, most=10**6),
            sender_side_pause=whole("sender_side_pause", 5, most=10**9),
            pause_single_sends=_flag(values, "pause_single_sends") is True,
        ),
        inbound=InboundLimits(
            **{
                name: value
                for name in ("backlog", "max_sessions", "max_recipients")
                if (value := integer(f"inbound_{name}")) is not None
            }
        ),
        api_keys=parse_api_keys(values.get("api_keys")),
        ses_topics=parse_ses_topics(values.get("ses_topics")),
        webhooks=parse_webhooks(values.get("webhooks")),
    )


def _store(url: str | None, home: Path) -> str:
    """The store URL, checked; a SQLite path made absolute (default: the home's outbox).

    Absolute, so worker processes and later commands from another folder open the same file.
    """
    if not url:
        return sqlite_store_url(home / "outbox.sqlite3")
    path = store_file(url)
    return url if path is None else sqlite_store_url(path.absolute())


def _duration(values: Mapping[str, object], key: str) -> timedelta | None:
    """A positive duration setting (``"7d"``, or a number of seconds); None when not given."""
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigurationError(f"{key} must be a duration like 30s, 15m, 12h or 7d", setting=key)
    duration = parse_duration(str(value), setting=key)
    if duration <= timedelta(0):
        raise ConfigurationError(f"{key} must be longer than 0s", setting=key)
    return duration


def _seconds(values: Mapping[str, object], key: str) -> float | None:
    duration = _duration(values, key)
    return None if duration is None else duration.total_seconds()


_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII but the colon (RFC 5322 ftext)


def _headers(table: object) -> tuple[tuple[str, str], ...]:
    """The ``[headers]`` table: names a header may have, one-line values."""
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigurationError("headers must be a table of strings", setting="headers")
    for name, value in table.items():
        if not _HEADER_NAME.match(name):
            raise ConfigurationError(
                f"headers: {name[:40]!r} is not a header name (letters, digits, dashes)",
                setting="headers",
            )
        if any(ch in value for ch in "\r\n\x00"):
            raise ConfigurationError(f"headers: {name} must be one line", setting="headers")
    return tuple(table.items())


def _paths_relative_to(folder: Path, values: dict[str, object]) -> dict[str, object]:
    """Relative paths in sender.toml name places next to it, wherever sender runs."""
    result = dict(values)
    for key in _PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and value:
            result[key] = str(folder / value)
        elif isinstance(value, list):
            result[key] = [str(folder / v) if isinstance(v, str) and v else v for v in value]
    store = values.get("store")
    if isinstance(store, str):
        try:
            path = store_file(store)
        except ConfigurationError:
            path = None  # refused later, by _store, if nothing overrides it
        if path is not None and not path.is_absolute():
            result["store"] = sqlite_store_url(folder / path)
    return result


def _names(value: object, key: str) -> tuple[str, ...]:
    """A list of names, or one comma-separated string (as an environment variable gives)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{key} must be a list of names", setting=key)
    return tuple(v.strip().lower() for v in value if v.strip())


def _flag(values: Mapping[str, object], key: str) -> bool | None:
    value = values.get(key)
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be true or false", setting=key)
    return value


_STREAM_KEYS = ("from", "return_path", "bounce_domain", "dkim_domain", "dkim_selector", "dkim_key")


def _streams(value: object, folder: Path | None) -> tuple[tuple[Stream, StreamSettings], ...]:
    """``[streams.NAME]`` tables: each stream's own From, return path, bounce domain, DKIM."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigurationError(
            "streams must be tables like [streams.subscription]", setting="streams"
        )
    found: list[tuple[Stream, StreamSettings]] = []
    for name, table in value.items():
        setting = f"streams.{name}"
        try:
            stream = Stream(name)
        except ValueError:
            names = ", ".join(s.value for s in Stream)
            raise ConfigurationError(
                f"{setting}: no stream named {name!r} (streams: {names})", setting=setting
            ) from None
        if not isinstance(table, dict):
            raise ConfigurationError(f"{setting} must be a table", setting=setting)
        unknown = sorted(set(table) - set(_STREAM_KEYS))
        if unknown:
            raise ConfigurationError(
                f"{setting}: unknown setting(s) {', '.join(unknown)}",
                setting=f"{setting}.{unknown[0]}",
            )
        for key, item in table.items():
            if not isinstance(item, str) or any(ch in item for ch in "\r\n\x00"):
                raise ConfigurationError(
                    f"{setting}.{key} must be one line of text", setting=f"{setting}.{key}"
                )
        key_path = table.get("dkim_key")
        if key_path is not None and folder is not None and not Path(key_path).is_absolute():
            key_path = str(folder / key_path)
        found.append(
            (
                stream,
                StreamSettings(
                    from_address=parse_address(table["from"], setting=f"{setting}.from")
                    if "from" in table
                    else None,
                    return_path=table.get("return_path"),
                    bounce_domain=table.get("bounce_domain"),
                    dkim_domain=table.get("dkim_domain"),
                    dkim_selector=table.get("dkim_selector"),
                    dkim_private_key=_read_key(key_path),
                ),
            )
        )
    return tuple(found)


def _public_url(value: str | None) -> str | None:
    """``public_url``: an absolute https URL (http only for loopback), no query or fragment."""
    if value is None:
        return None
    parts = urlsplit(value)
    loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if (
        not parts.hostname
        or parts.query
        or parts.fragment
        or parts.scheme not in {"https", "http"}
        or (parts.scheme == "http" and not loopback)
    ):
        raise ConfigurationError(
            f"public_url {value!r} must be an https URL like https://mail.example.org "
            "(http only on loopback), without a query",
            setting="public_url",
        )
    return value.rstrip("/")


def _read_key(path: str | None) -> bytes | None:
    """The DKIM private key file named in sender.toml (PEM)."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"dkim_key: cannot read {path}: {exc.strerror}", setting="dkim_key"
        ) from exc


def _sending_policy(values: Mapping[str, object], *, paced: bool) -> tuple[RateLimits, RetryPolicy]:
    """Rate limits and retry timing from ``rate``, ``domain_rate`` and their tables.

    ``0`` means "no limit", for benchmarks and for relays that throttle themselves.
    The default limits protect real receivers, so they apply only when ``paced`` (an
    SMTP server is configured); the embedded capture server gets only limits one set.
    """
    default = RateLimits() if paced else RateLimits(global_per_second=None, domain_per_minute=None)
    rate = values.get("rate")
    if rate is None:
        global_rate: float | None = default.global_per_second
    else:
        try:
            global_rate = float(str(rate))
        except ValueError as exc:
            raise ConfigurationError(f"rate {rate!r} is not a number", setting="rate") from exc
        if not 0 <= global_rate < math.inf:  # NaN fails too
            raise ConfigurationError(
                f"rate must be a number of messages per second, 0 or more, not {rate!r}",
                setting="rate",
            )
        global_rate = global_rate or None
    domain = values.get("domain_rate")
    domain_rate: float | None = default.domain_per_minute
    if domain is not None:
        number = str(domain).strip().partition("/")[0].strip()
        no_limit = number.replace(".", "", 1).isdecimal() and float(number) == 0
        domain_rate = None if no_limit else parse_domain_rate(str(domain))
    overrides_table = values.get("domain_rates", {})
    groups_table = values.get("domain_groups", {})
    if not isinstance(overrides_table, dict) or not isinstance(groups_table, dict):
        raise ConfigurationError("domain_rates and domain_groups must be tables")
    overrides = {str(k).lower(): parse_domain_rate(str(v)) for k, v in overrides_table.items()}
    groups: dict[str, str] = {}
    for group, members in groups_table.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigurationError(
                f"domain_groups.{group} must be a list of domains", setting="domain_groups"
            )
        groups.update({member.lower(): str(group) for member in members})
    limits = RateLimits(
        global_per_second=global_rate,
        domain_per_minute=domain_rate,
        domain_overrides=overrides,
        domain_groups=groups,
    )
    defaults = RetryPolicy()
    first = _seconds(values, "retry_first") or defaults.first_retry
    retry = RetryPolicy(
        first_retry=first,
        max_interval=max(defaults.max_interval, first),
        max_age=_seconds(values, "retry_max_age") or defaults.max_age,
    )
    return limits, retry
