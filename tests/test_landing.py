"""sender.landing: look without changing anything, redeem once, assert for a minute, once.

A real SQLite outbox and a manual clock; the HTTP page is in test_service_landing.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sender import (
    Address,
    LinkExpired,
    LinkInvalid,
    LinkRevoked,
    LinkSettings,
    LinkUsed,
    Participant,
    Sender,
    SenderSettings,
)
from sender.compose.composer import link_purpose
from sender.compose.links import AssertionSigner
from sender.errors import ConfigurationError
from sender.store import SqliteStore
from sender.testing import ManualClock
from tests.helpers import IDENTITY, cli_with

KEY = "landing-test-key-" + "x" * 20
LINKS = LinkSettings(
    secret_keys=(KEY,),
    base_url="https://mail.lms.example.com/login",
    lms_login_url="https://lms.example.com/sso?from=sender",
)
SETTINGS = SenderSettings(from_address=Address("noreply@lms.example.com", "LMS"), links=LINKS)
KARI = Participant(
    email="kari@example.com", name="Kari", participant_id="p-1", course_id="PY101", locale="nb"
)


@pytest.fixture
def clock() -> ManualClock:
    """Time that moves only when the test says."""
    return ManualClock()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite outbox."""
    async with SqliteStore(tmp_path / "outbox.sqlite3") as opened:
        yield opened


@pytest.fixture
def sender(clock: ManualClock, store: SqliteStore) -> Sender:
    """A composing sender over the outbox and the manual clock."""
    return Sender(SETTINGS, clock=clock, store=store)


async def test_inspect_changes_nothing_and_redeem_works_once(sender: Sender) -> None:
    """Any number of inspections leave a login link redeemable; it redeems once, then
    both inspect and redeem say LinkUsed."""
    link = sender.get_link(KARI, next="/courses/PY101")
    for _ in range(7):
        claims = await sender.inspect_link(link.url)
        assert (claims.participant_id, claims.purpose, claims.next) == (
            "p-1",
            "login",
            "/courses/PY101",
        )
    redeemed = await sender.redeem_link(link.token)
    assert redeemed.redirect_url == (
        "https://lms.example.com/sso?from=sender&assertion=" + redeemed.assertion
    )
    assert redeemed.assertion not in repr(redeemed)
    with pytest.raises(LinkUsed):
        await sender.redeem_link(link.url)
    with pytest.raises(LinkUsed):
        await sender.inspect_link(link.token)


async def test_racing_redemptions_of_one_link_let_one_through(sender: Sender) -> None:
    """Ten concurrent redemptions of one login link: exactly one gets an assertion."""
    token = sender.get_link(KARI).token
    results = await asyncio.gather(
        *(sender.redeem_link(token) for _ in range(10)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, LinkUsed) for r in results if isinstance(r, BaseException))


async def test_reusable_purposes_redeem_every_time(sender: Sender) -> None:
    """invitation and get_link links, the mail's purposes, are not one-time."""
    for purpose in ("invitation", "get_link"):
        token = sender.get_link(KARI, purpose=purpose).token
        first = await sender.redeem_link(token)
        second = await sender.redeem_link(token)
        assert first.claims.purpose == second.claims.purpose == purpose
        assert first.assertion != second.assertion


async def test_the_store_keeps_a_digest_never_the_token(sender: Sender, tmp_path: Path) -> None:
    """After a redemption and an assertion check, no row of the outbox holds either."""
    token = sender.get_link(KARI).token
    redeemed = await sender.redeem_link(token)
    await sender.verify_assertion(redeemed.assertion)
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        rows = db.execute("SELECT digest, kind FROM redemptions ORDER BY kind").fetchall()
    finally:
        db.close()
    assert [kind for _digest, kind in rows] == ["assertion", "link"]
    for digest, _kind in rows:
        assert len(digest) == 64
        assert token not in digest
        assert redeemed.assertion not in digest


async def test_an_assertion_is_good_once_for_a_minute(sender: Sender, clock: ManualClock) -> None:
    """It verifies with the link's claims, once; a replay is LinkUsed, a late one
    LinkExpired, one for another purpose LinkInvalid."""
    redeemed = await sender.redeem_link(sender.get_link(KARI, next="/c").token)
    claims = await sender.verify_assertion(redeemed.assertion, purpose="login")
    assert (claims.participant_id, claims.course_id, claims.purpose, claims.next) == (
        "p-1",
        "PY101",
        "login",
        "/c",
    )
    assert claims.expires_at - claims.issued_at == timedelta(seconds=60)
    with pytest.raises(LinkUsed):
        await sender.verify_assertion(redeemed.assertion)

    late = await sender.redeem_link(sender.get_link(KARI, purpose="invitation").token)
    clock.advance(61)
    with pytest.raises(LinkExpired):
        await sender.verify_assertion(late.assertion)

    other = await sender.redeem_link(sender.get_link(KARI, purpose="get_link").token)
    with pytest.raises(LinkInvalid):
        await sender.verify_assertion(other.assertion, purpose="login")


async def test_an_assertion_from_another_key_or_a_link_token_is_refused(
    sender: Sender, store: SqliteStore, clock: ManualClock
) -> None:
    """An assertion signed with a key this sender does not hold is forged; a link token
    is not an assertion (another salt)."""
    stranger = Sender(
        SenderSettings(
            from_address=SETTINGS.from_address,
            links=LinkSettings(secret_keys=("another-key-" + "y" * 20,), base_url=LINKS.base_url),
        ),
        clock=clock,
        store=store,
    )
    foreign = await stranger.redeem_link(stranger.get_link(KARI, purpose="invitation").token)
    with pytest.raises(LinkInvalid):
        await sender.verify_assertion(foreign.assertion)
    with pytest.raises(LinkInvalid):
        await sender.verify_assertion(sender.get_link(KARI).token)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_hostile_assertions_are_link_errors(text: str) -> None:
    """Whatever text arrives as an assertion, the signer refuses it with LinkInvalid."""
    signer = AssertionSigner(LINKS.secret_keys, ttl=LINKS.assertion_ttl)
    with pytest.raises(LinkInvalid):
        signer.verify(text)


def test_the_cli_issues_a_link_for_a_purpose_and_verify_names_it(workdir: Path) -> None:
    """`sender link issue --purpose invitation` makes an invitation link; `sender link
    verify` without --purpose reports its purpose, and with --purpose login refuses it."""
    cli = cli_with(SENDER_SECRET_KEYS=KEY, **IDENTITY)
    issued = cli("link", "issue", "--participant", "p-1", "--course", "PY101",
                 "--purpose", "invitation")  # fmt: skip
    assert issued.exit_code == 0, issued.output
    url = issued.output.strip()
    verified = cli("link", "verify", url, "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["purpose"] == "invitation"
    refused = cli("link", "verify", url, "--purpose", "login", "--json")
    assert refused.exit_code != 0
    assert json.loads(refused.output)["error"] == "invalid"


async def test_links_that_fail_say_why(sender: Sender, clock: ManualClock) -> None:
    """Expired, revoked and damaged links fail inspect and redeem as they fail verify."""
    short = sender.get_link(KARI, ttl=timedelta(seconds=5)).token
    stamped = sender.get_link(KARI, stamp="v1").token
    clock.advance(6)
    with pytest.raises(LinkExpired):
        await sender.inspect_link(short)
    with pytest.raises(LinkExpired):
        await sender.redeem_link(short)
    with pytest.raises(LinkRevoked):
        await sender.redeem_link(stamped)  # the landing page knows no stamp
    assert (await sender.redeem_link(stamped, stamp="v1")).claims.participant_id == "p-1"
    with pytest.raises(LinkInvalid):
        await sender.inspect_link(short[:-4] + "abcd")
    with pytest.raises(LinkInvalid):
        await sender.inspect_link("")


async def test_one_time_use_needs_a_store(clock: ManualClock) -> None:
    """Without a store, a login link cannot be redeemed nor an assertion checked; a
    reusable link still can be inspected and redeemed."""
    bare = Sender(SETTINGS, clock=clock)
    with pytest.raises(ConfigurationError):
        await bare.redeem_link(bare.get_link(KARI).token)
    invitation = bare.get_link(KARI, purpose="invitation").token
    assert (await bare.inspect_link(invitation)).purpose == "invitation"
    redeemed = await bare.redeem_link(invitation)
    with pytest.raises(ConfigurationError):
        await bare.verify_assertion(redeemed.assertion)


async def test_one_time_purposes_are_configurable(store: SqliteStore, clock: ManualClock) -> None:
    """With one_time_purposes = [] a login link is reusable; with ["reset"], a reset link
    is one-time and verify_link finds its purpose without being told."""
    for purposes, purpose, once in (((), "login", False), (("reset",), "reset", True)):
        links = LinkSettings(
            secret_keys=(KEY,), base_url=LINKS.base_url, one_time_purposes=purposes
        )
        sender = Sender(
            SenderSettings(from_address=SETTINGS.from_address, links=links),
            clock=clock,
            store=store,
        )
        token = sender.get_link(KARI, purpose=purpose).token
        assert sender.verify_link(token).purpose == purpose
        await sender.redeem_link(token)
        if once:
            with pytest.raises(LinkUsed):
                await sender.redeem_link(token)
        else:
            await sender.redeem_link(token)


def test_mail_links_carry_their_templates_purpose(sender: Sender) -> None:
    """An invitation's link is `invitation`, a Get Link mail's `get_link`: reusable; both
    verify without naming a purpose, and not as `login`."""
    assert link_purpose("invite_update") == "invitation"
    for template in ("invitation", "get_link"):
        composed = sender.compose(KARI, template=template)
        claims = sender.verify_link(composed.link.url)
        assert claims.purpose == template
        with pytest.raises(LinkInvalid):
            sender.verify_link(composed.link.url, purpose="login")
