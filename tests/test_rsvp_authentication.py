"""Calendar answers count only when their From is authenticated: aligned DKIM or a trusted relay.

Replies are signed with sender.compose.dkim using generated keys, published by the test DNS
server on loopback, and checked with dkimpy through sender's resolver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from sender import Participant
from sender.checks.resolve import DnsSettings, Resolver
from sender.cli import main
from sender.compose.dkim import (
    DkimKey,
    DkimSigner,
    aligned,
    generate_key,
    verified_domains,
)
from sender.errors import CheckUnavailable
from sender.feedback.intake import dmarc_passed
from sender.invites import Invitations
from sender.store import SqliteStore
from sender.testing import RecordingSMTPServer
from tests.dns_server import DnsServer
from tests.helpers import (
    EVENT,
    IDENTITY,
    RELAY,
    invitations_for,
    sender_settings,
    smtp_url,
    spawn_inbound,
    spawn_sender,
    write_files,
)
from tests.test_dkim import zone_for

SETTINGS = sender_settings("a" * 32, trusted_authserv_ids=(RELAY,))
ADA = Participant("ada@example.org", "Ada Lovelace", "p-ada", "PY101")
REPLY_TO = "invitation@calendar.example.com"


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    """Signing keys: the attendee's domain, a subdomain of it, and an unrelated mailer."""
    pem = generate_key(bits=1024)
    other = generate_key(bits=1024)
    return {
        "example.org": DkimKey("example.org", "s1", pem),
        "mail.example.org": DkimKey("mail.example.org", "s2", pem),
        "mailer.example.net": DkimKey("mailer.example.net", "s1", other),
    }


@pytest.fixture
async def dns(keys: dict[str, DkimKey]) -> AsyncIterator[DnsServer]:
    async with DnsServer(zone_for(*keys.values())) as server:
        yield server


def reply(uid: str, *, sender: str = "ada@example.org", partstat: str = "ACCEPTED") -> bytes:
    """A METHOD:REPLY for ada, as a calendar client writes it, sent From ``sender``."""
    ics = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "METHOD:REPLY",
            "PRODID:-//Test Client//EN",
            "VERSION:2.0",
            "BEGIN:VEVENT",
            f"UID:{uid}",
            "DTSTAMP:20270223T091427Z",
            "SEQUENCE:0",
            f"ATTENDEE;PARTSTAT={partstat};CN=Ada Lovelace:mailto:ada@example.org",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    return (
        f"From: Ada Lovelace <{sender}>\r\n"
        f"To: <{REPLY_TO}>\r\n"
        f"Subject: Accepted: Python intro\r\n"
        "Date: Tue, 23 Feb 2027 09:14:27 +0000\r\n"
        "Message-ID: <reply-1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/calendar; charset=utf-8; method=REPLY\r\n"
        "\r\n" + ics
    ).encode()


def vouched(data: bytes, *, authserv_id: str = RELAY, domain: str = "example.org") -> bytes:
    """``data`` as a relay that checked DMARC passes it on: its result header on top."""
    header = f"Authentication-Results: {authserv_id};\r\n dmarc=pass (p=none) header.from={domain}"
    return header.encode() + b"\r\n" + data


async def invited(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer
) -> tuple[Invitations, str]:
    """Invitations that invited ada to EVENT, and the event's UID."""
    return await invited_as(smtp_server, store, dns, ADA)


async def invited_as(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer, person: Participant
) -> tuple[Invitations, str]:
    """Invitations that invited ``person`` to EVENT, checking DKIM through ``dns``; the UID."""
    resolver = Resolver(DnsSettings(nameserver=(dns.host, dns.port)))
    invitations = invitations_for(smtp_server, store, SETTINGS, resolver=resolver)
    await invitations.invite(EVENT, [person])
    await invitations.sender.aclose()
    return invitations, (await invitations.resolve(EVENT)).event_uid


async def outcome_of(invitations: Invitations, data: bytes) -> tuple[str, str]:
    (record,) = await invitations.record_reply(data, source="test")
    (answer,) = await invitations.answers(record.uid)
    if record.outcome == "recorded":
        assert answer.status == "ACCEPTED"
    else:
        assert answer.status == "NEEDS-ACTION"  # kept, but counted for nobody
    return record.outcome, record.reason


# Who signs the reply (the key of a domain, under a selector) and what becomes of the answer;
# a reply that is not recorded says why, naming ``reason``.
SIGNED = [
    # A valid DKIM signature by the From's own domain makes the answer count.
    pytest.param("example.org", "s1", "recorded", "", id="the-attendees-domain-counts"),
    # d=mail.example.org aligns with From @example.org: one organizational domain.
    pytest.param("mail.example.org", "s2", "recorded", "", id="a-subdomain-aligns-relaxed"),
    # A valid signature by mailer.example.net does not vouch for From @example.org.
    pytest.param(
        "mailer.example.net",
        "s1",
        "unauthenticated",
        "mailer.example.net",
        id="another-domain-is-kept-as-unauthenticated",
    ),
    # A signature naming a selector DNS does not know verifies nothing.
    pytest.param(
        "example.org", "nokey", "unauthenticated", "", id="an-unpublished-key-does-not-count"
    ),
]


@pytest.mark.parametrize(("domain", "selector", "outcome", "reason"), SIGNED)
async def test_a_signed_reply_counts_only_when_its_signature_aligns_and_verifies(
    smtp_server: RecordingSMTPServer,
    store: SqliteStore,
    dns: DnsServer,
    keys: dict[str, DkimKey],
    domain: str,
    selector: str,
    outcome: str,
    reason: str,
) -> None:
    """A reply DKIM-signed by ``domain``'s key under ``selector`` is ``outcome`` (see the ids)."""
    invitations, uid = await invited(smtp_server, store, dns)
    signed = DkimSigner(replace(keys[domain], selector=selector)).sign(reply(uid))
    recorded, why = await outcome_of(invitations, signed)
    assert recorded == outcome
    if outcome == "recorded":
        assert why == ""
    else:
        assert reason in why


async def test_an_unsigned_reply_is_kept_as_unauthenticated(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer
) -> None:
    """From: ada@... with nothing to vouch for it is kept as unauthenticated."""
    invitations, uid = await invited(smtp_server, store, dns)
    outcome, reason = await outcome_of(invitations, reply(uid))
    assert outcome == "unauthenticated"
    assert "example.org" in reason


async def test_a_signed_reply_with_a_tampered_body_is_kept_as_unauthenticated(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer, keys: dict[str, DkimKey]
) -> None:
    """Changing ACCEPTED to DECLINED after signing breaks the signature: not counted."""
    invitations, uid = await invited(smtp_server, store, dns)
    signed = DkimSigner(keys["example.org"]).sign(reply(uid, partstat="DECLINED"))
    tampered = signed.replace(b"PARTSTAT=DECLINED", b"PARTSTAT=ACCEPTED")
    assert tampered != signed
    assert (await outcome_of(invitations, tampered))[0] == "unauthenticated"


# Which relay (authserv-id) passed DMARC for which From domain, and what becomes of the answer.
VOUCHED = [
    # Authentication-Results from a trusted authserv-id with dmarc=pass vouches for From.
    pytest.param(RELAY, "example.org", "recorded", id="a-trusted-relays-pass-counts"),
    # Anyone can write an Authentication-Results header; only trusted relays' count.
    pytest.param(
        "mx.attacker.example", "example.org", "unauthenticated", id="an-untrusted-id-does-not-count"
    ),
    # The relay's pass for header.from=attacker.example says nothing about @example.org.
    pytest.param(
        RELAY, "attacker.example", "unauthenticated", id="a-pass-for-another-from-does-not-count"
    ),
]


@pytest.mark.parametrize(("authserv_id", "domain", "outcome"), VOUCHED)
async def test_a_relays_dmarc_pass_counts_only_when_trusted_and_for_the_from_domain(
    smtp_server: RecordingSMTPServer,
    store: SqliteStore,
    dns: DnsServer,
    authserv_id: str,
    domain: str,
    outcome: str,
) -> None:
    """A reply ``authserv_id`` says passed DMARC for ``domain`` is ``outcome`` (see the ids)."""
    invitations, uid = await invited(smtp_server, store, dns)
    vouched_for = vouched(reply(uid), authserv_id=authserv_id, domain=domain)
    assert (await outcome_of(invitations, vouched_for))[0] == outcome


async def test_a_trusted_id_below_an_earlier_hop_does_not_count(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer
) -> None:
    """A header claiming the relay's id, written before the relay's Received line, is ignored."""
    invitations, uid = await invited(smtp_server, store, dns)
    forged = vouched(reply(uid))  # written by the sender, claiming to be the relay
    relayed = (
        f"Authentication-Results: {RELAY}; dmarc=fail header.from=example.org\r\n"
        "Received: from attacker.example by mx.relay.example; Tue, 23 Feb 2027\r\n"
    ).encode() + forged
    assert (await outcome_of(invitations, relayed))[0] == "unauthenticated"
    untrusted_on_top = vouched(forged, authserv_id="mx.other.example")
    assert dmarc_passed(untrusted_on_top, trusted_authserv_ids=[RELAY]) == frozenset()


def test_relaxed_alignment_uses_the_organizational_domain() -> None:
    """Alignment is by registrable domain (Public Suffix List), never by a public suffix."""
    assert aligned("example.org", "example.org")
    assert aligned("mail.example.org", "EXAMPLE.org.")
    assert aligned("example.co.uk", "students.example.co.uk")
    assert not aligned("co.uk", "example.co.uk")
    assert not aligned("example.org", "example.net")
    assert not aligned("", "example.org")


def test_authentication_results_comments_and_quotes_are_read_as_rfc_8601_says() -> None:
    """Comments and quoted strings never smuggle in a result; header.from may be an address."""
    data = (
        b"Authentication-Results: MX.Relay.Example 1; spf=pass (dmarc=pass header.from=x.example)"
        b' smtp.mailfrom=a@x.example; dkim=pass header.b="dmarc=pass;";\r\n'
        b" dmarc=pass header.from=ada@example.org\r\n"
        b"From: ada@example.org\r\n\r\nhi\r\n"
    )
    assert dmarc_passed(data, trusted_authserv_ids=["mx.relay.example"]) == {"example.org"}
    assert dmarc_passed(data, trusted_authserv_ids=[]) == frozenset()


# --- over real SMTP, through `sender inbound` ------------------------------------------------


CLI_ENV = {"SENDER_SECRET_KEYS": "rsvp-auth-cli-key-0123456789abcdef", **IDENTITY}


async def run_cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    process = await spawn_sender(cwd, *args, env=CLI_ENV)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def deliver(port: int, data: bytes, *, mail_from: str = "ada@example.org") -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        await client.sendmail(mail_from, [REPLY_TO], data)


@pytest.mark.slow
async def test_replies_over_smtp_to_sender_inbound_count_only_when_authenticated(
    smtp_server: RecordingSMTPServer,
    dns: DnsServer,
    keys: dict[str, DkimKey],
    tmp_path: Path,
    closed_port: int,
) -> None:
    """`sender inbound` counts a DKIM-signed reply and keeps a forged one as unauthenticated."""
    write_files(
        tmp_path,
        {
            "sender.toml": f'trusted_authserv_ids = ["{RELAY}"]\ndns_server = "{dns.address}"\n',
            "event.toml": 'course_id = "PY101"\nsummary = "Python intro"\n'
            'start = "2027-03-27T10:00"\nend = "2027-03-27T12:00"\ntimezone = "Europe/Oslo"\n'
            f'organizer_email = "{REPLY_TO}"\n',
            "people.csv": "email,name,participant_id,course_id\nada@example.org,Ada,p-ada,PY101\n",
        },
    )
    smtp = smtp_url(smtp_server)
    code, stdout, stderr = await run_cli(
        tmp_path, "invite", "event.toml", "people.csv", "--smtp", smtp, "--no-progress"
    )
    assert code == 0, stderr
    (sent,) = smtp_server.messages
    uid = next(
        line.split(":", 1)[1].strip()
        for line in sent.data.decode().splitlines()
        if line.startswith("UID:")
    )
    assert uid in stdout  # the CLI names the UID it sent
    assert uid != EVENT.event_uid  # not the unkeyed hash of course and event id

    process = await spawn_inbound(tmp_path, closed_port, "--reply-address", REPLY_TO, env=CLI_ENV)
    try:
        await deliver(closed_port, reply(uid, partstat="DECLINED"), mail_from="x@attacker.example")
        signed = DkimSigner(keys["example.org"]).sign(reply(uid, partstat="TENTATIVE"))
        await deliver(closed_port, signed)
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 60) == 0
    code, stdout, stderr = await run_cli(tmp_path, "rsvp", "list", uid, "--json")
    assert code == 0, stderr
    (event,) = json.loads(stdout)["events"]
    assert [a["status"] for a in event["attendees"]] == ["TENTATIVE"]
    assert event["not_counted"] == {"unauthenticated": 1}
    code, stdout, _ = await run_cli(tmp_path, "rsvp", "list", uid)
    assert "not counted: 1 unauthenticated" in stdout


# --- DNS that does not answer ------------------------------------------------------------


async def test_a_reply_whose_key_dns_does_not_answer_is_left_to_read_again(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer, keys: dict[str, DkimKey]
) -> None:
    """SERVFAIL for the DKIM key decides nothing and keeps nothing; read later, it counts."""
    invitations, uid = await invited(smtp_server, store, dns)
    signed = DkimSigner(keys["example.org"]).sign(reply(uid))
    async with DnsServer(zone_for(*keys.values()), servfail=("s1._domainkey.example.org",)) as bad:
        failing = Invitations(
            invitations.sender,
            store,
            resolver=Resolver(DnsSettings(nameserver=(bad.host, bad.port))),
        )
        with pytest.raises(CheckUnavailable, match=r"s1\._domainkey\.example\.org \(servfail\)"):
            await failing.record_reply(signed, source="blip")
    assert await store.rsvps(uid) == []
    assert await outcome_of(invitations, signed) == ("recorded", "")


async def test_rsvp_ingest_reads_the_other_files_when_dns_does_not_answer_for_one(
    smtp_server: RecordingSMTPServer,
    store: SqliteStore,
    keys: dict[str, DkimKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sender rsvp ingest` names the file to read again and still records the others."""
    async with DnsServer(
        zone_for(*keys.values()), servfail=("s2._domainkey.mail.example.org",)
    ) as dns:
        _, uid = await invited(smtp_server, store, dns)
        await store.aclose()
        (tmp_path / "sender.toml").write_text(
            f'trusted_authserv_ids = ["{RELAY}"]\ndns_server = "{dns.address}"\n',
            encoding="utf-8",
        )
        (tmp_path / "a.eml").write_bytes(DkimSigner(keys["mail.example.org"]).sign(reply(uid)))
        (tmp_path / "b.eml").write_bytes(vouched(reply(uid, partstat="TENTATIVE")))
        monkeypatch.chdir(tmp_path)
        result = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["rsvp", "ingest", "a.eml", "b.eml", "--json"],
            env={"SENDER_SECRET_KEYS": "a" * 32, "SENDER_HOME": str(tmp_path)},
        )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["recorded"] == 1
    (later,) = summary["unchecked"]
    assert later["source"] == "a.eml"
    assert "read this reply again later" in later["reason"]


async def test_an_idn_from_domain_is_matched_in_its_a_label_form(
    smtp_server: RecordingSMTPServer, store: SqliteStore, dns: DnsServer
) -> None:
    """From @bücher.example and the relay's header.from=xn--bcher-kva.example are one domain."""
    idn_ada = Participant("ada@bücher.example", "Ada", "p-ada", "PY101")
    invitations, uid = await invited_as(smtp_server, store, dns, idn_ada)
    data = reply(uid, sender="ada@bücher.example").replace(
        b"mailto:ada@example.org", "mailto:ada@bücher.example".encode()
    )
    (record,) = await invitations.record_reply(vouched(data, domain="xn--bcher-kva.example"))
    assert (record.outcome, record.reason) == ("recorded", "")


def hostile_header(name: str, value: str, body: bytes) -> bytes:
    """A message whose ``name`` header holds ``value`` (on one line), From a@example.org."""
    line = value.replace("\r", " ").replace("\n", " ").encode("utf-8", "surrogateescape")
    return f"{name}: ".encode() + line + b"\r\nFrom: a@example.org\r\n\r\n" + body


@given(st.text(max_size=300), st.binary(max_size=300))
def test_hostile_authentication_results_never_raise(value: str, body: bytes) -> None:
    """Any header text or body: dmarc_passed answers with a set, never an exception."""
    data = hostile_header("Authentication-Results", value, body)
    assert isinstance(dmarc_passed(data, trusted_authserv_ids=[RELAY]), frozenset)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=200), st.binary(max_size=200))
def test_hostile_dkim_signatures_verify_nothing(tags: str, body: bytes) -> None:
    """Any DKIM-Signature value or message bytes: verified_domains returns (), never raises."""
    data = hostile_header("DKIM-Signature", tags, body)

    async def lookup(name: str) -> str | None:
        return "v=DKIM1; k=rsa; p=MIIB"

    for message in (data, body):
        assert asyncio.run(verified_domains(message, lookup=lookup)) == ()
