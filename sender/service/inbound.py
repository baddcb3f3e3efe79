"""``POST /v1/inbound/ses``: SES bounces and complaints, delivered by Amazon SNS.

SNS cannot send an API key, so this path takes none: it is authenticated by SNS's
signature and the ``ses_topics`` allow-list instead (:mod:`sender.feedback.sns`), both
checked before anything happens. A verified notification goes through the same findings
and rules as a bounce that came by mail; a forged or unverifiable one is refused with
400 and changes nothing. SNS sends JSON as ``text/plain``, so the body is read raw.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sender.feedback.suppression import ingest_ses_notification
from sender.service.state import Service
from sender.service.web import APIRouter, Request, json_response

__all__ = ["router"]

log = logging.getLogger("sender.service")

_BODY = {
    "requestBody": {
        "required": True,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(tags=["inbound"])

    @routes.post(
        "/v1/inbound/ses",
        summary="SES notifications through SNS (signed; no API key)",
        openapi_extra=_BODY,
    )
    async def ses(request: Request) -> Any:
        """An SNS Notification, SubscriptionConfirmation or UnsubscribeConfirmation.

        Verified (topic in ``ses_topics``, certificate from ``sns.<region>.amazonaws.com``,
        signature version 1 or 2) before it is acted on; 400 otherwise. A confirmation is
        confirmed by fetching its SubscribeURL; a bounce or complaint suppresses by the
        same rules as a bounce by mail.
        """
        message = await service.sns.verify(await request.body())
        if message.type == "SubscriptionConfirmation":
            await service.sns.confirm(message)
            log.warning("confirmed the SNS subscription to %s", message.topic)
            return json_response({"type": message.type, "confirmed": True})
        if message.type == "UnsubscribeConfirmation":
            log.warning("SNS unsubscribed this endpoint from %s", message.topic)
            return json_response({"type": message.type, "confirmed": False})
        store, _sender = await service.sending()
        outcomes = await ingest_ses_notification(
            store, message.message, policy=service.config.bounces, now=time.time()
        )
        return json_response(
            {
                "type": message.type,
                "findings": [
                    {
                        "address": outcome.record.address,
                        "kind": outcome.record.kind,
                        "status": outcome.record.status,
                        "reason": outcome.record.reason,
                        "suppressed": outcome.suppressed,
                    }
                    for outcome in outcomes
                ],
            }
        )

    return routes
