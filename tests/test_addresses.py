"""One canonical key per address: every spelling of a suppressed address is suppressed."""

from __future__ import annotations

import sqlite3
import unicodedata
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sender import DeliveryStatus, Participant, Sender
from sender.addresses import addr_spec, address_key
from sender.bulk.status import run_status
from sender.config import BouncePolicy
from sender.errors import AddressError
from sender.feedback.suppression import apply_bounce
from sender.store import BounceRecord, MessageState, NewRow, Outcome, SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.bulk_helpers import run_once
from tests.helpers import sender_settings

T0 = 1_800_000_000.0
SETTINGS = sender_settings()


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("åse@x.example", "Åse@x.example"),
        ("åse@x.example", "A\u030ase@X.EXAMPLE"),  # decomposed: a + combining ring
        ("idn@xn--bcher-kva.example", "idn@bücher.example"),
        ("idn@xn--bcher-kva.example", "IDN@BÜCHER.example"),
        ("Straße@x.example", "STRASSE@x.example"),  # casefold, not lower
        (" kari@Example.COM ", "KARI@example.com"),
    ],
)
def test_spellings_of_one_address_share_one_key(one: str, other: str) -> None:
    """NFC, case-folded, the domain as IDNA A-labels: two spellings, one key."""
    assert address_key(one) == address_key(other)


def test_different_addresses_keep_different_keys() -> None:
    """Folding never merges two mailboxes that differ in more than spelling."""
    assert address_key("åse@x.example") != address_key("ase@x.example")
    assert address_key("idn@bücher.example") != address_key("idn@bucher.example")


@given(st.text(max_size=40))
def test_the_key_is_total_and_stable(text: str) -> None:
    """Any string has a key, and the key of a key is itself."""
    key = address_key(text)
    assert address_key(key) == key
    assert unicodedata.is_normalized("NFC", key)


def test_a_65_octet_local_part_is_refused_naming_the_field() -> None:
    """RFC 5321 allows 64 octets of local part: 64 passes, 65 is one error naming the field."""
    addr_spec("a" * 64 + "@x.example", field="email")
    with pytest.raises(AddressError, match="local part") as caught:
        addr_spec("a" * 65 + "@x.example", field="email")
    assert caught.value.field == "email"
    with pytest.raises(AddressError, match="local part"):
        addr_spec("å" * 33 + "@x.example", field="email")  # 33 characters, 66 octets


def test_compose_refuses_a_65_octet_local_part() -> None:
    """compose (and so ingest's row check) refuses the address, naming ``email``."""
    person = Participant("b" * 65 + "@x.example", "Kari", "p-1", "PY101")
    with pytest.raises(AddressError) as caught:
        Sender(SETTINGS).compose(person)
    assert caught.value.field == "email"
    assert "\n" not in str(caught.value)


async def test_suppressing_one_spelling_stops_other_spellings_in_a_run(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Suppressed as åse@ and idn@xn--…: the rows Åse@ and idn@bücher are not sent."""
    await store.suppress("åse@x.example", kind="manual", reason="left", now=T0)
    await store.suppress("idn@xn--bcher-kva.example", kind="manual", reason="left", now=T0)
    group = [
        Participant("Åse@x.example", "Åse", "p-1", "PY101"),
        Participant("idn@bücher.example", "Idun", "p-2", "PY101"),
        Participant("kari@x.example", "Kari", "p-3", "PY101"),
    ]
    report = await run_once(smtp_server, store, "r-spell", group)
    assert report.counts[MessageState.SUPPRESSED] == 2
    assert report.counts[MessageState.SENT] == 1
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert list(received) == ["kari@x.example"]


async def test_suppressing_one_spelling_stops_a_single_send(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A single send to Åse@ and to idn@BÜCHER is refused as suppressed."""
    await store.suppress("åse@x.example", kind="manual", reason="left", now=T0)
    await store.suppress("idn@xn--bcher-kva.example", kind="manual", reason="left", now=T0)
    sender = Sender(
        SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()), suppression=store
    )
    async with sender:
        one = await sender.send_invitation(Participant("Åse@x.example", "Åse", "p-1", "C"))
        two = await sender.send_get_link(Participant("idn@BÜCHER.example", "Idun", "p-2", "C"))
    assert (one.status, two.status) == (DeliveryStatus.SUPPRESSED, DeliveryStatus.SUPPRESSED)
    assert smtp_server.messages == ()


async def test_a_suppression_of_either_spelling_is_one_entry(store: SqliteStore) -> None:
    """Adding Åse@ after åse@ is 'already there'; removing either spelling removes it."""
    assert await store.suppress("åse@x.example", kind="manual", reason="a", now=T0)
    assert not await store.suppress("ÅSE@X.example", kind="manual", reason="b", now=T0)
    assert len(await store.suppressions()) == 1
    assert await store.unsuppress("A\u030ase@x.example", reason="fixed", now=T0)
    assert await store.suppressions() == []


def test_an_outbox_of_version_4_is_rekeyed_in_place(tmp_path: Path) -> None:
    """Suppressions and bounces kept under the old lower-casing get the canonical key."""
    path = tmp_path / "outbox.sqlite3"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM suppressions")
        db.executemany(
            "INSERT INTO suppressions (address, kind, reason, since) VALUES (?, 'manual', ?, ?)",
            [
                ("idn@bücher.example", "first", T0),
                ("idn@xn--bcher-kva.example", "second", T0 + 1),
                ("Åse@x.example", "third", T0),
            ],
        )
        db.execute(
            "INSERT INTO bounces (fingerprint, address, kind, at) VALUES ('f', ?, 'hard', ?)",
            ("IDN@Bücher.example", T0),
        )
        db.execute("PRAGMA user_version = 4")
    db.close()
    store = SqliteStore(path)
    try:
        db = sqlite3.connect(path)
        rows = db.execute("SELECT address, reason FROM suppressions ORDER BY address").fetchall()
        (bounced,) = db.execute("SELECT address FROM bounces").fetchone()
        db.close()
    finally:
        store.close()
    assert rows == [("idn@xn--bcher-kva.example", "first"), ("åse@x.example", "third")]
    assert bounced == "idn@xn--bcher-kva.example"


def test_merging_spellings_on_upgrade_keeps_the_strongest_suppression(tmp_path: Path) -> None:
    """Two spellings of one address merge into the complaint, not the older manual entry."""
    path = tmp_path / "outbox.sqlite3"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO suppressions (address, kind, reason, since) VALUES (?, ?, ?, ?)",
            [
                ("kari@x.example", "manual", "asked by phone", T0),
                ("Kari@X.example", "complaint", "marked as spam", T0 + 5),
                ("Ola@x.example", "soft", "3 soft bounces", T0),
                ("ola@x.example", "hard", "550 5.1.1", T0 + 5),
            ],
        )
        db.execute("PRAGMA user_version = 4")
    db.close()
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT address, kind FROM suppressions ORDER BY address").fetchall()
    db.close()
    assert rows == [("kari@x.example", "complaint"), ("ola@x.example", "hard")]


async def test_a_delivery_to_another_spelling_forgives_soft_bounces(store: SqliteStore) -> None:
    """Soft bounces for åse@ are forgiven once mail to Åse@ got through (one key)."""
    for n in range(2):
        record = BounceRecord(f"s{n}", "åse@x.example", "soft", "4.2.2", "full", "mailbox_full", T0)
        await apply_bounce(store, record, policy=BouncePolicy(), now=T0)
    await store.create_run("r", template="invitation", source="t", now=T0)
    await store.add_rows("r", [NewRow(1, Participant("Åse@X.example", "Åse", "p-1", "C"))])
    message = await store.claim("r", "x.example", now=T0, owner="w")
    assert message is not None
    await store.record(message.id, Outcome(MessageState.SENT, at=T0 + 60))
    third = BounceRecord("s9", "ÅSE@x.example", "soft", "4.2.2", "full", "mailbox_full", T0 + 120)
    assert await apply_bounce(store, third, policy=BouncePolicy(), now=T0 + 120) is None
    assert await store.count_bounces("åse@x.example", reasons={"mailbox_full"}, since=T0 - 1) == 1
    people = await store.participants_by_address(["A\u030aSE@x.example"])
    assert [p.participant_id for p in people.values()] == ["p-1"]


async def test_messages_of_an_older_outbox_get_their_key(tmp_path: Path) -> None:
    """Upgrading to schema 5 stores each message's address key, so the claim still matches."""
    path = tmp_path / "outbox.sqlite3"
    async with SqliteStore(path) as first:
        await first.create_run("r", template="invitation", source="t", now=T0)
        await first.add_rows("r", [NewRow(1, Participant("Åse@x.example", "Åse", "p-1", "C"))])
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE messages SET email_key = NULL")
        db.execute("PRAGMA user_version = 4")
    db.close()
    async with SqliteStore(path) as upgraded:
        await upgraded.suppress("åse@x.example", kind="manual", reason="left", now=T0)
        message = await upgraded.claim("r", "x.example", now=T0, owner="w")
        assert message is not None
        assert message.suppressed is not None
    db = sqlite3.connect(path)
    (key,) = db.execute("SELECT email_key FROM messages").fetchone()
    db.close()
    assert key == "åse@x.example"


async def test_another_spelling_in_an_edited_file_is_no_corrected_address(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Running the file again with idn@BÜCHER.example for idn@xn--bcher-kva sends nothing."""
    idun = Participant("idn@xn--bcher-kva.example", "Idun", "p-1", "C")
    await run_once(smtp_server, store, "r-same", [idun])
    edited = replace(idun, email="idn@BÜCHER.example")
    report = await run_once(smtp_server, store, "r-same", [edited])
    assert report.changes is not None
    assert (report.changes.corrected, report.changes.unchanged) == (0, 1)
    assert len(smtp_server.messages) == 1


async def test_a_run_skips_a_row_with_a_65_octet_local_part(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Ingest refuses the row with the reason; the other row is sent."""
    group = [
        Participant("c" * 65 + "@x.example", "Long", "p-1", "C"),
        Participant("kari@x.example", "Kari", "p-2", "C"),
    ]
    report = await run_once(smtp_server, store, "r-long", group)
    assert report.counts[MessageState.SKIPPED] == 1
    assert report.counts[MessageState.SENT] == 1
    ((row, _email, reason),) = await store.skipped("r-long")
    assert row == 1
    assert "local part" in reason


async def test_both_spellings_of_a_domain_share_one_pace_and_one_status_row(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """bücher.example and xn--bcher-kva.example are one receiver: one domain in status."""
    group = [
        Participant("a@Bücher.example", "A", "p-1", "PY101"),
        Participant("b@xn--bcher-kva.example", "B", "p-2", "PY101"),
        Participant("c@XN--BCHER-KVA.example", "C", "p-3", "PY101"),
    ]
    assert len({person.domain for person in group}) == 1
    report = await run_once(smtp_server, store, "r-idn-domain", group)
    assert report.counts[MessageState.SENT] == 3
    status = await run_status(store, "r-idn-domain", now=T0)
    assert [row["domain"] for row in status["domains"]] == ["xn--bcher-kva.example"]
