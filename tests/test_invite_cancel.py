"""Cancelling for someone never invited is a one-line error that leaves SEQUENCE alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sender import Participant
from sender.errors import InputError
from sender.invites import Invitations
from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer
from tests.helpers import IDENTITY, cli_with, smtp_url
from tests.test_invites import (
    EVENT,
    SAMPLE_ATTENDEES,
    UID,
    UNPACED,
    event_and_people,
    invited,
    participant,
)


async def stored_sequence(store: SqliteStore) -> int:
    record = await store.get_event(UID)
    assert record is not None
    return record.sequence


async def refused_cancel(
    invitations: Invitations,
    server: RecordingSMTPServer,
    store: SqliteStore,
    who: list[Participant | str],
    *,
    match: str,
    sequence: int,
) -> InputError:
    """cancel(EVENT, who) raises InputError matching ``match``; it sends nothing and leaves
    SEQUENCE at ``sequence``."""
    sent = len(server.messages)
    with pytest.raises(InputError, match=match) as caught:
        await invitations.cancel(EVENT, who)
    await invitations.sender.aclose()
    assert await stored_sequence(store) == sequence
    assert len(server.messages) == sent
    return caught.value


async def test_cancel_for_a_participant_never_invited_is_refused(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """cancel() for someone never invited raises InputError naming them; nothing is sent."""
    invitations, _ = await invited(smtp_server, store, 2)
    stranger = participant("nobody@example.org", 99)
    error = await refused_cancel(
        invitations, smtp_server, store, [stranger], match="p-99", sequence=0
    )
    assert error.field == "participant"
    assert "\n" not in str(error)


async def test_cancel_naming_one_unknown_among_invited_cancels_nobody(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """One unknown id among invited ones refuses the whole cancel: no CANCEL, no bump."""
    invitations, group = await invited(smtp_server, store, 2)
    await refused_cancel(
        invitations, smtp_server, store, [group[0], "p-42"], match="p-42", sequence=0
    )


async def test_cancel_by_participant_id_cancels_that_participant(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """cancel() takes participant ids as well as Participants."""
    invitations, group = await invited(smtp_server, store, 2)
    report = await invitations.cancel(EVENT, ["p-1"])
    await invitations.sender.aclose()
    assert report.sent_now == 1
    assert smtp_server.messages[-1].recipients == (group[1].email,)
    assert await stored_sequence(store) == 1


async def test_cancelling_an_already_cancelled_participant_again_is_refused(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A second cancel for the same participant says so and does not bump SEQUENCE again."""
    invitations, group = await invited(smtp_server, store, 2)
    await invitations.cancel(EVENT, [group[1]])
    await refused_cancel(
        invitations, smtp_server, store, [group[1]], match="already cancelled", sequence=1
    )


# --- the command line ------------------------------------------------------------------


cli = cli_with(
    catch_exceptions=True, SENDER_SECRET_KEYS="invite-cli-key-0123456789abcdef", **IDENTITY
)


def cli_sequence() -> int:
    result = cli("rsvp", "list", UID, "--json")
    assert result.exit_code == 0, result.stderr
    (event,) = json.loads(result.stdout)["events"]
    return int(event["sequence"])


async def test_cli_cancel_for_an_unknown_participant_is_one_line(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """`invite --cancel --participant p-99`: one line naming p-99, exit 1, SEQUENCE unchanged."""
    event_file, csv = event_and_people(workdir, 2)
    smtp = smtp_url(smtp_server)
    invited = await asyncio.to_thread(
        cli, "invite", str(event_file), str(csv), "--smtp", smtp, "--no-progress", *UNPACED
    )
    assert invited.exit_code == 0, invited.stderr
    sent = len(smtp_server.messages)
    assert await asyncio.to_thread(cli_sequence) == 0

    refused = await asyncio.to_thread(
        cli, "invite", str(event_file), "--cancel", "--participant", "p-99", "--smtp", smtp
    )
    assert refused.exit_code == 1
    assert "Traceback" not in refused.output + refused.stderr
    lines_out = [line for line in refused.stderr.splitlines() if line.strip()]
    assert any("p-99" in line for line in lines_out), refused.stderr
    (error,) = [line for line in lines_out if "p-99" in line]
    assert "never invited" in error
    assert await asyncio.to_thread(cli_sequence) == 0
    assert len(smtp_server.messages) == sent

    known = await asyncio.to_thread(
        cli, "invite", str(event_file), "--cancel", "--participant", "p-1", "--smtp", smtp
    )
    assert known.exit_code == 0, known.stderr
    assert await asyncio.to_thread(cli_sequence) == 1
    assert smtp_server.messages[-1].recipients == (list(SAMPLE_ATTENDEES)[1],)
