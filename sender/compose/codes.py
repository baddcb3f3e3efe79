"""Login codes: the 8 characters a participant types when the link cannot be clicked.

Every login mail (one whose template shows ``{{ code }}``: the built-in ``invitation``
and ``get_link``) carries a fresh code beside its link. It is 40 random bits in
Crockford's base32 (``0-9`` and ``A-Z`` without ``I``, ``L``, ``O`` and ``U``), shown
in two groups of four: ``7KQ2-M9XD``. Input is forgiving: case does not matter,
spaces and dashes are ignored, full-width characters read as ASCII, and ``O`` reads as
``0``, ``I`` and ``L`` as ``1``.

A code is bound to the participant, the course and the address it was mailed to, and
expires with the link it came with. The store keeps only a keyed hash of it
(HMAC-SHA256 over the address key and the code, keyed from the link secret keys, so
rotating a key works as for links: the newest hashes, every one verifies); the code
itself is never stored or logged. How often an address may guess is the store's
count (:meth:`~sender.store.base.LoginCodes.code_try`), checked by
:meth:`sender.client.Sender.verify_code`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Iterable

from sender.addresses import address_key
from sender.errors import ConfigurationError, InputError
from sender.models import LoginCode

__all__ = [
    "ALPHABET",
    "CODE_LENGTH",
    "CODE_LOCK_SECONDS",
    "CODE_TRIES",
    "CodeSigner",
    "code_address",
    "format_code",
    "normalize_code",
]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
CODE_LENGTH = 8  # 40 bits
CODE_TRIES = 5  # wrong codes an address may try ...
CODE_LOCK_SECONDS = 15 * 60.0  # ... before it is locked this long (from the fifth)
_READS_AS = {"O": "0", "I": "1", "L": "1"}  # Crockford's decoding of look-alikes
# dashes a keyboard or an IME may give (hyphens, en and em dash, minus, the katakana long
# vowel mark); any white space is ignored too
_DASHES = frozenset("-\u2010\u2011\u2012\u2013\u2014\u2212\u30fc")
_MAX_INPUT = 64  # refuse absurd input before looking at it
_DIGEST_HEX = 32  # 128 bits of HMAC-SHA256 are kept
_SHAPE = "a code is 8 letters and digits, like ABCD-EFGH"


def format_code(code: str, /) -> str:
    """``ABCDEFGH`` as it is shown in a mail: ``ABCD-EFGH``."""
    return f"{code[:4]}-{code[4:]}"


def normalize_code(text: str, /) -> str:
    """What a participant typed, as the 8 characters of a code; InputError (``code``) if it
    cannot be one. Case, spaces, dashes and Crockford's look-alikes do not matter."""
    if len(text) > _MAX_INPUT:
        raise InputError(_SHAPE, field="code")
    kept = []
    for char in unicodedata.normalize("NFKC", text):  # full-width letters (an IME) read as ASCII
        if char.isspace() or char in _DASHES:
            continue
        char = _READS_AS.get(char.upper(), char.upper()) if char.isascii() else char
        if char not in ALPHABET:
            raise InputError(_SHAPE, field="code")
        kept.append(char)
    if len(kept) != CODE_LENGTH:
        raise InputError(_SHAPE, field="code")
    return "".join(kept)


def code_address(email: str, /) -> str:
    """The key a code and its tries are kept under: the address's canonical key."""
    key = address_key(email.strip()) if isinstance(email, str) else ""
    if not key or "@" not in key or len(key) > 320:
        raise InputError("not an e-mail address", field="email")
    return key


class CodeSigner:
    """Makes codes and their keyed hashes from the link secret keys (oldest first)."""

    def __init__(self, secret_keys: Iterable[str], /) -> None:
        keys = [
            hmac.new(key.encode(), b"sender.login-code", hashlib.sha256).digest()
            for key in secret_keys
        ]
        if not keys:
            raise ConfigurationError("login codes need a secret key", setting="secret_keys")
        self._keys = tuple(reversed(keys))  # newest first: it hashes new codes

    def digest(self, code: str, address: str, /, *, key: int = 0) -> str:
        """The keyed hash kept for ``code`` mailed to ``address`` (a :func:`code_address`)."""
        mac = hmac.digest(self._keys[key], f"{address}\x00{code}".encode(), "sha256")
        return mac[: _DIGEST_HEX // 2].hex()

    def issue(
        self,
        *,
        participant_id: str,
        course_id: str,
        email: str,
        purpose: str,
        next: str | None,
        issued_at: float,
        expires_at: float,
    ) -> tuple[str, LoginCode]:
        """A new code as shown (``ABCD-EFGH``), and the record the store keeps of it."""
        number = secrets.randbits(5 * CODE_LENGTH)
        code = "".join(ALPHABET[(number >> (5 * i)) & 31] for i in range(CODE_LENGTH))
        address = code_address(email)
        record = LoginCode(
            address=address,
            digest=self.digest(code, address),
            participant_id=participant_id,
            course_id=course_id,
            purpose=purpose,
            next=next,
            issued_at=issued_at,
            expires_at=expires_at,
        )
        return format_code(code), record

    def match(self, code: str, address: str, kept: Iterable[LoginCode], /) -> LoginCode | None:
        """The kept record ``code`` (normalized) opens for ``address``, or None.

        Every record is compared under every key in constant time, with no early exit.
        """
        candidates = [self.digest(code, address, key=i) for i in range(len(self._keys))]
        found: LoginCode | None = None
        for record in kept:
            for candidate in candidates:
                if hmac.compare_digest(record.digest.encode(), candidate.encode()) and (
                    found is None or record.expires_at > found.expires_at
                ):
                    found = record
        return found
