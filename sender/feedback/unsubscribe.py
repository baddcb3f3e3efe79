"""One-click unsubscribe (RFC 8058): a verified token, by URL or by mail, leaves its stream.

Subscription mail names one token twice: in ``https://PUBLIC_URL/u/TOKEN``, which a mail
provider POSTs to (``sender serve``), and in ``mailto:unsubscribe+TOKEN@BOUNCE_DOMAIN``,
which reaches the inbound listener. Both end here: the token is verified
(:class:`~sender.compose.links.UnsubscribeSigner`; a forged or damaged one changes
nothing), the address it names leaves the token's stream, and the store keeps the
``address.unsubscribed`` event in the same transaction. An outbox message's token names
the message, whose address and participant the outbox knows. Doing it twice is harmless.

Unsubscribing is not suppressing: the address is alive, and transactional mail (an
invitation, a login link) still reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sender.addresses import address_key, split_address
from sender.compose.links import UnsubscribeSigner, message_of_key
from sender.errors import LinkInvalid
from sender.store import BounceLog, Unsubscribes

__all__ = [
    "MAILTO_PREFIX",
    "UnsubscribeStore",
    "Unsubscribed",
    "mailto_token",
    "unsubscribe",
]

MAILTO_PREFIX = "unsubscribe+"  # the local part of the mailto address, before the token
HOW_ONE_CLICK = "one-click"  # an RFC 8058 POST (List-Unsubscribe=One-Click)
HOW_PAGE = "page"  # the button on the page a GET shows
HOW_MAILTO = "mailto"  # mail to the List-Unsubscribe mailto address


class UnsubscribeStore(BounceLog, Unsubscribes, Protocol):
    """What unsubscribing reads and writes: the message a token names, the unsubscribes."""


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """An address that left a stream (now, or before: ``new`` is False then)."""

    address: str  # the canonical key
    stream: str
    new: bool


async def unsubscribe(
    store: UnsubscribeStore,
    signer: UnsubscribeSigner,
    token: str,
    /,
    *,
    how: str,
    now: float,
) -> Unsubscribed:
    """Verify ``token`` and unsubscribe what it names from its stream.

    Raises :class:`~sender.errors.LinkInvalid` for a token that does not verify, or whose
    message the outbox no longer has; nothing is changed then.
    """
    claims = signer.verify(token)
    participant_id = claims.participant_id
    address = claims.address
    if claims.key is not None:
        message_id = message_of_key(claims.key)
        record = await store.message(message_id) if message_id is not None else None
        if record is None:
            raise LinkInvalid("the unsubscribe link names no message this outbox has")
        address, participant_id = record.email, record.participant_id
    if not address:
        raise LinkInvalid("the unsubscribe link names no address")
    new = await store.unsubscribe(
        address, stream=claims.stream.value, how=how, now=now, participant_id=participant_id
    )
    return Unsubscribed(address_key(address), claims.stream.value, new)


def mailto_token(recipient: str, /) -> str | None:
    """The token of a ``unsubscribe+TOKEN@domain`` recipient, or None for another address."""
    parts = split_address(recipient.strip().lower())
    if parts is None or not parts[0].startswith(MAILTO_PREFIX):
        return None
    return parts[0][len(MAILTO_PREFIX) :] or None
