"""``/v1/messages``: one message to one participant, now (scope ``send``).

Sent as ``sender send`` sends: through the configured transport, ahead of bulk work but
within the limits every process shares, never to a suppressed address, and a refusal
kept as a bounce.
"""

from __future__ import annotations

from sender.addresses import is_address
from sender.config import Scope, require_real_identity
from sender.errors import AddressError
from sender.models import Participant
from sender.service.schemas import MessageRequest, ParticipantIn
from sender.service.state import Service
from sender.service.web import APIRouter, guard

__all__ = ["participant_of", "router"]


def participant_of(given: ParticipantIn, /, *, locale: str | None, field: str) -> Participant:
    """The participant a request names; an address we cannot send to is refused by name."""
    if not is_address(given.email.strip()):
        raise AddressError(f"{given.email[:100]!r} is not an e-mail address", field=field)
    return Participant(
        email=given.email.strip(),
        name=given.name,
        participant_id=given.participant_id,
        course_id=given.course_id,
        locale=given.locale or locale or "en",
        vars=dict(given.vars),
    )


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(
        prefix="/v1/messages", tags=["messages"], dependencies=[guard(service, Scope.SEND)]
    )

    @routes.post("", summary="Send one message now")
    async def send(request: MessageRequest) -> dict[str, str | None]:
        """``{status, message_id, reply, detail, email, participant_id}``; ``status`` is
        accepted, temporary, permanent or suppressed (not sent)."""
        person = participant_of(
            request.participant, locale=request.locale, field="participant.email"
        )
        require_real_identity(service.config)
        _store, sender = await service.sending()
        result = await sender.send(person, template=request.template, next=request.next)
        return result.as_dict()

    return routes
