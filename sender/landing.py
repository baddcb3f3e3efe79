"""Login links that survive mail scanners: look (GET), then redeem (POST), then assert.

Corporate mail scanners (Microsoft Defender Safe Links, Mimecast, Proofpoint) open every
link in a message before the person does, and some run its JavaScript. So a link lands on
a page whose GET only *looks* (:meth:`Landing.inspect`: verify, change nothing) and shows
one "Continue" button; only that button's POST *redeems* (:meth:`Landing.redeem`: verify
again, and for a purpose in ``one_time_purposes`` record it once, atomically, in the
store's :class:`~sender.store.base.Redemptions`). The POST answers with a short-lived
*assertion* (``assertion_ttl``, a minute by default) bound to the participant, course,
purpose and ``next``, which the LMS checks once (:meth:`Landing.verify_assertion`) before
it signs the participant in. A scanner that GETs a hundred times uses nothing up and
receives no session.

``sender serve`` runs these steps at ``base_url``'s path (:mod:`sender.service.landing`);
an LMS that renders its own page calls them through :class:`sender.Sender`
(``inspect_link``, ``redeem_link``, ``verify_assertion``).

Which purpose a token has is found by trying the configured purposes
(:meth:`~sender.compose.links.LinkSigner.verify_any`): the purpose is the signing salt,
not a field anyone could edit. The store keeps a SHA-256 digest of each redeemed token,
never the token, until the token expires.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from sender.clock import Clock, SystemClock
from sender.compose.links import (
    AssertionClaims,
    AssertionSigner,
    LinkClaims,
    LinkSigner,
    token_of,
)
from sender.config import LinkSettings
from sender.errors import ConfigurationError, LinkInvalid, LinkUsed
from sender.store.base import Redemptions

__all__ = ["Landing", "Redeemed", "token_digest"]


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A redeemed link: its claims, the assertion for the LMS, and where to send it.

    ``redirect_url`` is ``lms_login_url`` with ``assertion=`` added (None when no
    ``lms_login_url`` is configured); ``next`` travels inside the assertion, signed.
    """

    claims: LinkClaims
    assertion: str
    expires_at: datetime
    redirect_url: str | None

    def __repr__(self) -> str:  # never show the assertion in a log or traceback
        return f"Redeemed(claims={self.claims!r}, expires_at={self.expires_at!r})"


def token_digest(kind: str, token: str, /) -> str:
    """What the store keeps of a one-time token: SHA-256 over its kind and text, in hex."""
    return hashlib.sha256(f"sender.{kind}\x00{token}".encode()).hexdigest()


class Landing:
    """The three steps over one set of link settings and (for one-time use) a store."""

    def __init__(
        self,
        settings: LinkSettings,
        /,
        *,
        links: LinkSigner | None = None,
        store: Redemptions | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._links = links or LinkSigner(settings, clock=self._clock)
        self._assertions = AssertionSigner(
            settings.secret_keys, ttl=settings.assertion_ttl, clock=self._clock
        )
        self._store = store

    def one_time(self, purpose: str, /) -> bool:
        """Whether links of ``purpose`` are redeemed once (``one_time_purposes``)."""
        return purpose in self._settings.one_time_purposes

    def _redemptions(self, what: str) -> Redemptions:
        if self._store is None:
            raise ConfigurationError(
                f"{what} needs a store for one-time use: Sender(settings, store=...)",
                setting="store",
            )
        return self._store

    async def inspect(self, url_or_token: str, /, *, stamp: str | None = None) -> LinkClaims:
        """For GET and HEAD: the claims of a good link, changing nothing.

        Raises LinkInvalid, LinkExpired, LinkRevoked, or LinkUsed for a one-time link
        already redeemed.
        """
        claims = self._links.verify_any(url_or_token, purposes=self._settings.purposes, stamp=stamp)
        if self.one_time(claims.purpose):
            digest = token_digest("link", token_of(url_or_token))
            if await self._redemptions("a one-time link").is_redeemed(
                digest, now=self._clock.now()
            ):
                raise LinkUsed("the link was already used; ask for a new one")
        return claims

    async def redeem(self, url_or_token: str, /, *, stamp: str | None = None) -> Redeemed:
        """For POST: verify again, redeem a one-time link atomically, sign the assertion.

        A second redemption of a one-time link raises LinkUsed, however the two race.
        """
        claims = self._links.verify_any(url_or_token, purposes=self._settings.purposes, stamp=stamp)
        if self.one_time(claims.purpose):
            digest = token_digest("link", token_of(url_or_token))
            first = await self._redemptions("a one-time link").redeem_once(
                digest,
                kind="link",
                expires_at=claims.expires_at.timestamp(),
                now=self._clock.now(),
            )
            if not first:
                raise LinkUsed("the link was already used; ask for a new one")
        assertion = self._assertions.sign(claims)
        expires_at = datetime.fromtimestamp(
            int(self._clock.now()) + self._settings.assertion_ttl.total_seconds(), UTC
        )
        return Redeemed(
            claims=claims,
            assertion=assertion,
            expires_at=expires_at,
            redirect_url=self.redirect_url(assertion),
        )

    def redirect_url(self, assertion: str, /) -> str | None:
        """``lms_login_url`` with ``assertion=`` added to its query (None: not configured)."""
        target = self._settings.lms_login_url
        if target is None:
            return None
        parts = urlsplit(target)
        query = f"{parts.query}&assertion={assertion}" if parts.query else f"assertion={assertion}"
        return urlunsplit(parts._replace(query=query))

    async def verify_assertion(
        self, assertion: str, /, *, purpose: str | None = None
    ) -> AssertionClaims:
        """For the LMS: the claims of a good assertion, used up by this call.

        Raises LinkInvalid (forged, damaged, or for another ``purpose`` when one is
        given), LinkExpired (older than ``assertion_ttl``) or LinkUsed (replayed).
        """
        claims = self._assertions.verify(assertion)
        if purpose is not None and claims.purpose != purpose:
            raise LinkInvalid(f"the assertion is for {claims.purpose!r}, not {purpose!r}")
        first = await self._redemptions("verify_assertion").redeem_once(
            token_digest("assertion", assertion.strip()),
            kind="assertion",
            expires_at=claims.expires_at.timestamp(),
            now=self._clock.now(),
        )
        if not first:
            raise LinkUsed("the assertion was already used")
        return claims
