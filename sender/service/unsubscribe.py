"""``/u/{token}``: one-click unsubscribe (RFC 8058), the URL subscription mail names.

Mail providers POST ``List-Unsubscribe=One-Click`` (``application/x-www-form-urlencoded``,
or the same field as ``multipart/form-data``) without cookies or an API key: the token is
the authority (signed, bound to a stream and one message or address), so the address
leaves the stream at once and the answer is 200.
A GET only shows a page with a button, which posts the same form: link scanners and
previews GET every URL in a mail, and must unsubscribe nobody. A bad token is 400 and
changes nothing. Nothing here logs the token.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs

from sender.errors import LinkInvalid
from sender.feedback.unsubscribe import HOW_ONE_CLICK, HOW_PAGE, unsubscribe
from sender.service.html import PAGES
from sender.service.state import Service
from sender.service.web import APIRouter, Request, html_response
from sender.vocabulary import UNSUBSCRIBE_STREAMS

__all__ = ["router"]

_ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 3.1: the POST body's one field
# RFC 8058 3.1 allows multipart/form-data too: the same field as one part.
_MULTIPART_ONE_CLICK = re.compile(
    rb'content-disposition:\s*form-data;\s*name="?List-Unsubscribe"?\r\n\r\nOne-Click\r\n',
    re.IGNORECASE,
)
_TITLE = "Unsubscribe"


def _page(state: str, *, action: str = "", stream: str = "", status: int = 200) -> Any:
    body = PAGES.render(
        "unsubscribe.html", lang="en", title=_TITLE, state=state, action=action, stream=stream
    )
    return html_response(body, status=status)


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(tags=["unsubscribe"])
    signer = service.links.composer.unsubscribes
    streams = ", ".join(sorted(s.value for s in UNSUBSCRIBE_STREAMS))

    @routes.get("/u/{token}", summary="The unsubscribe page (changes nothing)")
    async def ask(token: str) -> Any:
        """A page with a button that unsubscribes; the GET itself changes nothing."""
        try:
            claims = signer.verify(token)
        except LinkInvalid:
            return _page("invalid", status=400)
        return _page("ask", action=f"/u/{token}", stream=claims.stream.value)

    @routes.post(
        "/u/{token}",
        summary=f"One-click unsubscribe (RFC 8058) from {streams} mail; no API key",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {"List-Unsubscribe": {"const": "One-Click"}},
                        }
                    }
                },
            }
        },
    )
    async def one_click(token: str, request: Request) -> Any:
        """``List-Unsubscribe=One-Click`` unsubscribes the token's address from its stream."""
        body = await request.body()
        form: dict[str, list[str]] = {}
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            if _MULTIPART_ONE_CLICK.search(body):
                form = {_ONE_CLICK[0]: [_ONE_CLICK[1]]}
        else:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        if form.get(_ONE_CLICK[0]) != [_ONE_CLICK[1]]:
            return _page("invalid", status=400)
        how = HOW_PAGE if form.get("source") == ["page"] else HOW_ONE_CLICK
        store, _sender = await service.sending()
        try:
            done = await unsubscribe(store, signer, token, how=how, now=time.time())
        except LinkInvalid:
            return _page("invalid", status=400)
        return _page("done", stream=done.stream)

    return routes
