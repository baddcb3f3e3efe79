"""``/v1/codes``: check a login code a participant typed (scope ``links``)."""

from __future__ import annotations

from sender.config import Scope
from sender.service.schemas import CodeRequest
from sender.service.state import Service
from sender.service.web import APIRouter, guard

__all__ = ["router"]


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(
        prefix="/v1/codes", tags=["codes"], dependencies=[guard(service, Scope.LINKS)]
    )

    @routes.post("/verify", summary="Verify a login code")
    async def verify(request: CodeRequest) -> dict[str, str | None]:
        """The claims of the code mailed to ``email``, as a link's; 400 ``invalid`` for a
        wrong, expired or unknown code (or address), 429 ``locked`` after five wrong codes
        for the address (with ``Retry-After``), the right one included."""
        _store, sender = await service.sending()
        claims = await sender.verify_code(request.code, email=request.email)
        return claims.as_dict()

    return routes
