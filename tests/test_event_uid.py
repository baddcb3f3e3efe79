"""An event's UID is a keyed HMAC nobody can compute from its ids, stable once issued."""

from __future__ import annotations

import time
from dataclasses import replace

from sender import Participant, Sender
from sender.bulk.settings import calendar_of
from sender.client import CalendarSend
from sender.compose.event import event_json
from sender.invites import Invitations
from sender.store import EventRecord, SqliteStore
from sender.testing import RecordingSMTPServer
from tests.helpers import EVENT, invitations_for, sender_settings

OLD_KEY = "old-key-" + "o" * 24
NEW_KEY = "new-key-" + "n" * 24
PEOPLE = [
    Participant("ada@example.org", "Ada", "p-ada", "PY101"),
    Participant("alan@example.org", "Alan", "p-alan", "PY101"),
]


def invitations(server: RecordingSMTPServer, store: SqliteStore, *keys: str) -> Invitations:
    return invitations_for(server, store, sender_settings(*keys))


def uids(server: RecordingSMTPServer) -> list[str]:
    """The UID line of every message's inline calendar, in order sent."""
    return [
        line.split(":", 1)[1].strip()
        for message in server.messages
        for line in message.data.decode().splitlines()
        if line.startswith("UID:")
    ]


async def test_a_new_events_uid_cannot_be_computed_from_its_ids(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """The UID sent is the HMAC under the newest key, not the plain hash of course and event id."""
    sending = invitations(smtp_server, store, OLD_KEY, NEW_KEY)
    await sending.invite(EVENT, PEOPLE)
    await sending.sender.aclose()
    sent = set(uids(smtp_server))
    assert sent == {EVENT.keyed_uid(NEW_KEY)}
    assert EVENT.event_uid not in sent  # the unkeyed form anyone could compute
    assert EVENT.keyed_uid(OLD_KEY) not in sent
    assert (await store.events())[0].uid == EVENT.keyed_uid(NEW_KEY)


async def test_the_uid_stays_the_same_when_the_keys_rotate(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """An update after a new key is added, and a cancel after the old one is dropped, keep it."""
    first = invitations(smtp_server, store, OLD_KEY)
    await first.invite(EVENT, PEOPLE[:1])
    await first.sender.aclose()
    rotated = invitations(smtp_server, store, OLD_KEY, NEW_KEY)
    await rotated.invite(replace(EVENT, location="Room 3.01"), PEOPLE)
    await rotated.sender.aclose()
    retired = invitations(smtp_server, store, NEW_KEY)
    await retired.cancel(EVENT)
    await retired.sender.aclose()
    sent = uids(smtp_server)
    assert len(sent) == 1 + 2 + 2  # invite; update and newcomer; cancel for both
    assert set(sent) == {EVENT.keyed_uid(OLD_KEY)}
    assert [e.uid for e in await store.events()] == [EVENT.keyed_uid(OLD_KEY)]


async def test_an_event_first_sent_with_the_unkeyed_uid_keeps_it(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """An event an earlier version sent (plain-hash UID) is updated and cancelled under it."""
    await store.save_event(
        EventRecord(
            uid=EVENT.event_uid,
            course_id=EVENT.course_id,
            sequence=0,
            fingerprint=EVENT.fingerprint(),
            event=event_json(EVENT),
            cancelled=False,
            changes=(),
            updated_at=time.time(),
        )
    )
    sending = invitations(smtp_server, store, NEW_KEY)
    await sending.invite(replace(EVENT, location="Room 3.01"), PEOPLE[:1])
    await sending.cancel(EVENT)
    await sending.sender.aclose()
    sent = uids(smtp_server)
    assert len(sent) == 2  # the update, then the cancellation
    assert set(sent) == {EVENT.event_uid}


async def test_a_run_stored_before_keyed_uids_resumes_with_its_uid(store: SqliteStore) -> None:
    """A calendar run whose stored event has no UID sends the UID the run names."""
    run, _ = await store.create_run(
        "ev-old",
        template="invite",
        source="event",
        now=time.time(),
        options={"event": event_json(EVENT), "changes": ""},
        event=(EVENT.event_uid, 0, "REQUEST"),
    )
    calendar = calendar_of(run)
    assert calendar is not None
    assert calendar.event.event_uid == EVENT.event_uid
    composed = Sender(sender_settings(NEW_KEY)).compose(PEOPLE[0], calendar=calendar)
    assert f"UID:{EVENT.event_uid}" in composed.message.data.decode().splitlines()


def test_a_single_send_with_an_event_carries_the_keyed_uid() -> None:
    """Sender.compose keys a new event's UID too, so no path sends the computable one."""
    sender = Sender(sender_settings(OLD_KEY, NEW_KEY))
    composed = sender.compose(PEOPLE[0], calendar=CalendarSend(EVENT))
    lines = composed.message.data.decode().splitlines()
    assert f"UID:{EVENT.keyed_uid(NEW_KEY)}" in lines
    assert f"UID:{EVENT.event_uid}" not in lines


def test_a_given_uid_is_used_as_it_is() -> None:
    """An LMS that names the UID itself gets exactly that UID, keyed or not."""
    given = replace(EVENT, uid="lms-42@lms.example.edu")
    assert given.keyed_uid(NEW_KEY) == given.event_uid == "lms-42@lms.example.edu"
