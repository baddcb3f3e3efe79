"""The bounce loop's rules: suppression, the bounce budget, and what runs and sends do with them."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest
from click.testing import CliRunner

from sender import (
    DeliveryStatus,
    Participant,
    PermanentDeliveryError,
    Sender,
)
from sender.bulk.runner import BulkRunner
from sender.cli import main
from sender.compose.links import message_of_key
from sender.config import DAY, BouncePolicy
from sender.feedback.suppression import (
    apply_bounce,
    budget_reason,
    cleanup_report,
    ingest_ses_notification,
)
from sender.servers.inbound import InboundServer
from sender.store import BounceRecord, MessageState, NewRow, Outcome, RunState, SqliteStore
from sender.testing import RecordingSMTPServer
from sender.transport import SmtpTransport
from tests.bulk_helpers import at_most, bulk_runner, run_once, started_run
from tests.helpers import bounce_ingester, deliver, dsn, sender_settings, spawn_inbound

T0 = 1_800_000_000.0
SETTINGS = sender_settings("s" * 32)
POLICY = BouncePolicy()


_REASONS = {"soft": "mailbox_full", "complaint": "complaint", "autoreply": "auto_reply"}


def bounce(
    n: int, address: str = "ada@example.org", kind: str = "hard", **kw: object
) -> BounceRecord:
    fields: dict[str, object] = {
        "fingerprint": f"b{n}",
        "address": address,
        "kind": kind,
        "status": "5.1.1" if kind == "hard" else "4.2.2",
        "diagnostic": "550 5.1.1 user unknown",
        "reason": _REASONS.get(kind, "user_unknown"),
        "at": T0,
    }
    fields.update(kw)
    return BounceRecord(**fields)  # type: ignore[arg-type]


def people(count: int) -> list[Participant]:
    return [
        Participant(f"user{i}@d{i % 3}.example", f"User {i}", f"p-{i}", "PY101")
        for i in range(count)
    ]


async def test_a_hard_bounce_suppresses_at_once_and_counts_once(store: SqliteStore) -> None:
    """A hard bounce suppresses the address; the same bounce again changes nothing."""
    assert (
        await apply_bounce(store, bounce(1), policy=POLICY, now=T0)
        == "hard bounce 5.1.1 (user_unknown)"
    )
    assert await apply_bounce(store, bounce(1), policy=POLICY, now=T0) is None
    assert len(await store.bounces()) == 1
    found = await store.suppressed(["ADA@example.org", "grace@example.org"])
    assert list(found) == ["ada@example.org"]
    assert found["ada@example.org"].kind == "hard"


async def test_a_complaint_suppresses_and_an_autoreply_never_does(store: SqliteStore) -> None:
    """Marked as spam: suppressed. Out of office: kept, but nothing happens."""
    await apply_bounce(store, bounce(1, "a@x.example", "autoreply"), policy=POLICY, now=T0)
    await apply_bounce(store, bounce(2, "b@x.example", "complaint"), policy=POLICY, now=T0)
    assert set(await store.suppressed(["a@x.example", "b@x.example"])) == {"b@x.example"}


async def test_a_forged_bounce_changes_nothing(store: SqliteStore) -> None:
    """A bounce whose return path did not verify is kept as forged and suppresses nobody."""
    assert await apply_bounce(store, bounce(1, forged=True), policy=POLICY, now=T0) is None
    assert await store.suppressed(["ada@example.org"]) == {}
    assert await store.hard_bounces_since(0) == 0
    (kept,) = await store.bounces()
    assert kept.forged


async def test_soft_bounces_suppress_at_the_third_within_seven_days(store: SqliteStore) -> None:
    """Two soft bounces are forgiven; the third within a week suppresses."""
    for n, at in enumerate((T0 - 6 * DAY, T0 - DAY)):
        await apply_bounce(store, bounce(n, kind="soft", at=at), policy=POLICY, now=at)
    assert await store.suppressed(["ada@example.org"]) == {}
    why = await apply_bounce(store, bounce(9, kind="soft"), policy=POLICY, now=T0)
    assert why == "3 soft bounces within 7 days (mailbox_full)"


async def test_old_soft_bounces_fall_out_of_the_window(store: SqliteStore) -> None:
    """Soft bounces older than the window do not count."""
    for n, at in enumerate((T0 - 9 * DAY, T0 - 8 * DAY)):
        await apply_bounce(store, bounce(n, kind="soft", at=at), policy=POLICY, now=at)
    assert await apply_bounce(store, bounce(9, kind="soft"), policy=POLICY, now=T0) is None


async def test_a_delivery_resets_the_soft_count(store: SqliteStore) -> None:
    """After mail gets through again, earlier soft bounces no longer count."""
    address = "user0@d0.example"
    for n in range(2):
        await apply_bounce(store, bounce(n, address, "soft", at=T0 - 3600), policy=POLICY, now=T0)
    await store.create_run("r", template="invitation", source="t", now=T0)
    await store.add_rows("r", [], complete=False)
    await store.add_rows("r", [NewRow(1, people(1)[0])], complete=True)
    message = await store.claim("r", "d0.example", now=T0, owner="w")
    assert message is not None
    await store.record(message.id, Outcome(MessageState.SENT, at=T0 - 60))
    assert await apply_bounce(store, bounce(5, address, "soft"), policy=POLICY, now=T0) is None
    assert await store.count_bounces(address, reasons={"mailbox_full"}, since=T0 - 7 * DAY) == 1


async def budget_at_and_past(
    store: SqliteStore, policy: BouncePolicy, *, bounces: int, at: float
) -> tuple[str | None, str | None]:
    """The budget's reason at T0 after ``bounces`` hard bounces at ``at`` (u0@x.example, …),
    and after one more."""
    for n in range(bounces):
        await store.add_bounce(bounce(n, f"u{n}@x.example", at=at))
    at_limit = await budget_reason(store, policy=policy, now=T0)
    await store.add_bounce(bounce(bounces, f"u{bounces}@x.example", at=at))
    return at_limit, await budget_reason(store, policy=policy, now=T0)


async def test_budget_holds_below_the_limit_and_trips_at_it(store: SqliteStore) -> None:
    """79 hard bounces in 24 h are fine; the 80th pauses bulk sending, with the reason."""
    policy = BouncePolicy(min_sent=10_000)  # keep the rate guard out of this test
    at_limit, past = await budget_at_and_past(store, policy, bounces=79, at=T0 - 3600)
    assert at_limit is None
    assert past is not None
    assert "80 hard-bounced addresses" in past
    assert await budget_reason(store, policy=policy, now=T0 + DAY) is None  # slid out


def test_impossible_policies_are_refused() -> None:
    """A budget of zero or a rate outside (0, 1] is a configuration error."""
    with pytest.raises(ValueError, match="bounce"):
        BouncePolicy(budget=0)
    with pytest.raises(ValueError, match="bounce"):
        BouncePolicy(max_rate=1.5)


def runner_for(server: RecordingSMTPServer, store: SqliteStore, **settings: object) -> BulkRunner:
    return bulk_runner(server, store, settings=SETTINGS, limits=at_most(200), **settings)


async def test_a_run_never_sends_to_a_suppressed_address(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """A suppressed participant is recorded as suppressed; everyone else is sent."""
    group = people(12)
    await store.suppress(group[4].email.upper(), kind="manual", reason="left", now=T0)
    report = await run_once(smtp_server, store, "r-supp", group, settings=SETTINGS)
    assert report.counts[MessageState.SUPPRESSED] == 1
    assert report.counts[MessageState.SENT] == 11
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert group[4].email not in received
    record = await store.lookup("r-supp", group[4].participant_id)
    assert record is not None
    assert record.state is MessageState.SUPPRESSED
    assert "left" in record.detail


async def test_a_single_send_skips_a_suppressed_address(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """get_link to a suppressed address is not sent and says so."""
    kari = people(1)[0]
    await store.suppress(kari.email, kind="hard", reason="hard bounce 5.1.1", now=T0)
    sender = Sender(
        SETTINGS, transport=SmtpTransport(smtp_server.smtp_settings()), suppression=store
    )
    result = await sender.send_get_link(kari)
    await sender.aclose()
    assert result.status is DeliveryStatus.SUPPRESSED
    with pytest.raises(PermanentDeliveryError):
        result.raise_for_status()
    assert smtp_server.messages == ()


@pytest.mark.slow
async def test_a_bounce_storm_pauses_the_run_and_resume_needs_force(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """Past the budget the run pauses, sends nothing more, loses nothing; --force resumes it."""
    group = people(300)
    policy = BouncePolicy(budget=5, min_sent=100_000)
    runner = runner_for(smtp_server, store, bounces=policy, budget_interval=0.05)
    task = await started_run(runner, smtp_server, "r-storm", group, messages=20)
    for n in range(5):
        await store.add_bounce(bounce(n, f"gone{n}@x.example", at=time.time()))
    report = await asyncio.wait_for(task, 30)
    assert report.run.state is RunState.PAUSED
    assert "bounce budget" in (report.run.paused_reason or "")
    sent_at_pause = len(smtp_server.messages)
    assert sent_at_pause == report.counts[MessageState.SENT] < 300
    assert report.counts[MessageState.QUEUED] == 300 - sent_at_pause
    again = await runner_for(smtp_server, store, bounces=policy).run("r-storm")
    assert again.run.state is RunState.PAUSED
    assert len(smtp_server.messages) == sent_at_pause  # nothing sent while paused
    forced = runner_for(smtp_server, store, bounces=policy, force=True)
    final = await forced.run("r-storm")
    await forced.sender.aclose()
    await runner.sender.aclose()
    assert final.run.state is RunState.DONE
    received = Counter(r for m in smtp_server.messages for r in m.recipients)
    assert received == Counter(p.email for p in group)


async def test_every_message_carries_a_return_path_naming_its_outbox_row(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """With a bounce domain, MAIL FROM verifies back to the very message and recipient."""
    settings = replace(SETTINGS, bounce_domain="bounce.learning.example.com")
    runner = bulk_runner(smtp_server, store, settings=settings, concurrency=2, workers=2)
    sender = runner.sender
    await runner.run("r-verp", people(6))
    single = await sender.send_get_link(Participant("kari@example.com", "Kari", "p-77", "PY101"))
    await sender.aclose()
    assert sender.return_paths is not None
    for received in smtp_server.messages[:-1]:
        key = sender.return_paths.verify(received.mail_from)
        assert key is not None
        message_id = message_of_key(key)
        assert message_id is not None
        record = await store.message(message_id)
        assert record is not None
        assert (record.run_id, record.email) == ("r-verp", received.recipients[0])
    last = smtp_server.messages[-1]
    assert single.ok
    assert last.mail_from.startswith("bounces+p")
    assert sender.return_paths.verify(last.mail_from) is not None


def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main,
        list(args),
        env={"SENDER_SECRET_KEYS": "suppress-cli-key-0123456789abcdef"},
    )
    return result.exit_code, result.stdout, result.stderr


def test_suppress_add_list_remove_over_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An address added by hand is listed; removing it needs a reason and is refused twice."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(tmp_path, "suppress", "add", "Ada@Example.org", "--reason", "left")
    assert code == 0, err
    code, out, _ = cli(tmp_path, "suppress", "list", "--json")
    (entry,) = json.loads(out)
    assert (entry["address"], entry["kind"], entry["reason"]) == (
        "ada@example.org",
        "manual",
        "left",
    )
    code, _, err = cli(tmp_path, "suppress", "remove", "ada@example.org")
    assert code != 0
    assert "--reason" in err
    code, _, err = cli(tmp_path, "suppress", "remove", "ada@example.org", "--reason", "fixed")
    assert code == 0, err
    code, _, err = cli(tmp_path, "suppress", "remove", "ada@example.org", "--reason", "again")
    assert code == 1
    assert "not on the suppression list" in err
    code, _, err = cli(tmp_path, "suppress", "add", "not an address")
    assert code != 0
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


# --- end to end: bounces over real SMTP to the inbound listener ----------------------------

BOUNCE_DOMAIN = "bounce.learning.example.com"


async def test_bounces_over_smtp_suppress_and_the_next_run_skips_them(
    smtp_server: RecordingSMTPServer, store: SqliteStore, tmp_path: Path
) -> None:
    """DSNs to signed return paths suppress their recipients; a forged one changes nothing."""
    settings = replace(SETTINGS, bounce_domain=BOUNCE_DOMAIN)
    group = people(10)
    await run_once(smtp_server, store, "r-first", group, settings=settings)
    return_path = {m.recipients[0]: m.mail_from for m in smtp_server.messages}
    signer = Sender(settings).return_paths  # the keys and bounce domain the run signed with
    assert signer is not None

    on_mail = bounce_ingester(store, signer, POLICY)

    bounced = [group[1], group[4], group[7]]
    async with InboundServer(
        bounce_domain=BOUNCE_DOMAIN, on_mail=on_mail, keep_dir=tmp_path / "inbound"
    ) as server:
        await deliver(server.port, return_path[bounced[0].email], dsn(bounced[0].email))
        await deliver(server.port, return_path[bounced[1].email], dsn(bounced[1].email))
        # A forwarded mailbox reports another address: the return path names ours.
        alias = dsn("old-alias@forward.example")
        await deliver(server.port, return_path[bounced[2].email], alias)
        await deliver(server.port, return_path[group[9].email], b"Subject: hm\r\n\r\n?\r\n")
        forged = f"bounces+m1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}"
        await deliver(server.port, forged, dsn(group[0].email))
        await deliver(server.port, return_path[bounced[0].email], dsn(bounced[0].email))
    suppressed = await store.suppressed([p.email for p in group])
    assert set(suppressed) == {p.email for p in bounced}
    kept = await store.bounces()
    assert sum(1 for b in kept if b.forged) == 1
    (unknown,) = [b for b in kept if b.kind == "unknown"]
    assert (unknown.address, unknown.participant_id) == (group[9].email, group[9].participant_id)
    assert await store.hard_bounces_since(0) == 3  # the repeated DSN counted once
    report = await run_once(smtp_server, store, "r-second", group, settings=settings)
    assert report.counts[MessageState.SUPPRESSED] == 3
    assert report.counts[MessageState.SENT] == 7
    rows = {row.address: row for row in await cleanup_report(store, since=0)}
    assert set(rows) == {p.email for p in bounced} | {group[9].email}
    assert rows[group[9].email].action == "review by hand"
    for person in bounced:
        assert rows[person.email].action == "change address"
        assert rows[person.email].participant == person
        assert rows[person.email].suppressed


async def test_the_rate_guard_pauses_above_five_percent_of_200(store: SqliteStore) -> None:
    """10 hard bounces for 200 sent is 5% (fine); an 11th trips the rate guard."""
    await store.create_run("r", template="invitation", source="t", now=T0)
    rows = [NewRow(n, Participant(f"u{n}@x.example", "U", f"p{n}", "c")) for n in range(1, 201)]
    await store.add_rows("r", rows, complete=True)
    for _ in range(200):
        message = await store.claim("r", "x.example", now=T0, owner="w")
        assert message is not None
        await store.record(message.id, Outcome(MessageState.SENT, at=T0 - 60))
    at_limit, past = await budget_at_and_past(store, POLICY, bounces=10, at=T0 - 30)
    assert at_limit is None
    assert past is not None
    assert "5.5%" in past


async def test_single_sends_pause_with_the_budget_only_when_configured(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """By default get_link goes out past the budget; with pause_single_sends it waits."""
    for n in range(3):
        await store.add_bounce(bounce(n, f"gone{n}@x.example", at=time.time()))
    kari = Participant("kari@example.com", "Kari", "p-1", "PY101")
    for pause, expected in ((False, DeliveryStatus.ACCEPTED), (True, DeliveryStatus.TEMPORARY)):
        policy = BouncePolicy(budget=3, pause_single_sends=pause)
        runner = runner_for(smtp_server, store, bounces=policy)
        result = await runner.sender.send_get_link(kari)
        await runner.sender.aclose()
        assert result.status is expected
    assert len(smtp_server.messages) == 1


async def test_a_changed_address_is_not_suppressed(
    smtp_server: RecordingSMTPServer, store: SqliteStore
) -> None:
    """After the LMS fixes a bounced address, the participant's new address gets mail."""
    old = Participant("kari@old.example", "Kari", "p-1", "PY101")
    await apply_bounce(store, bounce(1, old.email), policy=POLICY, now=T0)
    new = replace(old, email="kari@new.example")
    report = await runner_for(smtp_server, store).run("r-new", [new])
    assert report.counts[MessageState.SENT] == 1
    assert smtp_server.messages[0].recipients == ("kari@new.example",)


BOUNCE_SAMPLES = Path(__file__).parent / "samples" / "bounces"


def test_bounces_parse_json_maps_each_path_to_its_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bounces parse --json`: one key per path; a file without a bounce maps to []."""
    monkeypatch.chdir(tmp_path)
    files = [str(BOUNCE_SAMPLES / n) for n in ("postfix_dsn.eml", "ordinary.eml", "qmail.eml")]
    code, out, err = cli(tmp_path, "bounces", "parse", *files, "--json")
    assert code == 0, err
    parsed = json.loads(out)
    assert list(parsed) == files
    assert parsed[files[1]] == []
    (finding,) = parsed[files[0]]
    assert set(finding) == {
        "recipient",
        "reason",
        "kind",
        "status",
        "reply_code",
        "suppress",
        "action",
        "diagnostic",
    }
    assert (finding["kind"], finding["status"], finding["reply_code"]) == ("hard", "5.1.1", 550)
    assert (finding["reason"], finding["action"], finding["suppress"]) == (
        "user_unknown",
        "suppress",
        True,
    )
    assert not (tmp_path / ".sender" / "outbox.sqlite3").exists()  # it changes nothing


def test_bounces_ingest_twice_counts_once_and_report_gives_working_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest suppresses by the rules, again changes nothing, and the CSV report has Get Links."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "people.csv").write_text(
        "email,name,participant_id,course_id\nada@example.org,Ada Lovelace,p-ada,PY101\n",
        encoding="utf-8",
    )
    code, _, err = cli(tmp_path, "run", "people.csv", "--no-progress")  # embedded capture
    assert code == 0, err
    samples = [str(BOUNCE_SAMPLES / n) for n in ("sendmail_several.eml", "autoreply_german.eml")]
    code, out, err = cli(tmp_path, "bounces", "ingest", *samples, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert {s["address"] for s in first["suppressed"]} == {
        "ada@example.org",
        "edsger@example.invalid",
    }
    code, out, _ = cli(tmp_path, "bounces", "ingest", *samples, "--json")
    assert json.loads(out)["suppressed"] == []
    code, _, err = cli(tmp_path, "bounces", "report", "--since", "1d", "--csv", "report.csv")
    assert code == 0, err
    with (tmp_path / "report.csv").open(encoding="utf-8") as handle:
        rows = {row["email"]: row for row in csv.DictReader(handle)}
    assert rows["ada@example.org"]["action"] == "change address"
    assert rows["ada@example.org"]["participant_id"] == "p-ada"
    code, out, err = cli(tmp_path, "link", "verify", rows["ada@example.org"]["get_link"], "--json")
    assert code == 0, err
    assert json.loads(out)["participant_id"] == "p-ada"
    assert rows["edsger@example.invalid"]["rule"].startswith("the domain does not exist")
    assert rows["grace@example.org"]["kind"] == "soft"
    assert "herr.mueller" not in " ".join(rows)  # an auto-reply is not a bounce


@pytest.mark.slow
async def test_sender_inbound_listens_refuses_relaying_and_stops_on_sigterm(
    tmp_path: Path, closed_port: int
) -> None:
    """`sender inbound` keeps a forged bounce as forged, refuses other domains, exits on TERM."""
    (tmp_path / "sender.toml").write_text(f'bounce_domain = "{BOUNCE_DOMAIN}"\n', encoding="utf-8")
    process = await spawn_inbound(
        tmp_path, closed_port, env={"SENDER_SECRET_KEYS": "inbound-cli-key-0123456789abcdef"}
    )
    try:
        await deliver(
            closed_port, f"bounces+m1-aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}", dsn("a@b.example")
        )
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await deliver(closed_port, "someone@elsewhere.example", dsn("a@b.example"))
    finally:
        process.terminate()
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    async with SqliteStore(tmp_path / ".sender" / "outbox.sqlite3") as outbox:
        (kept,) = await outbox.bounces()
        assert kept.forged
        assert await outbox.suppressed(["a@b.example"]) == {}


async def test_an_ses_notification_suppresses_through_the_same_rules(store: SqliteStore) -> None:
    """An SES permanent bounce (inside SNS) suppresses its recipients, once however often sent."""
    payload = (BOUNCE_SAMPLES / "ses_sns_bounce.json").read_text(encoding="utf-8")
    outcomes = await ingest_ses_notification(store, payload, policy=POLICY, now=T0)
    assert outcomes
    assert all(o.record.kind == "hard" for o in outcomes)
    addresses = [o.record.address for o in outcomes if o.record.address]
    assert set(await store.suppressed(addresses)) == set(addresses)
    again = await ingest_ses_notification(store, payload, policy=POLICY, now=T0)
    assert all(o.suppressed is None for o in again)
    assert len(await store.bounces()) == len(outcomes)
