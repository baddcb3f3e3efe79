"""E-mail addresses: the one canonical key, and the one check of what an envelope may carry.

Two spellings of one mailbox must meet in every comparison sender makes: the
suppression list, bounces, the bounce budget and duplicate checks. So every
address has one **key** (:func:`address_key`):

- Unicode NFC, so a composed ``å`` and ``a`` + combining ring are one letter;
- case-folded (:meth:`str.casefold`), not SQLite's ``lower()``, which folds only ASCII;
- the domain in its IDNA (UTS #46) A-label form, so ``bücher.example``,
  ``BÜCHER.example`` and ``xn--bcher-kva.example`` are one domain.

Folding the local part's case is a choice: RFC 5321 lets a server treat
``Kari@`` and ``kari@`` as two mailboxes, but no provider does, and the key is
used only to decide whom *not* to write to. The address a message is sent to
stays as written.

:func:`addr_spec` is the check compose and ingest use: the address as SMTP and
headers carry it (IDN domain as A-label), and whether it needs SMTPUTF8
(RFC 6531). It refuses what no server accepts, naming the field: no ``@``, a
local part that needs quoting, a local part over 64 octets or an address over
254 (RFC 5321 4.5.3.1), a domain that is not one.

The smaller questions every module used to answer with its own ``rpartition("@")``
live here too: where an address splits (:func:`split_address`, :func:`domain_of`),
whether a text has an address's shape (:func:`is_address`, for input that is checked
again before sending), whether it is one bare mailbox a transport may put on the wire
as it is (:func:`is_mailbox`), and how a configured domain is written
(:func:`bare_domain`, :func:`mail_domain`, :func:`is_hostname`).

The ``idna`` package lives here and nowhere else.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata

import idna

from sender.errors import AddressError

__all__ = [
    "MAX_ADDRESS",
    "MAX_LOCAL_PART",
    "addr_spec",
    "address_key",
    "ascii_domain",
    "bare_domain",
    "domain_key",
    "domain_of",
    "is_address",
    "is_hostname",
    "is_loopback_host",
    "is_mailbox",
    "mail_domain",
    "split_address",
]

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1, octets
MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3, as octets of the encoded addr-spec

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_LOCAL_ASCII = re.compile(rf"[{_ATEXT}.]+")
_LOCAL_QUOTED = re.compile(r'"(?:[ !#-\[\]-~]|\\[ -~])*"')
_LOCAL_UTF8 = re.compile(rf"(?:[{_ATEXT}.]|[^\x00-\x7f\s])+")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_DOMAIN_LITERAL = re.compile(r"\[[!-Z^-~]*\]")
# local@domain.tld with no blank and one @: the shape a list's e-mail column must have.
_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# One bare mailbox, exactly as it goes between < and >: a dot-atom or quoted local
# part, and a domain without spaces, brackets, commas or controls (or a literal).
_MAILBOX = re.compile(
    r'(?:[^\s<>()\[\],;:"\\@\x00-\x1f\x7f]+|"(?:[^"\\\r\n]|\\[^\r\n])*")'
    r"@(?:[^\s<>()\[\],;:\"\\@\x00-\x1f\x7f]+|\[[^\s\[\]\\]+\])"
)


def split_address(address: str, /) -> tuple[str, str] | None:
    """``(local part, domain)`` split at the last ``@``, or None when either is empty."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    return local, domain


def domain_of(address: str, /) -> str:
    """What follows the last ``@``, as written (the whole text when there is no ``@``)."""
    return address.rpartition("@")[2]


def is_address(text: str, /) -> bool:
    """Whether ``text`` has an address's shape: ``local@domain.tld``, one ``@``, no blanks.

    A first sieve for input (a list's e-mail column, a configured reply address);
    :func:`addr_spec` decides later whether a server can take it.
    """
    return _SHAPE.match(text) is not None


def is_mailbox(address: str, /) -> bool:
    """Whether ``address`` is one bare mailbox that MAIL FROM or RCPT TO may carry as it is.

    ``Name <a@b>``, ``a@b, c@d`` and line breaks are not: rewriting them into some
    address would make a result describe the wrong mailbox.
    """
    return _MAILBOX.fullmatch(address) is not None


def bare_domain(text: str, /) -> str:
    """A domain as configured, compared: no blanks around, no trailing dot, lower-case."""
    return text.strip().rstrip(".").lower()


def mail_domain(text: str, /) -> str | None:
    """:func:`bare_domain` of a domain mail is addressed to, or None when it plainly is not one.

    Refused: empty, an ``@`` (an address, not a domain), no dot, blanks inside.
    """
    name = bare_domain(text)
    if not name or "@" in name or "." not in name or any(c.isspace() for c in name):
        return None
    return name


def is_hostname(name: str, /) -> bool:
    """Whether ``name`` is an ASCII host name: at most 253 octets of letter-digit-hyphen labels.

    Underscores are allowed, as in ``_dmarc`` and ``s1._domainkey``; IDNs must be A-labels.
    """
    return (
        bool(name)
        and name.isascii()
        and len(name) <= 253
        and all(_LABEL.fullmatch(label) is not None for label in name.split("."))
    )


def is_loopback_host(host: str, /) -> bool:
    """Whether a server bound to ``host`` listens only on this machine: ``localhost`` or
    a loopback IP address (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_key(address: str, /) -> str:
    """The canonical key of an address: NFC, case-folded, the domain as IDNA A-labels.

    Total: any string has a key (one that is no address keys as its folded self),
    so a comparison never raises. ASCII addresses take a fast path: their key is
    the lower-cased address, which is what UTS #46 and casefold give for ASCII.
    """
    address = address.strip()
    if address.isascii():
        return address.lower()
    local, at, domain = address.rpartition("@")
    if not at:  # the key of a text without @ is the text, folded
        return _fold(address)
    return f"{_fold(local)}@{domain_key(domain)}"


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=4096)
def domain_key(domain: str, /) -> str:
    """A domain's part of :func:`address_key`: its A-label form, lower-cased.

    A string that is no IDNA domain keys as its NFC case-folded self. Cached:
    recipients share a few domains and IDNA processing costs tens of microseconds.
    """
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except UnicodeError:  # idna.IDNAError subclasses it
        return _fold(domain)


def _fold(text: str) -> str:
    # casefold can decompose (U+01F0 folds to j + combining caron): compose again.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str, /) -> str | None:
    """The domain with IDN labels as A-labels, or None when it is not a domain."""
    if _DOMAIN_LITERAL.fullmatch(domain) is not None:
        return domain
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError subclasses it
            return None
    return domain if is_hostname(domain) else None


def addr_spec(email: str, /, *, field: str = "address") -> tuple[str, bool]:
    """The address as SMTP carries it (IDN domain as A-label), and whether it needs SMTPUTF8.

    Raises :class:`~sender.errors.AddressError` naming ``field``. The caller
    checks for CR, LF and NUL first (:func:`sender.compose.mime.envelope_address` does).
    """
    parts = split_address(email)
    if parts is None:
        raise AddressError(f"{email!r} is not local@domain", field=field)
    local, domain = parts
    smtputf8 = False
    if local.isascii():
        if _LOCAL_ASCII.fullmatch(local) is None and _LOCAL_QUOTED.fullmatch(local) is None:
            raise AddressError(f"{email!r} has a local part that needs quoting", field=field)
    elif _LOCAL_UTF8.fullmatch(local) is not None:
        smtputf8 = True  # RFC 6532: no encoding exists for a non-ASCII local part
    else:
        raise AddressError(f"{email!r} has an unusable local part", field=field)
    try:
        octets = len(local.encode())
    except UnicodeEncodeError:  # a lone surrogate: no server can take it
        raise AddressError(f"{email!r} has an unusable local part", field=field) from None
    if octets > MAX_LOCAL_PART:
        raise AddressError(
            f"{email!r} has a local part of {octets} octets (at most {MAX_LOCAL_PART})",
            field=field,
        )
    encoded = ascii_domain(domain)
    if encoded is None:
        raise AddressError(f"{email!r} has an invalid domain", field=field)
    spec = f"{local}@{encoded}"
    if len(spec.encode()) > MAX_ADDRESS:
        raise AddressError(f"{email!r} is longer than {MAX_ADDRESS} octets", field=field)
    return spec, smtputf8
