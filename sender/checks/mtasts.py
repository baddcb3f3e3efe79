"""MTA-STS policies (RFC 8461): fetched over HTTPS and read; the checks package's httpx user.

A domain that publishes ``_mta-sts.DOMAIN`` (``v=STSv1; id=...``) serves its policy at
``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``: ``version: STSv1``, ``mode:``
``enforce``/``testing``/``none``, one ``mx:`` line per pattern and ``max_age:`` in seconds.
Sending servers that honour it refuse to deliver to an MX the policy does not name (in
``enforce`` mode), so a policy that disagrees with the MX records loses mail.

:class:`HttpsPolicyFetcher` fetches a policy the way a sending server must (§3.3): HTTPS
with a certificate valid for ``mta-sts.DOMAIN``, redirects not followed, status 200 only,
size- and time-limited. Every failure comes back as :class:`FetchedPolicy` with ``error``
set, never as an exception. ``connect_to`` exists for tests only: it sends the connection
to a loopback address while SNI, the ``Host`` header and the certificate check still use
the real host name; nothing in sender.toml or the environment sets it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from sender.addresses import bare_domain

__all__ = [
    "MAX_AGE_LIMIT",
    "POLICY_LIMIT",
    "FetchedPolicy",
    "HttpsPolicyFetcher",
    "PolicyFetcher",
    "StsPolicy",
    "mx_matches",
    "parse_policy",
    "policy_url",
]

POLICY_LIMIT = 64 * 1024  # bytes of a policy (RFC 8461 §3.3 suggests 64 KiB)
MAX_AGE_LIMIT = 31_557_600  # seconds, about a year (RFC 8461 §3.2)
TIMEOUT = 10.0  # seconds for one policy fetch (RFC 8461 §3.3 suggests 60 at most)
_MODES = frozenset({"enforce", "testing", "none"})
_MAX_LINES = 1000


def policy_url(domain: str, /) -> str:
    """Where the policy of ``domain`` lives."""
    return f"https://mta-sts.{bare_domain(domain)}/.well-known/mta-sts.txt"


@dataclass(frozen=True, slots=True)
class FetchedPolicy:
    """What fetching a policy gave: its text, or why there is none (``error``)."""

    url: str
    text: str | None = None
    error: str | None = None


class PolicyFetcher(Protocol):
    """Fetches the MTA-STS policy of a domain; never raises for network trouble."""

    async def __call__(self, domain: str, /) -> FetchedPolicy: ...


class HttpsPolicyFetcher:
    """The real fetch: HTTPS to ``mta-sts.DOMAIN``, verified, no redirects, bounded."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        connect_to: Mapping[str, tuple[str, int]] | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self._verify = verify
        self._connect_to = dict(connect_to or {})
        self._timeout = timeout

    async def __call__(self, domain: str, /) -> FetchedPolicy:
        url = policy_url(domain)
        host = f"mta-sts.{bare_domain(domain)}"
        target = url
        headers: dict[str, str] = {}
        extensions: dict[str, str] = {}
        if host in self._connect_to:  # tests: a loopback server stands in for the host
            address, port = self._connect_to[host]
            target = f"https://{address}:{port}/.well-known/mta-sts.txt"
            headers["Host"] = host
            extensions["sni_hostname"] = host
        try:
            async with (
                httpx.AsyncClient(
                    verify=self._verify,
                    follow_redirects=False,
                    timeout=self._timeout,
                    trust_env=False,
                ) as client,
                client.stream("GET", target, headers=headers, extensions=extensions) as response,
            ):
                if response.status_code != 200:
                    why = f"answered HTTP {response.status_code}"
                    if response.is_redirect:
                        why += " (a redirect; RFC 8461 3.3 forbids following it)"
                    return FetchedPolicy(url, error=why)
                data = b""
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > POLICY_LIMIT:
                        return FetchedPolicy(url, error=f"is larger than {POLICY_LIMIT} bytes")
        except httpx.ConnectError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE" in str(exc):
                return FetchedPolicy(url, error="has no valid HTTPS certificate for " + host)
            return FetchedPolicy(url, error="could not be reached")
        except httpx.TimeoutException:
            return FetchedPolicy(url, error="did not answer in time")
        except httpx.HTTPError:
            return FetchedPolicy(url, error="could not be fetched")
        try:
            return FetchedPolicy(url, text=data.decode("utf-8"))
        except UnicodeDecodeError:
            return FetchedPolicy(url, error="is not UTF-8 text")


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A policy as read; ``problems`` lists what makes it invalid (empty when valid)."""

    version: str | None = None
    mode: str | None = None
    mx: tuple[str, ...] = ()
    max_age: int | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not self.problems


def parse_policy(text: str, /) -> StsPolicy:
    """Read ``key: value`` lines (CRLF or LF); unknown keys are ignored, as §3.2 says."""
    values: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines()[:_MAX_LINES]:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            values.setdefault(key, value)
    problems: list[str] = []
    version = values.get("version")
    if version != "STSv1":
        problems.append(f"version is {version!r}, not STSv1" if version else "version is missing")
    mode = values.get("mode", "").lower() or None
    if mode not in _MODES:
        problems.append(
            f"mode {mode!r} is not enforce, testing or none" if mode else "mode is missing"
        )
    raw_age = values.get("max_age")
    max_age: int | None = None
    if raw_age is None:
        problems.append("max_age is missing")
    elif not raw_age.isdigit() or len(raw_age) > 10 or int(raw_age) > MAX_AGE_LIMIT:
        problems.append(f"max_age {raw_age!r} is not a number of seconds up to {MAX_AGE_LIMIT}")
    else:
        max_age = int(raw_age)
    if mode in ("enforce", "testing") and not mx:
        problems.append("there is no mx: line")
    return StsPolicy(version, mode, tuple(mx), max_age, tuple(problems))


def mx_matches(host: str, pattern: str, /) -> bool:
    """Whether MX ``host`` matches policy ``pattern`` (``*.`` matches one left-most label)."""
    host = bare_domain(host)
    pattern = bare_domain(pattern)
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern
