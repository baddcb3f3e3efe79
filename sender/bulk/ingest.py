"""Reading participants into a run's outbox: every row stored, queued or skipped with a reason.

Rows are stored in batches, one transaction each, before anything is sent; a row that
cannot become a message (its address, its locale, the template with its values) is
stored as skipped, with the reason ``sender status`` shows. ``sender run --dry-run`` and
``sender validate`` check rows the same way (:func:`check_rows`) without storing them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import Counter
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass

from sender.addresses import address_key
from sender.bulk.settings import RunSettings
from sender.checks.validate import AddressCheck, Validator, Verdict
from sender.client import CalendarSend, Sender
from sender.compose.mime import envelope_address
from sender.errors import InputError, TemplateError
from sender.models import Participant
from sender.participants import CsvRow
from sender.store import NewRow, RunInfo, Store

__all__ = [
    "DryRun",
    "Ingest",
    "RowChanges",
    "RowChecker",
    "Rows",
    "address_problem",
    "check_rows",
    "numbered",
    "undeliverable",
]

_LOCALE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}$")


@dataclass(frozen=True, slots=True)
class RowChanges:
    """What rows given again to a run (an edited CSV, run again) changed, by participant id.

    ``new`` participants were queued and ``corrected`` ones (same id, another address) get
    a message at the new address; ``unchanged`` ones (a changed name or extra column
    included) get nothing; ``removed`` ones, in the run but no longer in the rows, keep
    whatever they were sent or are still due: nothing is cancelled.
    """

    new: int = 0
    corrected: int = 0
    removed: int = 0
    unchanged: int = 0

    def describe(self) -> str:
        return (
            f"{self.new} new, {self.corrected} address corrected, "
            f"{self.removed} removed from the file, {self.unchanged} unchanged"
        )


class RowChecker:
    """Finds rows that cannot become a message, before they are queued.

    Cheap per row (address and locale syntax). The template is trial-rendered
    once per locale and column set while that succeeds, since rows of one file
    share their columns; a failure is never cached, because it may come from
    this row's values (a NUL in its course name), and one row's problem must
    never be reported for another row. Rows with bad values that get past the
    cached trial are skipped when they are composed, with their own reason.
    """

    def __init__(
        self, sender: Sender, template: str, *, calendar: CalendarSend | None = None
    ) -> None:
        self._sender = sender
        self._template = template
        self._calendar = calendar
        self._rendered: set[tuple[str, frozenset[str]]] = set()

    def problem(self, participant: Participant) -> str | None:
        """Why this participant's row cannot be sent, or None."""
        try:
            envelope_address(participant.email, field="email")
        except InputError as exc:
            return str(exc)
        if not _LOCALE_TAG.match(participant.locale):
            return f"field 'locale': unknown locale {participant.locale!r}"
        locale = self._sender.renderer.resolve_locale(self._template, participant.locale)
        key = (locale, frozenset(participant.vars))
        if key in self._rendered:
            return None
        try:
            self._sender.compose(participant, template=self._template, calendar=self._calendar)
        except (InputError, TemplateError) as exc:
            return str(exc)  # this row's problem: not remembered for the next row
        self._rendered.add(key)
        return None


Rows = Iterable[CsvRow | Participant] | AsyncIterable[Participant]
"""What a run reads: CSV rows, or participants from the library (sync or async)."""


async def numbered(rows: Rows, /) -> AsyncIterable[CsvRow]:
    """Library input (participants, sync or async) numbered from 1, like CSV rows."""
    if isinstance(rows, AsyncIterable):
        number = 0
        async for participant in rows:
            number += 1
            yield CsvRow(number, participant, None, participant.email)
        return
    for number, item in enumerate(rows, start=1):
        if isinstance(item, Participant):
            yield CsvRow(number, item, None, item.email)
        else:
            yield item


class Ingest:
    """Stores a run's rows: a fresh run's by row number, a run given rows again by participant id.

    ``validator`` adds the pre-flight address checks (DNS) a run does when mail really leaves.
    """

    def __init__(
        self,
        sender: Sender,
        store: Store,
        settings: RunSettings,
        /,
        *,
        validator: Validator | None = None,
    ) -> None:
        self._sender = sender
        self._store = store
        self._settings = settings
        self._validator = validator

    async def ingest(self, run: RunInfo, rows: Rows, /) -> RowChanges | None:
        """Store rows not stored yet, in batches; what changed when the run had rows already.

        A fresh run stores every row. A run that has rows (its file run again, perhaps
        edited, or an ingest cut short by a crash) is matched by participant id instead
        of row number (:meth:`reconcile`). A calendar event's run resumes by row number.
        """
        if run.event_uid is None and (run.ingested_through or run.ingest_complete):
            return await self.reconcile(run, rows)
        checker = RowChecker(self._sender, run.template, calendar=self._settings.calendar)
        batch: list[NewRow] = []
        async for row in numbered(rows):
            if row.row <= run.ingested_through:
                continue
            batch.append(self._new_row(row, checker))
            if len(batch) >= self._settings.batch_size:
                await self._store.add_rows(run.run_id, await self._preflight(batch))
                batch = []
                await asyncio.sleep(0)
        await self._store.add_rows(run.run_id, await self._preflight(batch), complete=True)
        return None

    async def reconcile(self, run: RunInfo, rows: Rows, /) -> RowChanges:
        """Rows given again to a run, matched by participant id: store only what is new.

        A participant id not in the run is queued; one whose address changed gets a
        message at the new address; any other change (name, extra columns) sends nothing.
        Each batch is one transaction and a batch stored twice changes nothing, so a
        crash in between loses nothing: running again picks up what is left. Keeps the
        row number of each participant id seen (memory grows with the file).
        """
        checker = RowChecker(self._sender, run.template, calendar=self._settings.calendar)
        before = await self._store.participant_count(run.run_id)
        first_row: dict[str, int] = {}
        new = corrected = unchanged = 0
        batch: list[NewRow] = []

        async def store(*, complete: bool) -> None:
            nonlocal new, corrected, unchanged, batch
            ids = [r.participant.participant_id for r in batch if r.participant is not None]
            stored = await self._store.addresses_of(run.run_id, ids)
            changed: list[NewRow] = []
            for item in batch:
                person = item.participant
                if person is None:
                    changed.append(item)  # a skipped row: stored once per row number
                elif person.participant_id not in stored:
                    new += 1
                    changed.append(item)
                elif address_key(stored[person.participant_id]) != address_key(person.email):
                    corrected += 1
                    changed.append(dataclasses.replace(item, replaces=True))
                else:
                    unchanged += 1
            checked = await self._preflight(changed)
            await self._store.add_rows(run.run_id, checked, complete=complete)
            batch = []

        async for row in numbered(rows):
            item = self._new_row(row, checker)
            if item.participant is not None:
                first = first_row.setdefault(item.participant.participant_id, row.row)
                if first != row.row:
                    reason = f"duplicate of row {first}"
                    item = NewRow(row.row, None, skip_reason=reason, email=item.participant.email)
            batch.append(item)
            if len(batch) >= self._settings.batch_size:
                await store(complete=False)
                await asyncio.sleep(0)
        await store(complete=True)
        removed = max(before - corrected - unchanged, 0)
        return RowChanges(new=new, corrected=corrected, removed=removed, unchanged=unchanged)

    async def _preflight(self, batch: list[NewRow]) -> list[NewRow]:
        """With a validator: rows whose address cannot be delivered become skipped rows.

        Each distinct domain is looked up once (the resolver caches), so a batch
        after the first costs little; DNS that does not answer never skips anyone.
        """
        if self._validator is None:
            return batch
        invalid = await undeliverable(
            self._validator, [new.participant.email for new in batch if new.participant]
        )
        result = []
        for new in batch:
            email = new.participant.email if new.participant is not None else None
            if email is not None and email in invalid:
                new = NewRow(new.row, None, skip_reason=invalid[email], email=email)
            result.append(new)
        return result

    @staticmethod
    def _new_row(row: CsvRow, checker: RowChecker) -> NewRow:
        if row.participant is None:
            reason = str(row.error) if row.error else "unreadable row"
            return NewRow(row.row, None, skip_reason=reason, email=row.email)
        problem = checker.problem(row.participant)
        if problem is not None:
            return NewRow(row.row, None, skip_reason=problem, email=row.participant.email)
        return NewRow(row.row, row.participant)


def address_problem(check: AddressCheck, /) -> str | None:
    """The reason a run skips a row whose address the checks call invalid; None otherwise."""
    if check.verdict is not Verdict.INVALID:
        return None
    hint = f" (did you mean {check.suggestion}?)" if check.suggestion else ""
    return f"field 'email': {check.reason}{hint}"


async def undeliverable(validator: Validator, emails: Iterable[str], /) -> dict[str, str]:
    """The addresses a run would skip before queueing, each with its :func:`address_problem`.

    Each distinct domain is looked up once; DNS that does not answer skips nobody.
    """
    given = list(dict.fromkeys(emails))
    checks = await validator.check_many(given)
    return {
        email: reason
        for email, check in zip(given, checks, strict=True)
        if (reason := address_problem(check)) is not None
    }


@dataclass(frozen=True, slots=True)
class DryRun:
    """What ``sender run --dry-run`` found: which rows would be sent, which skipped and why."""

    ok: int
    skipped: tuple[tuple[int, str, str], ...]  # (row, email, reason)
    fallbacks: Mapping[str, int]  # requested locale -> rows rendered in another locale


def check_rows(
    sender: Sender,
    rows: Iterable[CsvRow],
    /,
    *,
    template: str,
    calendar: CalendarSend | None = None,
    undeliverable: Mapping[str, str] | None = None,
) -> DryRun:
    """Render and check every row as a real run would, without storing or sending.

    The one row check that ``run --dry-run`` and ``validate`` share: unreadable rows,
    address and locale syntax, template problems (this row's values included) and
    duplicate participant ids. ``undeliverable`` (address -> reason, from
    :func:`undeliverable`) adds the address checks a run does when mail really leaves.
    """
    checker = RowChecker(sender, template, calendar=calendar)
    ok = 0
    skipped: list[tuple[int, str, str]] = []
    fallbacks: Counter[str] = Counter()
    seen: dict[tuple[str, str], int] = {}
    for row in rows:
        participant = row.participant
        if participant is None:
            skipped.append((row.row, row.email or "", str(row.error)))
            continue
        problem = checker.problem(participant)
        if problem is None and undeliverable:
            problem = undeliverable.get(participant.email)
        key = (participant.participant_id, template)
        if problem is None and key in seen:
            problem = f"duplicate of row {seen[key]}"
        if problem is None:
            try:
                composed = sender.compose(participant, template=template, calendar=calendar)
            except (InputError, TemplateError) as exc:
                problem = str(exc)
            else:
                if composed.rendered.locale != participant.locale.lower():
                    fallbacks[participant.locale] += 1
        if problem is not None:
            skipped.append((row.row, participant.email, problem))
            continue
        seen[key] = row.row
        ok += 1
    return DryRun(ok=ok, skipped=tuple(skipped), fallbacks=dict(fallbacks))
