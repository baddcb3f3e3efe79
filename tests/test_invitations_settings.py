"""Invitations run with every setting they were given, not a field-by-field copy."""

from __future__ import annotations

import time

from sender import Participant
from sender.bulk.runner import RunSettings
from sender.config import BouncePolicy
from sender.store import RunState, SqliteStore
from sender.testing import RecordingSMTPServer
from tests.helpers import EVENT, hard_bounce, invitations_for, sender_settings

SETTINGS = sender_settings("i" * 32)


async def test_bounce_policy_given_to_invitations_pauses_their_run(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """With a bounce budget of 1 already spent, an invitation run pauses and sends nothing."""
    await store.add_bounce(hard_bounce(time.time()))
    invitations = invitations_for(
        smtp_server, store, SETTINGS, run=RunSettings(concurrency=2, bounces=BouncePolicy(budget=1))
    )
    people = [Participant(f"a{i}@d.example", f"A {i}", f"p-{i}", "PY101") for i in range(3)]
    reports = await invitations.invite(EVENT, people)
    await invitations.sender.aclose()
    assert [report.run.state for report in reports] == [RunState.PAUSED]
    assert "bounce budget" in (reports[0].run.paused_reason or "")
    assert smtp_server.messages == ()
