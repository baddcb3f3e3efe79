"""Login codes: the 8 characters beside the link in every login mail, typed on another device.

Mail goes through a real SMTP server on loopback; the code is read out of the delivered
message and checked with ``Sender.verify_code`` against both store backends, over a real
uvicorn (``POST /v1/codes/verify``) and with ``sender code verify``. Time moves only
through the injected clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.compose.codes import ALPHABET, CodeSigner, normalize_code
from sender.compose.render import Renderer, find_link_problems, sample_context
from sender.config import CliConfig, load_config
from sender.errors import CodeInvalid, CodeLocked, ConfigurationError, InputError
from sender.pacing.schedule import Scheduler
from sender.service import app
from sender.store import MessageState, SqliteStore, Store
from sender.testing import ManualClock, RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.helpers import (
    IDENTITY,
    UNLIMITED,
    cli_with,
    run_python,
    sender_settings,
    served,
    smtp_url,
)

SETTINGS = sender_settings()
KARI = Participant("kari@school.example", "Kari Nordmann", "p-17", "PY101")
SHOWN = re.compile(r"^    ([0-9A-Z]{4}-[0-9A-Z]{4})\r?$", re.MULTILINE)
LOCALES = ("en", "nb", "sv", "ja")


# --- what a participant types -----------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    ["7KQ2-M9XD", "7kq2m9xd", " 7kq2 m9xd ", "7KQ2–M9XD", "7kq2-m9xd\n", "７ＫＱ２ーＭ９ＸＤ"],
)
def test_case_spaces_and_dashes_do_not_matter(typed: str) -> None:
    """Lower case, spaces, dashes (an en dash from a phone keyboard, a Japanese IME's long
    mark and full-width letters) read as the code."""
    assert normalize_code(typed) == "7KQ2M9XD"


def test_look_alikes_read_as_crockford_says() -> None:
    """O reads as 0, I and L as 1: the letters the alphabet leaves out for that reason."""
    assert normalize_code("OILo-ilAB") == "0110-11AB".replace("-", "")


@pytest.mark.parametrize(
    "typed", ["", "7KQ2-M9X", "7KQ2-M9XDZ", "7KQ2-M9XU", "7KQ2/M9XD", "7KQ2ßß", "x" * 99]
)
def test_what_cannot_be_a_code_is_one_clear_input_error(typed: str) -> None:
    """Too short, too long, or a character no code has: InputError naming the field."""
    with pytest.raises(InputError) as caught:
        normalize_code(typed)
    assert caught.value.field == "code"
    assert "ABCD-EFGH" in str(caught.value)


@given(st.text(max_size=80))
def test_any_text_is_a_code_or_an_input_error(typed: str) -> None:
    """Hostile input never raises anything but InputError, and what passes is 8 code chars."""
    try:
        code = normalize_code(typed)
    except InputError:
        return
    assert len(code) == 8
    assert set(code) <= set(ALPHABET)


def test_issued_codes_are_shown_in_two_groups_and_kept_only_as_hashes() -> None:
    """A code is XXXX-XXXX from the alphabet; its record holds a keyed hash, not the code,
    and its repr not even that; 200 codes are all different."""
    signer = CodeSigner(("k" * 32,))
    shown = set()
    for _ in range(200):
        code, record = signer.issue(
            participant_id="p-1",
            course_id="c",
            email="Kari@School.example",
            purpose="login",
            next=None,
            issued_at=0.0,
            expires_at=60.0,
        )
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", code)
        plain = normalize_code(code)
        assert plain not in record.digest
        assert plain not in repr(record)
        assert record.digest not in repr(record)
        assert record.address == "kari@school.example"
        shown.add(code)
    assert len(shown) == 200


def test_a_rotated_key_still_opens_codes_hashed_under_the_old_one() -> None:
    """Keys rotate as link keys do: a code hashed under the old key matches after a new one
    is added, and no longer once the old one is removed."""
    old = CodeSigner(("o" * 32,))
    code, record = old.issue(
        participant_id="p-1",
        course_id="c",
        email="a@b.example",
        purpose="login",
        next=None,
        issued_at=0.0,
        expires_at=60.0,
    )
    plain = normalize_code(code)
    assert CodeSigner(("o" * 32, "n" * 32)).match(plain, "a@b.example", [record]) == record
    assert CodeSigner(("n" * 32,)).match(plain, "a@b.example", [record]) is None
    assert old.match(plain, "other@b.example", [record]) is None


# --- templates ----------------------------------------------------------------------------

LINK = "https://lms.example.com/login?token=WyJwLTEiLCJjLTEiLDM2MDBd.aBcDeF.sig"


@pytest.mark.parametrize("name", ["invitation", "get_link"])
@pytest.mark.parametrize("locale", LOCALES)
def test_login_templates_show_the_code_in_text_and_html_of_every_locale(
    name: str, locale: str
) -> None:
    """Rendered strictly, each locale's text and HTML show the code; without one, neither
    shows a code paragraph, and both still pass the single-link rule."""
    renderer = Renderer()
    with_code = renderer.render(
        name,
        locale=locale,
        context=sample_context(locale, base_url=LINK) | {"code": "7KQ2-M9XD"},
        link=LINK,
    )
    assert with_code.html is not None
    assert "\n    7KQ2-M9XD\n" in with_code.text
    assert ">7KQ2-M9XD</p>" in with_code.html
    without = renderer.render(
        name,
        locale=locale,
        context=sample_context(locale, base_url=LINK) | {"code": None},
        link=LINK,
    )
    assert without.html is not None
    assert "7KQ2" not in without.text
    assert "7KQ2" not in without.html
    assert "None" not in without.text
    assert "None" not in without.html
    assert renderer.uses(name, locale, "code")


def test_the_code_is_no_second_link_and_the_rule_is_unchanged() -> None:
    """A message showing the code has no link problem; the same message with a link to a
    second site is refused as before."""
    renderer = Renderer()
    rendered = renderer.render(
        "get_link",
        locale="en",
        context=sample_context("en", base_url=LINK) | {"code": "7KQ2-M9XD"},
        link=LINK,
    )
    assert find_link_problems(rendered, link=LINK) == []
    assert rendered.html is not None
    foreign = rendered.html.replace("7KQ2-M9XD", '7KQ2-M9XD <a href="https://evil.example/">x</a>')
    problems = find_link_problems(
        type(rendered)(rendered.template, "en", rendered.subject, rendered.text, foreign), link=LINK
    )
    assert [site for _message, site in problems] == ["evil.example"]


def test_calendar_templates_carry_no_code() -> None:
    """invite does not show a code, so none is made (or kept) for it."""
    assert not Renderer().uses("invite", "en", "code")


# --- the library over real SMTP, on both stores ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens a store on this test's database (SQLite file or PostgreSQL), as often as asked."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "outbox.sqlite3")
    factory = request.getfixturevalue("postgres_backend")
    return lambda: factory(tmp_path / "outbox")  # type: ignore[no-any-return]


@pytest.fixture
async def store(opener: Callable[[], Store]) -> AsyncIterator[Store]:
    opened = opener()
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(now=1_800_000_000.0)


@pytest.fixture
async def sender(
    smtp_server: RecordingSMTPServer, store: Store, clock: ManualClock
) -> AsyncIterator[Sender]:
    """A sender over the recording server that keeps codes (and checks them) in ``store``."""
    transport = SmtpTransport(smtp_server.smtp_settings())
    async with Sender(SETTINGS, transport=transport, store=store, clock=clock) as made:
        yield made


def delivered(server: RecordingSMTPServer, index: int = -1) -> EmailMessage:
    message = message_from_bytes(server.messages[index].data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def code_in(message: EmailMessage) -> str:
    """The code the text part shows; the HTML part shows the same one."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    (code,) = SHOWN.findall(text.get_content())
    assert f">{code}</p>" in html.get_content()
    return str(code)


@pytest.mark.parametrize("template", ["get_link", "invitation"])
async def test_the_code_from_the_mail_signs_in_typed_any_way(
    sender: Sender, smtp_server: RecordingSMTPServer, template: str
) -> None:
    """The code read from the delivered mail, lower-cased without its dash, gives the
    participant, the course and the link's next path and expiry."""
    result = await sender.send(KARI, template=template, next="/courses/1")
    assert result.ok
    code = code_in(delivered(smtp_server))
    text = delivered(smtp_server).get_body(("plain",))
    assert text is not None
    link = sender.verify_link(next(w for w in text.get_content().split() if w.startswith("https")))
    claims = await sender.verify_code(code.lower().replace("-", ""), email="KARI@school.example")
    assert (claims.participant_id, claims.course_id, claims.next) == ("p-17", "PY101", "/courses/1")
    assert claims.expires_at == link.expires_at
    assert claims.as_dict() == link.as_dict()
    again = await sender.verify_code(code, email=KARI.email)  # reusable until it expires
    assert again == claims


async def test_every_locale_mails_a_working_code(
    sender: Sender, smtp_server: RecordingSMTPServer
) -> None:
    """A Get Link in en, nb, sv and ja each carries a code that verifies."""
    for n, locale in enumerate(LOCALES):
        person = Participant(f"p{n}@school.example", "Kari", f"p-{n}", "PY101", locale)
        assert (await sender.send_get_link(person)).ok
        claims = await sender.verify_code(code_in(delivered(smtp_server)), email=person.email)
        assert claims.participant_id == f"p-{n}"


async def test_five_wrong_codes_lock_the_address_even_for_the_right_one(
    sender: Sender, smtp_server: RecordingSMTPServer, clock: ManualClock
) -> None:
    """Five wrong codes are each invalid; the sixth try, the right code, is locked; 15
    minutes after the fifth wrong one the right code works again."""
    await sender.send_get_link(KARI)
    code = code_in(delivered(smtp_server))
    wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
    for _ in range(5):
        with pytest.raises(CodeInvalid):
            await sender.verify_code(wrong, email=KARI.email)
        clock.advance(10)
    with pytest.raises(CodeLocked) as locked:
        await sender.verify_code(code, email=KARI.email)
    assert locked.value.kind == "locked"
    assert locked.value.retry_after == pytest.approx(900 - 10)
    clock.advance(900 - 10 - 1)
    with pytest.raises(CodeLocked):
        await sender.verify_code(code, email=KARI.email)
    clock.advance(1)
    assert (await sender.verify_code(code, email=KARI.email)).participant_id == "p-17"


async def test_an_unknown_address_is_refused_the_same_way(
    sender: Sender, smtp_server: RecordingSMTPServer
) -> None:
    """An address no code was mailed to gets the wrong code's error, word for word, and is
    locked after five tries as a real one is."""
    await sender.send_get_link(KARI)
    code = code_in(delivered(smtp_server))
    with pytest.raises(CodeInvalid) as unknown:
        await sender.verify_code(code, email="nobody@school.example")
    other = "0000-0000" if code != "0000-0000" else "1111-1111"
    with pytest.raises(CodeInvalid) as wrong:
        await sender.verify_code(other, email=KARI.email)
    assert str(unknown.value) == str(wrong.value)
    for _ in range(4):
        with pytest.raises(CodeInvalid):
            await sender.verify_code(code, email="nobody@school.example")
    with pytest.raises(CodeLocked):
        await sender.verify_code(code, email="nobody@school.example")
    assert (await sender.verify_code(code, email=KARI.email)).participant_id == "p-17"


async def test_a_code_expires_with_its_link(
    sender: Sender, smtp_server: RecordingSMTPServer, clock: ManualClock
) -> None:
    """With a one-hour link, the code works at the hour and is invalid a second after."""
    from datetime import timedelta

    await sender.send(KARI, template="get_link", ttl=timedelta(hours=1))
    code = code_in(delivered(smtp_server))
    clock.advance(3600)
    assert (await sender.verify_code(code, email=KARI.email)).course_id == "PY101"
    clock.advance(1)
    with pytest.raises(CodeInvalid):
        await sender.verify_code(code, email=KARI.email)


async def test_the_right_code_clears_earlier_wrong_ones(
    sender: Sender, smtp_server: RecordingSMTPServer
) -> None:
    """Four typos, the right code, then four more typos: never locked."""
    await sender.send_get_link(KARI)
    code = code_in(delivered(smtp_server))
    wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
    for _ in range(4):
        with pytest.raises(CodeInvalid):
            await sender.verify_code(wrong, email=KARI.email)
    await sender.verify_code(code, email=KARI.email)
    for _ in range(4):
        with pytest.raises(CodeInvalid):
            await sender.verify_code(wrong, email=KARI.email)
    await sender.verify_code(code, email=KARI.email)


async def test_a_refused_mail_keeps_no_code(
    sender: Sender, smtp_server: RecordingSMTPServer, store: Store, clock: ManualClock
) -> None:
    """A 550 at RCPT: the message was never delivered, so no code of it is kept."""
    from sender.testing import Stage

    smtp_server.reply(Stage.DATA, "554 5.7.1 rejected")
    result = await sender.send_get_link(KARI)
    assert not result.ok
    assert await store.login_codes(KARI.email, now=clock.now()) == []


async def test_without_a_store_the_mail_shows_no_code(smtp_server: RecordingSMTPServer) -> None:
    """A sender with nowhere to keep codes mails none (one could never work), and cannot
    check one: a ConfigurationError says why."""
    async with Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings())) as bare:
        assert (await bare.send_get_link(KARI)).ok
        text = delivered(smtp_server).get_body(("plain",))
        assert text is not None
        assert not SHOWN.search(text.get_content())
        with pytest.raises(ConfigurationError, match="store"):
            await bare.verify_code("7KQ2-M9XD", email=KARI.email)


async def test_malformed_input_is_refused_before_it_counts(sender: Sender) -> None:
    """Ten codes that cannot be codes are InputErrors and use up none of the five tries;
    a malformed address names the email field."""
    for _ in range(10):
        with pytest.raises(InputError):
            await sender.verify_code("not-a-code?", email=KARI.email)
    with pytest.raises(InputError) as caught:
        await sender.verify_code("7KQ2-M9XD", email="no address")
    assert caught.value.field == "email"
    for _ in range(5):
        with pytest.raises(CodeInvalid):
            await sender.verify_code("7KQ2-M9XD", email=KARI.email)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_bulk_run_keeps_every_code_with_its_outcome(
    smtp_server: RecordingSMTPServer, store: Store, workers: int
) -> None:
    """Six invitations sent in this process or by two worker processes: each mail's code
    verifies for its participant, kept with the run's outcomes."""
    group = [
        Participant(f"user{i}@d{i % 3}.example", f"User {i}", f"p-{i}", "PY101", LOCALES[i % 4])
        for i in range(6)
    ]
    transport = SmtpTransport(smtp_server.smtp_settings(pool_size=2))
    async with Sender(SETTINGS, transport=transport) as plain:
        runner = BulkRunner(
            plain,
            store,
            RunSettings(concurrency=2, workers=workers),
            scheduler=Scheduler(UNLIMITED),
        )
        report = await runner.run("r-codes", group)
        assert report.counts[MessageState.SENT] == 6
        checker = Sender(SETTINGS, store=store)
        for received in smtp_server.messages:
            message = message_from_bytes(received.data, policy=policy.default)
            assert isinstance(message, EmailMessage)
            (address,) = received.recipients
            claims = await checker.verify_code(code_in(message), email=address)
            assert f"user{claims.participant_id[2:]}@" in address


# --- across processes ------------------------------------------------------------------------

GUESSER = """
import asyncio, sys
from sender import Address, LinkSettings, Sender, SenderSettings
from sender.errors import CodeInvalid
from sender.store import SqliteStore

async def main():
    settings = SenderSettings(
        from_address=Address("noreply@learning.example.com", "Example Academy"),
        links=LinkSettings(secret_keys=("k" * 32,), base_url="https://lms.example.com/login"),
    )
    async with SqliteStore(sys.argv[1]) as store:
        for _ in range(5):
            try:
                await Sender(settings, store=store).verify_code(sys.argv[2], email=sys.argv[3])
            except CodeInvalid:
                print("invalid")

asyncio.run(main())
"""


async def test_wrong_codes_in_another_process_lock_this_one(
    smtp_server: RecordingSMTPServer, tmp_path: Path
) -> None:
    """Five wrong codes tried by another process on the same outbox: here the right code
    is refused as locked."""
    path = tmp_path / "shared.sqlite3"
    async with (
        SqliteStore(path) as store,
        Sender(SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()), store=store) as s,
    ):
        await s.send_get_link(KARI)
        code = code_in(delivered(smtp_server))
        wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
        done = await asyncio.to_thread(
            run_python, tmp_path, "-c", textwrap.dedent(GUESSER), str(path), wrong, KARI.email
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["invalid"] * 5
        with pytest.raises(CodeLocked):
            await s.verify_code(code, email=KARI.email)


# --- the HTTP API and the CLI ------------------------------------------------------------

KEY = "admin-key-" + "a" * 24
LINKS_ONLY = "links-key-" + "b" * 24
SEND_ONLY = "send-key-" + "c" * 24


def env_for(server: RecordingSMTPServer) -> dict[str, str]:
    return {
        "SENDER_API_KEYS": f"{KEY},{LINKS_ONLY}:links,{SEND_ONLY}:send",
        "SENDER_SECRET_KEYS": "link-signing-key-" + "s" * 20,
        "SENDER_SMTP_URL": smtp_url(server),
        **IDENTITY,
    }


@pytest.fixture
def config(workdir: Path, smtp_server: RecordingSMTPServer) -> CliConfig:
    (workdir / "sender.toml").write_text("rate = 0\ndomain_rate = 0\n", encoding="utf-8")
    return load_config(config_file=workdir / "sender.toml", environ=env_for(smtp_server))


@pytest.fixture
async def client(config: CliConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for the API under a real uvicorn on an ephemeral loopback port."""
    async with served(app(config, poll=0.05)) as http:
        yield http


async def mailed_code(client: httpx.AsyncClient, server: RecordingSMTPServer) -> str:
    """POST /v1/messages a get_link to Kari; the code in the mail that arrives."""
    body: dict[str, Any] = {
        "participant": {
            "email": KARI.email,
            "name": KARI.name,
            "participant_id": KARI.participant_id,
            "course_id": KARI.course_id,
        },
        "template": "get_link",
        "next": "/courses/1",
    }
    sent = await client.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert sent.status_code == 200, sent.text
    return code_in(delivered(server))


async def test_post_codes_verify_gives_the_claims_then_locks_with_retry_after(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """The mailed code verifies over HTTP with a links key; five wrong ones are 400
    invalid, then the right one is 429 locked with Retry-After."""
    code = await mailed_code(client, smtp_server)
    links = {"Authorization": f"Bearer {LINKS_ONLY}"}
    ok = await client.post(
        "/v1/codes/verify", json={"code": code.lower(), "email": KARI.email}, headers=links
    )
    assert ok.status_code == 200, ok.text
    claims = ok.json()
    assert (claims["participant_id"], claims["course_id"], claims["next"]) == (
        "p-17",
        "PY101",
        "/courses/1",
    )
    wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
    for _ in range(5):
        refused = await client.post(
            "/v1/codes/verify", json={"code": wrong, "email": KARI.email}, headers=links
        )
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid")
        assert refused.json()["field"] == "code"
    locked = await client.post(
        "/v1/codes/verify", json={"code": code, "email": KARI.email}, headers=links
    )
    assert (locked.status_code, locked.json()["error"]) == (429, "locked")
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    assert code not in locked.text
    assert code not in refused.text


async def test_codes_verify_needs_the_links_scope_and_a_code_shaped_body(
    client: httpx.AsyncClient,
) -> None:
    """No key is 401, a send-only key 403; a code that cannot be one is 400 naming code."""
    body = {"code": "7KQ2-M9XD", "email": KARI.email}
    assert (await client.post("/v1/codes/verify", json=body)).status_code == 401
    denied = await client.post(
        "/v1/codes/verify", json=body, headers={"Authorization": f"Bearer {SEND_ONLY}"}
    )
    assert denied.status_code == 403
    bad = await client.post(
        "/v1/codes/verify",
        json={"code": "hello", "email": KARI.email},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert (bad.status_code, bad.json()["field"]) == (400, "code")
    missing = await client.post(
        "/v1/codes/verify", json={"code": "7KQ2-M9XD"}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert (missing.status_code, missing.json()["field"]) == (422, "email")


async def test_sender_code_verify_prints_the_claims_or_the_refusal(
    client: httpx.AsyncClient, smtp_server: RecordingSMTPServer
) -> None:
    """`sender code verify CODE --email ADDR --json` exits 0 with the claims; a wrong code
    exits 1 with {"error": "invalid"}; the plain form prints one line per claim."""
    code = await mailed_code(client, smtp_server)
    cli = cli_with(**env_for(smtp_server))
    result = await asyncio.to_thread(
        cli, "code", "verify", code.replace("-", " "), "--email", KARI.email, "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["participant_id"] == "p-17"
    plain = await asyncio.to_thread(cli, "code", "verify", code, "--email", KARI.email)
    assert plain.exit_code == 0
    assert "course_id: PY101" in plain.output
    wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
    refused = await asyncio.to_thread(cli, "code", "verify", wrong, "--email", KARI.email, "--json")
    assert refused.exit_code == 1
    assert json.loads(refused.output)["error"] == "invalid"
    malformed = await asyncio.to_thread(cli, "code", "verify", "nope", "--email", KARI.email)
    assert malformed.exit_code != 0
    assert "code" in malformed.output
    assert "Traceback" not in malformed.output
