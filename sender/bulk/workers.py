"""Compose and send in worker processes, so one bulk run uses every core.

A run's dispatcher (:mod:`sender.bulk.runner`) keeps the store, the scheduler and the
count of messages in flight, so the limits, the order and the crash bound stay
exactly as in one process. What costs CPU per message (the link, the
template, the MIME bytes, the SMTP dialogue) moves to ``workers`` child
processes, which run :func:`main`. Each rebuilds the :class:`Sender`
from the same settings and opens its own share of the connection pool::

    dispatcher ──(claimed messages)──▶ worker 1 ──SMTP──▶ server
        ▲  store, scheduler         ──▶ worker 2 ──SMTP──▶
        └──────────(results)────────────┘

The pipes carry length-prefixed pickles. That is safe here because both ends
are this code on this interpreter and the pipes belong to the two processes
alone. Each side batches what it writes per event-loop turn, so a frame holds
every message of a dispatcher turn.

A worker that dies takes the fate of its in-flight messages with it: the run
stops with :class:`~sender.errors.WorkerError`, and those messages stay
``sending`` until a resume requeues them, the same bound as after a crash.
Workers use the system clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

from sender import redact
from sender.client import CalendarSend, Sender
from sender.compose.links import return_path_key
from sender.config import SenderSettings, SmtpSettings
from sender.errors import ConfigurationError, InputError, SenderError, TemplateError, WorkerError
from sender.lifecycle import AsyncResource
from sender.loop import fast_loop, settle_gc
from sender.models import DeliveryResult
from sender.pacing.limits import Limiter
from sender.store import OutboxMessage
from sender.transport import SmtpTransport

__all__ = ["Skipped", "WorkerPool", "attempt", "main"]

log = logging.getLogger("sender.workers")

_HEADER = struct.Struct("!I")
_MAX_FRAME = 64 * 1024 * 1024  # a frame holds at most `concurrency` messages; this is a guard
# Not ``-m sender.bulk.workers``: the package imports this module first, and runpy warns.
_ENTRY = "from sender.bulk.workers import main; main()"
_STOP_TIMEOUT = 60.0  # seconds a worker may take to finish its sends after stdin closes


@dataclass(frozen=True, slots=True)
class Skipped:
    """A claimed message that cannot be composed (its data or template); never sent."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Failed:
    """The transport itself failed in a worker (e.g. login refused): fatal for the run."""

    kind: str
    message: str

    def error(self, worker: int) -> SenderError:
        if self.kind == "ConfigurationError":
            return ConfigurationError(self.message)
        return WorkerError(f"worker {worker}: {self.kind}: {self.message}", worker=worker)


def _outbox_key(message: OutboxMessage, /) -> str:
    """What names an outbox message for good: its run, its id and when it was first claimed.

    The first claim's time is kept across crashes and retries, and tells this
    message apart from one with the same run and id in an outbox made anew.
    """
    return f"{message.run_id}\x00{message.id}\x00{message.first_attempt_at!r}"


async def attempt(
    sender: Sender, message: OutboxMessage, /, *, calendar: CalendarSend | None = None
) -> DeliveryResult | Skipped:
    """Compose and deliver one claimed message, in this process.

    Its Message-ID is the one recorded for it, or else derived from
    :func:`_outbox_key`, so a re-send after a crash carries the same one.
    A template that shows a login code gets one; its record rides back on the result,
    and the dispatcher keeps it with the outcome, in the same transaction.
    Bad data or an unrenderable template give :class:`Skipped`; a transport
    that cannot work at all raises (a :class:`~sender.errors.SenderError`).
    """
    try:
        composed = sender.compose(
            message.participant,
            template=message.template,
            message_id=message.message_id or sender.message_id_for(_outbox_key(message)),
            calendar=calendar,
            return_path_key=return_path_key(message.id),
            code=True,  # the dispatcher keeps it with the outcome
        )
    except (InputError, TemplateError) as exc:
        return Skipped(str(exc))
    # The claim checked the suppression list; the dispatcher keeps refusals as bounces.
    return await sender.deliver(composed, feedback=False)


_Result = DeliveryResult | Skipped | _Failed


# --- frames ------------------------------------------------------------------------------


def _frame(payload: object) -> bytes:
    blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(blob)) + blob


async def _read_frame(reader: asyncio.StreamReader) -> object | None:
    """The next frame, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WorkerError("a worker pipe ended inside a frame") from exc
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        raise WorkerError(f"a worker pipe sent a {size}-byte frame; the limit is {_MAX_FRAME}")
    try:
        blob = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise WorkerError("a worker pipe ended inside a frame") from exc
    payload: object = pickle.loads(blob)  # noqa: S301 - our child or parent, private pipe
    return payload


class _Batcher:
    """Collects items and writes them as one frame at the end of the event-loop turn."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._items: list[object] = []

    def add(self, item: object) -> None:
        if not self._items:
            asyncio.get_running_loop().call_soon(self.flush)
        self._items.append(item)

    def flush(self) -> None:
        if self._items:
            items, self._items = self._items, []
            self._write(_frame(items))


# --- the dispatcher's side ------------------------------------------------------------


class _Worker:
    """One child process, as the dispatcher sees it."""

    def __init__(self, number: int, process: asyncio.subprocess.Process) -> None:
        self.number = number
        self.process = process
        if process.stdin is None or process.stdout is None:  # pragma: no cover - both PIPEs
            raise WorkerError(f"worker {number} has no pipes", worker=number)
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.waiting: dict[int, asyncio.Future[_Result]] = {}
        self.batcher = _Batcher(self.stdin.write)
        self.reader: asyncio.Task[None] | None = None
        self.gone: WorkerError | None = None

    def describe_exit(self) -> str:
        code = self.process.returncode
        if code is None:
            return f"worker {self.number} stopped answering"
        return f"worker {self.number} (pid {self.process.pid}) exited with code {code}"

    async def read_results(self) -> None:
        """Resolve waiting sends as results arrive; fail them all when the worker goes."""
        error: WorkerError | None = None
        try:
            while (frame := await _read_frame(self.stdout)) is not None:
                for seq, result in cast(
                    list[tuple[int, DeliveryResult | Skipped | _Failed]], frame
                ):
                    future = self.waiting.pop(seq, None)
                    if future is not None and not future.done():
                        future.set_result(result)
        except WorkerError as exc:
            error = exc
        except (OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
            error = WorkerError(f"worker {self.number} sent garbage: {exc}", worker=self.number)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5.0)
        if error is None and self.waiting:
            error = WorkerError(
                f"{self.describe_exit()} with {len(self.waiting)} message(s) in flight; "
                "they stay 'sending' until the run is resumed",
                worker=self.number,
            )
        self.gone = error or WorkerError(self.describe_exit(), worker=self.number)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(self.gone)
        self.waiting.clear()


class WorkerPool(AsyncResource):
    """``workers`` processes that compose and send claimed messages for a dispatcher.

    ``concurrency`` connections are split among them; with ``smtp.max_connections``, each
    reopens ``limiter`` (it must pickle: the store's or Redis, not one process's memory), so
    the cap holds over them all. Use ``async with``; the pool starts its processes on entry
    and lets them finish their sends on exit.
    """

    def __init__(
        self,
        settings: SenderSettings,
        smtp: SmtpSettings,
        /,
        *,
        workers: int,
        concurrency: int,
        calendar: CalendarSend | None = None,
        limiter: Limiter | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if not 1 <= workers <= concurrency:
            raise ConfigurationError(
                f"workers must be 1 to concurrency ({concurrency}), not {workers}",
                setting="workers",
            )
        self._settings = settings
        self._calendar = calendar
        self._smtp = replace(smtp, pool_size=math.ceil(concurrency / workers))
        self._limiter = None if smtp.max_connections is None else _shareable(limiter)
        self._count = workers
        self._start_timeout = start_timeout
        self._workers: list[_Worker] = []
        self._seq = itertools.count()

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    async def start(self) -> None:
        """Start the processes and wait until each has built its sender."""
        try:
            await self.spawn()
            await self.ready()
        except BaseException:
            await self.aclose()
            raise

    async def spawn(self) -> None:
        """Start the processes, without waiting for them: each takes a good half second
        of CPU to import and build its sender, which can overlap the run's ingest.
        :meth:`ready` waits for them; the caller closes the pool if either fails."""
        if self._workers:
            return
        level = logging.getLogger("sender").getEffectiveLevel()
        for number in range(1, self._count + 1):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ENTRY,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            worker = _Worker(number, process)
            self._workers.append(worker)
            init = (self._settings, self._smtp, self._calendar, level, self._limiter)
            worker.stdin.write(_frame(init))

    async def ready(self) -> None:
        """Wait until every spawned process has built its sender (at once if they have)."""
        for worker in self._workers:
            if worker.reader is None:
                await self._handshake(worker)

    async def _handshake(self, worker: _Worker) -> None:
        try:
            ready = await asyncio.wait_for(_read_frame(worker.stdout), self._start_timeout)
        except TimeoutError:
            raise WorkerError(
                f"worker {worker.number} did not start within {self._start_timeout:g} s",
                worker=worker.number,
            ) from None
        if isinstance(ready, _Failed):
            raise ready.error(worker.number)
        if ready != "ready":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.process.wait(), 5.0)
            raise WorkerError(
                f"{worker.describe_exit()} before it was ready (its error is above)",
                worker=worker.number,
            )
        worker.reader = asyncio.create_task(worker.read_results())

    async def attempt(self, message: OutboxMessage, /) -> DeliveryResult | Skipped:
        """Send ``message`` through the least busy worker; as :func:`attempt` does in-process."""
        live = [worker for worker in self._workers if worker.gone is None]
        if not live:
            gone = self._workers[0].gone if self._workers else None
            raise gone or WorkerError("the worker pool is not running")
        worker = min(live, key=lambda candidate: len(candidate.waiting))
        seq = next(self._seq)
        future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        worker.waiting[seq] = future
        worker.batcher.add((seq, message))
        result = await future
        if isinstance(result, _Failed):
            raise result.error(worker.number)
        return result

    async def aclose(self) -> None:
        """Close the workers' input; each finishes its sends, closes its pool and exits."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.batcher.flush()
            with contextlib.suppress(OSError, RuntimeError):
                worker.stdin.close()
        for worker in workers:
            try:
                await asyncio.wait_for(worker.process.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                log.warning("%s; killing it", worker.describe_exit())
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                await worker.reader


def _shareable(limiter: Limiter | None) -> Limiter:
    """``limiter``, if a worker process can reopen it (it pickles as where it lives)."""
    try:
        if limiter is not None:
            pickle.dumps(limiter)
            return limiter
    except (TypeError, pickle.PicklingError):
        pass
    raise ConfigurationError(
        "max_connections with workers > 1 needs limits every process shares "
        "(limits = store, or a Redis URL)",
        setting="max_connections",
    )


# --- the worker's side -----------------------------------------------------------------


async def _serve(reader: asyncio.StreamReader, write: Callable[[bytes], None]) -> None:
    """Build the sender from the first frame, then send what arrives until stdin closes."""
    init = await _read_frame(reader)
    if init is None:
        return
    settings, smtp, calendar, level, limiter = cast(
        tuple[SenderSettings, SmtpSettings, CalendarSend | None, int, Limiter | None], init
    )
    logging.basicConfig(
        level=level, stream=sys.stderr, format=f"worker {os.getpid()}: %(levelname)s %(message)s"
    )
    sender = Sender(settings, transport=SmtpTransport(smtp, limiter=limiter))
    settle_gc()
    write(_frame("ready"))
    results = _Batcher(write)
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int, message: OutboxMessage) -> None:
        result: _Result
        try:
            result = await attempt(sender, message, calendar=calendar)
        except SenderError as exc:
            result = _Failed(type(exc).__name__, str(exc))
        except Exception as exc:  # a bug: report it, and let the run stop cleanly
            log.error(
                "sending message %d failed: %s\n%s",
                message.id,
                redact.error(exc),
                redact.frames(exc),
            )
            result = _Failed(type(exc).__name__, str(exc))
        results.add((seq, result))

    try:
        while (frame := await _read_frame(reader)) is not None:
            for seq, message in cast(list[tuple[int, OutboxMessage]], frame):
                task = asyncio.create_task(one(seq, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        results.flush()
    finally:
        try:
            await sender.aclose()
        finally:
            if limiter is not None:
                await limiter.aclose()


class _Output(asyncio.Protocol):
    """The write end of stdout; :attr:`closed` resolves once everything buffered is out."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_FRAME)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a stray print goes to stderr and cannot corrupt the frames
    transport, output = await loop.connect_write_pipe(_Output, out)
    try:
        await _serve(reader, transport.write)
    except SenderError as exc:
        transport.write(_frame(_Failed(type(exc).__name__, str(exc))))
    finally:
        transport.close()  # after the buffered frames are written
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(output.closed, _STOP_TIMEOUT)


def main() -> None:
    """A worker process's entry point; only a :class:`WorkerPool` starts it.

    It ignores SIGINT and SIGTERM: a terminal's Ctrl-C and a service manager's stop reach
    every process of the group, and the dispatcher, which handles them, ends this one by
    closing its input once what is in flight has finished (a worker killed mid-message
    would leave its messages ``sending`` until a resume).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=fast_loop()) as runner:
        runner.run(_main())
