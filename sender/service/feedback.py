"""``/v1/suppressions`` and ``/v1/bounces/report``: what came back (scope ``admin``)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from sender.compose.mime import envelope_address
from sender.config import ApiKey, Scope
from sender.errors import InputError
from sender.service.schemas import SuppressionRequest
from sender.service.state import Service
from sender.service.web import ApiError, APIRouter, Query, guard, json_response

__all__ = ["router"]

log = logging.getLogger("sender.service")


def router(service: Service, /) -> APIRouter:
    admin = guard(service, Scope.ADMIN)
    routes = APIRouter(tags=["feedback"], dependencies=[admin])

    @routes.get("/v1/suppressions", summary="The suppression list")
    async def suppressions() -> dict[str, Any]:
        """Every suppressed address, with its kind, reason and since when (Unix time)."""
        store, _sender = await service.sending()
        entries = await store.suppressions()
        return {"suppressions": [dataclasses.asdict(entry) for entry in entries]}

    @routes.post("/v1/suppressions", summary="Suppress an address", status_code=201)
    async def suppress(request: SuppressionRequest) -> dict[str, Any]:
        """Never write to the address again; ``added`` is false when it was already."""
        envelope_address(request.address, field="address")
        if not request.reason.strip():
            raise InputError("give a reason", field="reason")
        store, _sender = await service.sending()
        added = await store.suppress(
            request.address, kind="manual", reason=request.reason, now=time.time()
        )
        return {"address": request.address, "added": added}

    @routes.delete("/v1/suppressions/{address}", summary="Take an address off the list")
    async def unsuppress(
        address: str,
        reason: str = Query(..., description="Why it may be written to again (kept, logged)."),
        key: ApiKey = admin,
    ) -> dict[str, Any]:
        """Removal needs a ``reason``, kept with the time and logged; 404 when not listed."""
        if not reason.strip():
            raise InputError("removing an address needs a reason", field="reason")
        store, _sender = await service.sending()
        if not await store.unsuppress(address, reason=reason, now=time.time()):
            raise ApiError(404, "not_found", "the address is not on the suppression list")
        log.warning("suppression removed by %s (%s): %s", key.name, reason[:200], address[:254])
        return {"address": address, "removed": True, "reason": reason}

    @routes.get("/v1/bounces/report", summary="The clean-up report")
    async def report(
        since: str = Query("7d", description="How far back: 24h, 7d, 30d."),
    ) -> Any:
        """``sender bounces report``: one row per affected participant with what to do and
        a fresh Get Link, and the sender-side refusals per provider."""
        rows, problems = await service.cleanup_report(since, now=time.time())
        return json_response(
            {
                "rows": [row.as_dict(service.link_url) for row in rows],
                "sender_side": [dataclasses.asdict(problem) for problem in problems],
            }
        )

    return routes
