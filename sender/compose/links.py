"""Personal login links: the URL behind "Get Link" and in every invitation.

A token is an itsdangerous URL-safe, timestamped, HMAC-SHA256 signature over a
compact JSON list ``[participant, course, ttl_seconds, next?, stamp_digest?]``.
The purpose (``login`` by default) is the signing salt, so a token made for
one purpose never verifies for another. Tokens are signed, not encrypted: the
participant and course ids are readable, the stamp is only a short digest.

Revocation needs no server-side list: the LMS passes a *stamp* (say, a hash of
the participant's current address plus a link version) when issuing and when
verifying; a token issued under any other stamp is revoked.

The token does not name its purpose, so whoever verifies says which purpose it
expects; :meth:`LinkSigner.verify_any` tries each purpose it is given (the mail's
``login``, ``invitation``, ``get_link`` and the configured one-time ones) and reports
the one whose signature matched. The landing page verifies that way rather than
putting the purpose in the URL: the URL stays what every LMS already builds and
parses (``base_url?token=...``), a purpose in the query could be edited by anyone
(only the salt is trustworthy), and a token verifies under at most one salt.

The landing page's *assertions* (:class:`AssertionSigner`) are signed here too, under
their own salt: ``[participant, course, purpose, next, nonce]``, good for a minute.

The same keys sign VERP return paths (:class:`ReturnPathSigner`), so a bounce
can be tied to the exact message it answers and nobody can forge one, and one-click
unsubscribe tokens (:class:`UnsubscribeSigner`). This is the only module that imports
itsdangerous.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from itsdangerous import BadData, Signer, TimestampSigner, URLSafeTimedSerializer

from sender.clock import Clock, SystemClock
from sender.compose.sites import check_next_path
from sender.config import LinkSettings
from sender.errors import (
    ConfigurationError,
    InputError,
    LinkExpired,
    LinkInvalid,
    LinkRevoked,
    UnsafePathError,
)
from sender.readonly import ReadOnly
from sender.vocabulary import UNSUBSCRIBE_STREAMS, Stream

__all__ = [
    "AdminSession",
    "AssertionClaims",
    "AssertionSigner",
    "IssuedLink",
    "LinkClaims",
    "LinkSigner",
    "ReturnPathSigner",
    "SessionSigner",
    "UnsubscribeClaims",
    "UnsubscribeSigner",
    "message_of_key",
    "participant_key",
    "participant_of_key",
    "return_path_key",
    "token_of",
]

_PURPOSE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_MAX_TOKEN = 2048  # refuse absurd input before doing any crypto
_MAX_ID = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a verified token says."""

    participant_id: str
    course_id: str
    purpose: str
    next: str | None
    issued_at: datetime
    expires_at: datetime

    def as_dict(self) -> dict[str, str | None]:
        """The claims as JSON-ready data (``sender link verify --json``, the HTTP API)."""
        return {
            "participant_id": self.participant_id,
            "course_id": self.course_id,
            "purpose": self.purpose,
            "next": self.next,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class IssuedLink:
    """A freshly signed link. ``str(link)`` is the URL."""

    url: str
    token: str
    expires_at: datetime
    issued_at: datetime  # the token's own timestamp (whole seconds)

    def __str__(self) -> str:
        return self.url

    def as_dict(self) -> dict[str, str]:
        """``{url, token, expires_at}``: ``sender link issue --json`` and the HTTP API."""
        return {"url": self.url, "token": self.token, "expires_at": self.expires_at.isoformat()}


class _ClockedSigner(TimestampSigner):
    """itsdangerous's timestamp signer, reading time from our injected clock."""

    def __init__(self, secret_key: Any, salt: Any = None, *, clock: Clock, **kwargs: Any) -> None:
        super().__init__(secret_key, salt=salt, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock.now())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class _TokenMinter:
    """Makes the tokens ``URLSafeTimedSerializer(..., signer=_ClockedSigner).dumps`` makes,
    byte for byte, with :mod:`hmac` directly: compact JSON, zlib when it is shorter (a
    leading dot), the timestamp's big-endian bytes, HMAC-SHA256 under ``key``, the key
    itsdangerous's signer derives from the newest secret. On the bulk path itsdangerous's
    layers cost more than the HMAC; verifying stays with itsdangerous.
    """

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def dumps(self, payload: list[str | int], *, timestamp: int) -> str:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        compressed = zlib.compress(data)
        body = b"." + _b64(compressed) if len(compressed) < len(data) - 1 else _b64(data)
        value = body + b"." + _b64(timestamp.to_bytes(8, "big").lstrip(b"\x00"))
        mac = self._mac.copy()
        mac.update(value)
        return (value + b"." + _b64(mac.digest())).decode("ascii")


def _timed_serializer(keys: list[str], salt: str, clock: Clock, /) -> URLSafeTimedSerializer:
    """itsdangerous's timed URL-safe serializer as every sender token uses it: HMAC-SHA256,
    the newest key signing, time from ``clock``."""
    return URLSafeTimedSerializer(
        keys,
        salt=salt,
        signer=_ClockedSigner,
        signer_kwargs={"clock": clock, "digest_method": hashlib.sha256},
    )


def _load_strings(
    serializer: URLSafeTimedSerializer, text: str, /, *, what: str, length: int
) -> tuple[list[str], datetime]:
    """The ``length`` strings a good ``what`` (assertion, session) carries, and when it
    was signed; LinkInvalid for anything else. Expiry is the caller's to judge."""
    if not text or len(text) > _MAX_TOKEN:
        raise LinkInvalid(f"the {what} is empty or too long")
    _check_canonical(text)
    try:
        payload, issued_at = serializer.loads(text, max_age=None, return_timestamp=True)
    except BadData as exc:
        raise LinkInvalid(f"the {what} is not valid (forged or damaged)") from exc
    if (
        not isinstance(payload, list)
        or len(payload) != length
        or not all(isinstance(item, str) for item in payload)
    ):
        raise LinkInvalid(f"the {what}'s contents are not in sender's format")
    return payload, issued_at


def _stamp_digest(participant_id: str, stamp: str) -> str:
    """A 48-bit digest of the stamp, bound to the participant; enough to tell stamps apart."""
    digest = hashlib.blake2s(
        f"{participant_id}\x00{stamp}".encode(), digest_size=6, person=b"sndstamp"
    ).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def _check_id(value: str, field: str) -> str:
    if not value or len(value) > _MAX_ID:
        raise InputError(f"must be 1 to {_MAX_ID} characters", field=field)
    if _CONTROL.search(value):
        raise InputError("must not contain control characters", field=field)
    return value


class LinkSigner:
    """Issues and verifies personal login links.

    Keys come oldest first (itsdangerous's order): the newest signs, all
    verify, and removing a key kills its tokens. Signature comparison is
    constant-time (itsdangerous uses :func:`hmac.compare_digest`), and so is
    the stamp comparison here.
    """

    def __init__(self, settings: LinkSettings, /, *, clock: Clock | None = None) -> None:
        parts = urlsplit(settings.base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigurationError(
                f"base_url {settings.base_url!r} must be an absolute http(s) URL",
                setting="base_url",
            )
        if parts.fragment:
            raise ConfigurationError("base_url must not have a #fragment", setting="base_url")
        self._settings = settings
        self._base = parts
        self._clock = clock or SystemClock()
        self._serializers: dict[str, URLSafeTimedSerializer] = {}
        self._minters: dict[str, _TokenMinter] = {}
        # Tokens are URL-safe base64 and dots, so they need no quoting after "token=".
        query = f"{parts.query}&token=" if parts.query else "token="
        self._url_prefix = urlunsplit(parts._replace(query=query))

    base_url = ReadOnly[str]("_settings.base_url")
    max_age = ReadOnly[timedelta]("_settings.max_age")

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        serializer = self._serializers.get(purpose)
        if serializer is None:
            if not _PURPOSE.match(purpose):
                raise InputError(
                    "purpose must be 1-32 lowercase letters, digits, '_', '.' or '-'",
                    field="purpose",
                )
            serializer = _timed_serializer(
                list(self._settings.secret_keys), f"sender.link.{purpose}", self._clock
            )
            self._serializers[purpose] = serializer
        return serializer

    def _minter(self, purpose: str) -> _TokenMinter:
        minter = self._minters.get(purpose)
        if minter is None:
            signer = self._serializer(purpose).make_signer()  # the newest key signs
            minter = _TokenMinter(signer.derive_key())
            self._minters[purpose] = minter
        return minter

    def issue(
        self,
        participant_id: str,
        course_id: str,
        /,
        *,
        purpose: str = "login",
        next: str | None = None,
        ttl: timedelta | None = None,
        stamp: str | None = None,
    ) -> IssuedLink:
        """Sign a link for one participant in one course."""
        _check_id(participant_id, "participant_id")
        _check_id(course_id, "course_id")
        if next is not None:
            check_next_path(next)
        lifetime = self._settings.max_age if ttl is None else ttl
        seconds = int(lifetime.total_seconds())
        if seconds < 1:
            raise InputError("the link lifetime must be at least one second", field="ttl")
        payload: list[str | int] = [participant_id, course_id, seconds]
        if next is not None or stamp is not None:
            payload.append(next or "")
        if stamp is not None:
            payload.append(_stamp_digest(participant_id, stamp))
        issued = int(self._clock.now())
        token = self._minter(purpose).dumps(payload, timestamp=issued)
        return IssuedLink(
            url=self.url_for(token),
            token=token,
            expires_at=datetime.fromtimestamp(issued + seconds, UTC),
            issued_at=datetime.fromtimestamp(issued, UTC),
        )

    def url_for(self, token: str, /) -> str:
        """The base URL with ``token=`` added to whatever query it already has."""
        return f"{self._url_prefix}{token}"

    def verify(
        self,
        url_or_token: str,
        /,
        *,
        purpose: str = "login",
        stamp: str | None = None,
        max_age: timedelta | None = None,
    ) -> LinkClaims:
        """Return the claims of a good token; raise LinkInvalid, LinkRevoked or LinkExpired.

        ``max_age`` can only shorten a token's life, never lengthen it.
        """
        token = _extract_token(url_or_token)
        _check_canonical(token)
        loaded = self._load(token, purpose)
        if loaded is None:
            raise LinkInvalid("the link is not valid (damaged, or signed by another key)")
        return self._claims(loaded, purpose, stamp=stamp, max_age=max_age)

    def verify_any(
        self,
        url_or_token: str,
        /,
        *,
        purposes: Sequence[str],
        stamp: str | None = None,
    ) -> LinkClaims:
        """Like :meth:`verify`, for a token of any of ``purposes``; ``claims.purpose`` says
        which. A token whose signature matches no purpose is :class:`LinkInvalid`."""
        token = _extract_token(url_or_token)
        _check_canonical(token)
        for purpose in purposes:
            loaded = self._load(token, purpose)
            if loaded is not None:
                return self._claims(loaded, purpose, stamp=stamp, max_age=None)
        raise LinkInvalid("the link is not valid (damaged, or signed by another key)")

    def _load(self, token: str, purpose: str) -> tuple[object, datetime] | None:
        """The payload and issue time of a token signed for ``purpose``; None if not."""
        try:
            payload, issued_at = self._serializer(purpose).loads(
                token, max_age=None, return_timestamp=True
            )
        except BadData:
            return None
        return payload, issued_at

    def _claims(
        self,
        loaded: tuple[object, datetime],
        purpose: str,
        /,
        *,
        stamp: str | None,
        max_age: timedelta | None,
    ) -> LinkClaims:
        payload, issued_at = loaded
        participant_id, course_id, seconds, next_path, digest = _unpack(payload)
        if digest is not None or stamp is not None:
            expected = _stamp_digest(participant_id, stamp) if stamp is not None else ""
            if not hmac.compare_digest((digest or "").encode(), expected.encode()):
                raise LinkRevoked("the link was revoked (the address or link version changed)")
        lifetime = timedelta(seconds=seconds)
        if max_age is not None:
            lifetime = min(lifetime, max_age)
        expires_at = issued_at + lifetime
        if self._clock.now() > expires_at.timestamp():
            raise LinkExpired(
                f"the link expired at {expires_at:%Y-%m-%d %H:%M:%S} UTC", expired_at=expires_at
            )
        return LinkClaims(
            participant_id=participant_id,
            course_id=course_id,
            purpose=purpose,
            next=next_path,
            issued_at=issued_at,
            expires_at=expires_at,
        )


@dataclass(frozen=True, slots=True)
class AssertionClaims(LinkClaims):
    """What a verified landing-page assertion says: the redeemed link's claims (who
    signed in, where to), good until ``expires_at``, a minute after the POST.

    Each assertion carries a nonce of its own; the one-use check keeps a digest of it.
    """


class AssertionSigner:
    """Short-lived signed assertions: what the landing page hands the LMS after a POST.

    ``[participant, course, purpose, next, nonce]`` under the salt ``sender.assertion``,
    with the link keys (newest signs). Good for ``ttl``; that it is used once is the
    caller's business (:mod:`sender.landing` redeems its digest in the store).
    """

    def __init__(
        self, secret_keys: tuple[str, ...], /, *, ttl: timedelta, clock: Clock | None = None
    ) -> None:
        self._clock = clock or SystemClock()
        self.ttl = ttl
        self._serializer = _timed_serializer(list(secret_keys), "sender.assertion", self._clock)

    def sign(self, claims: LinkClaims, /) -> str:
        """An assertion for the participant, course, purpose and ``next`` of ``claims``."""
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(12)).decode("ascii")
        payload = [
            claims.participant_id,
            claims.course_id,
            claims.purpose,
            claims.next or "",
            nonce,
        ]
        token: str = self._serializer.dumps(payload)
        return token

    def verify(self, assertion: str, /) -> AssertionClaims:
        """The claims of a good, unexpired assertion; LinkInvalid or LinkExpired otherwise."""
        payload, issued_at = _load_strings(
            self._serializer, assertion.strip(), what="assertion", length=5
        )
        participant_id, course_id, purpose, next_path, _nonce = payload
        expires_at = issued_at + self.ttl
        if self._clock.now() > expires_at.timestamp():
            raise LinkExpired(
                f"the assertion expired at {expires_at:%Y-%m-%d %H:%M:%S} UTC",
                expired_at=expires_at,
            )
        if next_path:
            try:
                check_next_path(next_path)
            except UnsafePathError as exc:
                raise LinkInvalid(f"the assertion's next path is unsafe: {exc}") from exc
        return AssertionClaims(
            participant_id=participant_id,
            course_id=course_id,
            purpose=purpose,
            next=next_path or None,
            issued_at=issued_at,
            expires_at=expires_at,
        )


def token_of(url_or_token: str, /) -> str:
    """The token in a link (or the token itself), as :meth:`LinkSigner.verify` reads it."""
    return _extract_token(url_or_token)


def _extract_token(url_or_token: str) -> str:
    text = url_or_token.strip()
    if len(text) > _MAX_TOKEN * 2:
        raise LinkInvalid("the link is too long to be one of ours")
    if "?" in text or "://" in text or "token=" in text:
        try:
            query = urlsplit(text).query or text.partition("?")[2] or text
            values = parse_qs(query).get("token")
        except ValueError as exc:
            raise LinkInvalid("the link is not a valid URL") from exc
        if not values:
            raise LinkInvalid("the link carries no token")
        text = values[-1]
    if not text or len(text) > _MAX_TOKEN:
        raise LinkInvalid("the token is empty or too long")
    return text


def _check_canonical(token: str) -> None:
    """Refuse tokens whose signature is not in canonical base64.

    Base64 decoders ignore stray characters and the spare bits of the last
    character, so without this check a few edited tokens would still verify.
    The payload and timestamp need no such check: the MAC covers their text.
    """
    signature = token.rpartition(".")[2]
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError as exc:
        raise LinkInvalid("the link is not valid (damaged signature)") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != signature:
        raise LinkInvalid("the link is not valid (damaged signature)")


def _unpack(payload: object) -> tuple[str, str, int, str | None, str | None]:
    """Check the shape of a verified payload; a bad shape means a foreign or broken token."""
    if not isinstance(payload, list) or not 3 <= len(payload) <= 5:
        raise LinkInvalid("the link's contents are not in sender's format")
    participant_id, course_id, seconds, *rest = payload
    if (
        not isinstance(participant_id, str)
        or not isinstance(course_id, str)
        or not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or seconds < 1
        or not all(isinstance(item, str) for item in rest)
    ):
        raise LinkInvalid("the link's contents are not in sender's format")
    next_path = rest[0] if rest and rest[0] else None
    digest = rest[1] if len(rest) > 1 else None
    if next_path is not None:
        try:
            check_next_path(next_path)
        except UnsafePathError as exc:
            raise LinkInvalid(f"the link's next path is unsafe: {exc}") from exc
    return participant_id, course_id, seconds, next_path, digest


_RETURN_PATH = re.compile(r"^([a-z0-9]+)\+([a-z0-9]{1,40})-([a-z2-7]{16})@(.+)$")
_KEY = re.compile(r"^[a-z0-9]{1,40}$")


class ReturnPathSigner:
    """Signed VERP return paths: ``bounces+<key>-<signature>@bounce.example.com``.

    ``aliases`` are further bounce domains (a stream's own) whose return paths it
    verifies and owns; it signs for ``domain``.

    ``key`` names what was sent (the outbox message, say) in lower-case letters and
    digits; the signature is 80 bits of HMAC-SHA256 in base32, so the local part
    survives MTAs that fold case and stays well under the 64 octets RFC 5321 allows.
    Keys rotate like link keys: the newest signs, every one verifies.
    """

    def __init__(
        self,
        secret_keys: tuple[str, ...],
        /,
        *,
        domain: str,
        prefix: str = "bounces",
        aliases: tuple[str, ...] = (),
    ) -> None:
        if not secret_keys:
            raise ConfigurationError("return paths need a secret key", setting="secret_keys")
        domain = domain.strip().lower().rstrip(".")
        if not domain or "@" in domain or _CONTROL.search(domain) or "." not in domain:
            raise ConfigurationError(
                f"bounce domain {domain!r} is not a domain name", setting="bounce_domain"
            )
        if not _KEY.match(prefix):
            raise ConfigurationError(
                "the return-path prefix must be lower-case letters and digits",
                setting="bounce_prefix",
            )
        self._signers = [
            Signer(key, salt="sender.return-path", digest_method=hashlib.sha256)
            for key in reversed(secret_keys)  # newest first: it signs
        ]
        self.domain = domain
        self.prefix = prefix
        # Other bounce domains whose return paths this one verifies (a stream's own).
        self._domains = frozenset({domain, *(a.strip().lower().rstrip(".") for a in aliases)})

    def _signature(self, signer: Signer, key: str) -> str:
        raw = base64.urlsafe_b64decode(signer.get_signature(key.encode()) + b"==")
        return base64.b32encode(raw).decode().lower()[:16]

    def address(self, key: str, /) -> str:
        """The return path for ``key``."""
        if not _KEY.match(key):
            raise InputError(f"return-path key {key!r} must be 1-40 of a-z, 0-9", field="key")
        return f"{self.prefix}+{key}-{self._signature(self._signers[0], key)}@{self.domain}"

    def verify(self, address: str, /) -> str | None:
        """The key a return path was signed for, or None if it is not one of ours or forged."""
        match = _RETURN_PATH.match(address.strip().lower())
        if match is None:
            return None
        prefix, key, signature, domain = match.groups()
        if prefix != self.prefix or domain not in self._domains:
            return None
        for signer in self._signers:
            if hmac.compare_digest(self._signature(signer, key), signature):
                return key
        return None

    def owns(self, address: str, /) -> bool:
        """Whether ``address`` is in this signer's bounce domain (forged or not)."""
        return address.strip().lower().rpartition("@")[2] in self._domains


# --- return-path keys -------------------------------------------------------------------
# What a signed return path's key names, written and read here only. An outbox message
# (a run's) is ``m`` and its id in base 36; a single send is ``p`` and its participant id in
# lower-case base32, when that fits the 40 characters a key may have.

_MAX_KEY = 40


def return_path_key(message_id: int, /) -> str:
    """The signed return path's key for an outbox message: ``m`` and its id in base 36."""
    if not 0 <= message_id < 36**39:  # SQLite ids are 64-bit: 13 digits at most
        raise ValueError(f"message id {message_id} out of range")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    number = message_id
    for _ in range(39):
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            break
    return "m" + out


def message_of_key(key: str, /) -> int | None:
    """The outbox message id a return-path key names, or None for another kind of key."""
    if not key.startswith("m") or len(key) < 2:
        return None
    try:
        return int(key[1:], 36)
    except ValueError:
        return None


def participant_key(participant_id: str, /) -> str | None:
    """The key for a single send to ``participant_id``: ``p`` + base32; None if too long."""
    encoded = base64.b32encode(participant_id.encode()).decode()
    key = "p" + encoded.rstrip("=").lower()
    return key if len(key) <= _MAX_KEY else None


def participant_of_key(key: str, /) -> str | None:
    """The participant id a single send's key (:func:`participant_key`) names, or None."""
    if not key.startswith("p"):
        return None
    encoded = key[1:].upper()
    try:
        return base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


# --- admin sessions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A verified admin-pages session: which API key logged in, and the session's nonce."""

    key_name: str
    key_check: str  # a keyed digest of the API key (never the key): the key must still exist
    nonce: str  # random per login; the CSRF token is derived from it
    issued_at: datetime


class SessionSigner:
    """Signs the admin pages' session cookie and derives its CSRF token.

    Stateless: the cookie is ``[key name, key digest, nonce]`` signed with the link keys
    under a salt of its own (so no link verifies as a session or the other way round),
    and it expires after ``max_age``. The API key itself never enters the cookie, only
    an HMAC of it, so a logged-in browser holds nothing that works as an API key. The CSRF
    token is an HMAC of the session's nonce: tied to the session, checked in constant time.
    """

    def __init__(
        self, secret_keys: tuple[str, ...], /, *, max_age: timedelta, clock: Clock | None = None
    ) -> None:
        if not secret_keys:
            raise ConfigurationError("sessions need a secret key", setting="secret_keys")
        self._keys = secret_keys
        self._clock = clock or SystemClock()
        self.max_age = max_age
        self._serializer = _timed_serializer(list(secret_keys), "sender.admin.session", self._clock)

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(
            self._keys[-1].encode(), f"{purpose}\x00{value}".encode(), hashlib.sha256
        ).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode("ascii")

    def key_check(self, api_key: str, /) -> str:
        """The keyed digest a session keeps of the API key that opened it."""
        return self._mac("sender.admin.key", api_key)

    def issue(self, *, key_name: str, api_key: str, nonce: str) -> str:
        """The cookie value for a login with ``api_key`` (named ``key_name``)."""
        return self._serializer.dumps([key_name, self.key_check(api_key), nonce])

    def verify(self, value: str, /) -> AdminSession:
        """The session a cookie carries; raises LinkInvalid, or LinkExpired after max_age."""
        payload, issued_at = _load_strings(self._serializer, value, what="session", length=3)
        if not all(payload):
            raise LinkInvalid("the session's contents are not in sender's format")
        expires_at = issued_at + self.max_age
        if self._clock.now() > expires_at.timestamp():
            raise LinkExpired("the session expired; log in again", expired_at=expires_at)
        return AdminSession(payload[0], payload[1], payload[2], issued_at)

    def csrf_token(self, session: AdminSession, /) -> str:
        """The token every POST form of this session carries."""
        return self._mac("sender.admin.csrf", session.nonce)

    def check_csrf(self, session: AdminSession, token: str | None, /) -> bool:
        """Whether ``token`` is this session's CSRF token (constant time)."""
        expected = self.csrf_token(session).encode()
        return hmac.compare_digest(expected, (token or "").encode("utf-8", "surrogateescape"))


# --- one-click unsubscribe tokens -------------------------------------------------------

_KEY_TOKEN = re.compile(r"^([a-z0-9]{1,40})-([a-z2-7]{16})$")
_ADDRESS_TOKEN = "a."  # noqa: S105 - the prefix of an address token, not a secret


@dataclass(frozen=True, slots=True)
class UnsubscribeClaims:
    """What a verified unsubscribe token names: the stream, and the message or the address."""

    stream: Stream
    key: str | None = None  # a return-path key (``m<outbox id>``) for outbox messages
    address: str | None = None  # for a single send, which has no outbox message
    participant_id: str | None = None


class UnsubscribeSigner:
    """Signed one-click unsubscribe tokens, bound to a stream and to one message or address.

    An outbox message's token is its return-path key and 80 bits of HMAC-SHA256 in
    lower-case base32 (``m1z4-abcdefghijklmnop``): short enough for the local part of the
    ``mailto:unsubscribe+TOKEN@bounce-domain`` address, and it survives MTAs that fold
    case. A single send has no outbox message, so its token carries the address and the
    participant id (``a.<payload>.<signature>``; the URL form only). The stream is the
    signature's salt, so a token made for one stream never verifies for another. Keys
    rotate like link keys: the newest signs, every one verifies. One HMAC per token.
    """

    def __init__(self, secret_keys: tuple[str, ...], /) -> None:
        if not secret_keys:
            raise ConfigurationError("unsubscribe tokens need a secret key", setting="secret_keys")
        self._signers = {
            stream: [
                Signer(key, salt=f"sender.unsubscribe.{stream.value}", digest_method=hashlib.sha256)
                for key in reversed(secret_keys)  # newest first: it signs
            ]
            for stream in UNSUBSCRIBE_STREAMS
        }
        # itsdangerous's derived keys, once: a short token is then one HMAC, nothing more.
        self._derived = {
            id(signer): signer.derive_key()
            for signers in self._signers.values()
            for signer in signers
        }

    def _signers_of(self, stream: Stream) -> list[Signer]:
        signers = self._signers.get(stream)
        if signers is None:
            raise InputError(f"{stream.value} mail has no unsubscribe", field="stream")
        return signers

    def _short(self, signer: Signer, key: str) -> str:
        """80 bits of the signer's HMAC-SHA256 of ``key``, in lower-case base32."""
        raw = hmac.new(self._derived[id(signer)], key.encode(), hashlib.sha256).digest()
        return base64.b32encode(raw[:10]).decode().lower()

    def for_key(self, stream: Stream, key: str, /) -> str:
        """The token for the outbox message a return-path ``key`` names."""
        if not _KEY.match(key):
            raise InputError(f"unsubscribe key {key!r} must be 1-40 of a-z, 0-9", field="key")
        return f"{key}-{self._short(self._signers_of(stream)[0], key)}"

    def for_address(self, stream: Stream, address: str, participant_id: str, /) -> str:
        """The token for a single send to ``address`` (no outbox message to name)."""
        payload = json.dumps([address, participant_id], separators=(",", ":"))
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return _ADDRESS_TOKEN + self._signers_of(stream)[0].sign(encoded).decode()

    def verify(self, token: str, /) -> UnsubscribeClaims:
        """The claims of a good token; :class:`LinkInvalid` for anything else."""
        token = token.strip()
        if not token or len(token) > _MAX_TOKEN:
            raise LinkInvalid("the unsubscribe link is empty or too long")
        match = _KEY_TOKEN.match(token.lower())
        for stream, signers in self._signers.items():
            if match is not None:
                key, signature = match.groups()
                if any(hmac.compare_digest(self._short(s, key), signature) for s in signers):
                    return UnsubscribeClaims(stream, key=key)
                continue
            if token.startswith(_ADDRESS_TOKEN):
                signed = token[len(_ADDRESS_TOKEN) :]
                for signer in signers:
                    try:
                        encoded = signer.unsign(signed).decode()
                    except BadData:
                        continue
                    return _address_claims(stream, encoded)
        raise LinkInvalid("the unsubscribe link is not valid (damaged, or signed by another key)")


def _address_claims(stream: Stream, encoded: str) -> UnsubscribeClaims:
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        address, participant_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise LinkInvalid("the unsubscribe link's contents are not in sender's format") from exc
    if not isinstance(address, str) or not isinstance(participant_id, str):
        raise LinkInvalid("the unsubscribe link's contents are not in sender's format")
    return UnsubscribeClaims(stream, address=address, participant_id=participant_id)
