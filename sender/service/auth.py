"""Which API key a request carries, decided in constant time.

Every configured key is compared, always all of them, as SHA-256 digests of one length
(:func:`hmac.compare_digest`), so neither the time taken nor an early exit tells a caller
how much of a key it guessed, or which key matched. Keys are never logged; a key's
``name`` (``key 2``) is what logs show.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from sender.config import ApiKey, Scope

__all__ = ["KeyRing"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """The API keys a service accepts (``api_keys``, ``SENDER_API_KEYS``)."""

    def __init__(self, keys: Iterable[ApiKey], /) -> None:
        self._keys = tuple((_digest(key.key), key) for key in keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, presented: str, /) -> ApiKey | None:
        """The key ``presented`` is, or None; every key is compared whatever matched."""
        given = _digest(presented)
        found = None
        for digest, key in self._keys:
            if hmac.compare_digest(given, digest):
                found = key
        return found

    @staticmethod
    def allows(key: ApiKey, scope: Scope, /) -> bool:
        return scope in key.scopes
