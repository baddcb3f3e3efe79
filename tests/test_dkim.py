"""DKIM signing, verified by dkimpy against the public key served by a real DNS server."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable

import dkim
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

import sender.compose.dkim
from sender.client import Sender
from sender.compose.dkim import DkimKey, DkimSigner, dns_record, generate_key
from sender.compose.mime import MessageBuilder
from sender.config import LinkSettings, SenderSettings
from sender.errors import ConfigurationError, InputError
from sender.models import Address, Participant
from sender.testing import ManualClock, RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.dns_server import DnsServer

FROM = Address("kurs@learning.example.com", "Learning Platform")


@pytest.fixture(scope="module")
def pem() -> bytes:
    """One 2048-bit key for the module: generating keys is slow."""
    return generate_key()


@pytest.fixture
def key(pem: bytes) -> DkimKey:
    return DkimKey("learning.example.com", "s1", pem)


def built(**kw: object) -> bytes:
    """An invitation built by the fast MIME path."""
    builder = MessageBuilder(from_address=FROM, reply_to=Address("teacher@learning.example.com"))
    args: dict[str, object] = {
        "to": Address("anna@example.org", "Anna Smith"),
        "subject": "Invitation to the Python course",
        "text": "Hello Anna,\n\nyou are invited.  \n\n",
        "html": "<p>Hello Anna,</p>\n",
    }
    args.update(kw)
    return builder.build(**args).data  # type: ignore[arg-type]


def zone_for(*keys: DkimKey) -> str:
    """Zone lines publishing each key's record, split into 255-octet TXT strings."""
    lines = []
    for item in keys:
        name, value = dns_record(item)
        strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
        lines.append(f'"{name}" TXT {strings}')
    return "\n".join(lines)


def dnsfunc_for(server: DnsServer) -> Callable[..., bytes | None]:
    """dkimpy's DNS hook, asking the test server with dnspython's synchronous resolver."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None  # as dkimpy's own lookup reports a missing record
        return b"".join(answer[0].strings)  # type: ignore[attr-defined]

    return dnsfunc


async def verify(server: DnsServer, message: bytes) -> bool:
    """dkimpy's verdict, in a thread so this loop keeps serving DNS."""
    result = await asyncio.to_thread(dkim.verify, message, dnsfunc=dnsfunc_for(server))
    return bool(result)


def tags(signed: bytes) -> dict[str, str]:
    """The DKIM-Signature tags of a signed message, whitespace removed."""
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    match = re.match(r"DKIM-Signature:(.*?)\r\n(?! )", header + "\r\n", re.DOTALL)
    assert match is not None
    value = re.sub(r"\s+", "", match.group(1))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


async def test_signed_message_verifies_against_key_in_dns(key: DkimKey) -> None:
    """A built and signed message verifies with dkimpy, fetching the key from DNS."""
    signed = DkimSigner(key).sign(built())
    async with DnsServer(zone_for(key)) as server:
        assert await verify(server, signed)
        assert server.queries >= 1


async def test_verification_fails_without_the_published_key(key: DkimKey) -> None:
    """With no record at the selector, the same message does not verify."""
    signed = DkimSigner(key).sign(built())
    async with DnsServer(zone_for(DkimKey("learning.example.com", "other", key.private_key))) as s:
        assert not await verify(s, signed)


def test_signature_covers_and_oversigns_required_headers(key: DkimKey) -> None:
    """h= names From, To, Subject, Date and Message-ID, each once more than it occurs."""
    signature = tags(DkimSigner(key).sign(built()))
    signed = signature["h"].split(":")
    for name in ("from", "to", "subject", "date", "message-id", "reply-to"):
        assert signed.count(name) == 2
    assert signed.count("list-unsubscribe") == 2  # absent, so it cannot be added
    assert signature["v"] == "1"
    assert signature["a"] == "rsa-sha256"
    assert signature["c"] == "relaxed/relaxed"
    assert (signature["d"], signature["s"]) == ("learning.example.com", "s1")


def test_timestamp_comes_from_the_clock(key: DkimKey) -> None:
    """t= is the injected clock's time, in whole seconds."""
    signer = DkimSigner(key, clock=ManualClock(now=1_800_000_000.9))
    assert tags(signer.sign(built()))["t"] == "1800000000"


def test_signature_header_lines_stay_within_78(key: DkimKey) -> None:
    """Every line of the DKIM-Signature header is at most 78 characters."""
    long = DkimKey(
        "a-rather-long-subdomain.of-a-learning-platform.example.com", "sel-2026", key.private_key
    )
    signed = DkimSigner(long, headers=("From", "To", "Subject", "List-Unsubscribe")).sign(built())
    head = signed.split(b"\r\nFrom:", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"Subject: Invitation", b"Subject: Invitatiom"),
        lambda m: m.replace(b"you are invited", b"you are uninvited"),
        lambda m: m.replace(b"\r\n\r\n", b"\r\nFrom: Attacker <x@evil.example>\r\n\r\n", 1),
        lambda m: m.replace(b"\r\n\r\n", b"\r\nCc: spam@evil.example\r\n\r\n", 1).replace(
            b"\r\nReply-To:", b"\r\nX-Old:"
        ),
    ],
    ids=["subject", "body", "added-from", "removed-reply-to"],
)
async def test_tampering_breaks_verification(
    key: DkimKey, tamper: Callable[[bytes], bytes]
) -> None:
    """A changed Subject or body, an added From or a removed Reply-To fails to verify."""
    signed = DkimSigner(key).sign(built())
    tampered = tamper(signed)
    assert tampered != signed
    async with DnsServer(zone_for(key)) as server:
        assert await verify(server, signed)
        assert not await verify(server, tampered)


async def test_relaxed_canonicalization_survives_refolding(key: DkimKey) -> None:
    """Whitespace changes in headers and at line ends, as relays make, still verify."""
    signed = DkimSigner(key).sign(built())
    refolded = signed.replace(b"Subject: Invitation to", b"Subject:  Invitation\r\n\tto")
    refolded = refolded.replace(b"invited.  \r\n", b"invited.\r\n")
    assert refolded != signed
    async with DnsServer(zone_for(key)) as server:
        assert await verify(server, refolded)


async def test_non_ascii_message_signs_and_verifies(key: DkimKey) -> None:
    """RFC 2047 headers, a UTF-8 body and an SMTPUTF8 address sign and verify."""
    builder = MessageBuilder(from_address=Address("kurs@learning.example.com", "Læringsplattform"))
    message = builder.build(
        to=Address("bjørn@example.org", "Bjørn Ødegård"),
        subject="Invitasjon til «Python-kurs» – 山田",
        text="Hei Bjørn,\n\nDu er invitert. Python入門コースへの参加をご案内いたします。\n",
    )
    assert message.smtputf8
    signed = DkimSigner(key).sign(message.data)
    async with DnsServer(zone_for(key)) as server:
        assert await verify(server, signed)
        tampered = signed.replace("bjørn@".encode(), "björn@".encode())
        assert tampered != signed
        assert not await verify(server, tampered)


async def test_generated_key_signs_and_verifies() -> None:
    """generate_key gives a PEM key that signs messages which verify against its record."""
    pem = generate_key(bits=1024)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    key = DkimKey("learning.example.com", "k1024", pem)
    signed = DkimSigner(key).sign(built())
    async with DnsServer(zone_for(key)) as server:
        assert await verify(server, signed)


@pytest.mark.parametrize("bits", [512, 8192])
def test_generate_key_refuses_unsafe_sizes(bits: int) -> None:
    """Keys under 1024 bits are refused, and so are ones many verifiers cannot check."""
    with pytest.raises(ConfigurationError) as info:
        generate_key(bits=bits)
    assert info.value.setting == "dkim"


def test_dns_record_format(key: DkimKey) -> None:
    """The record is s._domainkey.d. with v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>."""
    name, value = dns_record(key)
    assert name == "s1._domainkey.learning.example.com."
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_pem_private_key(key.private_key, None).public_key()
    expected = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert base64.b64decode(value.removeprefix("v=DKIM1; k=rsa; p=")) == expected
    assert dns_record(key.private_key, domain="Example.COM.", selector="s2") == (
        "s2._domainkey.Example.COM.",
        value,
    )


def test_dns_record_needs_domain_and_selector_for_bare_pem(pem: bytes) -> None:
    """A bare PEM without domain and selector is a configuration error."""
    with pytest.raises(ConfigurationError):
        dns_record(pem)


def test_pkcs8_key_signs_like_pkcs1(pem: bytes) -> None:
    """A PKCS#8 PEM of the same key gives the same signature as its PKCS#1 form."""
    pkcs8 = serialization.load_pem_private_key(pem, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    clock = ManualClock()
    message = built(message_id="<fixed@learning.example.com>")
    one = DkimSigner(DkimKey("learning.example.com", "s1", pem), clock=clock).sign(message)
    two = DkimSigner(DkimKey("learning.example.com", "s1", pkcs8), clock=clock).sign(message)
    assert one == two


def test_python_and_openssl_backends_sign_identically(key: DkimKey) -> None:
    """The pure-Python fallback and OpenSSL produce the same (deterministic) signature."""
    clock = ManualClock()
    message = built(message_id="<fixed@learning.example.com>")
    fast = DkimSigner(key, clock=clock, backend="openssl")
    slow = DkimSigner(key, clock=clock, backend="python")
    assert (fast.backend, slow.backend) == ("openssl", "python")
    assert fast.sign(message) == slow.sign(message)


def test_auto_backend_uses_openssl_when_available(key: DkimKey) -> None:
    """With cryptography installed, the default backend is OpenSSL."""
    assert DkimSigner(key).backend == "openssl"


def ec_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    "private_key",
    [
        b"",
        b"not a key",
        b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        "a str, not bytes",
        ec_key(),
    ],
    ids=["empty", "garbage", "truncated", "str", "ec"],
)
@pytest.mark.parametrize("backend", ["openssl", "python"])
def test_bad_key_raises_configuration_error(private_key: bytes, backend: str) -> None:
    """A key that does not parse as RSA is refused when the signer is built."""
    key = DkimKey("learning.example.com", "s1", private_key)
    with pytest.raises(ConfigurationError) as info:
        DkimSigner(key, backend=backend)  # type: ignore[arg-type]
    assert info.value.setting == "dkim"


def test_truncated_real_key_is_refused(pem: bytes) -> None:
    """A real key cut short is refused, not signed with."""
    lines = pem.splitlines()
    cut = b"\n".join([*lines[:10], lines[-1]]) + b"\n"
    with pytest.raises(ConfigurationError):
        DkimSigner(DkimKey("learning.example.com", "s1", cut))


@pytest.mark.parametrize(
    ("domain", "selector"),
    [
        ("", "s1"),
        ("exa mple.com", "s1"),
        ("bücher.example", "s1"),
        ("example.com", ""),
        ("example.com", "s_1"),
        ("example.com", "s1;x=y"),
    ],
)
def test_bad_domain_or_selector_is_refused(pem: bytes, domain: str, selector: str) -> None:
    """Domains must be ASCII names (A-labels) and selectors LDH labels."""
    with pytest.raises(ConfigurationError):
        DkimSigner(DkimKey(domain, selector, pem))


@pytest.mark.parametrize(
    "headers",
    [("To", "Subject"), ("From", "Received"), ("From", "Bad Name"), ("From", "DKIM-Signature")],
)
def test_unsafe_header_lists_are_refused(key: DkimKey, headers: tuple[str, ...]) -> None:
    """From must be signed; trace headers and malformed names must not be."""
    with pytest.raises(ConfigurationError):
        DkimSigner(key, headers=headers)


def test_key_repr_hides_the_private_key(key: DkimKey) -> None:
    """The private key never appears in a DkimKey's repr (logs, tracebacks)."""
    assert "PRIVATE" not in repr(key)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"Subject: no sender\r\n\r\nbody\r\n",
        b"From a@example.com\r\n\x00bad header\r\n\r\nbody\r\n",
        b" From: a@example.com\r\n\r\nbody\r\n",
        "From: a@example.com\r\n\r\nnot bytes\r\n",
    ],
    ids=["empty", "no-from", "malformed", "leading-fold", "str"],
)
def test_unsignable_message_raises_input_error(key: DkimKey, message: bytes) -> None:
    """A message without a From header, or not a message at all, is an InputError."""
    with pytest.raises(InputError) as info:
        DkimSigner(key).sign(message)
    assert info.value.field == "message"


def test_sender_dkim_wraps_dkimpy_not_itself() -> None:
    """Inside sender.compose.dkim, ``import dkim`` is the dkimpy package."""
    assert sender.compose.dkim.dkim is dkim
    assert dkim.__name__ == "dkim"
    assert hasattr(dkim, "rfc822_parse")


BODY_BYTES = st.lists(
    st.sampled_from([b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"a", b"=_", b"\xc3\xa5"])
).map(b"".join)


@given(body=BODY_BYTES)
def test_relaxed_body_matches_dkimpy(body: bytes) -> None:
    """The fast relaxed body canonicalization gives dkimpy's bytes for any body."""
    body = b"\r\n".join(re.split(b"\r?\n", body))  # as rfc822_parse hands it over
    expected = dkim.canonicalization.Relaxed.canonicalize_body(body)
    assert sender.compose.dkim._relaxed_body(body) == expected


@given(
    head=st.sampled_from([b"From: a@b.example", b"Subject: x\r\n\ty", b"", b" folded", b"bad"]),
    rest=BODY_BYTES,
)
def test_message_split_matches_dkimpy(head: bytes, rest: bytes) -> None:
    """Headers and body are split exactly as dkimpy's rfc822_parse splits them."""
    message = head + b"\r\n" + rest
    try:
        expected = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError):
        with pytest.raises(InputError):
            sender.compose.dkim._split(message)
        return
    headers, body = sender.compose.dkim._split(message)
    assert ([list(h) for h in headers], body) == ([list(h) for h in expected[0]], expected[1])


async def test_sender_signs_what_it_sends_when_dkim_is_configured(
    key: DkimKey, smtp_server: RecordingSMTPServer
) -> None:
    """With dkim_* settings every message leaves signed, and the signature verifies."""
    settings = SenderSettings(
        from_address=FROM,
        links=LinkSettings(secret_keys=("d" * 32,), base_url="https://learning.example.com/in"),
        dkim_domain=key.domain,
        dkim_selector=key.selector,
        dkim_private_key=key.private_key,
    )
    sender = Sender(settings, transport=SmtpTransport(smtp_server.smtp_settings()))
    result = await sender.send_get_link(Participant("kari@example.com", "Kari", "p-1", "PY101"))
    await sender.aclose()
    assert result.ok
    (received,) = smtp_server.messages
    assert received.data.startswith(b"DKIM-Signature:")
    async with DnsServer(zone_for(key)) as server:
        assert await verify(server, received.data)


def test_dkim_settings_come_together_or_not_at_all(key: DkimKey) -> None:
    """A selector without a key (or the like) is refused when the settings are built."""
    with pytest.raises(ConfigurationError, match="dkim"):
        SenderSettings(
            from_address=FROM,
            links=LinkSettings(secret_keys=("d" * 32,), base_url="https://x.example/in"),
            dkim_domain=key.domain,
            dkim_selector=key.selector,
        )
