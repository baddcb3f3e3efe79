"""DKIM signatures (RFC 6376): relaxed/relaxed, rsa-sha256; the only dkimpy user.

A :class:`DkimSigner` parses and checks its key once, at construction, and then signs
each message by prepending a ``DKIM-Signature`` header. dkimpy supplies what a verifier
must agree with: header parsing, relaxed canonicalization (with shortcuts here that give
its exact bytes faster) and the order in which header instances are hashed. The RSA
operation runs in OpenSSL (through ``cryptography``, a required dependency), or in dkimpy's
pure-Python RSA when asked (``backend="python"``, the benchmark's baseline). ``dkim.sign``
is not used: it re-parses the PEM on every call (~0.1 ms) and always signs in Python,
6.9 ms a message with a 2048-bit key against 0.4 ms here (``bench/dkim_sign.py``).

Every signed header is *oversigned*: named in ``h=`` once more than it occurs, so
nobody can add a second ``From`` or ``Subject`` (or a ``Reply-To`` the message did not
have) without breaking the signature. This is what large receivers recommend, and it
costs nothing: sender writes each of these headers at most once.

dkimpy's exceptions never escape: a bad key or setting raises
:class:`~sender.errors.ConfigurationError` (``setting="dkim"``) at construction, and a
message that cannot be signed raises :class:`~sender.errors.InputError`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import dkim  # type: ignore[import-untyped]  # dkimpy (absolute import: never this module)
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from sender.addresses import bare_domain, is_hostname
from sender.clock import Clock, SystemClock
from sender.compose.sites import site_of
from sender.errors import ConfigurationError, InputError

__all__ = [
    "SIGNED_HEADERS",
    "DkimKey",
    "DkimSigner",
    "TxtLookup",
    "aligned",
    "dns_public_key",
    "dns_record",
    "generate_key",
    "public_key_of",
    "verified_domains",
]

Backend = Literal["auto", "openssl", "python"]

SIGNED_HEADERS: tuple[str, ...] = (  # what DkimSigner signs unless told otherwise
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",  # RFC 8058 4: one-click unsubscribe only counts when signed
    "List-Unsubscribe-Post",
)
# RFC 6376 5.4: these change in transit (or must not be signed at all).
_NEVER = frozenset(
    {"dkim-signature", "return-path", "received", "comments", "keywords", "bcc", "resent-bcc"}
)
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':'
_SELECTOR_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MIN_BITS = 1024  # RFC 8301 3.2: signers MUST use at least 1024 bits
_MAX_BITS = 4096  # RFC 8301 3.2: verifiers MUST handle up to 4096; beyond, some will not
_WIDTH = 78
_HEADER_END = re.compile(rb"\A\r?\n|\r?\n\r?\n")  # where rfc822_parse ends the header section
_NEWLINE = re.compile(rb"\r?\n")
_WSP_RUN = re.compile(rb"[\t ]+")
# AlgorithmIdentifier for rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101010500")


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A signing identity: ``d=`` domain, ``s=`` selector and the RSA private key (PEM)."""

    domain: str
    selector: str
    private_key: bytes = field(repr=False)


class _RsaKey(Protocol):
    def sign(self, digest: bytes, /) -> bytes:
        """RSASSA-PKCS1-v1_5 over a SHA-256 digest."""
        ...


class _Sha256Digest:
    """What dkimpy's RSA wants of a hash object: its name and its digest."""

    name = "sha256"

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def digest(self) -> bytes:
        return self._digest


class _PythonKey:
    """dkimpy's pure-Python RSA, with the key parsed once."""

    def __init__(self, parsed: dict[str, int]) -> None:
        self._parsed = parsed

    def sign(self, digest: bytes, /) -> bytes:
        return bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(_Sha256Digest(digest), self._parsed))


class _OpenSslKey:
    """OpenSSL's RSA through ``cryptography``, with the key loaded once."""

    def __init__(self, pem: bytes) -> None:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigurationError(f"DKIM key does not load: {exc}", setting="dkim") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigurationError("DKIM key is not an RSA key", setting="dkim")
        self._key = key
        self._padding = padding.PKCS1v15()
        self._algorithm = utils.Prehashed(hashes.SHA256())

    def sign(self, digest: bytes, /) -> bytes:
        return self._key.sign(digest, self._padding, self._algorithm)


class DkimSigner:
    """Signs messages for one key. The key is parsed and checked once, here.

    ``headers`` are the header names to sign (``From`` among them; case does not
    matter); each is oversigned, so one the message lacks (a ``Reply-To``, a
    ``List-Unsubscribe``) cannot be added later either. ``clock`` supplies the ``t=``
    timestamp. ``backend`` picks the RSA implementation: ``"auto"`` and ``"openssl"``
    are OpenSSL's, ``"python"`` is dkimpy's own (slow; the benchmark's baseline);
    ``self.backend`` names the one in use.
    Safe to share between threads and tasks: signing keeps no state.
    """

    __slots__ = ("_clock", "_domain", "_h_tag", "_include", "_key", "_prefix", "backend", "key")

    def __init__(
        self,
        key: DkimKey,
        /,
        *,
        headers: Sequence[str] = SIGNED_HEADERS,
        clock: Clock | None = None,
        backend: Backend = "auto",
    ) -> None:
        self.key = key
        self._domain = _check_domain(key.domain)
        selector = _check_selector(key.selector)
        parsed = _parse_private_key(key.private_key)
        if backend in ("auto", "openssl"):
            backend = "openssl"
            self._key: _RsaKey = _OpenSslKey(key.private_key)
        elif backend == "python":
            self._key = _PythonKey(parsed)
        else:
            raise ConfigurationError(f"unknown DKIM backend {backend!r}", setting="dkim")
        self.backend: Literal["openssl", "python"] = backend
        names = _check_headers(headers)
        # Oversign: each name once per instance plus once more (select_headers takes
        # instances bottom-up and hashes an empty string for the missing one).
        self._include = tuple(name.encode("ascii") for name in names for _ in (0, 1))
        self._h_tag = [f"{name}:" for name in names for _ in (0, 1)]
        self._h_tag[-1] = self._h_tag[-1][:-1] + ";"
        self._prefix = f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={self._domain}; s={selector};"
        if len(self._prefix) > _WIDTH - 16:  # "DKIM-Signature: " and the tags on one line
            self._prefix = self._prefix.replace(" d=", "\r\n d=", 1)
        self._clock: Clock = clock if clock is not None else SystemClock()

    def sign(self, message: bytes, /) -> bytes:
        """Return ``message`` with a ``DKIM-Signature`` header in front.

        Raises :class:`~sender.errors.InputError` (``field="message"``) when the message
        has no header section or no ``From`` header.
        """
        if not isinstance(message, bytes | bytearray):
            raise InputError("a message to sign must be bytes", field="message")
        headers, body = _split(bytes(message))
        if not any(name.lower() == b"from" for name, _ in headers):
            raise InputError("message has no From header to sign", field="message")
        relaxed = dkim.canonicalization.Relaxed
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest())
        value = self._unsigned_value(body_hash.decode("ascii"))
        hasher = hashlib.sha256()
        dkim.hash_headers(
            hasher,
            relaxed,
            relaxed.canonicalize_headers(headers),
            self._include,
            (b"DKIM-Signature", value.encode("ascii")),
            None,
        )
        signature = base64.b64encode(self._key.sign(hasher.digest()))
        # b= folded into lines of at most 78 after " b=" (3 + 75) and " " (1 + 77).
        lines = [signature[:75]]
        lines.extend(signature[i : i + 77] for i in range(75, len(signature), 77))
        return b"DKIM-Signature:" + value.encode("ascii") + b"\r\n ".join(lines) + b"\r\n" + message

    def _unsigned_value(self, body_hash: str) -> str:
        """The header value up to and including the empty ``b=``, folded (after the colon)."""
        out = [" ", self._prefix, "\r\n t=", str(int(self._clock.now())), "; h="]
        line = 3 + len(out[3]) + 4  # " t=" ... "; h="
        for index, name in enumerate(self._h_tag):
            if index and line + len(name) > _WIDTH:
                out.append("\r\n ")
                line = 1
            out.append(name)
            line += len(name)
        out.extend(("\r\n bh=", body_hash, ";\r\n b="))
        return "".join(out)


def generate_key(*, bits: int = 2048) -> bytes:
    """A new RSA private key as PKCS#1 PEM (``BEGIN RSA PRIVATE KEY``)."""
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise ConfigurationError(
            f"DKIM keys must have {_MIN_BITS} to {_MAX_BITS} bits, not {bits}", setting="dkim"
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def dns_record(
    key: DkimKey | bytes, /, *, domain: str | None = None, selector: str | None = None
) -> tuple[str, str]:
    """The TXT record publishing ``key``'s public half: ``(name, value)``.

    ``name`` is absolute (``"s1._domainkey.example.com."``); ``value`` is
    ``"v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>"`` as one string. A 2048-bit
    key makes it longer than one 255-octet TXT string: the caller splits it when it
    prints a zone line. ``domain`` and ``selector`` default to a :class:`DkimKey`'s own.
    """
    if isinstance(key, DkimKey):
        domain = key.domain if domain is None else domain
        selector = key.selector if selector is None else selector
        pem = key.private_key
    else:
        pem = key
    if domain is None or selector is None:
        raise ConfigurationError("a DKIM record needs a domain and a selector", setting="dkim")
    name = f"{_check_selector(selector)}._domainkey.{_check_domain(domain)}."
    parsed = _parse_private_key(pem)
    public = _der(0x30, _der_int(parsed["modulus"]) + _der_int(parsed["publicExponent"]))
    spki = _der(0x30, _RSA_ALGORITHM + _der(0x03, b"\x00" + public))
    return name, f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"


# -- canonicalization ------------------------------------------------------------------
# dkimpy's own functions give the same bytes (tests/test_dkim.py checks both against it)
# but run its whole-message regexes: 80 µs to split a 4 KB message into lines and rejoin
# them, 160 µs for the relaxed body. The versions below skip the work the messages sender
# builds do not need (CRLF throughout, rarely a double space or a tab): about 10 µs.


def _split(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields (parsed by dkimpy) and the body with CRLF line ends, as rfc822_parse."""
    end = _HEADER_END.search(message)
    head, body = (message[: end.end()], message[end.end() :]) if end else (message, b"")
    try:
        headers: list[tuple[bytes, bytes]] = dkim.rfc822_parse(head)[0]
    except (dkim.MessageFormatError, IndexError) as exc:  # IndexError: starts with a fold
        raise InputError(f"message cannot be signed: {exc!r}", field="message") from exc
    if body.count(b"\n") != body.count(b"\r\n"):  # bare LFs: rfc822_parse makes them CRLF
        body = _NEWLINE.sub(b"\r\n", body)
    return headers, body


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4 relaxed body canonicalization, exactly as dkimpy computes it."""
    if b"\t" in body or b"  " in body:
        body = _WSP_RUN.sub(b" ", body)
    if b" \r\n" in body:  # after compression, at most one space ends a line
        body = body.replace(b" \r\n", b"\r\n")
    canonical = dkim.canonicalization
    return bytes(canonical.correct_empty_body(canonical.strip_trailing_lines(body)))


# -- checks ----------------------------------------------------------------------------


def _check_domain(domain: str) -> str:
    """The ``d=`` domain, without a trailing dot; ASCII only (IDNs as A-labels)."""
    name = domain.rstrip(".") if isinstance(domain, str) else ""
    if not is_hostname(name):
        raise ConfigurationError(
            f"DKIM domain {domain!r} is not a domain name (give IDNs as xn-- A-labels)",
            setting="dkim",
        )
    return name


def _check_selector(selector: str) -> str:
    if (
        not isinstance(selector, str)
        or not selector
        or not selector.isascii()
        or any(_SELECTOR_LABEL.fullmatch(label) is None for label in selector.split("."))
    ):
        raise ConfigurationError(
            f"DKIM selector {selector!r} is not letters, digits, '-' and dots", setting="dkim"
        )
    return selector


def _check_headers(headers: Sequence[str]) -> list[str]:
    """Lower-case header names, each once, in order; From required, never-sign refused."""
    if isinstance(headers, str):
        raise ConfigurationError("DKIM headers must be a sequence of names", setting="dkim")
    names: list[str] = []
    for header in headers:
        name = header.strip().lower() if isinstance(header, str) else ""
        if _HEADER_NAME.fullmatch(name) is None:
            raise ConfigurationError(f"{header!r} is not a header name", setting="dkim")
        if name in _NEVER:
            raise ConfigurationError(f"DKIM must not sign {header}", setting="dkim")
        if name not in names:
            names.append(name)
    if "from" not in names:
        raise ConfigurationError("DKIM must sign From (RFC 6376 5.4)", setting="dkim")
    return names


def _parse_private_key(pem: bytes) -> dict[str, int]:
    """Parse a PEM RSA private key (PKCS#1 or PKCS#8) with dkimpy and check it is sane."""
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    if not isinstance(pem, bytes | bytearray):
        raise ConfigurationError("DKIM private key must be PEM bytes", setting="dkim")
    text = bytes(pem).replace(b"\r\n", b"\n")
    if b"ENCRYPTED" in text:
        raise ConfigurationError("DKIM private key must not be encrypted", setting="dkim")
    try:
        parsed: dict[str, int] = dkim.crypto.parse_pem_private_key(text)
    except Exception as exc:  # UnparsableKeyError, ASN1FormatError, binascii.Error, ...
        raise ConfigurationError(f"DKIM private key does not parse: {exc}", setting="dkim") from exc
    try:
        modulus = parsed["modulus"]
        consistent = parsed["prime1"] * parsed["prime2"] == modulus
    except (KeyError, TypeError):
        consistent = False
    if not consistent:
        raise ConfigurationError("DKIM private key is not a valid RSA key", setting="dkim")
    bits = modulus.bit_length()
    if not _MIN_BITS <= bits <= _MAX_BITS:
        raise ConfigurationError(
            f"DKIM key has {bits} bits; use {_MIN_BITS} to {_MAX_BITS} (2048 recommended)",
            setting="dkim",
        )
    return parsed


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _der_int(value: int) -> bytes:
    """A non-negative DER INTEGER: big-endian, with a zero octet when the top bit is set."""
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_MIN_DNS_RSA_BITS = 1024  # RFC 8301: verifiers must not accept smaller keys


def _der_sequence_ok(der: bytes) -> bool:
    """Whether ``der`` is exactly one well-formed DER SEQUENCE (tag, length, body)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return len(der) == 2 + first
    count = first & 0x7F
    if not 0 < count <= 4 or len(der) < 2 + count:
        return False
    return len(der) == 2 + count + int.from_bytes(der[2 : 2 + count], "big")


def dns_public_key(kind: str, raw: bytes, /) -> tuple[bytes | None, str]:
    """A DNS key (``k=``, decoded ``p=``) in comparable form, or None and why not.

    RSA keys come back as SubjectPublicKeyInfo DER (a bare PKCS#1 key is accepted
    too), ed25519 keys raw; :func:`public_key_of` gives a private key's half alike.
    """
    if kind == "ed25519":
        if len(raw) != 32:
            return None, f"an ed25519 key is 32 bytes, this one is {len(raw)}"
        return raw, ""
    if kind != "rsa":
        return None, f"k={kind} is not a key type receivers know (rsa, ed25519)"
    candidates = [raw]
    if _der_sequence_ok(raw):  # a bare RSAPublicKey (PKCS#1) is accepted too
        candidates.append(_der(0x30, _RSA_ALGORITHM + _der(0x03, b"\x00" + raw)))
    for der in candidates:
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, TypeError):
            continue
        if not isinstance(key, rsa.RSAPublicKey):
            return None, "it is not an RSA public key"
        if key.key_size < _MIN_DNS_RSA_BITS:
            return None, f"the RSA key has {key.key_size} bits; receivers need at least 1024"
        return _spki(key), ""
    return None, "it is not an RSA public key"


def _spki(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_of(pem: bytes, /) -> tuple[str, bytes] | None:
    """The public half of a PEM private key as (``k=``, comparable bytes), or None."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa", _spki(key.public_key())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "ed25519", raw
    return None


# -- verification ----------------------------------------------------------------------
# Arriving mail (calendar replies) is checked here, beside signing, so one module reads
# DKIM. Keys are fetched through the caller's asynchronous lookup before dkimpy runs, so
# no DNS query blocks the event loop and dnspython stays in sender.checks.resolve.

TxtLookup = Callable[[str], Awaitable[str | None]]
"""Looks up a name's TXT record (its strings joined); None when there is none or DNS failed."""

_MAX_SIGNATURES = 5  # tried per message: more is a message built to cost us lookups
_VERIFY_LOG = logging.getLogger("sender.dkim.verify")


async def verified_domains(message: bytes, /, *, lookup: TxtLookup) -> tuple[str, ...]:
    """The ``d=`` domains (lower-case) of the message's DKIM signatures that verify.

    A signature counts only when it signs ``From`` and the whole body (one with ``l=``
    lets anyone append to the body, a calendar included, and is ignored); at most five
    signatures are tried. ``lookup`` gives ``<s>._domainkey.<d>.``'s TXT record. Never
    raises: a malformed message or signature, a missing key or a failed lookup simply
    verifies nothing.
    """
    if not isinstance(message, bytes | bytearray):
        return ()
    message = bytes(message)
    try:
        headers: list[tuple[bytes, bytes]] = dkim.rfc822_parse(message)[0]
    except Exception:  # hostile input: any parse failure verifies nothing
        return ()
    values = [value for name, value in headers if name.lower() == b"dkim-signature"]
    keys: dict[bytes, bytes] = {}
    candidates: list[tuple[int, str]] = []
    for index, value in enumerate(values[:_MAX_SIGNATURES]):
        try:
            tags: dict[bytes, bytes] = dkim.util.parse_tag_value(value)
            domain = bare_domain(tags[b"d"].decode("ascii"))
            selector = tags[b"s"].decode("ascii").strip()
        except (dkim.util.InvalidTagValueList, KeyError, UnicodeDecodeError):
            continue
        signed = {name.strip().lower() for name in tags.get(b"h", b"").split(b":")}
        if b"l" in tags or b"from" not in signed or not domain or not selector:
            continue
        name = tags[b"s"] + b"._domainkey." + tags[b"d"] + b"."  # as dkimpy asks for it
        if name not in keys:
            record = await lookup(f"{selector}._domainkey.{domain}.")
            if record is None:
                continue
            keys[name] = record.encode("utf-8", "replace")
        candidates.append((index, domain))

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name)

    verified: list[str] = []
    for index, domain in candidates:
        if domain in verified:
            continue
        verifier = dkim.DKIM(message, logger=_VERIFY_LOG, minkey=_MIN_DNS_RSA_BITS)
        try:
            ok = bool(verifier.verify(idx=index, dnsfunc=dnsfunc))
        except Exception:  # DKIMException, and worse on hostile input
            ok = False
        if ok:
            verified.append(domain)
    return tuple(verified)


def aligned(signing_domain: str, from_domain: str, /) -> bool:
    """DMARC relaxed alignment (RFC 7489 3.1.1): both domains share an organizational domain.

    The organizational domain is :func:`sender.compose.sites.site_of`'s, as the doctor uses it.
    """
    signing = bare_domain(signing_domain)
    author = bare_domain(from_domain)
    if not signing or not author:
        return False
    return signing == author or site_of(signing) == site_of(author)
