"""What a run looks like from outside: progress while it sends, status and lists afterwards.

Read-only: nothing here changes a run. ``sender status`` and an LMS's dashboard read the
same plain data (:func:`run_status`, :func:`run_list`); a display gets :class:`Progress`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sender.bulk.settings import RunSettings
from sender.config import BouncePolicy
from sender.errors import InputError
from sender.feedback.suppression import complaint_rates, sender_side_problems
from sender.pacing.schedule import RateLimits, Scheduler
from sender.store import FINAL_STATES, MessageState, RunInfo, RunState, Store

__all__ = [
    "SENDER_SIDE_SINCE",
    "SKIPPED_LISTED",
    "Progress",
    "is_dead_local",
    "limits_report",
    "process_gone",
    "run_list",
    "run_status",
    "status_report",
    "worker_list",
]


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress displays, cheap enough to take several times a second."""

    run_id: str
    total: int
    counts: Mapping[MessageState, int]
    rate: float  # messages finished per second, recently
    eta: float | None  # seconds, from the scheduler's limits
    elapsed: float
    slowest: str | None = None  # the domain (group) whose own limit sets the ETA, if one does

    @property
    def done(self) -> int:
        return sum(self.counts.get(state, 0) for state in FINAL_STATES)


def is_dead_local(owner: str | None) -> bool:
    """True when ``owner`` ("host:pid/runner") is a process on this host that no longer exists.

    A SIGKILLed worker leaves a fresh heartbeat behind; waiting out the lease
    would be pointless when we can see that the process is gone.
    """
    if owner is None:
        return True
    host, _, pid = owner.partition("/")[0].rpartition(":")
    return pid.isdigit() and process_gone(host, int(pid))


def process_gone(host: str, pid: int) -> bool:
    """True when ``pid`` on ``host`` is this host's and no longer exists; False when unsure."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


DRAINER = "/drain-"
"""What the owner name of a worker that drains every run holds (``host:pid/drain-TOKEN``),
so status tells it apart from a ``sender run``, which sends its own run only."""

ENQUEUED = "enqueued"
"""The run option :meth:`~sender.bulk.runner.BulkRunner.enqueue` sets: workers send the run."""

SKIPPED_LISTED = 100
"""How many skipped rows (with reasons) a status lists; ``counts["skipped"]`` has them all."""


def _shown_state(
    run: RunInfo, /, *, now: float, lease_ttl: float, workers: bool
) -> tuple[str, bool]:
    """(the state to show, whether a live process holds the run).

    An active run no process holds is sent by any live ``sender worker`` (``workers``);
    without any, an enqueued run is ``queued`` (waiting for one), and another is
    ``interrupted`` (its ``sender run`` died without pausing or finishing it).
    """
    alive = (
        run.owner is not None
        and not is_dead_local(run.owner)
        and run.heartbeat_at is not None
        and now - run.heartbeat_at < lease_ttl
    )
    state = run.state.value
    if run.state is RunState.ACTIVE and not alive and not workers:
        state = "queued" if run.options.get(ENQUEUED) else "interrupted"
    return state, alive


async def _draining(store: Store, /, *, now: float) -> bool:
    """Whether a live ``sender worker`` (:data:`DRAINER`) is there to send active runs."""
    return any(DRAINER in worker.owner for worker in await store.workers(now))


async def run_list(
    store: Store, /, *, now: float, limit: int = 100, lease_ttl: float = RunSettings().lease_ttl
) -> list[dict[str, object]]:
    """The most recent runs (``sender status --all``): id, template, state, counts, created."""
    listed: list[dict[str, object]] = []
    workers = await _draining(store, now=now)
    for run in await store.runs(limit=limit):
        counts = await store.counts(run.run_id)
        state, _alive = _shown_state(run, now=now, lease_ttl=lease_ttl, workers=workers)
        listed.append(
            {
                "run_id": run.run_id,
                "template": run.template,
                "stream": run.stream,
                "source": run.source,
                "state": state,
                "paused_reason": run.paused_reason,
                "created_at": run.created_at,
                "total": sum(counts.values()),
                "counts": {s.value: counts.get(s, 0) for s in MessageState},
            }
        )
    return listed


async def run_status(
    store: Store,
    run_id: str | None = None,
    /,
    *,
    now: float,
    lease_ttl: float = RunSettings().lease_ttl,
) -> dict[str, object]:
    """Everything ``sender status`` shows, as plain data (the ``--json`` output).

    ``state`` is ``interrupted`` for an active run whose owner is gone (a process on
    this host that no longer exists, or no lease renewal within ``lease_ttl``) while no
    ``sender worker`` is there to send it; ``queued`` for an enqueued run in that case.

    ``skipped`` lists the first :data:`SKIPPED_LISTED` skipped rows as ``{row, email,
    reason}``, both those skipped when read and those skipped when composed.
    """
    run = await store.get_run(run_id) if run_id else await store.latest_run()
    if run is None:
        raise InputError(f"no run named {run_id!r}" if run_id else "no runs yet", field="run_id")
    counts = await store.counts(run.run_id)
    domains = await store.domain_progress(run.run_id)
    next_at = await store.next_attempt_at(run.run_id)
    workers = await _draining(store, now=now)
    state, alive = _shown_state(run, now=now, lease_ttl=lease_ttl, workers=workers)
    return {
        "run_id": run.run_id,
        "template": run.template,
        "stream": run.stream,
        "source": run.source,
        "created_at": run.created_at,
        "state": state,
        "running": alive,
        "owner": run.owner if alive else None,
        "paused_reason": run.paused_reason,
        "paused_since": run.paused_since,
        "ingest_complete": run.ingest_complete,
        "options": dict(run.options),
        "total": sum(counts.values()),
        "counts": {state.value: counts.get(state, 0) for state in MessageState},
        "next_attempt_at": next_at,
        "skipped": [
            {"row": row, "email": email, "reason": reason}
            for row, email, reason in await store.skipped(run.run_id, limit=SKIPPED_LISTED)
        ],
        "domains": [
            {
                "domain": progress.domain,
                "counts": {state.value: n for state, n in progress.counts.items() if n},
                "next_attempt_at": progress.next_attempt_at,
            }
            for progress in domains
        ],
    }


RUNS_SCANNED = 100
"""How many recent runs :func:`worker_list` looks through for the runs a worker holds."""


async def worker_list(store: Store, /, *, now: float) -> list[dict[str, object]]:
    """The workers holding a live lease (a heartbeat within its own ttl), latest first:
    ``sender status``'s ``workers``.

    Each is ``{owner, host, pid, started_at, heartbeat_at, heartbeat_age, runs, exited}``:
    ``heartbeat_age`` is seconds since its last heartbeat; ``runs`` the ids of the runs
    whose lease it holds among the :data:`RUNS_SCANNED` most recent (a worker draining
    claims without a run's lease holds none); ``exited`` is true for a process of this
    host that no longer exists, whose claims go back once its lease expires.
    """
    workers = await store.workers(now)
    if not workers:
        return []
    held: dict[str, list[str]] = {}
    for run in await store.runs(limit=RUNS_SCANNED):
        if run.owner is not None:
            held.setdefault(run.owner, []).append(run.run_id)
    return [
        {
            "owner": worker.owner,
            "host": worker.host,
            "pid": worker.pid,
            "started_at": worker.started_at,
            "heartbeat_at": worker.heartbeat_at,
            "heartbeat_age": round(max(0.0, now - worker.heartbeat_at), 1),
            "runs": held.get(worker.owner, []),
            "exited": process_gone(worker.host, worker.pid),
        }
        for worker in workers
    ]


SENDER_SIDE_SINCE = 24 * 3600.0  # how far back status shows sender-side refusals


async def status_report(
    store: Store,
    run_id: str | None = None,
    /,
    *,
    all_runs: bool = False,
    now: float,
    policy: BouncePolicy,
    groups: Mapping[str, str],
    domains: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``sender status --json``'s object, also ``GET /v1/runs/{id}``: :func:`run_status`
    (with ``all_runs``, ``{runs: [...]}`` from :func:`run_list`), plus the ``workers``
    holding a lease, the ``sender_side`` refusals of the last day, and the ``complaints``:
    each stream's and sending domain's complaint rate over the budget's window, as
    ``{scope, name, streams, delivered, complaints, rate, level}`` with ``level`` ``ok``,
    ``warn`` (above 0.1%), ``pause`` (above 0.3%: bulk runs of the stream pause) or
    ``too_few`` (fewer deliveries than judged); empty without a complaint. ``domains``
    maps each stream to its sending domain."""
    if all_runs:
        data: dict[str, Any] = {"runs": await run_list(store, now=now)}
    else:
        data = await run_status(store, run_id, now=now)
    problems = await sender_side_problems(
        store, since=now - SENDER_SIDE_SINCE, now=now, policy=policy, groups=groups
    )
    rates = await complaint_rates(store, policy=policy, now=now, domains=domains or {})
    return data | {
        "workers": await worker_list(store, now=now),
        "sender_side": [dataclasses.asdict(problem) for problem in problems],
        "complaints": [dataclasses.asdict(rate) | {"rate": rate.rate} for rate in rates],
    }


def limits_report(
    domains: list[dict[str, Any]], limits: RateLimits, /
) -> tuple[list[dict[str, Any]], float | None]:
    """A run's per-domain progress (:func:`run_status`'s ``domains``) against the limits,
    and the ETA in seconds at those limits (None: unknowable; 0: nothing waits).

    Each row is ``{domain, group, limit_per_minute, done, waiting, total}``. The ETA is
    what a fresh scheduler over the waiting messages promises: the configured limits,
    before any backoff a receiving server asks for.
    """
    scheduler = Scheduler(limits)
    rows: list[dict[str, Any]] = []
    waiting: dict[str, int] = {}
    for entry in domains:
        counts = entry["counts"]
        total = sum(counts.values())
        done = sum(counts.get(state, 0) for state in FINAL_STATES)
        left = total - done
        domain = entry["domain"]
        if left:
            waiting[domain] = left
        rows.append(
            {
                "domain": domain,
                "group": scheduler.group(domain),
                "limit_per_minute": scheduler.limit_of(domain),
                "done": done,
                "waiting": left,
                "total": total,
            }
        )
    scheduler.set_pending(waiting)
    return rows, scheduler.eta()
