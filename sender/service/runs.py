"""``/v1/runs``: enqueue a run (JSON or a CSV upload) and read its status (scope ``runs``).

A run is stored as ``sender enqueue`` stores one; the serving process (unless started
with ``--no-work``) or any ``sender worker`` sends it. Its status is ``sender status
--json``'s object.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Any

from sender.bulk.runner import BulkRunner
from sender.bulk.settings import check_run_id
from sender.bulk.status import status_report
from sender.config import Scope, require_real_identity
from sender.configured import run_settings, sending_options
from sender.errors import InputError
from sender.models import Participant
from sender.participants import CsvRow, read_csv_text
from sender.service.messages import participant_of
from sender.service.schemas import RunRequest
from sender.service.state import Service
from sender.service.web import APIRouter, Query, Request, Response, body_of, either_body, guard

__all__ = ["router"]


def _csv_rows(raw: bytes) -> Iterable[CsvRow]:
    rows = read_csv_text(raw.decode("utf-8", "surrogateescape"), name="the uploaded CSV")
    first = next(rows, None)  # the header is read now: a refused file leaves no run
    return [] if first is None else [first, *rows]


def router(service: Service, /) -> APIRouter:
    routes = APIRouter(prefix="/v1/runs", tags=["runs"], dependencies=[guard(service, Scope.RUNS)])

    @routes.post(
        "",
        status_code=202,
        summary="Enqueue a run",
        openapi_extra=either_body(RunRequest),
        response_model=None,
    )
    async def enqueue(
        request: Request,
        response: Response,
        template: str = Query("invitation", description="With a CSV upload."),
        run_id: str | None = Query(None, description="With a CSV upload."),
    ) -> dict[str, Any]:
        """Store the participants as a run and return ``{run_id, state, total, counts}``.

        JSON (``RunRequest``), or ``text/csv`` with the columns of ``sender run``
        (``?template=&run_id=`` then). Rows a run cannot send are stored as skipped, with
        the reason ``GET /v1/runs/{id}`` shows.
        """
        del response
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        rows: Iterable[CsvRow | Participant]
        if kind == "text/csv":
            rows = _csv_rows(await request.body())
        else:
            given = await body_of(request, RunRequest)
            template, run_id = given.template, given.run_id
            rows = [
                participant_of(person, locale=None, field=f"participants.{index}.email")
                for index, person in enumerate(given.participants)
            ]
        name = check_run_id(run_id) if run_id is not None else f"api-{secrets.token_hex(6)}"
        require_real_identity(service.config)
        store, sender = await service.sending()
        runner = BulkRunner(
            sender,
            store,
            run_settings(service.config, template=template, switch_transport=False),
        )
        stored = await runner.enqueue(
            name, rows, source="api", options=sending_options(service.config)
        )
        counts = {state.value: n for state, n in stored.counts.items()}
        return {
            "run_id": stored.run.run_id,
            "state": stored.run.state.value,
            "total": sum(counts.values()),
            "counts": counts,
        }

    async def report(run_id: str | None, *, all_runs: bool) -> dict[str, Any]:
        store, _sender = await service.sending()
        return await status_report(
            store,
            run_id,
            all_runs=all_runs,
            now=time.time(),
            policy=service.config.bounces,
            groups=service.config.limits.effective_groups(),
            domains=service.config.sender.sending_domains(),
        )

    @routes.get("", summary="List runs")
    async def runs() -> dict[str, Any]:
        """``sender status --all --json``: the newest runs, the workers, sender-side refusals."""
        return await report(None, all_runs=True)

    @routes.get("/{run_id}", summary="A run's status")
    async def status(run_id: str) -> dict[str, Any]:
        """``sender status RUN_ID --json``: state, counts, per-domain progress, skipped
        rows; 404 for a run that does not exist."""
        if not run_id.strip():
            raise InputError("no run named ''", field="run_id")
        return await report(run_id, all_runs=False)

    return routes
