"""Serving an ASGI app under uvicorn: the one module that imports it.

:class:`Listener` binds the socket itself (port 0: an ephemeral port, as tests use) and
runs uvicorn beside the caller's other tasks; ``sender serve`` waits on it until SIGINT
or SIGTERM, which uvicorn turns into a graceful stop (in-flight requests and the app's
lifespan finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from types import TracebackType
from typing import Any

import uvicorn

from sender.errors import InputError

__all__ = ["Listener", "parse_listen"]

STARTUP = 30.0  # seconds uvicorn may take to start (the lifespan opens the outbox)


def parse_listen(text: str, /) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host and a port."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdecimal() or not 0 <= int(port) < 65536:
        raise InputError(f"--listen wants HOST:PORT, not {text[:100]!r}", field="listen")
    return host, int(port)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a name: resolved for IPv4
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}", field="listen") from exc


def _no_record(_record: logging.LogRecord) -> bool:
    return False


def _silence_access_log() -> None:
    """uvicorn's access lines hold each request's query string, and a landing page's
    holds a login token: never write them. ``access_log=False`` is not enough alone:
    uvicorn decides per connection from ``hasHandlers()``, and logging set up later in
    the process (by the LMS, by Django's ``setup()``) can make that true again; the
    filter drops every record whatever the handlers and propagation."""
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    if _no_record not in access.filters:
        access.addFilter(_no_record)


class Listener:
    """``async with Listener(app, host=..., port=...) as listening:`` serves ``app``
    until the block ends; ``listening.port`` is the bound port, ``await
    listening.wait()`` returns when uvicorn stops (a signal)."""

    def __init__(self, app: Any, /, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None, "not listening"
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> Listener:
        self._socket = _bind(self._host, self._port)
        config = uvicorn.Config(
            self._app, lifespan="on", log_config=None, access_log=False, server_header=False
        )
        _silence_access_log()
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        for _ in range(int(STARTUP / 0.01)):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if not self._server.started:
            await self.__aexit__(None, None, None)
            raise InputError(f"the server on {self.url} did not start", field="listen")
        return self

    async def wait(self) -> None:
        """Until uvicorn stops by itself (SIGINT, SIGTERM)."""
        assert self._task is not None
        await asyncio.shield(self._task)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(SystemExit):  # uvicorn exits when the lifespan failed
                await self._task
        if self._socket is not None:
            self._socket.close()
