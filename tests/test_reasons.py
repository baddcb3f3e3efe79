"""Every finding has a reason, and the reason decides: suppress, count, sender-side, or nothing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from sender import Participant, Sender
from sender.bulk.runner import BulkRunner, RunSettings
from sender.cli import main
from sender.compose.links import ReturnPathSigner, return_path_key
from sender.config import BouncePolicy
from sender.feedback.bounces import BounceKind, parse_bounce
from sender.feedback.suppression import apply_bounce, paused_providers, recommend
from sender.pacing.schedule import BUILTIN_DOMAIN_GROUPS, Scheduler
from sender.store import BounceRecord, MessageState, RunState, SqliteStore
from sender.testing import RecordingSMTPServer, Stage
from sender.transport import SmtpTransport
from sender.vocabulary import REASON_RULES, Action, Reason
from tests.helpers import UNLIMITED, deliver, sender_settings, spawn_inbound

DATA = Path(__file__).parent / "data" / "bounces"
T0 = 1_800_000_000.0
POLICY = BouncePolicy()


def real(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "reason", "action", "suppress"),
    [
        ("rhost-google-03.eml", "auth_failure", "sender_side", False),  # 550 5.7.26 SPF/DMARC
        ("lhost-postfix-72.eml", "auth_failure", "sender_side", False),  # 550 5.7.1 ... DMARC
        ("lhost-amazonses-14.eml", "blocked", "sender_side", False),  # 5.7.1 blocked using ...
        ("rhost-google-06.eml", "ptr_required", "sender_side", False),  # 5.7.25
        ("lhost-postfix-62.eml", "virus", "sender_side", False),
        ("lhost-exim-55.eml", "spam_detected", "sender_side", False),
        ("rhost-microsoft-05.eml", "bad_reputation", "sender_side", False),  # 451 4.7.650
        ("lhost-postfix-04.eml", "user_unknown", "suppress", True),  # 550 5.1.1
        ("lhost-postfix-16.eml", "has_moved", "suppress", True),  # 5.1.6
        ("rhost-google-05.eml", "mailbox_full", "count", False),  # 552 5.2.2
    ],
)
def test_a_real_bounce_gets_its_reason_and_the_action_the_table_gives(
    name: str, reason: str, action: str, suppress: bool
) -> None:
    """Real servers' reports: the reason, its action, and whether the finding alone suppresses."""
    (found,) = parse_bounce(real(name))
    assert (found.reason, found.action, found.suppress) == (reason, action, suppress)
    assert found.action == REASON_RULES[found.reason].action


def test_a_spamhaus_listing_is_sender_side_where_sisimai_says_user_unknown() -> None:
    """lhost-postfix-80: "MailFrom domain is listed in Spamhaus" under 5.1.0. Sisimai calls it
    userunknown (address dead); the words say our domain is listed, so nobody is suppressed."""
    (found,) = parse_bounce(real("lhost-postfix-80.eml"))
    assert found.status == "5.1.0"
    assert (found.reason, found.suppress) == ("blocked", False)


def test_daemon_mail_marked_auto_replied_is_a_bounce_not_an_autoreply() -> None:
    """Exim marks its reports Auto-Submitted: auto-replied; a 550 5.1.1 there still suppresses,
    and its delay warning is a delay for the address it names, not an auto-reply."""
    assert b"Auto-Submitted: auto-replied" in real("lhost-exim-59.eml")
    (found,) = parse_bounce(real("lhost-exim-59.eml"))
    assert (found.kind, found.reason, found.suppress) == (BounceKind.HARD, "user_unknown", True)
    (warning,) = parse_bounce(real("lhost-exim-38.eml"))
    assert (warning.recipient, warning.kind, warning.reason) == (
        "kijitora@example.co.jp",
        BounceKind.SOFT,
        "delayed",
    )
    assert not warning.suppress


def test_every_reason_has_one_rule_and_every_sender_side_reason_a_hint() -> None:
    """The table covers the vocabulary; sender-side rows say what to fix, the others nothing."""
    assert set(REASON_RULES) == set(Reason)
    for reason, rule in REASON_RULES.items():
        assert bool(rule.hint) == (rule.action is Action.SENDER_SIDE), reason
    assert "sender doctor" in REASON_RULES[Reason.AUTH_FAILURE].hint
    assert "blocklist" in REASON_RULES[Reason.BLOCKED].hint


def refusal(n: int, address: str, reason: str = "auth_failure", **kw: object) -> BounceRecord:
    fields: dict[str, object] = {
        "fingerprint": f"s{n}",
        "address": address,
        "kind": "hard",
        "status": "5.7.26",
        "diagnostic": "550 5.7.26 unauthenticated",
        "reason": reason,
        "at": T0,
    }
    return BounceRecord(**(fields | kw))  # type: ignore[arg-type]


async def test_sender_side_refusals_never_suppress(store: SqliteStore) -> None:
    """A DMARC or blocklist refusal is kept but suppresses nobody, however often it comes."""
    for n in range(5):
        why = await apply_bounce(store, refusal(n, "ada@example.org"), policy=POLICY, now=T0)
        assert why is None
    await apply_bounce(store, refusal(9, "ada@example.org", "blocked"), policy=POLICY, now=T0)
    assert await store.suppressed(["ada@example.org"]) == {}
    assert len(await store.bounces()) == 6


async def test_a_burst_from_one_provider_pauses_that_provider_only(store: SqliteStore) -> None:
    """Five sender-side refusals within the hour from gmail.com and googlemail.com (one group)
    pause gmail.com with the reason and hint; four from another provider pause nothing."""
    addresses = ["a@gmail.com", "b@googlemail.com", "c@gmail.com", "d@gmail.com", "e@gmail.com"]
    for n, address in enumerate(addresses):
        await store.add_bounce(refusal(n, address, at=T0 - 60 * n))
    for n in range(4):
        await store.add_bounce(refusal(10 + n, f"u{n}@yahoo.com", "blocked"))
    await store.add_bounce(refusal(20, "x@gmail.com", forged=True))
    paused = await paused_providers(store, policy=POLICY, now=T0, groups=BUILTIN_DOMAIN_GROUPS)
    assert list(paused) == ["gmail.com"]
    assert "auth_failure" in paused["gmail.com"]
    assert "sender doctor" in paused["gmail.com"]
    later = await paused_providers(
        store, policy=POLICY, now=T0 + 3600, groups=BUILTIN_DOMAIN_GROUPS
    )
    assert later == {}  # the oldest aged out of the window: the pause lifts by itself


def test_the_clean_up_action_follows_from_the_reason() -> None:
    """A dead address: change it; a sender-side refusal: fix the sending side, not the address."""
    assert recommend("hard", "user_unknown", first_at=T0, last_at=T0)[0] == "change address"
    action, rule = recommend("hard", "auth_failure", first_at=T0, last_at=T0)
    assert action.startswith("fix the sending side")
    assert "sender doctor" in action
    assert "not the address" in rule
    assert recommend("soft", "mailbox_full", first_at=T0, last_at=T0)[0].startswith("ask")
    assert recommend("complaint", "complaint", first_at=T0, last_at=T0)[0] == "disable mail"


async def test_bulk_mail_to_a_provider_pauses_after_a_burst_while_others_go_on(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Gmail refuses with 550 5.7.26: after five, bulk mail to gmail.com waits (the run pauses
    with the reason and hint); every other provider's participant is sent, nobody suppressed."""
    gmail = [
        Participant(f"g{i}@{'googlemail' if i % 3 else 'gmail'}.com", f"G {i}", f"g-{i}", "C")
        for i in range(12)
    ]
    others = [Participant(f"o{i}@d{i % 2}.example", f"O {i}", f"o-{i}", "C") for i in range(6)]
    for person in gmail:
        smtp_server.reply(
            Stage.RCPT,
            "550 5.7.26 Unauthenticated email from example.com is not accepted due to DMARC",
            address=person.email,
        )
    settings = replace(sender_settings("p" * 32), bounce_domain=None)
    sender = Sender(settings, transport=SmtpTransport(smtp_server.smtp_settings()))
    runner = BulkRunner(
        sender,
        store,
        RunSettings(concurrency=1, budget_interval=0.0),
        scheduler=Scheduler(UNLIMITED),
    )
    report = await runner.run("r-pause", [*gmail, *others])
    await sender.aclose()
    delivered = {r for m in smtp_server.messages for r in m.recipients}
    assert delivered == {p.email for p in others}
    assert report.run.state is RunState.PAUSED
    assert report.run.paused_reason is not None
    assert "gmail.com" in report.run.paused_reason
    assert "auth_failure" in report.run.paused_reason
    assert "sender doctor" in report.run.paused_reason
    assert 5 <= report.counts[MessageState.FAILED] < len(gmail)
    assert report.counts[MessageState.QUEUED] == len(gmail) - report.counts[MessageState.FAILED]
    assert await store.suppressed([p.email for p in gmail]) == {}


BOUNCE_DOMAIN = "bounce.learning.example.com"
KEY = "reasons-cli-key-0123456789abcdef"


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, list(args), env={"SENDER_SECRET_KEYS": KEY, "SENDER_HOME": str(home)}
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
async def test_dmarc_and_blocklist_bounces_over_smtp_suppress_nobody_and_show_as_sender_side(
    tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done-when of issue 13: a DMARC 5.7.26 and a blocklist 5.7.1 bounce delivered to
    `sender inbound` suppress nobody and show as sender-side in `bounces report` and `status`;
    a 5.1.1 suppresses at once; every report row carries a Get Link."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / ".sender"
    (tmp_path / "sender.toml").write_text(f'bounce_domain = "{BOUNCE_DOMAIN}"\n', encoding="utf-8")
    samples = {
        "neko@example.co.jp": "rhost-google-03.eml",  # DMARC/SPF, 5.7.26
        "sironeko@neko.example.org": "lhost-amazonses-14.eml",  # blocked using ..., 5.7.1
        "kijitora@example.co.jp": "lhost-postfix-04.eml",  # 5.1.1
    }
    (tmp_path / "people.csv").write_text(
        "email,name,participant_id,course_id\n"
        + "".join(f"{a},Person {i},p-{i},PY101\n" for i, a in enumerate(samples)),
        encoding="utf-8",
    )
    code, _, err = await asyncio.to_thread(cli, home, "run", "people.csv", "--no-progress")
    assert code == 0, err
    signer = ReturnPathSigner((KEY,), domain=BOUNCE_DOMAIN)
    process = await spawn_inbound(tmp_path, closed_port, env={"SENDER_SECRET_KEYS": KEY})
    try:
        for message_id, name in enumerate(samples.values(), start=1):
            await deliver(closed_port, signer.address(return_path_key(message_id)), real(name))
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), 60)
    code, out, err = await asyncio.to_thread(cli, home, "suppress", "list", "--json")
    assert code == 0, err
    assert [entry["address"] for entry in json.loads(out)] == ["kijitora@example.co.jp"]
    code, out, err = await asyncio.to_thread(cli, home, "bounces", "report", "--json")
    assert code == 0, err
    rows = {row["email"]: row for row in json.loads(out)}
    assert set(rows) == set(samples)
    assert all(row["get_link"].startswith("http") for row in rows.values())
    dmarc, listed = rows["neko@example.co.jp"], rows["sironeko@neko.example.org"]
    assert (dmarc["reason"], dmarc["sender_side"], dmarc["suppressed"]) == (
        "auth_failure",
        True,
        False,
    )
    assert dmarc["action"].startswith("fix the sending side")
    assert "sender doctor" in dmarc["action"]
    assert (listed["reason"], listed["sender_side"], listed["suppressed"]) == (
        "blocked",
        True,
        False,
    )
    gone = rows["kijitora@example.co.jp"]
    assert (gone["reason"], gone["suppressed"], gone["action"]) == (
        "user_unknown",
        True,
        "change address",
    )
    assert "sender-side refusals: 1 from example.co.jp (auth_failure" in err
    code, out, _ = await asyncio.to_thread(cli, home, "bounces", "report")
    assert "sender-side problems" in out
    assert "1 from neko.example.org (blocked" in out
    code, out, err = await asyncio.to_thread(cli, home, "status", "--json")
    assert code == 0, err
    side = {(p["provider"], p["reason"]) for p in json.loads(out)["sender_side"]}
    assert side == {("example.co.jp", "auth_failure"), ("neko.example.org", "blocked")}
    code, out, err = await asyncio.to_thread(cli, home, "status")
    assert "sender-side refusals" in out
    assert "1 from example.co.jp (auth_failure" in out
