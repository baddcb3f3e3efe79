"""The app: one router per concern, over one :class:`~sender.service.state.Service`.

Later concerns (webhooks, SES notifications) add a router here and nothing else. The
landing page (``sender.service.landing``) answers at ``base_url``'s path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import sender.service.admin
import sender.service.codes
import sender.service.feedback
import sender.service.inbound
import sender.service.landing
import sender.service.links
import sender.service.messages
import sender.service.runs
import sender.service.unsubscribe
from sender.config import CliConfig
from sender.feedback.sns import SnsVerifier
from sender.service.html import STATIC
from sender.service.state import Service
from sender.service.web import App, mount_static, new_app

__all__ = ["app"]

DESCRIPTION = """\
Get Links and login codes, single messages, bulk runs and what came back, for any LMS.

Every path but this document needs `Authorization: Bearer KEY`, with a key from
`SENDER_API_KEYS` (or `api_keys` in sender.toml) that holds the path's scope:
`links`, `send`, `runs` or `admin`. Errors are `{"error", "message", "field"}`.
The admin pages at `/admin/` (HTML, not part of this document) log in with a key of
scope `admin` and keep a session cookie.
`POST /v1/inbound/ses` is the exception: SNS cannot send a key, so it accepts only
messages signed by SNS for a topic in `ses_topics` (`SENDER_SES_TOPICS`), and so is
`/u/{token}`, one-click unsubscribe (RFC 8058), where the signed token is the authority.
"""


def app(
    config: CliConfig,
    /,
    *,
    work: bool = True,
    poll: float = 1.0,
    sns: SnsVerifier | None = None,
) -> App:
    """The HTTP API over ``config``'s outbox, transport and keys, as an ASGI app.

    Run it with ``sender serve``, any ASGI server, or mount it in an LMS's own app. Its
    lifespan (``work``) sends every active run as ``sender worker`` does, each ``poll``
    seconds when idle; mounted, enter it from the LMS's lifespan
    (``async with api.router.lifespan_context(api): ...``), or leave the sending to a
    ``sender worker``. The outbox and sender open on first use either way. ``sns`` is for
    tests only (a verifier trusting their loopback certificate server); settings cannot
    reach it.
    """
    service = Service(config, work=work, poll=poll, sns=sns)

    @asynccontextmanager
    async def lifespan(_app: App) -> AsyncIterator[None]:
        async with service.running():
            yield

    made = new_app(
        service,
        title="sender",
        version=version("sender"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    for concern in (
        sender.service.links,
        sender.service.codes,
        sender.service.messages,
        sender.service.runs,
        sender.service.feedback,
        sender.service.inbound,
        sender.service.admin,
        sender.service.landing,
        sender.service.unsubscribe,
    ):
        made.include_router(concern.router(service))
    mount_static(made, STATIC)
    return made
