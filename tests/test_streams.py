"""Streams, RFC 8058 one-click unsubscribe and the complaint-rate guard, end to end.

A reminder run goes through a real aiosmtpd server on loopback and its messages are
verified by dkimpy against the key on the test DNS server; the unsubscribe URL is POSTed
to a real uvicorn by httpx, the mailto address is mailed to the real inbound listener;
the outbox is SQLite and PostgreSQL alike where it matters.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import dkim
import pytest

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.bulk.status import status_report
from sender.cli.bounces import inbound_handler
from sender.compose.dkim import DkimKey, generate_key
from sender.compose.links import UnsubscribeSigner
from sender.compose.render import Renderer, lint_templates
from sender.config import BouncePolicy, CliConfig, ConfigurationError, StreamSettings, load_config
from sender.errors import InputError, LinkInvalid, TemplateError
from sender.invites import Invitations
from sender.models import Address, DeliveryStatus
from sender.pacing.schedule import Scheduler
from sender.servers.inbound import InboundServer
from sender.service import app
from sender.store import (
    BounceRecord,
    MessageState,
    NewRow,
    Outcome,
    RunState,
    SqliteStore,
    Store,
    open_store,
)
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from sender.vocabulary import Stream
from tests.dns_server import DnsServer
from tests.helpers import IDENTITY, UNLIMITED, cli_with, deliver, sender_settings, served, smtp_url
from tests.test_dkim import dnsfunc_for, zone_for

PUBLIC = "https://mail.learning.example.com"
BOUNCES = "bounce.learning.example.com"
NEWS = "news.learning.example.com"


def person(i: int, *, start: str = "2027-01-11") -> Participant:
    return Participant(
        f"user{i}@school.example", f"User {i}", f"p-{i}", "PY101", "en", {"start_date": start}
    )


@pytest.fixture(scope="module")
def pem() -> bytes:
    """One key for the module: generating keys is slow."""
    return generate_key(bits=1024)


@pytest.fixture(params=["sqlite", "postgres"])
async def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The outbox on each backend."""
    path = tmp_path / "outbox.sqlite3"
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(path)
    else:
        opened = request.getfixturevalue("postgres_backend")(path)
    async with aclosing(opened):
        yield opened


def runner(
    server: RecordingSMTPServer,
    store: Store,
    template: str,
    *,
    pem: bytes | None = None,
    policy: BouncePolicy | None = None,
) -> BulkRunner:
    """A runner for ``template`` sending to ``server``; reminders get their own From and,
    with ``pem``, their own DKIM key (d=news.learning.example.com)."""
    stream = StreamSettings(
        from_address=Address(f"remind@{NEWS}", "Example Academy"),
        **(
            {"dkim_domain": NEWS, "dkim_selector": "r1", "dkim_private_key": pem}
            if pem is not None
            else {}
        ),
    )
    settings = sender_settings(
        public_url=PUBLIC,
        bounce_domain=BOUNCES,
        streams=((Stream.SUBSCRIPTION, stream),),
    )
    sender = Sender(settings, transport=SmtpTransport(server.smtp_settings()))
    return BulkRunner(
        sender,
        store,
        RunSettings(template=template, concurrency=2, bounces=policy or BouncePolicy()),
        scheduler=Scheduler(UNLIMITED),
    )


async def send_run(
    server: RecordingSMTPServer,
    store: Store,
    run_id: str,
    template: str,
    group: list[Participant],
    **options: Any,
) -> Any:
    made = runner(server, store, template, **options)
    try:
        return await made.run(run_id, group)
    finally:
        await made.sender.aclose()


def headers_of(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def token_of(message: email.message.EmailMessage) -> str:
    """The token of the https URL in List-Unsubscribe."""
    match = re.search(rf"<{re.escape(PUBLIC)}/u/([^>]+)>", str(message["List-Unsubscribe"]))
    assert match is not None, message["List-Unsubscribe"]
    return match.group(1)


# --- streams: template.toml ----------------------------------------------------------------


def test_built_ins_are_transactional_and_the_reminder_is_subscription() -> None:
    """Every built-in set but reminder is transactional; reminder declares subscription."""
    renderer = Renderer()
    streams = {name: renderer.stream(name) for name in renderer.names()}
    assert streams.pop("reminder") is Stream.SUBSCRIPTION
    assert set(streams.values()) == {Stream.TRANSACTIONAL}
    assert {"invitation", "get_link", "invite"} <= set(streams)


@pytest.mark.parametrize(
    ("text", "field"),
    [('stream = "newsletter"', "stream must be"), ('stream = "subscription"\nkind = 1', "'kind'")],
)
def test_a_bad_template_toml_is_one_line_naming_file_and_field(
    tmp_path: Path, text: str, field: str
) -> None:
    """A wrong stream or an unknown field is a TemplateError naming digest/template.toml."""
    (tmp_path / "digest" / "en").mkdir(parents=True)
    (tmp_path / "digest" / "template.toml").write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        Renderer(template_dirs=[tmp_path]).stream("digest")
    assert str(caught.value).startswith("digest/template.toml: ")
    assert field in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_reminder_locale_passes_lint() -> None:
    """The reminder renders in en, nb, sv and ja and passes the single-link rule."""
    renderer = Renderer()
    assert renderer.locales("reminder") == ["en", "ja", "nb", "sv"]
    assert lint_templates(renderer, names=["reminder"]) == []


def _digest(tmp_path: Path, body: str) -> Renderer:
    (tmp_path / "digest" / "en").mkdir(parents=True)
    (tmp_path / "digest" / "template.toml").write_text('stream = "subscription"\n')
    (tmp_path / "digest" / "en" / "subject.txt").write_text("Digest\n")
    (tmp_path / "digest" / "en" / "body.txt").write_text(body)
    return Renderer(template_dirs=[tmp_path], include_builtin=False)


def test_the_single_link_rule_lets_through_only_the_exact_unsubscribe_url(
    tmp_path: Path,
) -> None:
    """The unsubscribe URL on the sender's host passes; another URL on that host does not,
    and a subscription set that hides the unsubscribe link fails lint."""
    good = _digest(tmp_path / "good", "{{ link }}\nLeave: {{ unsubscribe_url }}\n")
    assert lint_templates(good) == []
    sneaky = _digest(
        tmp_path / "sneaky",
        "{{ link }}\n{{ unsubscribe_url }}\nhttps://mail.example.net/promo\n",
    )
    findings = [str(f) for f in lint_templates(sneaky)]
    assert any("second site, example.net" in f for f in findings), findings
    hidden = _digest(tmp_path / "hidden", "{{ link }}\n")
    findings = [str(f) for f in lint_templates(hidden)]
    assert findings == ["digest/en: the text part does not show the unsubscribe link"]


# --- the headers ---------------------------------------------------------------------------


async def test_a_reminder_run_carries_both_headers_under_a_dkim_signature(
    smtp_server: RecordingSMTPServer, outbox: Store, pem: bytes
) -> None:
    """Every reminder carries List-Unsubscribe (https and mailto) and List-Unsubscribe-Post,
    from the stream's own From and return-path domain, signed by its own key (h= names
    both) and verified by dkimpy; an invitation from the same sender carries neither."""
    report = await send_run(
        smtp_server, outbox, "remind-1", "reminder", [person(1), person(2)], pem=pem
    )
    assert report.run.stream == "subscription"
    assert report.counts[MessageState.SENT] == 2
    await send_run(smtp_server, outbox, "invite-1", "invitation", [person(1)], pem=pem)
    *reminders, invitation = smtp_server.messages
    key = DkimKey(NEWS, "r1", pem)
    async with DnsServer(zone_for(key)) as dns:
        for received in reminders:
            parsed = headers_of(received.data)
            assert parsed["From"].addresses[0].addr_spec == f"remind@{NEWS}"
            assert received.mail_from.endswith(f"@{BOUNCES}")
            value = str(parsed["List-Unsubscribe"])
            assert re.fullmatch(
                rf"<{re.escape(PUBLIC)}/u/m[0-9a-z]+-[a-z2-7]{{16}}>, "
                rf"<mailto:unsubscribe\+m[0-9a-z]+-[a-z2-7]{{16}}@{re.escape(BOUNCES)}>",
                value,
            ), value
            assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            head = received.data.split(b"\r\n\r\n", 1)[0]
            assert all(len(line) <= 998 for line in head.split(b"\r\n"))
            assert b">,\r\n <mailto:" in head  # folded between the two URIs, so DKIM survives
            signature = re.sub(r"\s+", "", str(parsed["DKIM-Signature"]))
            signed = re.search(r"h=([^;]+)", signature)
            assert signed is not None
            names = signed.group(1).lower().split(":")
            assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(names)
            assert f"d={NEWS}" in signature
            verdict = await asyncio.to_thread(dkim.verify, received.data, dnsfunc=dnsfunc_for(dns))
            assert verdict
            assert f"{PUBLIC}/u/{token_of(parsed)}" in parsed.get_body(("plain",)).get_content()
    plain = headers_of(invitation.data)
    assert plain["List-Unsubscribe"] is None
    assert plain["List-Unsubscribe-Post"] is None
    assert plain["From"].addresses[0].addr_spec == "noreply@learning.example.com"


async def test_a_single_reminder_carries_an_address_token_and_callers_cannot_forge_one(
    smtp_server: RecordingSMTPServer, outbox: Store
) -> None:
    """A single send of the reminder gets an https-only List-Unsubscribe naming the address;
    a caller's own List-Unsubscribe header is refused on any template."""
    made = runner(smtp_server, outbox, "reminder")
    try:
        result = await made.sender.send(person(3), template="reminder")
        assert result.status is DeliveryStatus.ACCEPTED
        parsed = headers_of(smtp_server.messages[-1].data)
        token = token_of(parsed)
        assert str(parsed["List-Unsubscribe"]) == f"<{PUBLIC}/u/{token}>"
        claims = made.sender.composer.unsubscribes.verify(token)
        assert (claims.stream, claims.address) == (Stream.SUBSCRIPTION, "user3@school.example")
        with pytest.raises(InputError, match="List-Unsubscribe itself"):
            made.sender.compose(person(3), headers={"List-Unsubscribe": "<https://x.example/>"})
    finally:
        await made.sender.aclose()


def test_tokens_verify_only_as_issued() -> None:
    """A token verifies with the keys that signed it; an edited one or another key's does
    not, and a transactional stream has no tokens at all."""
    signer = UnsubscribeSigner(("k" * 32,))
    token = signer.for_key(Stream.SUBSCRIPTION, "m42")
    assert signer.verify(token).key == "m42"
    assert signer.verify(token.upper()).key == "m42"  # a case-folding MTA keeps it working
    assert UnsubscribeSigner(("old" * 11, "k" * 32)).verify(token).key == "m42"
    edited = token[:-1] + ("b" if token[-1] != "b" else "c")
    for bad in (token.replace("m42", "m43"), edited, "", "a.e30.x"):
        with pytest.raises(LinkInvalid):
            signer.verify(bad)
    with pytest.raises(LinkInvalid):
        UnsubscribeSigner(("z" * 32,)).verify(token)
    with pytest.raises(InputError):
        signer.for_key(Stream.TRANSACTIONAL, "m42")


# --- the endpoint and the later runs ----------------------------------------------------------


@pytest.fixture
def config(workdir: Path, smtp_server: RecordingSMTPServer) -> CliConfig:
    """sender.toml with a public URL, a bounce domain and unpaced sending to the server."""
    (workdir / "sender.toml").write_text(
        f'rate = 0\ndomain_rate = 0\npublic_url = "{PUBLIC}"\nbounce_domain = "{BOUNCES}"\n'
        f'[streams.subscription]\nfrom = "Example Academy <remind@{NEWS}>"\n',
        encoding="utf-8",
    )
    return load_config(
        config_file=workdir / "sender.toml",
        environ={
            "SENDER_API_KEYS": "admin-key-" + "a" * 24,
            "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20,
            "SENDER_SMTP_URL": smtp_url(smtp_server),
            **IDENTITY,
        },
    )


async def configured_run(
    config: CliConfig,
    server: RecordingSMTPServer,
    run_id: str,
    template: str,
    group: list[Participant],
) -> Any:
    """A run as `sender run` makes it: the configured settings, the configured outbox."""
    store = open_store(config.store)
    sender = Sender(config.sender, transport=SmtpTransport(server.smtp_settings()))
    try:
        made = BulkRunner(
            sender, store, RunSettings(template=template), scheduler=Scheduler(UNLIMITED)
        )
        return await made.run(run_id, group)
    finally:
        await sender.aclose()
        await store.aclose()


async def test_a_cookieless_one_click_post_unsubscribes_from_reminders_only(
    config: CliConfig, smtp_server: RecordingSMTPServer
) -> None:
    """GET /u/TOKEN shows a button and changes nothing; a POST of List-Unsubscribe=One-Click
    with no cookie is 200 and unsubscribes: the next reminder run records the participant
    as unsubscribed, and an invitation still reaches them. A forged token is 400."""
    group = [person(1), person(2)]
    await configured_run(config, smtp_server, "remind-1", "reminder", group)
    token = token_of(headers_of(smtp_server.messages[0].data))
    async with served(app(config, work=False)) as http:
        page = await http.get(f"/u/{token}")
        assert page.status_code == 200
        assert 'method="post"' in page.text
        assert page.headers["cache-control"] == "no-store"
        store = open_store(config.store)
        try:
            assert await store.unsubscribes() == []
        finally:
            await store.aclose()
        edited = token[:-1] + ("b" if token[-1] != "b" else "c")
        forged = await http.post(
            f"/u/{edited}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert forged.status_code == 400
        wrong_body = await http.post(f"/u/{token}", content=b"hello=1")
        assert wrong_body.status_code == 400
        http.cookies.clear()
        done = await http.post(
            f"/u/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200, done.text
        assert "set-cookie" not in done.headers
    first = str(smtp_server.messages[0].recipients[0])
    smtp_server.clear()
    again = await configured_run(config, smtp_server, "remind-2", "reminder", group)
    assert again.counts[MessageState.UNSUBSCRIBED] == 1
    assert again.counts[MessageState.SENT] == 1
    assert [m.recipients[0] for m in smtp_server.messages] == [
        p.email for p in group if p.email != first
    ]
    smtp_server.clear()
    invited = await configured_run(config, smtp_server, "invite-1", "invitation", group)
    assert invited.counts[MessageState.SENT] == 2
    assert first in [m.recipients[0] for m in smtp_server.messages]
    store = open_store(config.store)
    try:
        (left,) = await store.unsubscribes()
        assert (left.address, left.stream, left.how) == (first, "subscription", "one-click")
        events = [e for e in await store.hook_events() if e.type == "address.unsubscribed"]
        assert [e.data["email"] for e in events] == [first]
        record = await store.lookup("remind-2", "p-1" if first == group[0].email else "p-2")
        assert record is not None
        assert record.state is MessageState.UNSUBSCRIBED
    finally:
        await store.aclose()


async def test_a_multipart_one_click_post_unsubscribes_too(
    config: CliConfig, smtp_server: RecordingSMTPServer
) -> None:
    """RFC 8058 allows the field as multipart/form-data: that POST unsubscribes as well."""
    await configured_run(config, smtp_server, "remind-1", "reminder", [person(5)])
    token = token_of(headers_of(smtp_server.messages[0].data))
    body = (
        b'--b0\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--b0--\r\n"
    )
    async with served(app(config, work=False)) as http:
        done = await http.post(
            f"/u/{token}",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=b0"},
        )
    assert done.status_code == 200
    store = open_store(config.store)
    try:
        (left,) = await store.unsubscribes()
        assert (left.address, left.how) == ("user5@school.example", "one-click")
    finally:
        await store.aclose()


async def test_a_single_send_of_a_reminder_skips_an_unsubscribed_address(
    smtp_server: RecordingSMTPServer, outbox: Store
) -> None:
    """With the outbox, a single reminder to an unsubscribed address is not sent
    (unsubscribed); a single invitation to it is."""
    await outbox.unsubscribe(
        "user4@school.example", stream="subscription", how="one-click", now=0.0
    )
    made = runner(smtp_server, outbox, "reminder")
    try:
        reminder = await made.sender.send(person(4), template="reminder")
        invitation = await made.sender.send(person(4), template="invitation")
    finally:
        await made.sender.aclose()
    assert reminder.status is DeliveryStatus.UNSUBSCRIBED
    assert invitation.status is DeliveryStatus.ACCEPTED
    assert len(smtp_server.messages) == 1


async def test_the_mailto_address_unsubscribes_through_the_inbound_listener(
    config: CliConfig, smtp_server: RecordingSMTPServer, tmp_path: Path
) -> None:
    """Mail to unsubscribe+TOKEN@ the bounce domain, taken by the inbound listener, leaves
    the stream (how: mailto); a forged token changes nothing and is kept for a person."""
    await configured_run(config, smtp_server, "remind-1", "reminder", [person(1)])
    parsed = headers_of(smtp_server.messages[0].data)
    mailto = re.search(r"<mailto:([^>]+)>", str(parsed["List-Unsubscribe"]))
    assert mailto is not None
    store = open_store(config.store)
    sender = Sender(config.sender)
    try:
        handler = inbound_handler(config, store, sender, Invitations(sender, store))
        async with InboundServer(
            bounce_domain=BOUNCES, on_mail=handler, keep_dir=tmp_path / "inbound"
        ) as listener:
            forged = mailto.group(1).replace("-", "-x", 1)
            await deliver(
                listener.port,
                forged,
                b"Subject: unsubscribe\r\n\r\n\r\n",
                mail_from="user1@school.example",
            )
            assert await store.unsubscribes() == []
            assert listener.for_people == 1
            await deliver(
                listener.port,
                mailto.group(1),
                b"Subject: unsubscribe\r\n\r\n\r\n",
                mail_from="user1@school.example",
            )
        (left,) = await store.unsubscribes()
        assert (left.address, left.stream, left.how) == (
            "user1@school.example",
            "subscription",
            "mailto",
        )
    finally:
        await store.aclose()


# --- the complaint-rate guard ------------------------------------------------------------------


async def complaints(store: Store, run_id: str, count: int, *, at: float) -> None:
    """``count`` spam complaints about messages of ``run_id``, as intake keeps them."""
    for i in range(count):
        record = await store.lookup(run_id, f"p-{i}")
        assert record is not None
        await store.add_bounce(
            BounceRecord(
                fingerprint=f"arf-{run_id}-{i}",
                address=record.email,
                kind="complaint",
                status=None,
                diagnostic="abuse report",
                reason="complaint",
                at=at,
                message=record.id,
            )
        )


POLICY = BouncePolicy(complaint_min_delivered=300)


async def test_a_complaint_rate_above_the_pause_line_pauses_the_streams_runs(
    smtp_server: RecordingSMTPServer, outbox: Store
) -> None:
    """2 complaints for 400 delivered reminders (0.5% > 0.3%): the next reminder run pauses
    before sending, with the reason; an invitation run goes on; status says pause."""
    group = [person(i) for i in range(400)]
    await send_run(smtp_server, outbox, "remind-1", "reminder", group, policy=POLICY)
    await complaints(outbox, "remind-1", 2, at=time.time())
    smtp_server.clear()
    paused = await send_run(smtp_server, outbox, "remind-2", "reminder", group[:5], policy=POLICY)
    assert paused.run.state is RunState.PAUSED
    reason = paused.run.paused_reason or ""
    assert reason.startswith("complaint rate 0.50% for subscription mail: 2 complaint(s) for 400")
    assert smtp_server.messages == ()
    invited = await send_run(
        smtp_server, outbox, "invite-1", "invitation", group[:3], policy=POLICY
    )
    assert invited.run.state is RunState.DONE
    data = await status_report(
        outbox,
        "remind-2",
        now=time.time(),
        policy=POLICY,
        groups={},
        domains=sender_settings().sending_domains(),
    )
    levels = {(r["scope"], r["name"]): r["level"] for r in data["complaints"]}
    assert levels[("stream", "subscription")] == "pause"


async def test_a_complaint_rate_between_the_lines_warns_and_sends(
    smtp_server: RecordingSMTPServer, outbox: Store
) -> None:
    """1 complaint for 400 delivered (0.25%): status warns for the stream and its sending
    domain, and the next reminder run still sends; below the minimum volume nothing is judged."""
    group = [person(i) for i in range(400)]
    await send_run(smtp_server, outbox, "remind-1", "reminder", group, policy=POLICY)
    await complaints(outbox, "remind-1", 1, at=time.time())
    again = await send_run(smtp_server, outbox, "remind-2", "reminder", group[:3], policy=POLICY)
    assert again.run.state is RunState.DONE
    data = await status_report(
        outbox, None, now=time.time(), policy=POLICY, groups={}, domains={"subscription": NEWS}
    )
    rates = {(r["scope"], r["name"]): (r["level"], r["complaints"]) for r in data["complaints"]}
    assert rates[("stream", "subscription")] == ("warn", 1)
    assert rates[("domain", NEWS)] == ("warn", 1)
    strict = BouncePolicy(complaint_min_delivered=1000)
    data = await status_report(outbox, None, now=time.time(), policy=strict, groups={}, domains={})
    assert {r["level"] for r in data["complaints"]} == {"too_few"}


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "setting"),
    [
        ('[streams.newsletter]\nfrom = "a@b.example"', "streams.newsletter"),
        (
            '[streams.subscription]\nfrom_address = "a@b.example"',
            "streams.subscription.from_address",
        ),
        ('[streams.subscription]\ndkim_domain = "b.example"', "streams"),
        ('public_url = "http://mail.example.org"', "public_url"),
        ('public_url = "https://mail.example.org/?x=1"', "public_url"),
    ],
)
def test_bad_stream_settings_are_one_line_naming_the_key(
    workdir: Path, toml: str, setting: str
) -> None:
    """An unknown stream, an unknown stream key, half a DKIM setting or a public_url that is
    not https is refused naming the key."""
    (workdir / "sender.toml").write_text(toml + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_config(config_file=workdir / "sender.toml")
    assert caught.value.setting == setting
    assert "\n" not in str(caught.value)


def test_a_reminder_without_public_url_is_refused_naming_it() -> None:
    """Composing subscription mail without public_url names the setting."""
    sender = Sender(sender_settings())
    with pytest.raises(ConfigurationError) as caught:
        sender.compose(person(1), template="reminder")
    assert caught.value.setting == "public_url"


def test_sender_status_warns_of_a_complaint_rate_between_the_lines(workdir: Path) -> None:
    """2 complaints for 1,000 delivered reminders (0.2%): `sender status` prints the
    warning for the stream, and --json lists it with level warn."""
    home = workdir / "home"
    asyncio.run(_delivered_with_complaints(home / "outbox.sqlite3", delivered=1000, complained=2))
    cli = cli_with(SENDER_HOME=str(home))
    data = json.loads(cli("status", "--json").output)
    (stream,) = [r for r in data["complaints"] if r["scope"] == "stream"]
    assert (stream["name"], stream["level"], stream["delivered"]) == ("subscription", "warn", 1000)
    printed = cli("status").output
    assert (
        "complaint rate 0.20% for subscription mail: 2 complaint(s) for 1000 delivered" in printed
    )


async def _delivered_with_complaints(path: Path, *, delivered: int, complained: int) -> None:
    """A reminder run of ``delivered`` messages recorded as sent now, ``complained`` of them
    complained about, in the outbox at ``path``."""
    store = SqliteStore(path)
    try:
        await store.create_run(
            "remind-1", template="reminder", source="p.csv", now=time.time(), stream="subscription"
        )
        group = [person(i) for i in range(delivered)]
        await store.add_rows(
            "remind-1", [NewRow(row=i + 2, participant=p) for i, p in enumerate(group)]
        )
        now = time.time()
        claimed = await store.claim_many(
            "remind-1", ["school.example"] * delivered, now=now, owner="w"
        )
        await store.record_many(
            [(m.id, Outcome(MessageState.SENT, at=now)) for m in claimed if m is not None]
        )
        await complaints(store, "remind-1", complained, at=now)
    finally:
        await store.aclose()
