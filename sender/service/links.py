"""``/v1/links``: issue a participant's Get Link, and verify one (scope ``links``)."""

from __future__ import annotations

from datetime import timedelta

from sender.config import Scope, parse_duration
from sender.errors import ConfigurationError, InputError
from sender.service.schemas import LinkRequest, VerifyRequest
from sender.service.state import Service
from sender.service.web import APIRouter, guard

__all__ = ["router"]


def _ttl(value: str | int | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return parse_duration(str(value), setting="ttl")
    except ConfigurationError as exc:
        raise InputError(str(exc), field="ttl") from exc


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(
        prefix="/v1/links", tags=["links"], dependencies=[guard(service, Scope.LINKS)]
    )

    @routes.post("", summary="Issue a Get Link")
    async def issue(request: LinkRequest) -> dict[str, str]:
        """The participant's personal login URL, its token and when it expires."""
        issued = service.links.links.issue(
            request.participant_id,
            request.course_id,
            purpose=request.purpose,
            next=request.next,
            ttl=_ttl(request.ttl),
            stamp=request.stamp,
        )
        return issued.as_dict()

    @routes.post("/verify", summary="Verify a link or token")
    async def verify(request: VerifyRequest) -> dict[str, str | None]:
        """The claims of a good link; 400 with ``error`` invalid, expired or revoked."""
        given = request.token or request.url
        if not given:
            raise InputError("give the link's token or its url", field="token")
        claims = service.links.verify_link(given, stamp=request.stamp, purpose=request.purpose)
        return claims.as_dict()

    return routes
