"""Test helpers that ship with sender, so an LMS can test its integration the way we do.

* :class:`RecordingSMTPServer` is a real SMTP server on an ephemeral loopback
  port, in the test's own event loop. It records every accepted message and is
  scripted through real SMTP replies (``550 5.1.1`` at RCPT, ``451 4.7.1`` at
  DATA, a dropped connection, a reply that never comes), never by patching a
  client.
* :class:`ManualClock` is a :class:`~sender.clock.Clock` whose time moves only
  when a test moves it, so tests never patch time.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import ssl
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sender.config import SmtpSecurity, SmtpSettings
from sender.models import SmtpReply
from sender.servers.smtpd import (
    Disconnect,
    EmbeddedServer,
    ReceivedMessage,
    Response,
    Session,
    SmtpServer,
)

__all__ = [
    "SETTLE_LIMIT",
    "ManualClock",
    "ReceivedMessage",
    "RecordingSMTPServer",
    "Stage",
]


SETTLE_LIMIT = 5.0
"""Real seconds :meth:`ManualClock.settle` waits for woken timers before it gives up."""


class ManualClock:
    """A clock that stands still until :meth:`advance` or :meth:`sleep` moves it.

    ``sleep`` advances the clock by the requested time and yields to the loop
    once, so code that waits (retry backoff, rate limits) runs at full speed
    and a test can assert exactly how long it would have waited (:attr:`sleeps`).
    Sleeps of concurrent tasks add up; they do not overlap as real ones would.
    """

    def __init__(self, *, now: float = 1_700_000_000.0, monotonic: float = 0.0) -> None:
        self._now = now
        self._monotonic = monotonic
        self.sleeps: list[float] = []
        self._idlers: list[tuple[float, asyncio.Future[None]]] = []  # (deadline, waiter)
        self._woken: set[asyncio.Task[Any]] = set()  # tasks of idlers woken, not back yet
        self._owners: dict[asyncio.Future[None], asyncio.Task[Any]] = {}
        self._changed: asyncio.Event | None = None  # while settle() waits: a timer moved

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward; time never goes backwards."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, not by {seconds!r} seconds")
        self._now += seconds
        self._monotonic += seconds
        for deadline, waiter in self._idlers:
            if deadline <= self._monotonic and not waiter.done():
                waiter.set_result(None)
                task = self._owners[waiter]
                if task not in self._woken:
                    self._woken.add(task)
                    task.add_done_callback(self._moved)

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, advance by it (negative counts as zero) and yield once."""
        seconds = max(seconds, 0.0)
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    async def idle(self, seconds: float) -> None:
        """Wait until others (:meth:`advance`, :meth:`sleep`) moved the clock ``seconds`` on.

        For background timers such as a run's lease renewal, which must not drive
        time forward themselves.
        """
        entry = (self._monotonic + max(seconds, 0.0), asyncio.get_running_loop().create_future())
        if entry[0] <= self._monotonic:
            await asyncio.sleep(0)
            return
        self._idlers.append(entry)
        task = asyncio.current_task()
        assert task is not None  # awaited, so inside a task
        self._owners[entry[1]] = task
        self._moved()
        try:
            await entry[1]
        finally:
            self._idlers.remove(entry)
            del self._owners[entry[1]]

    async def settle(self) -> None:
        """Wait until every timer that :meth:`advance` woke has run on to its next
        :meth:`idle` or ended.

        Manual time moves at once, while a woken timer's work (a lease renewal over the
        network) takes real time: without this, a test could move the clock on again before
        the renewal it means to test has happened. Raises :class:`TimeoutError` if they are
        still busy after :data:`SETTLE_LIMIT` real seconds.
        """
        self._changed = changed = asyncio.Event()
        try:
            async with asyncio.timeout(SETTLE_LIMIT):
                while self._busy():
                    changed.clear()
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{len(self._woken)} timer(s) woken by advance() still busy after {SETTLE_LIMIT} s"
            ) from None
        finally:
            self._changed = None

    def _moved(self, *_: object) -> None:
        if self._changed is not None:
            self._changed.set()

    def _busy(self) -> bool:
        """Whether a woken timer has neither ended nor gone back to idle for a later time."""
        parked = {self._owners[waiter] for at, waiter in self._idlers if at > self._monotonic}
        self._woken = {task for task in self._woken if not task.done()} - parked
        return bool(self._woken)


class Stage(StrEnum):
    """Where in the SMTP dialogue a scripted behaviour applies."""

    CONNECT = "connect"  # before the greeting
    MAIL = "mail"  # MAIL FROM
    RCPT = "rcpt"  # RCPT TO
    DATA = "data"  # after the final dot, before the reply


@dataclass(slots=True)
class _Rule:
    stage: Stage
    address: str | None  # the MAIL FROM or RCPT TO address it is limited to
    response: Response
    delay: float  # seconds before deciding; math.inf: never reply
    remaining: int | None  # None: for ever
    gate: asyncio.Event | None = None  # wait for it before deciding (hold())

    def matches(self, stage: Stage, address: str | None) -> bool:
        if self.stage is not stage:
            return False
        return self.address is None or (
            address is not None and self.address.casefold() == address.casefold()
        )


def _as_reply(reply: str | SmtpReply) -> SmtpReply:
    if isinstance(reply, SmtpReply):
        return reply
    code, _, text = reply.strip().partition(" ")
    if len(code) != 3 or not code.isdigit() or not 200 <= int(code) <= 599:
        raise ValueError(f"{reply!r} does not start with an SMTP reply code like 550")
    return SmtpReply.parse(int(code), text)


class RecordingSMTPServer(EmbeddedServer):
    """A real SMTP server for tests that records accepted messages and replies as scripted.

    Without a script it accepts everything and answers DATA with
    ``250 2.0.0 Ok: queued as Q1`` (the number counts accepted messages). Script it::

        server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="gone@example.org")
        server.reply(Stage.DATA, "451 4.7.1 Try later", times=1)
        server.drop(Stage.MAIL)              # close the connection instead of replying
        server.delay(Stage.RCPT, 2.0)        # reply late, to trip client timeouts
        server.hang(Stage.CONNECT)           # never even greet
        server.drop_after(3)                 # hang up after every 3rd message on a connection

    Rules apply in the order given; ``times`` limits how often one fires (``None``:
    for ever). ``credentials`` turns on AUTH: every login in the mapping works.
    ``pipelining`` (on, as on most servers) offers PIPELINING, so clients batch commands.
    """

    def __init__(
        self,
        *,
        security: SmtpSecurity = SmtpSecurity.NONE,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        credentials: Mapping[str, str] | None = None,
        allow_auth_without_tls: bool = False,
        smtputf8: bool = True,
        host: str = "127.0.0.1",
        pipelining: bool = True,
    ) -> None:
        self._credentials = dict(credentials) if credentials is not None else None
        self._server = SmtpServer(
            self,
            host=host,
            security=security,
            tls_context=tls_context,
            require_starttls=require_starttls,
            authenticator=self._authenticate if credentials is not None else None,
            allow_auth_without_tls=allow_auth_without_tls,
            smtputf8=smtputf8,
            pipelining=pipelining,
        )
        self._rules: list[_Rule] = []
        self._messages: list[ReceivedMessage] = []
        self._arrived = asyncio.Event()  # set on every accepted message, for wait_for_messages
        self._sessions: list[Session] = []
        self._per_connection: Counter[int] = Counter()
        self._drop_after: int | None = None
        self._queue_ids = itertools.count(1)

    async def disconnect_all(self) -> None:
        """Drop every open connection now (keep listening), as a restarting server does."""
        await self._server.disconnect_all()

    def smtp_settings(
        self,
        *,
        timeout: float = 5.0,
        pool_size: int = 4,
        max_messages_per_connection: int = 100,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        validate_certs: bool = True,
    ) -> SmtpSettings:
        """Settings for a client of this server (EHLO name ``localhost``, 5 s timeout)."""
        return SmtpSettings(
            host=self.host,
            port=self.port,
            security=self._server.security,
            username=username,
            password=password,
            timeout=timeout,
            pool_size=pool_size,
            max_messages_per_connection=max_messages_per_connection,
            validate_certs=validate_certs,
            ca_file=ca_file,
            local_hostname="localhost",
        )

    # -- what happened -----------------------------------------------------------

    @property
    def messages(self) -> tuple[ReceivedMessage, ...]:
        """Every message the server accepted, in order."""
        return tuple(self._messages)

    @property
    def sessions(self) -> tuple[Session, ...]:
        """Every connection the server accepted, in order (before any scripted drop)."""
        return tuple(self._sessions)

    @property
    def connections_opened(self) -> int:
        return len(self._sessions)

    @property
    def open_connections(self) -> int:
        return self._server.open_connections

    @property
    def most_open_connections(self) -> int:
        """The most connections that were open at once (a client's cap, seen from here)."""
        return self._server.most_open_connections

    async def wait_for_messages(self, count: int, /) -> None:
        """Return once ``count`` messages were accepted (bound it with ``asyncio.timeout``)."""
        while len(self._messages) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def clear(self) -> None:
        """Forget recorded messages and sessions and the script."""
        self._messages.clear()
        self._sessions.clear()
        self._per_connection.clear()
        self._rules.clear()
        self._drop_after = None

    # -- the script --------------------------------------------------------------

    def reply(
        self,
        stage: Stage,
        reply: str | SmtpReply,
        /,
        *,
        address: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer ``stage`` with ``reply`` (``"550 5.1.1 User unknown"``) instead of the usual."""
        self._add(stage, _as_reply(reply), address=address, times=times)

    def drop(self, stage: Stage, /, *, address: str | None = None, times: int | None = 1) -> None:
        """Close the connection at ``stage`` without replying."""
        self._add(stage, Disconnect(), address=address, times=times)

    def delay(
        self,
        stage: Stage,
        seconds: float,
        /,
        *,
        address: str | None = None,
        times: int | None = None,
    ) -> None:
        """Wait ``seconds`` before replying at ``stage`` (the reply itself is unchanged)."""
        if not 0 <= seconds < math.inf:
            raise ValueError("delay needs a finite, non-negative number of seconds; use hang()")
        self._add(stage, None, address=address, times=times, delay=seconds)

    def hang(
        self, stage: Stage, /, *, address: str | None = None, times: int | None = None
    ) -> None:
        """Never reply at ``stage``: the client's timeout (or :meth:`aclose`) ends it."""
        self._add(stage, None, address=address, times=times, delay=math.inf)

    def hold(
        self, stage: Stage, /, *, address: str | None = None, times: int | None = None
    ) -> asyncio.Event:
        """Hold the reply at ``stage`` until the returned event is set: a test that must
        look at a sender mid-send does so for as long as it needs, however slow the
        machine, then lets the reply go."""
        gate = asyncio.Event()
        self._add(stage, None, address=address, times=times, gate=gate)
        return gate

    def drop_after(self, messages: int, /) -> None:
        """After every ``messages``-th accepted message on a connection, reply and hang up."""
        if messages < 1:
            raise ValueError("drop_after needs at least one message")
        self._drop_after = messages

    def _add(
        self,
        stage: Stage,
        response: Response,
        *,
        address: str | None,
        times: int | None,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        if address is not None and stage not in (Stage.MAIL, Stage.RCPT):
            raise ValueError("address only narrows the MAIL and RCPT stages")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for ever")
        self._rules.append(_Rule(Stage(stage), address, response, delay, times, gate))

    async def _scripted(self, stage: Stage, address: str | None = None) -> Response:
        """Apply matching rules: delays in turn, then the first reply or drop."""
        for rule in list(self._rules):
            if not rule.matches(stage, address):
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._rules.remove(rule)
            if rule.delay == math.inf:
                await asyncio.get_running_loop().create_future()  # until the connection ends
            elif rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.gate is not None:
                await rule.gate.wait()
            if rule.response is not None:
                return rule.response
        return None

    # -- the handler's side --------------------------------------------------------

    def _authenticate(self, login: str, password: str) -> bool:
        return self._credentials is not None and self._credentials.get(login) == password

    async def on_connect(self, session: Session, /) -> Response:
        self._sessions.append(session)
        return await self._scripted(Stage.CONNECT)

    async def on_mail(
        self, session: Session, address: str, options: tuple[str, ...], /
    ) -> Response:
        return await self._scripted(Stage.MAIL, address)

    async def on_rcpt(
        self, session: Session, address: str, options: tuple[str, ...], /
    ) -> Response:
        return await self._scripted(Stage.RCPT, address)

    async def on_data(self, message: ReceivedMessage, /) -> Response:
        response = await self._scripted(Stage.DATA)
        if response is not None and not (
            isinstance(response, SmtpReply) and 200 <= response.code < 300
        ):
            return response
        self._messages.append(message)
        self._arrived.set()
        reply = response or SmtpReply(250, "2.0.0", f"Ok: queued as Q{next(self._queue_ids)}")
        connection = message.session.connection_id
        self._per_connection[connection] += 1
        every = self._drop_after
        if every is not None and self._per_connection[connection] % every == 0:
            return Disconnect(reply)
        return reply
