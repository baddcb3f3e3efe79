"""SmtpTransport against real SMTP servers on loopback, scripted through real replies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sender.config import SmtpSecurity, SmtpSettings
from sender.errors import ConfigurationError
from sender.models import DeliveryStatus, Envelope, RecipientResult, SmtpReply
from sender.testing import ManualClock, RecordingSMTPServer, Stage
from sender.transport import SmtpTransport, Transport
from sender.transport.smtp import MAX_IDLE, wire_payload

SENDER = "bounces+t0k3n@lms.example"
MESSAGE = (
    b"From: LMS <noreply@lms.example>\r\n"
    b"To: ada@example.org\r\n"
    b"Subject: Your course starts\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"the line above is a lone dot\r\n"
)
ACCEPTED = DeliveryStatus.ACCEPTED
TEMPORARY = DeliveryStatus.TEMPORARY
PERMANENT = DeliveryStatus.PERMANENT


def envelope(*recipients: str, smtputf8: bool = False) -> Envelope:
    return Envelope(SENDER, recipients or ("ada@example.org",), smtputf8=smtputf8)


async def send_one(settings: SmtpSettings) -> RecipientResult:
    """Send MESSAGE to one recipient through a transport of its own, closed afterwards."""
    async with SmtpTransport(settings) as transport:
        [result] = await transport.send(envelope(), MESSAGE)
    return result


async def eventually(predicate: Callable[[], bool], *, seconds: float = 2.0) -> None:
    """Wait (bounded) for something the server does after the client has moved on."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def statuses(results: tuple[RecipientResult, ...]) -> list[DeliveryStatus]:
    return [result.status for result in results]


# -- bytes and envelopes --------------------------------------------------------------


async def test_message_arrives_byte_for_byte(smtp_server: RecordingSMTPServer) -> None:
    """Dot-stuffing is transparent: the server gets exactly the bytes sent, 8-bit included."""
    message = MESSAGE + "Grüße, 日本語\r\n".encode()
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(envelope("ada@example.org"), message)
    assert statuses(results) == [ACCEPTED]
    [received] = smtp_server.messages
    assert received.data == message
    assert received.mail_from == SENDER
    assert received.recipients == ("ada@example.org",)
    assert "BODY=8BITMIME" in received.mail_options
    assert f"SIZE={len(message)}" in received.mail_options


async def test_ascii_message_is_not_declared_8bit(smtp_server: RecordingSMTPServer) -> None:
    """BODY=8BITMIME is only claimed for messages that have 8-bit bytes."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        await transport.send(envelope(), MESSAGE)
    assert "BODY=8BITMIME" not in smtp_server.messages[0].mail_options


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
            st.sampled_from([b".", b"..", b". ", b".\x00", b""]),
        ),
        max_size=20,
    )
)
def test_any_body_arrives_unchanged(lines: list[bytes]) -> None:
    """Whatever lines a body has (dots, NULs, 8-bit), the server receives them unchanged."""
    message = b"Subject: x\r\n\r\n" + b"".join(line + b"\r\n" for line in lines)

    async def roundtrip() -> bytes:
        async with RecordingSMTPServer() as server:
            async with SmtpTransport(server.smtp_settings()) as transport:
                results = await transport.send(envelope(), message)
            assert statuses(results) == [ACCEPTED]
            return server.messages[0].data

    assert asyncio.run(roundtrip()) == message


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"\x00", b"\xff"])))
def test_wire_payload_matches_aiosmtplib_for_any_line_endings(parts: list[bytes]) -> None:
    """The fast DATA payload equals aiosmtplib's own, lone CR and LF and leading dots included."""
    message = b"".join(parts)
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"
    assert wire_payload(message) == expected


async def test_mixed_line_endings_arrive_as_crlf(smtp_server: RecordingSMTPServer) -> None:
    """A body with bare LF and CR lines is sent with CRLF, as SMTP requires."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(envelope(), b"Subject: x\n\n.one\rtwo\r\nthree")
    assert statuses(results) == [ACCEPTED]
    assert smtp_server.messages[0].data == b"Subject: x\r\n\r\n.one\r\ntwo\r\nthree\r\n"


async def test_accepted_recipients_keep_the_data_reply(smtp_server: RecordingSMTPServer) -> None:
    """An accepted recipient's result carries the DATA reply, queue id included."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        [result] = await transport.send(envelope(), MESSAGE)
    assert result.reply == SmtpReply(250, "2.0.0", "Ok: queued as Q1")
    assert transport.messages_sent == 1


async def test_empty_envelope_yields_no_results(smtp_server: RecordingSMTPServer) -> None:
    """No recipients, no connection and no results."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        assert await transport.send(Envelope(SENDER, ()), MESSAGE) == ()
    assert smtp_server.connections_opened == 0


async def test_smtp_transport_is_a_transport(smtp_server: RecordingSMTPServer) -> None:
    """SmtpTransport can stand wherever the Transport protocol is expected."""
    transport: Transport = SmtpTransport(smtp_server.smtp_settings())
    async with SmtpTransport(smtp_server.smtp_settings()) as other:
        assert await other.send(envelope(), MESSAGE)
    await transport.aclose()


# -- the pool -------------------------------------------------------------------------


async def test_sequential_sends_reuse_one_connection(smtp_server: RecordingSMTPServer) -> None:
    """Ten sends in a row travel over one persistent connection."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        for _ in range(10):
            await transport.send(envelope(), MESSAGE)
    assert transport.connections_opened == 1
    assert smtp_server.connections_opened == 1
    assert len(smtp_server.messages) == 10


async def test_concurrent_sends_share_at_most_pool_size_connections(
    smtp_server: RecordingSMTPServer,
) -> None:
    """Forty concurrent sends use no more than pool_size connections, and all arrive."""
    smtp_server.delay(Stage.DATA, 0.005)
    async with SmtpTransport(smtp_server.smtp_settings(pool_size=3)) as transport:
        batches = await asyncio.gather(
            *(transport.send(envelope(f"p{n}@example.org"), MESSAGE) for n in range(40))
        )
    assert all(statuses(results) == [ACCEPTED] for results in batches)
    assert transport.connections_opened == smtp_server.connections_opened == 3
    assert transport.messages_sent == len(smtp_server.messages) == 40


async def test_waiting_sends_are_served_in_arrival_order(
    smtp_server: RecordingSMTPServer,
) -> None:
    """With one connection, queued sends go out first come, first served."""
    smtp_server.delay(Stage.DATA, 0.005)
    async with SmtpTransport(smtp_server.smtp_settings(pool_size=1)) as transport:
        await asyncio.gather(
            *(transport.send(envelope(f"p{n}@example.org"), MESSAGE) for n in range(10))
        )
    order = [message.recipients[0] for message in smtp_server.messages]
    assert order == [f"p{n}@example.org" for n in range(10)]


async def test_connection_replaced_after_max_messages(smtp_server: RecordingSMTPServer) -> None:
    """After max_messages_per_connection messages a connection is quit and a new one opened."""
    settings_ = smtp_server.smtp_settings(max_messages_per_connection=2)
    async with SmtpTransport(settings_) as transport:
        for _ in range(5):
            await transport.send(envelope(), MESSAGE)
    per_connection = Counter(message.session.connection_id for message in smtp_server.messages)
    assert sorted(per_connection.values()) == [1, 2, 2]
    assert transport.connections_opened == 3
    await eventually(lambda: smtp_server.open_connections == 0)


async def test_idle_connection_older_than_max_idle_is_replaced(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A connection idle longer than MAX_IDLE (by the injected clock) is quit, not reused."""
    clock = ManualClock()
    async with SmtpTransport(smtp_server.smtp_settings(), clock=clock) as transport:
        await transport.send(envelope(), MESSAGE)
        clock.advance(MAX_IDLE + 1)
        await transport.send(envelope(), MESSAGE)
        assert transport.connections_opened == 2
        await eventually(lambda: smtp_server.open_connections == 1)


async def test_aclose_quits_every_connection(smtp_server: RecordingSMTPServer) -> None:
    """aclose() waits for sends in flight, then QUITs all pooled connections."""
    smtp_server.delay(Stage.DATA, 0.05)
    transport = SmtpTransport(smtp_server.smtp_settings(pool_size=2))
    sends = [asyncio.create_task(transport.send(envelope(), MESSAGE)) for _ in range(2)]
    await asyncio.sleep(0.01)
    await transport.aclose()
    assert all(statuses(task.result()) == [ACCEPTED] for task in sends)
    await eventually(lambda: smtp_server.open_connections == 0)
    with pytest.raises(RuntimeError):
        await transport.send(envelope(), MESSAGE)


async def test_cancelled_send_leaves_the_pool_usable(smtp_server: RecordingSMTPServer) -> None:
    """Cancelling a send mid-dialogue frees its slot and drops its connection."""
    smtp_server.hang(Stage.RCPT, times=1)
    async with SmtpTransport(smtp_server.smtp_settings(pool_size=1)) as transport:
        task = asyncio.create_task(transport.send(envelope(), MESSAGE))
        await eventually(lambda: smtp_server.connections_opened == 1)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert statuses(await transport.send(envelope(), MESSAGE)) == [ACCEPTED]
    assert smtp_server.connections_opened == 2


# -- replies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "enhanced"),
    [
        ("550 5.1.1 User unknown", PERMANENT, "5.1.1"),
        ("451 4.7.1 Try later", TEMPORARY, "4.7.1"),
    ],
)
async def test_rcpt_refusal_is_classified(
    smtp_server: RecordingSMTPServer, reply: str, status: DeliveryStatus, enhanced: str
) -> None:
    """A refused RCPT becomes that recipient's result with code, enhanced status and text."""
    smtp_server.reply(Stage.RCPT, reply)
    result = await send_one(smtp_server.smtp_settings())
    assert result.status is status
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced_status) == (int(reply[:3]), enhanced)
    assert result.reply.text == reply[10:]
    assert smtp_server.messages == ()


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("554 5.7.1 Message rejected as spam", PERMANENT),
        ("452 4.3.1 Insufficient storage", TEMPORARY),
    ],
)
async def test_data_refusal_applies_to_every_accepted_recipient(
    smtp_server: RecordingSMTPServer, reply: str, status: DeliveryStatus
) -> None:
    """A refused DATA is the verdict for all RCPT-accepted recipients; RCPT refusals stay."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="gone@example.org")
    smtp_server.reply(Stage.DATA, reply)
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(
            envelope("a@example.org", "gone@example.org", "b@x.org"), MESSAGE
        )
    assert statuses(results) == [status, PERMANENT, status]
    assert str(results[0].reply) == reply
    assert str(results[1].reply) == "550 5.1.1 User unknown"


async def test_mixed_recipients_get_one_result_each_in_order(
    smtp_server: RecordingSMTPServer,
) -> None:
    """Accepted and refused recipients of one envelope each get their own result, in order."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="gone@example.org")
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="grey@example.org")
    rcpts = ("a@example.org", "gone@example.org", "grey@example.org", "b@example.org")
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(envelope(*rcpts), MESSAGE)
    assert [result.recipient for result in results] == list(rcpts)
    assert statuses(results) == [ACCEPTED, PERMANENT, TEMPORARY, ACCEPTED]
    assert smtp_server.messages[0].recipients == ("a@example.org", "b@example.org")


async def test_all_recipients_refused_skips_data(smtp_server: RecordingSMTPServer) -> None:
    """When every RCPT is refused no DATA is sent, and the connection stays usable."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", times=2)
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        refused = await transport.send(envelope("a@example.org", "b@example.org"), MESSAGE)
        accepted = await transport.send(envelope(), MESSAGE)
    assert statuses(refused) == [PERMANENT, PERMANENT]
    assert statuses(accepted) == [ACCEPTED]
    assert len(smtp_server.messages) == 1
    assert transport.connections_opened == 1


async def test_mail_from_refusal_applies_to_every_recipient(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A refused MAIL FROM is the verdict for all recipients, and the next send still works."""
    smtp_server.reply(Stage.MAIL, "553 5.1.8 Sender domain does not exist", times=1)
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        refused = await transport.send(envelope("a@example.org", "b@example.org"), MESSAGE)
        accepted = await transport.send(envelope(), MESSAGE)
    assert statuses(refused) == [PERMANENT, PERMANENT]
    assert refused[0].reply == SmtpReply(553, "5.1.8", "Sender domain does not exist")
    assert statuses(accepted) == [ACCEPTED]


async def test_greeting_refusal_is_temporary_with_the_reply(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A server that refuses service at the greeting defers the message, keeping its reply."""
    smtp_server.reply(Stage.CONNECT, "554 5.7.1 No SMTP service here")
    result = await send_one(smtp_server.smtp_settings())
    assert result.status is TEMPORARY
    assert result.reply == SmtpReply(554, "5.7.1", "No SMTP service here")


# -- dropped connections, timeouts -----------------------------------------------------


async def test_server_closing_an_idle_connection_is_invisible(
    smtp_server: RecordingSMTPServer,
) -> None:
    """When the server closes a pooled connection, the next send reconnects transparently."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        await transport.send(envelope(), MESSAGE)
        await smtp_server.disconnect_all()
        assert statuses(await transport.send(envelope(), MESSAGE)) == [ACCEPTED]
    assert transport.connections_opened == 2
    assert len(smtp_server.messages) == 2


@pytest.mark.parametrize("failure", ["drop", "421"])
async def test_reused_connection_failing_at_mail_from_is_retried_once(
    smtp_server: RecordingSMTPServer, failure: str
) -> None:
    """A reused connection that dies at MAIL FROM (nothing sent yet) is replaced invisibly."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        await transport.send(envelope(), MESSAGE)
        if failure == "drop":
            smtp_server.drop(Stage.MAIL, times=1)
        else:
            smtp_server.reply(Stage.MAIL, "421 4.4.2 Idle too long, closing", times=1)
        assert statuses(await transport.send(envelope(), MESSAGE)) == [ACCEPTED]
    assert transport.connections_opened == 2
    assert len(smtp_server.messages) == 2


async def test_fresh_connection_dropped_at_mail_from_is_not_retried(
    smtp_server: RecordingSMTPServer,
) -> None:
    """Only a reused connection earns the silent retry; a fresh one reports the loss."""
    smtp_server.drop(Stage.MAIL, times=2)
    result = await send_one(smtp_server.smtp_settings())
    assert (result.status, result.detail) == (TEMPORARY, "connection lost")
    assert smtp_server.connections_opened == 1


async def test_drop_during_data_is_temporary_and_the_pool_recovers(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A connection lost after the message was sent is 'connection lost'; the next send works."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="gone@example.org")
    smtp_server.drop(Stage.DATA, times=1)
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(envelope("a@example.org", "gone@example.org"), MESSAGE)
        again = await transport.send(envelope("a@example.org"), MESSAGE)
    assert [(r.status, r.detail) for r in results] == [
        (TEMPORARY, "connection lost"),
        (PERMANENT, ""),
    ]
    assert statuses(again) == [ACCEPTED]
    assert transport.connections_opened == 2


async def test_connection_dropped_before_the_greeting_is_temporary(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A server that hangs up before greeting yields a temporary 'connection lost'."""
    smtp_server.drop(Stage.CONNECT)
    result = await send_one(smtp_server.smtp_settings())
    assert (result.status, result.detail) == (TEMPORARY, "connection lost")


async def test_tls_connection_dropped_during_data_is_temporary(
    auth_server: RecordingSMTPServer, ca_file: str, smtp_user: str, smtp_password: str
) -> None:
    """A TLS connection lost after the message was sent is 'connection lost', then recovers."""
    auth_server.drop(Stage.DATA)
    settings_ = auth_server.smtp_settings(
        username=smtp_user, password=smtp_password, ca_file=ca_file
    )
    async with SmtpTransport(settings_) as transport:
        [lost] = await transport.send(envelope(), MESSAGE)
        [again] = await transport.send(envelope(), MESSAGE)
    assert (lost.status, lost.detail) == (TEMPORARY, "connection lost")
    assert again.status is ACCEPTED


async def test_server_hanging_up_after_every_message_is_invisible(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A server that closes after each message costs reconnects, never a failed send."""
    smtp_server.drop_after(1)
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        for _ in range(5):
            assert statuses(await transport.send(envelope(), MESSAGE)) == [ACCEPTED]
    assert smtp_server.connections_opened == 5


@pytest.mark.parametrize("stage", [Stage.CONNECT, Stage.MAIL, Stage.RCPT, Stage.DATA])
async def test_server_that_never_replies_times_out(
    smtp_server: RecordingSMTPServer, stage: Stage
) -> None:
    """No reply at any stage becomes a temporary 'timeout' within the configured timeout."""
    smtp_server.hang(stage)
    started = time.monotonic()
    result = await send_one(smtp_server.smtp_settings(timeout=0.3))
    assert (result.status, result.detail) == (TEMPORARY, "timeout")
    assert time.monotonic() - started < 2.0


async def test_slow_reply_times_out_and_the_pool_recovers(
    smtp_server: RecordingSMTPServer,
) -> None:
    """A reply later than the timeout fails that send only; the next one gets through."""
    smtp_server.delay(Stage.RCPT, 3.0, times=1)
    async with SmtpTransport(smtp_server.smtp_settings(timeout=1.0)) as transport:
        [slow] = await transport.send(envelope(), MESSAGE)
        [fast] = await transport.send(envelope(), MESSAGE)
    assert (slow.status, slow.detail) == (TEMPORARY, "timeout")
    assert fast.status is ACCEPTED


async def test_connection_refused_is_temporary(closed_port: int) -> None:
    """A port nobody listens on yields a temporary result naming the refusal."""
    settings_ = SmtpSettings(host="127.0.0.1", port=closed_port, timeout=1.0, local_hostname="t")
    result = await send_one(settings_)
    assert result.status is TEMPORARY
    assert result.detail == f"connection refused: 127.0.0.1:{closed_port}"


# -- TLS and AUTH ------------------------------------------------------------------------


async def test_starttls_with_auth_delivers(
    starttls_server: RecordingSMTPServer, ca_file: str, smtp_user: str, smtp_password: str
) -> None:
    """STARTTLS, verified against the CA, then AUTH, then the message."""
    settings_ = starttls_server.smtp_settings(
        username=smtp_user, password=smtp_password, ca_file=ca_file
    )
    result = await send_one(settings_)
    assert result.status is ACCEPTED
    session = starttls_server.messages[0].session
    assert (session.tls, session.login) == (True, smtp_user)


async def test_implicit_tls_with_auth_delivers(
    tls_server: RecordingSMTPServer, ca_file: str, smtp_user: str, smtp_password: str
) -> None:
    """Implicit TLS from the first byte, then AUTH, then the message."""
    settings_ = tls_server.smtp_settings(
        username=smtp_user, password=smtp_password, ca_file=ca_file
    )
    assert settings_.security is SmtpSecurity.TLS
    async with SmtpTransport(settings_) as transport:
        for _ in range(3):
            [result] = await transport.send(envelope(), MESSAGE)
            assert result.status is ACCEPTED
    session = tls_server.messages[0].session
    assert (session.tls, session.login) == (True, smtp_user)
    assert tls_server.connections_opened == 1


async def test_wrong_password_raises_configuration_error(
    auth_server: RecordingSMTPServer, ca_file: str, smtp_user: str
) -> None:
    """A refused login (535) is a configuration error, raised, never a per-recipient bounce."""
    settings_ = auth_server.smtp_settings(username=smtp_user, password="wrong", ca_file=ca_file)
    async with SmtpTransport(settings_) as transport:
        with pytest.raises(ConfigurationError, match="535") as caught:
            await transport.send(envelope(), MESSAGE)
    assert "wrong" not in str(caught.value)
    assert auth_server.messages == ()


async def test_missing_credentials_raise_configuration_error(
    starttls_server: RecordingSMTPServer, ca_file: str
) -> None:
    """A server demanding AUTH (530 at MAIL FROM) of a client without credentials: setup error."""
    async with SmtpTransport(starttls_server.smtp_settings(ca_file=ca_file)) as transport:
        with pytest.raises(ConfigurationError, match="530"):
            await transport.send(envelope(), MESSAGE)


async def test_required_starttls_missing_raises_configuration_error(
    smtp_server: RecordingSMTPServer,
) -> None:
    """security=starttls refuses to send in the clear to a server that lacks STARTTLS."""
    settings_ = SmtpSettings(
        host=smtp_server.host,
        port=smtp_server.port,
        security=SmtpSecurity.STARTTLS,
        local_hostname="localhost",
    )
    async with SmtpTransport(settings_) as transport:
        with pytest.raises(ConfigurationError, match="STARTTLS"):
            await transport.send(envelope(), MESSAGE)
    assert smtp_server.messages == ()


async def test_untrusted_certificate_raises_configuration_error(
    auth_server: RecordingSMTPServer, smtp_user: str, smtp_password: str
) -> None:
    """A certificate no trusted CA signed stops the run instead of sending."""
    settings_ = auth_server.smtp_settings(username=smtp_user, password=smtp_password)
    async with SmtpTransport(settings_) as transport:
        with pytest.raises(ConfigurationError, match="not trusted") as caught:
            await transport.send(envelope(), MESSAGE)
    assert caught.value.setting == "ca_file"


async def test_unverified_tls_is_allowed_when_asked(
    tls_server: RecordingSMTPServer, smtp_user: str, smtp_password: str
) -> None:
    """validate_certs=False accepts an untrusted certificate (for test relays)."""
    settings_ = tls_server.smtp_settings(
        username=smtp_user, password=smtp_password, validate_certs=False
    )
    result = await send_one(settings_)
    assert result.status is ACCEPTED


async def test_security_none_never_upgrades_to_tls(server_tls_context: object) -> None:
    """security=none sends in plain even when the server offers STARTTLS: no surprises."""
    import ssl

    assert isinstance(server_tls_context, ssl.SSLContext)
    async with RecordingSMTPServer(
        security=SmtpSecurity.STARTTLS, tls_context=server_tls_context
    ) as server:
        settings_ = SmtpSettings(host=server.host, port=server.port, local_hostname="localhost")
        async with SmtpTransport(settings_) as transport:
            [result] = await transport.send(envelope(), MESSAGE)
        assert result.status is ACCEPTED
        assert server.messages[0].session.tls is False


def test_unreadable_ca_file_is_refused_at_construction(tmp_path: object) -> None:
    """A ca_file that cannot be loaded is a configuration error when the transport is built."""
    settings_ = SmtpSettings(
        host="127.0.0.1", port=465, security=SmtpSecurity.TLS, ca_file="/nonexistent/ca.pem"
    )
    with pytest.raises(ConfigurationError) as caught:
        SmtpTransport(settings_)
    assert caught.value.setting == "ca_file"


# -- addresses -------------------------------------------------------------------------


async def test_smtputf8_recipient_is_delivered(smtp_server: RecordingSMTPServer) -> None:
    """An internationalized address goes out with the SMTPUTF8 option."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        [result] = await transport.send(envelope("jörg@exämple.org", smtputf8=True), MESSAGE)
    assert result.status is ACCEPTED
    [received] = smtp_server.messages
    assert received.recipients == ("jörg@exämple.org",)
    assert received.smtputf8


async def test_smtputf8_without_server_support_is_permanent() -> None:
    """A server without SMTPUTF8 cannot take the message: permanent, with a clear detail."""
    async with RecordingSMTPServer(smtputf8=False) as server:
        async with SmtpTransport(server.smtp_settings()) as transport:
            [result] = await transport.send(envelope("jörg@exämple.org", smtputf8=True), MESSAGE)
        assert result.status is PERMANENT
        assert "SMTPUTF8" in result.detail
        assert server.messages == ()


async def test_unsendable_recipient_is_permanent_and_others_still_deliver(
    smtp_server: RecordingSMTPServer,
) -> None:
    """An address that cannot go on an RCPT line fails alone; the rest are delivered."""
    rcpts = (
        "a@example.org",
        "bad address@example.org",
        "jörg@exämple.org",
        "Ada <ada@example.org>",  # would be quietly rewritten to ada@example.org
        "c@example.org, d@example.org",  # would be quietly cut to c@example.org
        "b@example.org",
    )
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(envelope(*rcpts), MESSAGE)
    assert statuses(results) == [ACCEPTED, *[PERMANENT] * 4, ACCEPTED]
    assert {r.detail for r in results[1:5:2] + results[3:5]} == {"invalid recipient address"}
    assert "smtputf8" in results[2].detail
    assert smtp_server.messages[0].recipients == ("a@example.org", "b@example.org")


async def test_unsendable_envelope_sender_is_permanent(smtp_server: RecordingSMTPServer) -> None:
    """A MAIL FROM address with a line break is never sent; every recipient fails for it."""
    async with SmtpTransport(smtp_server.smtp_settings()) as transport:
        results = await transport.send(
            Envelope("x@example.org\r\nRCPT TO:<evil@example.org>", ("a@example.org",)), MESSAGE
        )
    assert [(r.status, r.detail) for r in results] == [(PERMANENT, "invalid envelope sender")]
    assert smtp_server.messages == ()


# -- logging -----------------------------------------------------------------------------


async def test_logs_never_hold_bodies_or_passwords(
    starttls_server: RecordingSMTPServer,
    ca_file: str,
    caplog: pytest.LogCaptureFixture,
    smtp_user: str,
    smtp_password: str,
) -> None:
    """The debug log names recipients redacted, never in full, nor the body, password or token."""
    caplog.set_level(logging.DEBUG, logger="sender.transport")
    settings_ = starttls_server.smtp_settings(
        username=smtp_user, password=smtp_password, ca_file=ca_file
    )
    async with SmtpTransport(settings_) as transport:
        await transport.send(envelope("ada@example.org"), MESSAGE)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sender"))
    assert "a…@example.org" in text
    assert "ada@example.org" not in text
    assert smtp_password not in text
    assert "Your course starts" not in text
    assert "t0k3n" not in text
