"""The ``sender`` command, through click's runner and one real subprocess."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sender.cli import main
from sender.compose.sites import site_of
from sender.testing import RecordingSMTPServer, Stage
from tests.dns_server import DnsServer
from tests.helpers import run_python, smtp_url

KEY_A = "cli-test-key-aaaaaaaaaaaaaaaaaaaa"
KEY_B = "cli-test-key-bbbbbbbbbbbbbbbbbbbb"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "participants.csv"
REAL_IDENTITY = {
    "SENDER_FROM": "Example Academy <noreply@learning.example.com>",
    "SENDER_BASE_URL": "https://learning.example.com/login",
}
HREF = re.compile(r"""https?://[^\s"'<>]+""")


pytestmark = pytest.mark.usefixtures("workdir")


def cli(*args: str, keys: str | None = KEY_A, **env: str) -> Result:
    environment = {"SENDER_SECRET_KEYS": keys} if keys else {}
    environment.update(REAL_IDENTITY)  # --smtp refuses the example From and base URL
    environment.update(env)
    return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]


def test_link_issue_and_verify_round_trip() -> None:
    """A link issued by the CLI verifies with the same keys and shows its claims."""
    issued = cli(
        "link",
        "issue",
        "--participant",
        "p-1",
        "--course",
        "PY101",
        "--json",
        "--next",
        "/courses/PY101",
    )
    assert issued.exit_code == 0
    data = json.loads(issued.stdout)
    assert set(data) == {"url", "token", "expires_at"}
    assert data["url"].endswith(data["token"])
    assert len(data["url"]) < 200
    verified = cli("link", "verify", data["url"], "--json")
    assert verified.exit_code == 0
    claims = json.loads(verified.stdout)
    assert claims["participant_id"] == "p-1"
    assert claims["next"] == "/courses/PY101"
    assert claims["expires_at"] == data["expires_at"]


def verify_kind(*args: str, keys: str = KEY_A) -> str:
    result = cli("link", "verify", *args, "--json", keys=keys)
    assert result.exit_code == 1
    return str(json.loads(result.stdout)["error"])


def test_tampered_token_is_invalid() -> None:
    """Changing one character of the token makes verify exit 1 with 'invalid'."""
    token = cli("link", "issue", "--participant", "p-1", "--course", "c").stdout.strip()
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    assert verify_kind(flipped) == "invalid"
    plain = cli("link", "verify", flipped)
    assert plain.exit_code == 1
    assert plain.stdout.startswith("invalid")


@pytest.mark.slow
def test_expired_link_is_expired() -> None:
    """A link issued with --ttl 1s is 'expired' two seconds later."""
    url = cli("link", "issue", "--participant", "p-1", "--course", "c", "--ttl", "1s").stdout
    time.sleep(2.1)
    assert verify_kind(url.strip()) == "expired"


def test_rotated_out_key_is_invalid_and_rotation_keeps_old_links() -> None:
    """Old links verify while their key is listed, and are invalid once it is removed."""
    url = cli("link", "issue", "--participant", "p-1", "--course", "c", keys=KEY_A).stdout.strip()
    assert cli("link", "verify", url, keys=f"{KEY_A},{KEY_B}").exit_code == 0
    assert verify_kind(url, keys=KEY_B) == "invalid"


def test_other_stamp_is_revoked() -> None:
    """A link issued under one stamp is 'revoked' under another."""
    url = cli("link", "issue", "--participant", "p-1", "--course", "c", "--stamp", "v1").stdout
    assert cli("link", "verify", url.strip(), "--stamp", "v1").exit_code == 0
    assert verify_kind(url.strip(), "--stamp", "v2") == "revoked"


def test_unsafe_next_is_one_line_error() -> None:
    """An off-site --next is refused with one line naming the field."""
    result = cli("link", "issue", "--participant", "p", "--course", "c", "--next", "//evil.example")
    assert_one_line_error(result, "next")


def test_render_japanese_invitation_to_eml(workdir: Path) -> None:
    """render --locale ja writes a parseable message with a Japanese subject and one site."""
    result = cli(
        "render",
        "invitation",
        "--locale",
        "ja",
        "--out",
        "x.eml",
        "--var",
        "course_name=Python入門",
    )
    assert result.exit_code == 0, result.stderr
    message = email.message_from_bytes(
        (workdir / "x.eml").read_bytes(), policy=email.policy.default
    )
    assert "Python入門" in message["Subject"]
    assert "招待" in message["Subject"]
    texts = [
        part.get_content()  # type: ignore[attr-defined]
        for part in message.walk()
        if part.get_content_maintype() == "text"
    ]
    sites = {site_of(url.split("/")[2]) for text in texts for url in HREF.findall(text)}
    assert sites == {"example.com"}


def test_render_unknown_variable_is_one_line(workdir: Path) -> None:
    """A user template with an unknown variable fails with one line naming it."""
    base = workdir / "tpl" / "note" / "en"
    base.mkdir(parents=True)
    (base / "subject.txt").write_text("Hi")
    (base / "body.txt").write_text("{{ link }} {{ room_number }}")
    result = cli("render", "note", "--templates", "tpl")
    assert_one_line_error(result, "room_number", "note/en/body.txt")


def test_templates_lint_is_clean_on_builtins() -> None:
    """The built-in templates pass the lint."""
    result = cli("templates", "lint")
    assert result.exit_code == 0
    assert result.stdout.startswith("ok:")


def test_bad_smtp_url_is_a_configuration_error() -> None:
    """A wrong SMTP URL scheme exits 2 with one line and no traceback."""
    result = cli(
        "send",
        "--to",
        "a@example.com",
        "--name",
        "A",
        "--participant",
        "p",
        "--course",
        "c",
        "--smtp",
        "http://127.0.0.1:25",
    )
    assert result.exit_code == 2
    assert_one_line_error(result, "scheme")


def test_generated_secret_is_private_and_announced(workdir: Path) -> None:
    """Without configured keys a 0600 key file is made and a warning says so."""
    first = cli("link", "issue", "--participant", "p", "--course", "c", keys=None)
    assert "warning: no secret key configured" in first.stderr
    key_file = workdir / ".sender" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in first.stdout + first.stderr
    assert cli("link", "verify", first.stdout.strip(), keys=None).exit_code == 0


async def test_send_delivers_to_a_real_smtp_server(smtp_server: RecordingSMTPServer) -> None:
    """sender send --smtp delivers one message to the server named by the URL."""
    result = await asyncio.to_thread(
        cli,
        "send",
        "--to",
        "kari@example.com",
        "--name",
        "Kari Nordmann",
        "--participant",
        "p-1006",
        "--course",
        "PY101",
        "--locale",
        "nb",
        "--smtp",
        smtp_url(smtp_server),
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("accepted: 250")
    (received,) = smtp_server.messages
    assert received.recipients == ("kari@example.com",)


async def test_send_reports_a_permanent_refusal(smtp_server: RecordingSMTPServer) -> None:
    """A 550 from the server makes send exit 3 (not sent) and print the reply."""
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown")
    result = await asyncio.to_thread(
        cli,
        "send",
        "--to",
        "gone@example.com",
        "--name",
        "Gone",
        "--participant",
        "p",
        "--course",
        "c",
        "--smtp",
        smtp_url(smtp_server),
    )
    assert result.exit_code == 3
    assert "permanent: 550 5.1.1 User unknown" in result.stdout


async def test_run_sends_valid_rows_and_names_bad_ones(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """run sends one message per valid row and reports each bad row by number."""
    csv_path = workdir / "p.csv"
    csv_path.write_text(
        "email,name,participant_id,course_id,locale\n"
        "a@example.com,A,p-1,c,en\n"
        "broken,B,p-2,c,en\n"
        "c@example.org,C,p-3,c,sv\n"
        "a@example.com,A again,p-1,c,en\n"
        'd@example.net,"Evil\nBcc: x",p-4,c,en\n'
        "e@example.net,E,p-5,c,ja\n",
        encoding="utf-8",
    )
    smtp_server.reply(Stage.RCPT, "550 5.1.1 User unknown", address="e@example.net")
    result = await asyncio.to_thread(
        cli,
        "run",
        str(csv_path),
        "--smtp",
        smtp_url(smtp_server),
        "--no-validate",  # address checks need DNS; test_validate covers them on loopback
    )
    assert result.exit_code == 3, result.stderr  # finished, with a failed row
    assert sorted(r for m in smtp_server.messages for r in m.recipients) == [
        "a@example.com",
        "c@example.org",
    ]
    out = result.stdout
    assert "row 3 (broken)" in out
    assert "row 5 (a@example.com): skipped: duplicate of row 2" in out
    assert "row 6" in out
    assert "line break" in out
    assert "row 8 (e@example.net): failed: 550 5.1.1" in out
    assert "Get Link for A (p-1)" in out


@pytest.mark.slow
def test_run_examples_in_a_real_subprocess_fills_the_maildir(workdir: Path) -> None:
    """The README's main command stores one message per example participant."""
    completed = run_python(workdir, "-m", "sender", "run", str(EXAMPLES))
    assert completed.returncode == 0, completed.stderr
    rows = len(EXAMPLES.read_text(encoding="utf-8").strip().splitlines()) - 1
    files = list((workdir / ".sender" / "maildir" / "new").iterdir())
    assert len(files) == rows == 20
    assert "Get Link for" in completed.stdout
    assert "Traceback" not in completed.stderr
    recipients = {
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Delivered-To"]
        for f in files
    }
    assert len(recipients) == rows


@pytest.mark.slow
def test_run_with_worker_processes_fills_the_maildir(workdir: Path) -> None:
    """--workers 2 sends every example participant once and the run remembers the setting."""
    completed = run_python(workdir, "-m", "sender", "run", str(EXAMPLES), "--workers", "2")
    assert completed.returncode == 0, completed.stderr
    assert "in 2 worker processes" in completed.stderr
    files = list((workdir / ".sender" / "maildir" / "new").iterdir())
    recipients = {
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Delivered-To"]
        for f in files
    }
    assert len(files) == len(recipients) == 20
    status = run_python(workdir, "-m", "sender", "status", "--json", timeout=60)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["options"]["workers"] == 2
    assert data["counts"]["sent"] == 20


def test_more_workers_than_connections_is_one_line(workdir: Path) -> None:
    """--workers above --concurrency is refused before anything is sent."""
    copy = workdir / "p.csv"
    copy.write_bytes(EXAMPLES.read_bytes())
    result = cli("run", str(copy), "--workers", "4", "--concurrency", "2")
    assert_one_line_error(result, "workers")
    assert not (workdir / ".sender" / "maildir").exists()


async def test_resume_sends_with_the_limits_the_run_started_with(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """A run's rate flags are stored with it; resume uses them unless told otherwise."""
    csv_path = workdir / "p.csv"
    csv_path.write_text(
        "email,name,participant_id,course_id\na@d.example,A,p-1,c\nb@d.example,B,p-2,c\n",
        encoding="utf-8",
    )
    smtp = smtp_url(smtp_server)
    smtp_server.reply(Stage.RCPT, "451 4.7.1 Greylisted", address="b@d.example", times=1)
    first = await asyncio.to_thread(
        cli,
        "run",
        str(csv_path),
        "--smtp",
        smtp,
        "--run-id",
        "r-keep",
        "--rate",
        "9",
        "--domain-rate",
        "120/min",
        "--concurrency",
        "3",
        "--no-validate",
    )
    assert "sending at most 9 msgs/s, 120/min per domain, 3 at a time" in first.stderr
    status = json.loads((await asyncio.to_thread(cli, "status", "r-keep", "--json")).stdout)
    assert status["options"] == {
        "transport": smtp,
        "rate": 9.0,
        "domain_rate": "120.0/min",
        "concurrency": 3,
        "workers": 1,
    }
    resumed = await asyncio.to_thread(cli, "resume", "r-keep", "--smtp", smtp)
    assert "sending at most 9 msgs/s, 120/min per domain, 3 at a time" in resumed.stderr
    overridden = await asyncio.to_thread(cli, "resume", "r-keep", "--smtp", smtp, "--rate", "2")
    assert "sending at most 2 msgs/s, 120/min per domain, 3 at a time" in overridden.stderr


# --- checks before sending, against a real DNS server on loopback ----------------------

CHECK_ZONE = """
school.example.        MX   10 mx.school.example.
mx.school.example.     A    192.0.2.10
gmail.com.             MX   5 gmail-smtp-in.l.google.com.
nullmx.example.        MX   0 .
learning.example.com.  TXT  "v=spf1 include:amazonses.com ~all"
amazonses.com.         TXT  "v=spf1 ip4:199.255.192.0/22 ~all"
_dmarc.learning.example.com. TXT "v=DMARC1; p=quarantine"
"""


async def test_validate_gives_a_verdict_per_row_as_json(workdir: Path) -> None:
    """validate --json: ok, invalid with reasons, a typo suggestion, and exit 1."""
    (workdir / "p.csv").write_text(
        "email,name,participant_id,course_id\n"
        "kari@school.example,Kari,p-1,c\n"
        "ola@gmial.com,Ola,p-2,c\n"
        "per@nullmx.example,Per,p-3,c\n"
        "not-an-address,X,p-4,c\n",
        encoding="utf-8",
    )
    async with DnsServer(CHECK_ZONE) as dns:
        result = await asyncio.to_thread(
            cli, "validate", "p.csv", "--dns-server", dns.address, "--json"
        )
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    verdicts = {row["email"]: row for row in data["rows"]}
    assert verdicts["kari@school.example"]["verdict"] == "ok"
    assert verdicts["ola@gmial.com"]["suggestion"] == "ola@gmail.com"
    assert verdicts["per@nullmx.example"]["verdict"] == "invalid"
    assert verdicts["not-an-address"]["verdict"] == "invalid"
    assert [row["row"] for row in data["rows"]] == [2, 3, 4, 5]
    assert data["summary"]["ok"] == 1
    assert data["summary"]["invalid"] == 3


async def test_run_skips_undeliverable_addresses_before_sending(
    smtp_server: RecordingSMTPServer, workdir: Path
) -> None:
    """With --smtp, run checks addresses first: a dead domain is skipped with the reason."""
    (workdir / "p.csv").write_text(
        "email,name,participant_id,course_id\n"
        "kari@school.example,Kari,p-1,c\n"
        "per@nullmx.example,Per,p-2,c\n"
        "ola@nowhere.example,Ola,p-3,c\n",
        encoding="utf-8",
    )
    smtp = smtp_url(smtp_server)
    async with DnsServer(CHECK_ZONE) as dns:
        result = await asyncio.to_thread(
            cli, "run", "p.csv", "--smtp", smtp, "--dns-server", dns.address, "--no-progress"
        )
    assert result.exit_code == 0, result.stderr
    assert [m.recipients for m in smtp_server.messages] == [("kari@school.example",)]
    assert "row 3 (per@nullmx.example): skipped" in result.stdout
    assert "row 4 (ola@nowhere.example): skipped" in result.stdout


async def test_doctor_prints_the_missing_records_in_both_forms(workdir: Path) -> None:
    """doctor explains a missing DMARC/SPF in one line each and prints BIND and console fixes."""
    async with DnsServer(CHECK_ZONE) as dns:
        good = await asyncio.to_thread(
            cli, "doctor", "learning.example.com", "--dns-server", dns.address, "--json"
        )
        bad = await asyncio.to_thread(cli, "doctor", "school.example", "--dns-server", dns.address)
    assert good.exit_code == 0, good.stdout
    assert json.loads(good.stdout)["ok"] is True
    assert bad.exit_code == 1
    assert 'school.example. IN TXT "v=spf1 include:amazonses.com ~all"' in bad.stdout
    assert "console: host @  type TXT" in bad.stdout


def test_dkim_keygen_writes_a_private_key_and_prints_its_record(workdir: Path) -> None:
    """keygen writes a 0600 PEM, refuses to overwrite it, and prints the DNS record."""
    result = cli("dkim", "keygen", "--domain", "learning.example.com", "--selector", "s1")
    assert result.exit_code == 0, result.stderr
    key = workdir / "dkim-s1.pem"
    assert key.read_bytes().startswith(b"-----BEGIN")
    assert key.stat().st_mode & 0o777 == 0o600
    assert 's1._domainkey.learning.example.com. IN TXT "v=DKIM1; k=rsa; p=' in result.stdout
    again = cli("dkim", "keygen", "--domain", "learning.example.com", "--selector", "s1")
    assert_one_line_error(again, "never overwritten")
